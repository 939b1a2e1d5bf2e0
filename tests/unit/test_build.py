"""`pikube build`'s bookkeeping: which cards are still needed, the state file a rerun resumes
from, the stages a playbook's events move nodes to, and the board that shows them."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from pikube.build import (
    CARD_WRITTEN,
    JOINED,
    PREPARED,
    READY,
    SSH_UP,
    STAGES,
    BuildPlan,
    BuildState,
    BuildSteps,
    PlayTracker,
    nodes_needing_cards,
    run_build,
    stage_recorder,
)
from pikube.config import load_cluster
from pikube.errors import ConfigError
from pikube.image.cards import FlashOptions
from pikube.probe.boot import BootEvent
from pikube.runner.board import StageRow, stage_cells
from tests.factories import base_cluster, write_cluster


@pytest.fixture
def cluster_file(tmp_path: Path, ssh_key: Path) -> Path:
    return write_cluster(tmp_path, base_cluster(ssh_key, nodes=3))


def test_a_card_written_is_not_asked_for_again_even_by_a_new_run(
    cluster_file: Path, tmp_path: Path
) -> None:
    cluster = load_cluster(cluster_file)
    state = BuildState.load(tmp_path / "state")
    assert [n.name for n in nodes_needing_cards(cluster, state, [])] == ["pi-cp1", "pi-w1", "pi-w2"]
    state.reach("pi-w1", CARD_WRITTEN, card="/dev/sdb (sdb): 29.7 GiB")
    again = BuildState.load(tmp_path / "state")  # the next run reads what this one wrote
    assert [n.name for n in nodes_needing_cards(cluster, again, [])] == ["pi-cp1", "pi-w2"]
    assert [n.name for n in nodes_needing_cards(cluster, again, ["pi-cp1"])] == ["pi-w2"]
    again.forget_card("pi-w1")  # --reflash pi-w1
    assert "pi-w1" in [
        n.name for n in nodes_needing_cards(cluster, BuildState.load(tmp_path / "state"), [])
    ]


def test_state_is_replaced_whole_and_a_damaged_one_is_a_located_error(tmp_path: Path) -> None:
    state = BuildState.load(tmp_path)
    state.reach("pi-cp1", CARD_WRITTEN, when=100.0)
    state.reach("pi-cp1", SSH_UP, when=160.0)
    assert BuildState.load(tmp_path).latest("pi-cp1") == SSH_UP
    assert [p.name for p in tmp_path.iterdir()] == ["build.json"]  # no temporary file left
    (tmp_path / "build.json").write_text(json.dumps({"schema": 1, "nodes": {"x": {"stages": 3}}}))
    with pytest.raises(ConfigError) as caught:
        BuildState.load(tmp_path)
    assert "build.json" in caught.value.render() and "remove" in caught.value.render()


def event(kind: str, **fields: object) -> dict[str, object]:
    return {"pikube_event": kind, **fields}


def test_hosts_reach_a_plays_stage_only_when_they_got_through_it() -> None:
    reached: list[tuple[str, str]] = []
    tracker = PlayTracker(lambda host, stage: reached.append((host, stage)))
    for item in (
        event("play_start", play="Validate the inventory"),
        event("runner", host="localhost", status="ok"),
        event("play_start", play="Prepare the nodes"),
        event("runner", host="pi-cp1", status="changed"),
        event("runner", host="pi-w1", status="ok"),
        event("runner", host="pi-w2", status="unreachable"),
        event("play_start", play="Bootstrap the control plane"),
        event("runner", host="pi-cp1", status="ok"),
        event("play_start", play="Join the workers"),
        event("runner", host="pi-w1", status="failed"),
        event("stats"),
    ):
        tracker.apply(item)
    assert reached == [("pi-cp1", PREPARED), ("pi-w1", PREPARED), ("pi-cp1", JOINED)]


def test_board_row_shows_the_furthest_stage_and_when_each_was_reached() -> None:
    row = StageRow(address="192.168.1.101", reached={CARD_WRITTEN: 1005.0, SSH_UP: 1130.0})
    cells = stage_cells(STAGES, "pi-cp1", row, started=1000.0, now=1200.0)
    assert cells[:3] == ("pi-cp1", "192.168.1.101", SSH_UP)
    assert cells[3:9] == ("5s", "-", "2m10s", "-", "-", "-")
    waiting = stage_cells(STAGES, "pi-w1", StageRow(), started=1000.0, now=1200.0)
    assert waiting[2] == "no card" and READY not in waiting


class Shown:
    def __init__(self) -> None:
        self.stages: list[tuple[str, str]] = []

    def stage(self, node: str, stage: str, note: str = "") -> None:
        self.stages.append((node, stage))

    def say(self, line: str) -> None:
        pass

    def write_progress(self, target: object, phase: str, done: int, total: int) -> None:
        pass


def test_stages_from_the_playbook_are_recorded_for_the_next_run(
    cluster_file: Path, tmp_path: Path
) -> None:
    cluster = load_cluster(cluster_file)
    state = BuildState.load(tmp_path / "state")
    shown = Shown()
    tracker = PlayTracker(stage_recorder(cluster, state, shown))
    for item in (
        event("play_start", play="Prepare the nodes"),
        event("runner", host="pi-cp1", status="ok"),
        event("runner", host="localhost", status="ok"),  # not a node: ignored
        event("stats"),
    ):
        tracker.apply(item)
    assert shown.stages == [("pi-cp1", PREPARED)]
    assert BuildState.load(tmp_path / "state").latest("pi-cp1") == PREPARED


@pytest.mark.parametrize("until", [SSH_UP, PREPARED])
def test_build_until_stops_at_that_stage_before_kubernetes(
    cluster_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, until: str
) -> None:
    """`--until booted` stops once every Pi answered on SSH, before doctor and the playbook;
    `--until prepared` runs the playbook for node preparation only and stops before asking
    Kubernetes for Ready nodes. The Pis' SSH answers are given (no network in unit tests)."""
    cluster = load_cluster(cluster_file)
    state = BuildState.load(tmp_path / "state")
    for node in cluster.nodes:
        state.reach(node.name, CARD_WRITTEN)

    def all_up(targets: dict[str, object], timeout: float) -> list[BootEvent]:
        return [BootEvent(name, "up", 1.0) for name in targets]

    def never(*args: object) -> list[str]:
        raise AssertionError("the build asked Kubernetes for Ready nodes")

    monkeypatch.setattr("pikube.probe.boot.wait_for_ssh", all_up)
    monkeypatch.setattr("pikube.build.record_ready", never)
    provisioned: list[tuple[str, bool]] = []
    preflights: list[str] = []
    shown = Shown()

    def provision(limit: str, tracker: PlayTracker, view: object, prepare_only: bool) -> None:
        provisioned.append((limit, prepare_only))
        for item in (
            event("play_start", play="Prepare the nodes"),
            *(event("runner", host=n.name, status="ok") for n in cluster.nodes),
            event("stats"),
        ):
            tracker.apply(item)

    def no_image() -> object:
        raise AssertionError("every card is written: no image needed")

    steps = BuildSteps(
        resolve_image=no_image,  # type: ignore[arg-type]
        announce=lambda line: None,
        confirm=lambda: None,
        open_view=lambda: contextlib.nullcontext(shown),
        preflight=preflights.append,
        provision=provision,
    )
    run_build(cluster, state, BuildPlan(options=FlashOptions(), until=until), steps)
    again = BuildState.load(tmp_path / "state")
    if until == SSH_UP:
        assert provisioned == [] and preflights == []
        assert {again.latest(n.name) for n in cluster.nodes} == {SSH_UP}
    else:
        assert provisioned == [("pi-cp1,pi-w1,pi-w2", True)]
        assert preflights == ["pi-cp1,pi-w1,pi-w2"]
        assert {again.latest(n.name) for n in cluster.nodes} == {PREPARED}
