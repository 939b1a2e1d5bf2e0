"""Pure functions that build the ``ansible-playbook`` command line and its environment."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pikube.errors import ConfigError, Problem

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


# -- SSH: one definition of how pikube logs in, for Ansible and for pikube's own probes ----


@dataclass(frozen=True)
class SshLogin:
    """Who logs in to the nodes, with which key, trusting which host keys."""

    user: str
    private_key: Path
    known_hosts: Path


# What Ansible's ssh connection plugin (ansible-core 2.15-2.19, plugins/connection/ssh.py
# ``_build_command``) puts on the command line by itself when the inventory sets
# ``ansible_user``, ``ansible_ssh_private_key_file`` and no password. No IdentitiesOnly: keys
# in ssh-agent are offered too, so a key with a passphrase works once it is `ssh-add`ed.
ANSIBLE_NO_PASSWORD_OPTIONS = (
    "KbdInteractiveAuthentication=no",
    "PreferredAuthentications=gssapi-with-mic,gssapi-keyex,hostbased,publickey",
    "PasswordAuthentication=no",
)
# Characters an ssh_config value may hold unquoted (whitespace splits lists, '#' starts a
# comment, quotes and backslashes are syntax).
_SSH_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9/._+,:@=~-]*$")


def ssh_config_value(value: str, what: str = "ssh.private_key") -> str:
    """``value`` as one ssh_config token: ``%`` doubled (ssh expands %-tokens in paths),
    double-quoted with escapes when it holds anything but plain path characters."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(
            [
                Problem(
                    what,
                    f"{value!r} holds a control character, which ssh cannot be given",
                    "rename the file (or move it) to a path without control characters",
                )
            ]
        )
    value = value.replace("%", "%%")
    if _SSH_PLAIN_VALUE.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ssh_common_args(login: SshLogin) -> list[str]:
    """Host trust: only the pinned keys in ``known_hosts``, never trust on first use.

    The inventory hands these to Ansible as ``ansible_ssh_common_args``.
    """
    known_hosts = ssh_config_value(str(login.known_hosts), "ssh.known_hosts")
    return ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]


def ssh_login_args(login: SshLogin) -> list[str]:
    """Every ``-o`` that decides how Ansible's ``ssh`` authenticates for this login.

    The inventory gives Ansible ``ansible_user``, ``ansible_ssh_private_key_file`` and
    ``ansible_ssh_common_args`` from the same ``login``; Ansible turns the first two into
    ``User`` and ``IdentityFile`` and adds ``ANSIBLE_NO_PASSWORD_OPTIONS``. pikube's probes
    run ``ssh`` with exactly these, so agent, key and pinned host keys are the same for both
    (``tests/integration/test_probe_agent_lab.py`` compares ``ssh -G`` of the two).
    """
    options = [
        f"User={login.user}",
        f"IdentityFile={ssh_config_value(str(login.private_key))}",
        *ANSIBLE_NO_PASSWORD_OPTIONS,
    ]
    return [arg for option in options for arg in ("-o", option)] + ssh_common_args(login)
