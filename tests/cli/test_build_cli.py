"""``pikube build`` through CliRunner: refusals before any card is asked for."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from pikube.cli.main import cli
from pikube.errors import EXIT_CONFIG, EXIT_USAGE
from tests.factories import base_cluster, write_cluster


@pytest.fixture
def cluster_file(tmp_path: Path, ssh_key: Path) -> Path:
    return write_cluster(tmp_path, base_cluster(ssh_key, nodes=3))


def test_reflash_of_an_unknown_node_is_a_usage_error(cluster_file: Path) -> None:
    result = CliRunner().invoke(cli, ["build", "-c", str(cluster_file), "--reflash", "pi-nope"])
    assert result.exit_code == EXIT_USAGE
    assert "no node 'pi-nope'" in result.stderr


def test_damaged_state_file_exits_3_before_any_card_is_asked_for(
    cluster_file: Path, tmp_path: Path
) -> None:
    state = tmp_path / ".pikube"
    state.mkdir(exist_ok=True)
    (state / "build.json").write_text("{not json")
    result = CliRunner().invoke(cli, ["build", "-c", str(cluster_file), "--yes"])
    assert result.exit_code == EXIT_CONFIG, result.stderr
    assert result.stderr.startswith("Error: cannot read the build state")
    assert "insert the card" not in result.stderr and "Traceback" not in result.stderr
    assert os.access(state / "build.json", os.R_OK)  # left as found
