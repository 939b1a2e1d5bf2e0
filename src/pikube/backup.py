"""The cluster backups pikube keeps on the admin machine: names, sha256 records, rotation.

A backup is one archive the flavour's ``backup`` entry point wrote on a control plane
(kubeadm: etcd snapshot + PKI, so it holds private keys), fetched into the state dir's
``backups/`` folder (0700) as ``<cluster>-<UTC timestamp>.tar.gz`` (0600), with its sha256 in
``<archive>.sha256`` next to it (0600, ``sha256sum -c`` format). The record is the trust
anchor: ``pikube restore`` refuses an archive whose bytes do not match it, and ``--keep``
rotation only ever deletes archives that carry a record naming them, so nothing else in the
folder (a file the user put there, a half-fetched ``.partial``) is touched by it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pikube.errors import EXIT_VERIFY_FAILED, PikubeError

BACKUPS_DIR = "backups"
SUFFIX = ".tar.gz"
RECORD_SUFFIX = ".sha256"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
STAMP_RE = r"\d{8}T\d{6}Z"
SHA256_RE = re.compile(r"^([0-9a-f]{64})  (\S+)\n?$")


class BackupVerifyError(PikubeError):
    """A backup's bytes do not match its recorded sha256, or it has no record."""

    exit_code = EXIT_VERIFY_FAILED


@dataclass(frozen=True)
class Backup:
    """One recorded backup in the backups folder."""

    path: Path
    stamp: str  # UTC, STAMP_FORMAT: names sort by time

    @property
    def record(self) -> Path:
        return record_path(self.path)


def backups_dir(state_dir: Path) -> Path:
    """The state dir's backups/ folder, created 0700 (and tightened if it was looser)."""
    folder = state_dir / BACKUPS_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077:
        folder.chmod(0o700)
    return folder


def backup_name(cluster_name: str, when: dt.datetime) -> str:
    """``homelab-20261206T221500Z.tar.gz``: the cluster's name and the UTC time it was taken."""
    return f"{cluster_name}-{when.astimezone(dt.UTC).strftime(STAMP_FORMAT)}{SUFFIX}"


def record_path(archive: Path) -> Path:
    return archive.with_name(archive.name + RECORD_SUFFIX)


def partial_path(final: Path) -> Path:
    """Where the archive is fetched to before it is checked and recorded (hidden, same folder)."""
    return final.with_name(f".{final.name}.partial")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as a new 0600 file, whole or not at all."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)


def store(partial: Path, final: Path) -> str:
    """Move a fetched archive to its final name (0600) and record its sha256; returns it.

    Refuses to overwrite an existing backup. The archive is renamed before its record is
    written: an interruption leaves at most an archive without a record, which rotation never
    deletes and restore refuses.
    """
    if final.exists() or record_path(final).exists():
        raise PikubeError(
            f"a backup named {final.name} already exists",
            where=str(final.parent),
            fix="wait a second and run `pikube backup` again",
        )
    partial.chmod(0o600)
    digest = sha256_of(partial)
    os.replace(partial, final)
    write_private(record_path(final), f"{digest}  {final.name}\n")
    return digest


def recorded_sha256(archive: Path) -> str:
    """The sha256 recorded for ``archive``; refuses one without a record naming it."""
    record = record_path(archive)
    fix = (
        "restore only a backup `pikube backup` recorded: the archive and its .sha256 file "
        "side by side, as in the state dir's backups/ folder"
    )
    try:
        text = record.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BackupVerifyError(
            f"{archive.name} has no recorded sha256 ({record.name} is missing)",
            where=str(archive.parent),
            fix=fix,
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise BackupVerifyError(
            f"cannot read {record.name}: {err}", where=str(archive.parent), fix=fix
        ) from None
    found = SHA256_RE.match(text)
    if found is None or found.group(2) != archive.name:
        raise BackupVerifyError(
            f"{record.name} is not a sha256 record of {archive.name} "
            "(expected one line: 64 hex digits, two spaces, the archive's name)",
            where=str(archive.parent),
            fix=fix,
        )
    return found.group(1)


def verify(archive: Path) -> str:
    """The archive's sha256 when it matches its record; else BackupVerifyError (exit 5)."""
    if not archive.is_file():
        raise PikubeError(
            f"no backup file {archive}",
            fix="name an archive `pikube backup` wrote (the state dir's backups/ folder)",
        )
    expected = recorded_sha256(archive)
    actual = sha256_of(archive)
    if actual != expected:
        raise BackupVerifyError(
            f"{archive.name} does not match its recorded sha256 (recorded {expected[:12]}..., "
            f"the file has {actual[:12]}...): it changed or was damaged since it was taken; "
            "nothing was restored",
            where=str(archive.parent),
            fix="restore another backup (`ls` the backups/ folder) or take a new one",
        )
    return actual


def recorded_backups(folder: Path, cluster_name: str) -> list[Backup]:
    """The cluster's backups in ``folder`` that carry a record naming them, oldest first."""
    pattern = re.compile(rf"^{re.escape(cluster_name)}-({STAMP_RE}){re.escape(SUFFIX)}$")
    found: list[Backup] = []
    for path in folder.iterdir() if folder.is_dir() else ():
        match = pattern.match(path.name)
        if match is None or not path.is_file() or path.is_symlink():
            continue
        with contextlib.suppress(BackupVerifyError):
            recorded_sha256(path)
            found.append(Backup(path, match.group(1)))
    return sorted(found, key=lambda b: b.stamp)


def rotate(folder: Path, cluster_name: str, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` recorded backups (archive and record); return them."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    removed: list[Path] = []
    for old in recorded_backups(folder, cluster_name)[:-keep]:
        old.path.unlink()
        old.record.unlink()
        removed.append(old.path)
    return removed


def stale_partials(folder: Path, cluster_name: str) -> Iterator[Path]:
    """Half-fetched archives an interrupted `pikube backup` of this cluster left behind."""
    pattern = re.compile(rf"^\.{re.escape(cluster_name)}-{STAMP_RE}{re.escape(SUFFIX)}\.partial$")
    for path in folder.iterdir() if folder.is_dir() else ():
        if pattern.match(path.name) and path.is_file() and not path.is_symlink():
            yield path
