"""Fixtures the CLI test modules share."""

from __future__ import annotations

import pytest

import pikube.cli.day2 as day2


@pytest.fixture
def tty(monkeypatch: pytest.MonkeyPatch) -> None:
    """stdin counts as a terminal, so day-2 commands ask for their typed confirmation."""
    monkeypatch.setattr(day2, "stdin_is_interactive", lambda: True)
