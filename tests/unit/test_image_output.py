"""--output targets: one writer per file name, unique owner-only partial files, no clobbering."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pikube.errors import FlashRefused
from pikube.image.output import check_output_path, open_output


def test_a_locked_output_refuses_a_second_writer_until_closed(tmp_path: Path) -> None:
    final = tmp_path / "pi.img"
    first = open_output(final, 1 << 20, force=False)
    try:
        assert first.partial.parent == tmp_path and first.partial != final
        assert first.partial.stat().st_mode & 0o777 == 0o600
        assert first.partial.stat().st_size == 1 << 20
        with pytest.raises(FlashRefused, match="being written by another pikube flash"):
            open_output(final, 1 << 20, force=False)
    finally:
        first.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # partial and lock file removed
    second = open_output(final, 4096, force=False)
    second.handle.write(b"x")
    second.commit()
    second.close()
    assert final.read_bytes()[:1] == b"x"
    assert [p.name for p in tmp_path.iterdir()] == ["pi.img"]


def test_two_writers_of_different_outputs_get_different_partial_files(tmp_path: Path) -> None:
    a = open_output(tmp_path / "a.img", 4096, force=False)
    b = open_output(tmp_path / "b.img", 4096, force=False)
    try:
        assert a.partial != b.partial
    finally:
        a.close()
        b.close()


def test_a_hard_link_to_the_source_is_the_source(tmp_path: Path) -> None:
    source = tmp_path / "pi.img"
    source.write_bytes(b"image")
    link = tmp_path / "other-name.img"
    os.link(source, link)
    with pytest.raises(FlashRefused, match="is the source image"):
        check_output_path(link, source=source, force=True)
    check_output_path(tmp_path / "new.img", source=source, force=False)  # a new name is fine


def test_an_output_that_appeared_after_the_checks_is_not_replaced(tmp_path: Path) -> None:
    final = tmp_path / "pi.img"
    check_output_path(final, source=tmp_path / "src.img", force=False)
    final.write_bytes(b"someone else's")
    with pytest.raises(FlashRefused, match="already exists"):
        open_output(final, 4096, force=False)
    assert final.read_bytes() == b"someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["pi.img"]
