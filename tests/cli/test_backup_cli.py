"""`pikube backup` and `pikube restore` through click's CliRunner: the refusals that happen
before any node is contacted (recorded sha256, typed confirmation, bad options) and their
exit codes. The nodes are loopback addresses nobody answers on: a run that gets as far as
Ansible ends with exit 6 and leaves no archive behind."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pikube.backup import backup_name, partial_path, store
from pikube.cli.main import cli
from pikube.errors import EXIT_FAILURE, EXIT_UNREACHABLE, EXIT_USAGE, EXIT_VERIFY_FAILED
from tests.factories import loopback_cluster_data, write_cluster
from tests.factories import run_dirs as runs


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def cluster(tmp_path: Path, ssh_key: Path) -> Path:
    return write_cluster(tmp_path, loopback_cluster_data(tmp_path, ssh_key, 2))


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """A recorded backup as `pikube backup` leaves it."""
    folder = tmp_path / ".pikube" / "backups"
    folder.mkdir(parents=True)
    final = folder / backup_name("homelab", dt.datetime(2026, 12, 6, 22, 0, tzinfo=dt.UTC))
    partial_path(final).write_bytes(b"snapshot and pki")
    store(partial_path(final), final)
    return final


def test_backup_and_restore_are_in_the_command_table() -> None:
    listing = run("--help").stdout
    assert "  backup " in listing and "  restore " in listing


def test_restore_refuses_an_archive_that_does_not_match_its_record(
    cluster: Path, archive: Path
) -> None:
    archive.write_bytes(b"snapshot and pki, changed")
    result = run("restore", str(archive), "--yes", "--cluster", str(cluster))
    assert result.exit_code == EXIT_VERIFY_FAILED
    assert "does not match its recorded sha256" in result.stderr
    assert "nothing was restored" in result.stderr and "fix:" in result.stderr
    assert result.stdout == ""
    assert runs(cluster) == []  # refused before any node was contacted


def test_restore_refuses_an_archive_without_a_record(cluster: Path, archive: Path) -> None:
    Path(f"{archive}.sha256").unlink()
    result = run("restore", str(archive), "--yes", "--cluster", str(cluster))
    assert result.exit_code == EXIT_VERIFY_FAILED
    assert "has no recorded sha256" in result.stderr
    assert runs(cluster) == []


def test_restore_of_a_missing_file_says_where_backups_are(cluster: Path, tmp_path: Path) -> None:
    result = run("restore", str(tmp_path / "nope.tar.gz"), "--yes", "--cluster", str(cluster))
    assert result.exit_code == EXIT_FAILURE
    assert "no backup file" in result.stderr and "backups/" in result.stderr


def test_restore_refuses_without_a_terminal_or_yes(cluster: Path, archive: Path) -> None:
    result = run("restore", str(archive), "--cluster", str(cluster))
    assert result.exit_code == EXIT_USAGE
    assert "stdin is not a terminal" in result.stderr
    assert f"pikube restore {archive} --yes" in result.stderr
    assert runs(cluster) == []


def test_restore_asks_for_the_cluster_name_and_a_wrong_answer_changes_nothing(
    cluster: Path, archive: Path, tty: None
) -> None:
    result = run("restore", str(archive), "--cluster", str(cluster), input="prod\n")
    assert result.exit_code == EXIT_FAILURE
    assert f"restore cluster homelab to the backup {archive.name}" in result.stderr
    assert "Type the cluster name (homelab)" in result.stderr
    assert "not confirmed" in result.stderr and "nothing changed" in result.stderr
    assert runs(cluster) == []


def test_restore_confirmed_runs_the_restore_playbook(
    cluster: Path, archive: Path, tty: None
) -> None:
    result = run("restore", str(archive), "--cluster", str(cluster), input="homelab\n")
    assert result.exit_code == EXIT_UNREACHABLE, result.stderr  # loopback nodes, no sshd
    (run_dir,) = runs(cluster)
    assert "restore" in run_dir.name


def test_backup_that_cannot_reach_the_node_leaves_no_archive(cluster: Path) -> None:
    result = run("backup", "--cluster", str(cluster))
    assert result.exit_code == EXIT_UNREACHABLE, result.stderr
    folder = cluster.parent / ".pikube" / "backups"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert list(folder.iterdir()) == []  # no partial, no record


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--keep", "0"), "--keep"),
        (("--schedule", "weekly"), "--schedule"),
    ],
)
def test_backup_options_are_checked_before_anything_runs(
    cluster: Path, args: tuple[str, ...], message: str
) -> None:
    result = run("backup", *args, "--cluster", str(cluster))
    assert result.exit_code == EXIT_USAGE
    assert message in result.stderr
    assert runs(cluster) == []
