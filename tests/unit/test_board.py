"""The live board's state and rendering, from event sequences like the callback emits."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from pikube.runner.board import (
    Board,
    board_rows,
    board_title,
    format_elapsed,
    notable_line,
    render_board,
)
from pikube.runner.events import build_result
from pikube.runner.redact import redact_event

TOKEN = "abcdef.0123456789abcdef"
CERT_KEY = "9f" * 32


def ev(kind: str, t: float, **fields: Any) -> dict[str, Any]:
    return {"pikube_event": kind, "time": t, **fields}


def result(host: str, status: str, t: float, task: str, play: str, **fields: Any) -> dict[str, Any]:
    return ev("runner", t, host=host, status=status, task=task, play=play, **fields)


# A two-play run: validate on both nodes, then prepare; pi-w1 fails in prepare.
RUN = [
    ev("playbook_start", 100.0, playbook="site.yml"),
    ev("play_start", 100.1, play="Validate the inventory"),
    ev("task_start", 100.2, task="Check the layout", play="Validate the inventory"),
    result("pi-cp1", "ok", 100.3, "Check the layout", "Validate the inventory"),
    result("pi-w1", "ok", 100.3, "Check the layout", "Validate the inventory"),
    ev("play_start", 101.0, play="Prepare the nodes"),
    ev("task_start", 101.1, task="Install containerd", play="Prepare the nodes"),
    result("pi-cp1", "ok", 104.0, "Install containerd", "Prepare the nodes", changed=True),
    result("pi-w1", "failed", 105.0, "Install containerd", "Prepare the nodes", msg="no space"),
    ev("task_start", 106.0, task="Load kernel modules", play="Prepare the nodes"),
]
STATS = ev(
    "stats",
    130.0,
    hosts={
        "pi-cp1": {"ok": 3, "changed": 2, "failures": 0, "unreachable": 0, "skipped": 1},
        "pi-w1": {"ok": 1, "changed": 0, "failures": 1, "unreachable": 0, "skipped": 0},
    },
)


def board_of(events: list[dict[str, Any]]) -> Board:
    board = Board()
    for event in events:
        board.apply(event)
    return board


def text_of(board: Board, now: float) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(render_board(board, now))
    return out.getvalue()


def test_each_node_shows_its_phase_current_task_counts_and_elapsed() -> None:
    board = board_of(RUN)
    rows = {row[0]: row for row in board_rows(board, now=110.0)}
    # pi-cp1 is still in "Prepare the nodes" and on the task that started after its result.
    assert rows["pi-cp1"] == (
        "pi-cp1",
        "running",
        "Prepare the nodes",
        "Load kernel modules",
        "2",
        "1",
        "0",
        "0",
        "10s",
    )
    # pi-w1 failed: it keeps the failed task, its clock stopped when it failed.
    assert rows["pi-w1"][1:4] == ("failed", "Prepare the nodes", "Install containerd")
    assert rows["pi-w1"][4:] == ("1", "0", "1", "0", "5s")
    assert board_title(board) == "Prepare the nodes: Load kernel modules"


def test_a_node_keeps_its_last_phase_until_it_reports_in_the_next_play() -> None:
    board = board_of([*RUN[:5], RUN[5], RUN[6]])
    rows = {row[0]: row for row in board_rows(board, now=101.2)}
    # The new play started, but nothing says yet that pi-w1 is in it.
    assert rows["pi-w1"][1:4] == ("running", "Validate the inventory", "Check the layout")


def test_final_stats_replace_the_counts_and_stop_every_clock() -> None:
    board = board_of([*RUN, STATS])
    rows = {row[0]: row for row in board_rows(board, now=999.0)}
    assert rows["pi-cp1"][4:] == ("3", "2", "0", "0", "30s")
    assert rows["pi-cp1"][1:4] == ("done", "Prepare the nodes", "Load kernel modules")
    assert board_title(board) == "finished"
    # The board's last frame agrees with the table printed after the run (one source).
    final = build_result([*RUN, STATS], 2)
    for host, row in rows.items():
        stats = final.hosts[host]
        assert row[4:8] == tuple(str(v) for v in (stats.ok, stats.changed, stats.failed, 0))


def test_unreachable_node_is_marked_and_counted() -> None:
    board = board_of(
        [
            ev("play_start", 1.0, play="Prepare the nodes"),
            ev("task_start", 1.0, task="Gathering Facts", play="Prepare the nodes"),
            result("pi-w2", "unreachable", 3.0, "Gathering Facts", "Prepare the nodes"),
        ]
    )
    (row,) = board_rows(board, now=50.0)
    assert row == (
        "pi-w2",
        "unreachable",
        "Prepare the nodes",
        "Gathering Facts",
        "0",
        "0",
        "0",
        "1",
        "2s",
    )


def test_ignored_failures_and_item_failures_do_not_stop_a_node() -> None:
    board = board_of(
        [
            ev("play_start", 1.0, play="P"),
            result("a", "item_failed", 2.0, "Loop", "P"),
            result("a", "failed", 2.0, "Probe", "P", ignored=True),
        ]
    )
    (row,) = board_rows(board, now=9.0)
    assert row[1:4] == ("running", "P", "Probe") and row[4:] == ("0", "0", "0", "0", "8s")


def test_rendered_board_is_a_table_with_a_row_per_node() -> None:
    text = text_of(board_of(RUN), now=110.0)
    lines = text.splitlines()
    assert lines[0].strip() == "Prepare the nodes: Load kernel modules"
    header = next(line for line in lines if "HOST" in line)
    for column in ("STATE", "PHASE", "TASK", "OK", "CHANGED", "FAILED", "UNREACHABLE", "ELAPSED"):
        assert column in header
    (cp,) = [line for line in lines if "pi-cp1" in line]
    assert "Prepare the nodes" in cp and "Load kernel modules" in cp and "10s" in cp


def test_board_before_any_result_says_it_is_waiting() -> None:
    assert "waiting for the first result" in text_of(Board(), now=0.0)


def test_nothing_shaped_like_a_secret_reaches_the_board() -> None:
    events = [
        ev("play_start", 1.0, play=f"Join with {TOKEN}"),
        ev("task_start", 1.0, task=f"Use certificate-key {CERT_KEY}", play="x"),
        result("pi-w1", "failed", 2.0, f"join {TOKEN}", f"Join with {TOKEN}", msg=TOKEN),
        ev("task_start", 3.0, task=f"--token {TOKEN}", play="x"),
    ]
    board = board_of(events)
    text = text_of(board, now=5.0) + board_title(board)
    assert TOKEN not in text and CERT_KEY not in text
    assert "<redacted>" in text
    line = notable_line(events[2]) or ""
    assert "FAILED pi-w1" in line and TOKEN not in line


def test_redact_event_masks_every_string_inside_an_event() -> None:
    event = {"pikube_event": "runner", "msg": f"x {TOKEN}", "results": [{"stdout": TOKEN}]}
    cleaned = redact_event(event)
    assert TOKEN not in repr(cleaned)
    assert cleaned["pikube_event"] == "runner" and cleaned["msg"] == "x <redacted>"


def test_only_what_the_board_cannot_show_is_printed_above_it() -> None:
    play, task = RUN[1], RUN[2]
    assert notable_line(play) is None and notable_line(task) is None
    assert notable_line(RUN[7]) is None  # a change: the CHANGED column shows it
    assert notable_line(RUN[8]) == "    FAILED pi-w1: no space"
    debug = result("a", "ok", 1.0, "Show", "P", msg="kubeconfig written")
    assert notable_line(debug) == "    ok      a: kubeconfig written"
    retry = ev("retry", 1.0, host="a", attempts=2, retries=5)
    assert notable_line(retry) == "    retry   a (attempt 2 of 5)"


def test_elapsed_is_short() -> None:
    assert [format_elapsed(s) for s in (0, 7.9, 65, 3725, -3)] == [
        "0s",
        "7s",
        "1m05s",
        "1h02m",
        "0s",
    ]
