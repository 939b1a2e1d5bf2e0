"""Progress of a playbook run: the live per-node board on a terminal, plain lines otherwise."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pikube.cli.common import info

if TYPE_CHECKING:
    from rich.console import Console

EventHandler = Callable[[dict[str, Any]], None]
OutputHandler = Callable[[str], None]
REFRESH_PER_SECOND = 4  # the elapsed column moves by seconds; 4 frames/s is smooth enough


def show_event(event: dict[str, Any]) -> None:
    """The plain progress line of one event (stderr), as without a terminal."""
    from pikube.runner import describe_event

    line = describe_event(event)
    if line is not None:
        info(line)


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def wants_board(console: Console) -> bool:
    """A board needs a terminal that can redraw (not a pipe, a file or TERM=dumb)."""
    return console.is_terminal and not console.is_dumb_terminal


@contextmanager
def run_progress(console: Console | None = None) -> Iterator[tuple[EventHandler, OutputHandler]]:
    """``(on_event, on_output)`` for ``run_playbook``: the board on a terminal, else lines.

    The board is redrawn by rich's refresh thread while events arrive on this one; a lock
    keeps the state whole for each frame. Failures, retries, diffs and other output print
    above the board; the final frame stays on screen.
    """
    console = console or stderr_console()
    if not wants_board(console):
        yield show_event, info
        return
    from rich.live import Live

    from pikube.runner.board import Board, notable_line, render_board

    board = Board()
    lock = threading.Lock()

    def frame() -> Any:
        with lock:
            return render_board(board, time.time())

    with Live(
        console=console,
        get_renderable=frame,
        refresh_per_second=REFRESH_PER_SECOND,
        redirect_stdout=False,  # stdout carries data (--json), never the board
        redirect_stderr=False,
    ) as live:

        def on_event(event: dict[str, Any]) -> None:
            with lock:
                board.apply(event)
            line = notable_line(event)
            if line is not None:
                live.console.print(line, markup=False, highlight=False)

        def on_output(text: str) -> None:
            live.console.print(text, markup=False, highlight=False)

        yield on_event, on_output
