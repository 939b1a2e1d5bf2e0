"""The per-run directory: ``<state_dir>/runs/<UTC timestamp>-<command>/``.

It keeps what is needed to understand a run afterwards, and nothing secret: the rendered
inventory, the command line, the event log, and the summary.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pikube.runner.argv import control_path_dir_fits

RUNS = "runs"
INVENTORY = "inventory"
COMMAND_FILE = "command.txt"
EVENTS_FILE = "events.jsonl"
SUMMARY_FILE = "summary.json"
# Environment keys worth recording next to the command line (no secrets among them).
RECORDED_ENV = (
    "ANSIBLE_CONFIG",
    "ANSIBLE_ROLES_PATH",
    "ANSIBLE_CALLBACK_PLUGINS",
    "ANSIBLE_STDOUT_CALLBACK",
    "ANSIBLE_SSH_CONTROL_PATH_DIR",
    "ANSIBLE_CACHE_PLUGIN_CONNECTION",
)


def run_dir_name(command: str, now: datetime) -> str:
    """``20261122T173358Z-up``: sorts by time, says what ran."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in command) or "run"
    return f"{stamp}-{safe}"


def create_run_dir(state_dir: Path, command: str, now: datetime | None = None) -> Path:
    """A new, private (0700) run directory; a suffix keeps runs in the same second apart."""
    runs = state_dir / RUNS
    runs.mkdir(parents=True, exist_ok=True, mode=0o700)
    base = run_dir_name(command, now or datetime.now(UTC))
    for attempt in range(100):
        candidate = runs / (base if attempt == 0 else f"{base}.{attempt}")
        try:
            candidate.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"cannot create a run directory under {runs}")


def write_inventory(run_dir: Path, files: Mapping[str, str]) -> Path:
    """Write the rendered inventory files; returns the path to pass to ``--inventory``."""
    inventory = run_dir / INVENTORY
    for relative, text in files.items():
        target = inventory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return inventory / "hosts.yml" if (inventory / "hosts.yml").exists() else inventory


def write_command(run_dir: Path, argv: Sequence[str], env: Mapping[str, str]) -> Path:
    lines = [f"{key}={shlex.quote(env[key])}" for key in RECORDED_ENV if key in env]
    lines.append(shlex.join(argv))
    path = run_dir / COMMAND_FILE
    path.write_text(" \\\n  ".join(lines) + "\n", encoding="utf-8")
    return path


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> Path:
    path = run_dir / SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def make_control_path_dir(run_dir: Path) -> tuple[Path, bool]:
    """A per-run directory for ssh control sockets; ``(path, is_temporary)``.

    Inside the run directory when the socket path fits, else a short private dir in /tmp
    (the caller removes it). Per run, so stale sockets of recreated nodes are never reused.
    """
    inside = run_dir / "cp"
    if control_path_dir_fits(inside):
        inside.mkdir(mode=0o700, exist_ok=True)
        return inside, False
    # /tmp on purpose: a short path keeps the socket under the length limit.
    return Path(tempfile.mkdtemp(prefix="pikube-cp-", dir="/tmp")), True


def private_mode(path: Path) -> None:
    os.chmod(path, 0o700)
