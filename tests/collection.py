"""Build pikube's Ansible collection from the repository and install it, offline, as a user would.

Shared by the unit tests (what the archive holds, its playbooks resolve) and the lab test (the
documented example run with plain `ansible-playbook`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def galaxy() -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load((REPO / "galaxy.yml").read_text())
    return data


def ansible_env(collections_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a user with only the installed collection: no pikube ansible.cfg,
    no roles path into the checkout, nothing from the caller's ANSIBLE_* settings."""
    collections_path.mkdir(parents=True, exist_ok=True)
    config = collections_path / "ansible.cfg"  # stock settings; never the checkout's ./ansible.cfg
    config.write_text("[defaults]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        {
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
            "ANSIBLE_ROLES_PATH": str(collections_path / "no-roles-here"),
            "ANSIBLE_NOCOLOR": "1",
        }
    )
    env.update(extra)
    return env


def build_collection(out: Path, source: Path = REPO) -> Path:
    """`ansible-galaxy collection build` of the repository (or an unpacked sdist of it)."""
    galaxy_build = [str(BIN / "ansible-galaxy"), "collection", "build"]
    proc = subprocess.run(
        [*galaxy_build, "--output-path", str(out), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    info = galaxy()
    archive = out / f"{info['namespace']}-{info['name']}-{info['version']}.tar.gz"
    assert archive.is_file(), proc.stdout
    return archive


def install_collection(archive: Path, collections_path: Path) -> Path:
    """`ansible-galaxy collection install --offline -p`; the installed collection's folder."""
    proc = subprocess.run(
        [
            str(BIN / "ansible-galaxy"),
            "collection",
            "install",
            "--offline",
            "-p",
            str(collections_path),
            str(archive),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=ansible_env(collections_path),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    info = galaxy()
    return collections_path / "ansible_collections" / str(info["namespace"]) / str(info["name"])


def doc_examples() -> dict[str, str]:
    """The example playbooks of docs/ansible.md: each ```yaml block whose first line names its
    file (`# site.yml`), by that name; tests run them exactly as documented."""
    text = (REPO / "docs" / "ansible.md").read_text()
    examples = {}
    for block in re.findall(r"^```yaml\n(.*?)^```$", text, flags=re.M | re.S):
        first = block.splitlines()[0]
        match = re.fullmatch(r"# (\S+\.yml)", first)
        if match:
            examples[match.group(1)] = block
    return examples
