"""The one place that knows where pikube's playbooks, roles, templates and images live.

In a wheel they are package data under ``pikube/_data/``; in a checkout (editable install)
they are the top-level folders of the repository. Everything else asks this module.
"""

from __future__ import annotations

import functools
from pathlib import Path

DATA_DIRS = ("playbooks", "roles", "plugins", "templates", "images")
DATA_FILES = ("ansible.cfg",)  # pikube's Ansible settings, used through ANSIBLE_CONFIG


@functools.cache
def data_root() -> Path:
    """Return the directory holding ``playbooks/``, ``roles/``, ``plugins/``, ``templates/``,
    ``images/``."""
    package_dir = Path(__file__).resolve().parent
    bundled = package_dir / "_data"
    if (bundled / "playbooks").is_dir():
        return bundled
    checkout = package_dir.parent.parent  # src/pikube -> repository root
    if (checkout / "playbooks").is_dir() and (checkout / "pyproject.toml").is_file():
        return checkout
    raise RuntimeError(
        f"pikube's data files are missing: neither {bundled} nor a checkout at {checkout}; "
        "reinstall pikube"
    )


def data_path(*parts: str) -> Path:
    """Path of a data file, e.g. ``data_path("playbooks", "site.yml")``."""
    if not parts or parts[0] not in DATA_DIRS + DATA_FILES:
        raise ValueError(
            f"unknown data path {parts[:1]!r}; expected one of {DATA_DIRS + DATA_FILES}"
        )
    return data_root().joinpath(*parts)
