"""One playbook run at a time per cluster: an flock on ``<state_dir>/run.lock``.

A run that dies (Ctrl-C, SIGKILL, a closed terminal) may leave its ansible-playbook behind,
still acting on the nodes: killing pikube does not kill its child. A second run started then
would race it (two ``kubeadm join`` of one worker, two apt runs on one node). Killing
ansible-playbook does not stop its workers either: each runs in a session of its own and
finishes its task on the nodes. So the lock is held by pikube *and* inherited by
ansible-playbook (``pass_fds``) and its workers: the kernel releases it only when the last of
them exits, however they end. No stale lock survives a crash, and no pid file has to be
trusted. The file also says who took it, for the refusal message.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pikube.errors import RunInProgress

LOCK_FILE = "run.lock"


@contextlib.contextmanager
def run_lock(state_dir: Path) -> Iterator[int]:
    """Hold the cluster's run lock; yields its file descriptor (pass it to ansible-playbook).

    Raises ``RunInProgress`` naming the holder when another run (or what is left of one)
    still holds it.
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            pids = " ".join(str(pid) for pid in holders(path) if pid != os.getpid()) or "unknown"
            raise RunInProgress(
                f"another pikube run is still acting on this cluster ({holder}; "
                f"processes holding it now: {pids})",
                where=str(path),
                fix="wait for it to finish; if it was killed, its ansible-playbook or Ansible's "
                "workers (finishing a task on the nodes) may still run: let them end or stop "
                "them (kill PID), then run the command again",
            ) from None
        _write(fd, f"pikube pid {os.getpid()}")
        yield fd
    finally:
        os.close(fd)


def holders(path: Path) -> list[int]:
    """PIDs with ``path`` open (Linux /proc; empty where that cannot be read)."""
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) == str(path) for fd in fd_dir.iterdir()):
                found.append(int(fd_dir.parent.name))
    return sorted(found)


def note_child(fd: int, pid: int, run_dir: Path) -> None:
    """Record the ansible-playbook that shares the lock (for the next run's message)."""
    _write(fd, f"pikube pid {os.getpid()}, ansible-playbook pid {pid}, run {run_dir}")


def _write(fd: int, holder: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{holder}\n".encode(), 0)
