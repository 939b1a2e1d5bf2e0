"""Pure functions that build the ``ansible-playbook`` command line and its environment."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

STDOUT_CALLBACK = "pikube_events"
# Unix socket paths are limited to 107 bytes (sun_path minus its NUL). OpenSSH names the
# socket "/" + the 40 hex digits of %C and, while creating it, adds "." + 16 random chars.
SOCKET_PATH_MAX = 107
CONTROL_SOCKET_NAME_LEN = 1 + 40 + 17
# ansible-core's ssh connection plugin imports cryptography's DSA classes for its ssh-agent
# support (ansible/_internal/_ssh/_ssh_agent.py), and cryptography 51 deprecates DSA on that
# very import: every ansible-playbook run over SSH would print a CryptographyDeprecationWarning
# that no pikube user can act on (pikube never uses DSA keys). Exactly that warning is ignored:
# its message, its category's base (cryptography's warnings are UserWarnings, shown by
# default) and the module importing DSA. Any other warning, and Ansible's own deprecation
# messages about pikube's playbooks, still reach the terminal.
ANSIBLE_DSA_IMPORT_WARNING = (
    "ignore:DSA is deprecated:UserWarning:ansible._internal._ssh._ssh_agent"
)


@dataclass(frozen=True)
class PlaybookOptions:
    """What the user asked for on the command line (passed through to ansible-playbook)."""

    check: bool = False
    diff: bool = False
    limit: str | None = None
    tags: str | None = None
    skip_tags: str | None = None
    verbosity: int = 0
    extra_vars: Mapping[str, object] = field(default_factory=dict)


def find_ansible_playbook() -> list[str]:
    """The ``ansible-playbook`` of the Python environment pikube runs in.

    Prefer the script next to this interpreter (a venv or pipx install), then ``PATH``, then
    ``python -m ansible.cli.playbook`` so that a missing script still works.
    """
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("ansible-playbook")
    if found:
        return [found]
    return [sys.executable, "-m", "ansible.cli.playbook"]


def build_playbook_argv(
    executable: Sequence[str],
    playbook: Path,
    inventory: Path,
    options: PlaybookOptions,
) -> list[str]:
    """``ansible-playbook`` argv for one run; every value is its own list item (no shell)."""
    import json

    argv = [*executable, "--inventory", str(inventory)]
    if options.check:
        argv.append("--check")
    if options.diff:
        argv.append("--diff")
    if options.limit:
        argv += ["--limit", options.limit]
    if options.tags:
        argv += ["--tags", options.tags]
    if options.skip_tags:
        argv += ["--skip-tags", options.skip_tags]
    if options.verbosity > 0:
        argv.append("-" + "v" * min(options.verbosity, 4))
    if options.extra_vars:
        argv += ["--extra-vars", json.dumps(dict(options.extra_vars), sort_keys=True)]
    argv.append(str(playbook))
    return argv


def control_path_dir_fits(directory: Path) -> bool:
    """Whether ssh's ``<directory>/%C`` control sockets stay below the socket path limit."""
    return len(str(directory)) + CONTROL_SOCKET_NAME_LEN <= SOCKET_PATH_MAX


@dataclass(frozen=True)
class RunPaths:
    """Where one run keeps its files; all absolute."""

    run_dir: Path
    control_path_dir: Path
    fact_cache_dir: Path
    config_file: Path
    roles_path: Path
    callback_dir: Path


def build_env(base: Mapping[str, str], paths: RunPaths) -> dict[str, str]:
    """Environment for ansible-playbook: pikube's ansible.cfg, roles, callback, run-local paths.

    Values the user set for the same keys in ``base`` are replaced: a run must use pikube's
    roles and its own control sockets, or results would not be reproducible.
    """
    env = dict(base)
    env.update(
        {
            "ANSIBLE_CONFIG": str(paths.config_file),
            "ANSIBLE_ROLES_PATH": str(paths.roles_path),
            "ANSIBLE_CALLBACK_PLUGINS": str(paths.callback_dir),
            "ANSIBLE_STDOUT_CALLBACK": STDOUT_CALLBACK,
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(paths.control_path_dir),
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(paths.fact_cache_dir),
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "PYTHONUNBUFFERED": "1",
            # After the user's own filters: later PYTHONWARNINGS entries take precedence.
            "PYTHONWARNINGS": ",".join(
                f for f in (base.get("PYTHONWARNINGS", ""), ANSIBLE_DSA_IMPORT_WARNING) if f
            ),
        }
    )
    env.pop("ANSIBLE_LOG_PATH", None)  # the default log would keep unfiltered output
    return env
