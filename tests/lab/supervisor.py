#!/usr/bin/env python3
"""Keep one lab node running: run systemd-nspawn, and run it again when the node reboots.

A reboot inside an nspawn container makes systemd-nspawn exit with code 133; a poweroff exits
0. This loop restarts on 133 only, so ``systemctl reboot`` and ``ansible.builtin.reboot`` bring
the node back, while ``poweroff`` (or SIGTERM to this supervisor: ``lab stop NODE``) ends it.

Standalone on purpose: ``Lab`` starts it detached as
``python3 supervisor.py --cgroup NAME --pidfile FILE -- systemd-nspawn ...``.
Before starting nspawn it moves itself into its own cgroup in each hierarchy, so every node's
systemd gets a private cgroup subtree (nodes never share ``system.slice``) and its memory can
be read from ``memory.usage_in_bytes``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

REBOOT_EXIT = 133
CGROUP_ROOT = Path("/sys/fs/cgroup")
STOP_TIMEOUT = 30.0


HIERARCHIES = {"name=systemd": "systemd", "": "unified", "memory": "memory", "pids": "pids"}


def cgroup_dirs(name: str) -> list[Path]:
    """This node's cgroup in each hierarchy, below the cgroup the supervisor started in."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # pure cgroup v2
        current = Path("/proc/self/cgroup").read_text().split("::", 1)[1].strip()
        return [CGROUP_ROOT / current.lstrip("/") / name]
    dirs: list[Path] = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        mount = HIERARCHIES.get(controllers)
        if mount and (CGROUP_ROOT / mount / "cgroup.procs").exists():
            dirs.append(CGROUP_ROOT / mount / path.lstrip("/") / name)
    return dirs


def join_cgroups(dirs: list[Path]) -> None:
    """Runs in the nspawn child before exec: nspawn (and the node) get their own cgroups."""
    for directory in dirs:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "cgroup.procs").write_text(f"{os.getpid()}\n")
        except OSError as exc:
            os.write(2, f"supervisor: cannot join cgroup {directory}: {exc}\n".encode())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cgroup", required=True)
    parser.add_argument("--pidfile", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    dirs = cgroup_dirs(args.cgroup)
    Path(args.pidfile + ".cgroups").write_text("".join(f"{d}\n" for d in dirs))
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True  # the wait loop sends nspawn SIGTERM: an orderly poweroff of the node

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    boots = 0
    while not stopping:
        boots += 1
        print(f"supervisor: boot {boots}: {' '.join(command)}", file=sys.stderr, flush=True)
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, preexec_fn=lambda: join_cgroups(dirs)
        )
        Path(args.pidfile).write_text(f"{child.pid}\n")
        stop_started: float | None = None
        while True:
            try:
                code = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if not stopping:
                    continue
                if stop_started is None:
                    stop_started = time.monotonic()
                    child.send_signal(signal.SIGTERM)
                elif time.monotonic() - stop_started > STOP_TIMEOUT:
                    child.kill()
        print(f"supervisor: nspawn exited {code}", file=sys.stderr, flush=True)
        if code != REBOOT_EXIT:
            break
        time.sleep(0.2)
    Path(args.pidfile).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
