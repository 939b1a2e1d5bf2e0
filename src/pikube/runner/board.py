"""The live per-node board: a state built from the run's events, and its pure rendering.

The board reads the same events the runner records in ``events.jsonl`` (one source): a
``play_start`` names the phase, a ``task_start`` the task every node still in that phase is
on, each ``runner`` result counts for its host (as the final table counts) and the ``stats``
event replaces the counts with Ansible's own. Only host, play and task names are shown, and
those pass through :func:`~pikube.runner.redact.redact` again; result messages never do.

Rendering is a function of the state and the current time, so a test can draw any frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pikube.runner.events import (
    EVENT_MARKER,
    HostStats,
    count_result,
    describe_event,
    stats_from_event,
    stops_host,
)
from pikube.runner.redact import redact

if TYPE_CHECKING:
    from rich.table import Table

COLUMNS = (
    "HOST",
    "STATE",
    "PHASE",
    "TASK",
    "OK",
    "CHANGED",
    "FAILED",
    "UNREACHABLE",
    "ELAPSED",
)
COUNTS = ("ok", "changed", "failed", "unreachable")


@dataclass
class NodeRow:
    """One node's line: where it is in the run, its counts so far, when it stopped."""

    phase: str = ""
    task: str = ""
    stats: HostStats = field(default_factory=HostStats)
    stopped_at: float | None = None  # failed, unreachable, or the run ended

    @property
    def state(self) -> str:
        if self.stats.unreachable:
            return "unreachable"
        if self.stats.failed:
            return "failed"
        return "done" if self.stopped_at is not None else "running"


@dataclass
class Board:
    """What the board shows, updated one event at a time with :meth:`apply`."""

    started: float | None = None
    play: str = ""
    task: str = ""
    nodes: dict[str, NodeRow] = field(default_factory=dict)
    finished: bool = False

    def apply(self, event: Mapping[str, Any]) -> None:
        kind = event.get(EVENT_MARKER)
        when = _time(event)
        if self.started is None and when is not None:
            self.started = when
        if kind == "play_start":
            self.play, self.task = str(event.get("play", "")), ""
        elif kind == "task_start":
            self.task = str(event.get("task", ""))
            for row in self.nodes.values():
                if row.stopped_at is None and row.phase == self.play:
                    row.task = self.task
        elif kind == "runner":
            self._result(event, when)
        elif kind == "stats":
            self.finished = True
            for host, stats in stats_from_event(event).items():
                self.nodes.setdefault(host, NodeRow(phase=self.play)).stats = stats
            for row in self.nodes.values():
                if row.stopped_at is None:
                    row.stopped_at = when if when is not None else self.started

    def _result(self, event: Mapping[str, Any], when: float | None) -> None:
        host = str(event.get("host", ""))
        if not host or event.get("status") == "item_failed":
            return  # an item's failure is followed by its task's own failed result
        row = self.nodes.setdefault(host, NodeRow())
        row.phase = str(event.get("play", self.play))
        row.task = str(event.get("task", self.task))
        count_result(row.stats, event)
        if stops_host(event) and row.stopped_at is None:
            row.stopped_at = when if when is not None else self.started


def _time(event: Mapping[str, Any]) -> float | None:
    value = event.get("time")
    return float(value) if isinstance(value, int | float) else None


def format_elapsed(seconds: float) -> str:
    """``7s``, ``2m05s``, ``1h02m``: short enough for a narrow column."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def row_cells(board: Board, host: str, row: NodeRow, now: float) -> tuple[str, ...]:
    """The cells of :data:`COLUMNS` for one node, all redacted."""
    end = row.stopped_at if row.stopped_at is not None else now
    elapsed = format_elapsed(end - board.started) if board.started is not None else "-"
    counts = (str(getattr(row.stats, c)) for c in COUNTS)
    return (redact(host), row.state, redact(row.phase), redact(row.task), *counts, elapsed)


def board_rows(board: Board, now: float) -> list[tuple[str, ...]]:
    """One row per node, sorted by name."""
    return [row_cells(board, host, row, now) for host, row in sorted(board.nodes.items())]


def board_title(board: Board) -> str:
    if board.finished:
        return "finished"
    if not board.play:
        return "starting ansible-playbook"
    return redact(f"{board.play}: {board.task}" if board.task else board.play)


def render_board(board: Board, now: float) -> Table:
    """The board as a rich table (drawn by ``rich.live.Live`` on a terminal)."""
    from rich.table import Table

    table = Table(title=board_title(board), title_justify="left", expand=False)
    for name in COLUMNS:
        numeric = name in {"OK", "CHANGED", "FAILED", "UNREACHABLE", "ELAPSED"}
        table.add_column(
            name,
            justify="right" if numeric else "left",
            no_wrap=True,
            overflow="ellipsis",
            max_width=40 if name in ("PHASE", "TASK") else None,
        )
    styles = {"failed": "red", "unreachable": "yellow", "done": "green", "running": ""}
    for host, row in sorted(board.nodes.items()):
        table.add_row(*row_cells(board, host, row, now), style=styles[row.state])
    if not board.nodes:
        table.add_row("-", "waiting for the first result", *([""] * (len(COLUMNS) - 2)))
    return table


def notable_line(event: Mapping[str, Any]) -> str | None:
    """The progress line to print above the board: failures, retries, diffs, messages.

    Play and task starts and per-host ok/changed results are what the board itself shows.
    """
    if event.get(EVENT_MARKER) in ("play_start", "task_start"):
        return None
    if event.get(EVENT_MARKER) == "runner" and event.get("status") == "ok" and not event.get("msg"):
        return None
    line = describe_event(event)
    return redact(line) if line is not None else None


# --- the build board: one row per node, the time each stage was reached --------------------


@dataclass
class StageRow:
    """One node on a board of stages (``pikube build``): stage -> time reached, and a note."""

    address: str = ""
    reached: dict[str, float] = field(default_factory=dict)
    note: str = ""
    failed: bool = False


def stage_cells(
    stages: tuple[str, ...], node: str, row: StageRow, started: float, now: float
) -> tuple[str, ...]:
    """NODE, ADDRESS, STAGE, a time per stage (since ``started``), NOTE; all redacted."""
    current = next((s for s in reversed(stages) if s in row.reached), "no card")
    times = (format_elapsed(row.reached[s] - started) if s in row.reached else "-" for s in stages)
    return (redact(node), row.address, current, *times, redact(row.note))


def render_stage_board(
    title: str,
    stages: tuple[str, ...],
    headers: tuple[str, ...],
    rows: Mapping[str, StageRow],
    started: float,
    now: float,
) -> Table:
    """The build board as a rich table (``headers``: one short title per stage, so the
    board fits 80 columns); the elapsed time of the whole build in the title."""
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"{title} ({format_elapsed(now - started)})",
        title_justify="left",
        expand=False,
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    cells = [stage_cells(stages, node, row, started, now) for node, row in rows.items()]
    for index, name in enumerate(("NODE", "ADDRESS", "STAGE", *headers)):
        widest = max([len(name), *(len(c[index]) for c in cells)])
        table.add_column(name, justify="right" if index > 2 else "left", min_width=widest)
    table.add_column("NOTE", no_wrap=True, overflow="ellipsis", max_width=60)
    for row, row_cells_ in zip(rows.values(), cells, strict=True):
        style = "red" if row.failed else ("green" if stages[-1] in row.reached else "")
        table.add_row(*row_cells_, style=style)
    return table
