"""Local backups: names, sha256 records, the refusal of an archive that does not match,
and --keep rotation that only ever deletes what pikube recorded."""

from __future__ import annotations

import datetime as dt
import hashlib
import stat
from pathlib import Path

import pytest

from pikube.backup import (
    BackupVerifyError,
    backup_name,
    backups_dir,
    partial_path,
    recorded_backups,
    rotate,
    stale_partials,
    store,
    verify,
)
from pikube.errors import EXIT_VERIFY_FAILED, PikubeError

T0 = dt.datetime(2026, 12, 6, 22, 15, 0, tzinfo=dt.UTC)


def take(folder: Path, minutes: int, content: bytes = b"archive") -> Path:
    """What `pikube backup` leaves: a fetched partial, stored under its final name."""
    final = folder / backup_name("homelab", T0 + dt.timedelta(minutes=minutes))
    partial = partial_path(final)
    partial.write_bytes(content + str(minutes).encode())
    store(partial, final)
    return final


def test_backups_folder_is_0700_even_when_it_existed_looser(tmp_path: Path) -> None:
    (tmp_path / "backups").mkdir(mode=0o755)
    folder = backups_dir(tmp_path)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_name_is_the_cluster_and_the_utc_time() -> None:
    local = T0.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert backup_name("homelab", local) == "homelab-20261206T221500Z.tar.gz"


def test_store_makes_the_archive_0600_and_records_its_sha256(tmp_path: Path) -> None:
    final = take(tmp_path, 0)
    record = Path(f"{final}.sha256")
    assert stat.S_IMODE(final.stat().st_mode) == 0o600
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    digest = hashlib.sha256(final.read_bytes()).hexdigest()
    assert record.read_text() == f"{digest}  {final.name}\n"  # sha256sum -c format
    assert not partial_path(final).exists()
    assert verify(final) == digest


def test_store_never_overwrites_an_existing_backup(tmp_path: Path) -> None:
    final = take(tmp_path, 0)
    before = final.read_bytes()
    partial = partial_path(final)
    partial.write_bytes(b"other")
    with pytest.raises(PikubeError, match="already exists"):
        store(partial, final)
    assert final.read_bytes() == before


def test_a_changed_archive_is_refused_with_exit_5(tmp_path: Path) -> None:
    final = take(tmp_path, 0)
    final.write_bytes(final.read_bytes() + b"x")
    with pytest.raises(BackupVerifyError, match="does not match its recorded sha256") as err:
        verify(final)
    assert err.value.exit_code == EXIT_VERIFY_FAILED


@pytest.mark.parametrize(
    "record",
    [None, "", "0" * 64 + "  other.tar.gz\n", "nothex  homelab-20261206T221500Z.tar.gz\n"],
)
def test_an_archive_without_a_record_naming_it_is_refused(
    tmp_path: Path, record: str | None
) -> None:
    final = take(tmp_path, 0)
    Path(f"{final}.sha256").unlink()
    if record is not None:
        Path(f"{final}.sha256").write_text(record)
    with pytest.raises(BackupVerifyError) as err:
        verify(final)
    assert err.value.exit_code == EXIT_VERIFY_FAILED
    assert err.value.fix and ".sha256" in err.value.fix


def test_rotation_keeps_the_newest_n_recorded_backups(tmp_path: Path) -> None:
    taken = [take(tmp_path, m) for m in (0, 1, 2, 3)]
    removed = rotate(tmp_path, "homelab", 2)
    assert removed == taken[:2]
    assert [b.path for b in recorded_backups(tmp_path, "homelab")] == taken[2:]
    assert not Path(f"{taken[0]}.sha256").exists()


def test_rotation_never_deletes_what_pikube_did_not_record(tmp_path: Path) -> None:
    taken = [take(tmp_path, m) for m in (5, 6)]
    unrecorded = tmp_path / backup_name("homelab", T0)  # the oldest name, but no record
    unrecorded.write_bytes(b"mine")
    other_cluster = tmp_path / backup_name("lab", T0)
    other_cluster.write_bytes(b"theirs")
    Path(f"{other_cluster}.sha256").write_text(
        hashlib.sha256(b"theirs").hexdigest() + f"  {other_cluster.name}\n"
    )
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    partial = partial_path(tmp_path / backup_name("homelab", T0))
    partial.write_bytes(b"half")
    assert rotate(tmp_path, "homelab", 1) == [taken[0]]
    for kept in (taken[1], unrecorded, other_cluster, notes, partial):
        assert kept.exists(), kept


def test_stale_partials_are_only_this_clusters_half_fetched_archives(tmp_path: Path) -> None:
    mine = partial_path(tmp_path / backup_name("homelab", T0))
    theirs = partial_path(tmp_path / backup_name("lab", T0))
    for path in (mine, theirs, tmp_path / ".homelab.partial"):
        path.write_bytes(b"half")
    assert list(stale_partials(tmp_path, "homelab")) == [mine]


def test_keep_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        rotate(tmp_path, "homelab", 0)
