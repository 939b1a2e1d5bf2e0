"""Run a command with stderr on a pseudo-terminal, and read the board it drew there."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_terminal(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float = 600
) -> tuple[str, str, int]:
    """Run ``argv`` with stderr on a 160x40 pseudo-terminal and stdout on a pipe.

    Returns (everything the terminal received, stdout, exit code). A run that outlives
    ``timeout`` is killed with its process group and raises ``TimeoutError``.
    """
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        start_new_session=True,  # its own process group: killed as one on a timeout
    )
    os.close(slave)
    received = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer of the terminal has gone
                    break
                if not chunk:
                    break
                received += chunk
            elif proc.poll() is not None:
                break
        else:
            raise TimeoutError(f"{argv} ran longer than {timeout} s:\n{received.decode()[-3000:]}")
        assert proc.stdout is not None
        stdout = proc.stdout.read().decode()
        code = proc.wait(timeout=60)
    finally:
        os.close(master)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    return received.decode(errors="replace"), stdout, code


def board_rows(screen: str) -> dict[str, list[str]]:
    """The last board row drawn for each node: its cells, without borders and colours."""
    rows: dict[str, list[str]] = {}
    for line in ANSI.sub("", screen).replace("\r", "\n").splitlines():
        if line.startswith("│ ") and "│" in line[1:]:
            cells = [c.strip() for c in line.strip().strip("│").split("│")]
            if cells[0] != "-":  # the row of a board still waiting for results
                rows[cells[0]] = cells
    return rows
