"""Image files as flash targets (``pikube flash --output FILE``): checks, locking, commit.

An output image holds the node's private SSH host keys, so it is written owner-only (0600),
partial file included. Nothing is overwritten unasked:

* an existing file is refused unless ``force`` (then it is replaced only when the new
  image is complete and verified, by an atomic rename);
* the source image itself is always refused, whatever its spelling (``samefile``);
* the image is written into a temporary file with a unique name next to the output, while
  holding an exclusive lock on that output name, so two ``pikube flash`` processes never
  write one file, and one never reports "verified" for a file the other is still writing.

Targets are compared by their resolved paths (``./a.img`` and ``/abs/a.img`` are one file;
``/dev/disk/by-id/...`` and ``/dev/sdb`` one device).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pikube.errors import FlashRefused
from pikube.invoker import hand_over

PARTIAL_SUFFIX = ".pikube-partial"
LOCK_SUFFIX = ".pikube-lock"


def target_identity(path: str) -> str:
    """One spelling per file or device: the resolved path (symlinks and ``..`` followed)."""
    return os.path.realpath(path)


def check_output_path(path: Path, *, source: Path, force: bool) -> None:
    """Refuse folders, special files, missing folders, the source image and (without
    ``force``) any existing file."""
    if path.is_dir():
        raise FlashRefused(
            f"{path} is a folder", where="--output", fix="pass a file name, e.g. pi-w1.img"
        )
    if path.exists() and not path.is_file():
        raise FlashRefused(
            f"{path} exists and is not a regular file",
            where="--output",
            fix="write cards with --device; --output is for image files",
        )
    if not path.parent.is_dir():
        raise FlashRefused(
            f"folder {path.parent} does not exist", where="--output", fix="create it first"
        )
    if target_identity(str(path)) == target_identity(str(source)) or (
        path.exists() and os.path.samefile(path, source)
    ):
        raise FlashRefused(
            f"{path} is the source image",
            where="--output",
            fix="write the node's image to a new file name, e.g. pi-w1.img",
        )
    if path.exists() and not force:
        raise FlashRefused(
            f"{path} already exists",
            where="--output",
            fix="choose a new file name, or pass --force to replace it (only once the new "
            "image is complete and verified)",
        )


@dataclass
class OutputFile:
    """An output being written: the locked final name and its unique temporary file."""

    final: Path
    partial: Path
    handle: BinaryIO
    _lock_fd: int
    _lock_path: Path

    def commit(self) -> None:
        """Move the complete image into place (atomic) and hand it to the sudo user."""
        os.replace(self.partial, self.final)
        hand_over(self.final)

    def close(self) -> None:
        """Close the file, remove the partial file if not committed, release the lock."""
        with contextlib.suppress(OSError):
            self.handle.close()
        self.partial.unlink(missing_ok=True)
        # Unlink before unlocking: a process that opened this lock file meanwhile finds
        # the name gone (or another inode) once it gets the lock, and tries again.
        self._lock_path.unlink(missing_ok=True)
        os.close(self._lock_fd)


def _lock(lock_path: Path, final: Path) -> int:
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise FlashRefused(
                    f"{final} is being written by another pikube flash",
                    where="--output",
                    fix="wait for it to finish, or write to another file name",
                ) from None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed it while we waited: take the new one


def open_output(final: Path, size: int, *, force: bool) -> OutputFile:
    """Lock ``final``'s name, re-check it, and create a unique 0600 temporary file of
    ``size`` bytes (sparse) next to it."""
    lock_path = final.with_name(f".{final.name}{LOCK_SUFFIX}")
    lock_fd = _lock(lock_path, final)
    name = ""
    try:
        if final.exists() and not force:  # appeared since the checks
            raise FlashRefused(
                f"{final} already exists",
                where="--output",
                fix="choose a new file name, or pass --force to replace it",
            )
        fd, name = tempfile.mkstemp(
            dir=final.parent, prefix=f".{final.name}.", suffix=PARTIAL_SUFFIX
        )
        os.fchmod(fd, 0o600)  # mkstemp's mode already; stated because host keys go in
        handle = os.fdopen(fd, "w+b", buffering=0)
        handle.truncate(size)
    except BaseException:
        if name:
            Path(name).unlink(missing_ok=True)
        lock_path.unlink(missing_ok=True)
        os.close(lock_fd)
        raise
    return OutputFile(final, Path(name), handle, lock_fd, lock_path)
