"""Reading input files (the cluster file, known_hosts) without trusting what the path holds.

Every input file is untrusted: the path may name a FIFO or a device (``--cluster /dev/zero``
reads forever, a FIFO blocks until a writer comes), a folder, or a file far larger than any
real one. ``read_input_file`` refuses all of these with a located ``ConfigError`` (exit 3)
before reading a byte it does not need: it looks at the path first, opens it without
blocking, checks the opened file again (the path may have changed in between), and reads at
most ``limit`` bytes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pikube.errors import ConfigError, Problem


def _refuse(path: Path, message: str, fix: str) -> ConfigError:
    return ConfigError([Problem("", message, fix, file=str(path))], file=str(path))


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_input_file(path: Path, *, what: str, limit: int, missing_fix: str) -> str:
    """The UTF-8 text of the regular file ``path``, at most ``limit`` bytes long.

    ``what`` names the file in messages ("cluster file", "known_hosts file"). Raises
    ``ConfigError`` when it is missing, not a regular file, too large or not UTF-8 text;
    ``missing_fix`` is the fix offered for a missing file.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise _refuse(path, f"{what} {path} does not exist", missing_fix) from None
    except OSError as err:
        raise _refuse(
            path, f"cannot read {what} {path}: {err.strerror}", "check the path"
        ) from None
    if not stat.S_ISREG(mode):
        raise _refuse(
            path,
            f"{what} {path} is {_kind_of(mode)}, not a regular file",
            f"point to the {what} itself (a plain text file)",
        )
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, opening it does not
        # wait for a writer; the fstat below then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise _refuse(
            path, f"cannot read {what} {path}: {err.strerror}", "check the path"
        ) from None
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode):
            raise _refuse(
                path,
                f"{what} {path} is {_kind_of(opened.st_mode)}, not a regular file",
                f"point to the {what} itself (a plain text file)",
            )
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise _refuse(
            path,
            f"{what} {path} is larger than {limit // 1024} KiB",
            f"point to the right file: a {what} is a few kilobytes",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _refuse(
            path,
            f"{what} {path} is not UTF-8 text (byte {err.start})",
            f"point to the {what} itself, saved as UTF-8",
        ) from None
