"""Sizes pikube shows use one unit system: binary (KiB, MiB, GiB), as its summaries do."""

from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

from pikube.cli.image import binary_speed, bytes_bar


def test_progress_bars_count_bytes_in_binary_units() -> None:
    bar = bytes_bar()
    task = bar.add_task("pi-w1 write", total=3 << 30)
    bar.update(task, completed=1 << 30)
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(bar.make_tasks_table(bar.tasks))
    text = out.getvalue()
    assert "1.0/3.0 GiB" in text  # rich's default would say 1.1/3.2 GB
    assert " GB" not in text and " MB" not in text


def test_throughput_is_in_mib_per_second() -> None:
    assert binary_speed(SimpleNamespace(finished_speed=None, speed=70 * (1 << 20))) == (
        "70.0 MiB/s"
    )
    assert binary_speed(SimpleNamespace(finished_speed=512.0, speed=None)) == "512 B/s"
    assert binary_speed(SimpleNamespace(finished_speed=None, speed=None)) == "?"
