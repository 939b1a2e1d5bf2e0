"""The writer: exact copies, sparse output, used cards, interrupted cards, read-back checks."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from pikube.errors import ImageVerifyError
from pikube.image.blockmap import StreamMap
from pikube.image.flash import image_chunks
from pikube.image.writer import (
    CHUNK,
    HEAD,
    WriteResult,
    finish_image,
    threaded_chunks,
    verify_image,
    write_image,
)
from tests.image_support import BuiltImage, fill


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_to(image: BuiltImage, target: Path, *, sparse: bool) -> None:
    size = image.layout.size
    with target.open("r+b", buffering=0) as handle:
        result = write_image(
            image_chunks(image.xz),
            handle,
            size=size,
            block_map=StreamMap(size),
            sparse_target=sparse,
        )
        verify_image(handle, result)
        finish_image(handle, result)
        verify_image(handle, result, head=True)


def test_sparse_file_output_is_byte_identical_and_sparse(
    pi_image: BuiltImage, tmp_path: Path
) -> None:
    out = tmp_path / "out.img"
    with out.open("wb") as handle:
        handle.truncate(pi_image.layout.size)
    write_to(pi_image, out, sparse=True)
    assert sha(out) == sha(pi_image.raw)
    allocated = out.stat().st_blocks * 512
    assert allocated < pi_image.layout.size // 4, "unmapped zeros should stay holes"


def test_used_card_gets_every_mapped_byte_and_clean_file_systems(
    pi_image: BuiltImage,
    tmp_path: Path,
) -> None:
    """A card full of old data (0xA5): skipped ranges keep it, yet fsck finds nothing wrong."""
    card = tmp_path / "card.img"
    fill(card, pi_image.layout.size)
    write_to(pi_image, card, sparse=False)
    layout = pi_image.layout
    fsck_ext = subprocess.run(
        ["e2fsck", "-fn", f"{card}?offset={layout.root_offset}"], capture_output=True, text=True
    )
    assert fsck_ext.returncode == 0, fsck_ext.stdout + fsck_ext.stderr
    boot = tmp_path / "boot.fat"
    with card.open("rb") as src, boot.open("wb") as dst:
        src.seek(layout.boot_offset)
        dst.write(src.read(layout.boot_size))
    fsck_fat = subprocess.run(["fsck.vfat", "-n", str(boot)], capture_output=True, text=True)
    assert fsck_fat.returncode == 0, fsck_fat.stdout

    # Files are intact: compare the ext4 tree via debugfs listings of both images.
    def listing(path: Path) -> str:
        return subprocess.run(
            ["debugfs", "-R", "ls -l /usr/lib0", f"{path}?offset={layout.root_offset}"],
            capture_output=True,
            text=True,
        ).stdout

    assert listing(card) == listing(pi_image.raw) and "bin0.so" in listing(card)
    raw = pi_image.raw.read_bytes()
    got = card.read_bytes()
    assert got[: 1 << 20] == raw[: 1 << 20]  # first MiB always written
    assert got != raw  # but unmapped space kept the old bytes: nothing needless was written


def test_interrupted_write_leaves_no_partition_table(pi_image: BuiltImage, tmp_path: Path) -> None:
    card = tmp_path / "card.img"
    with card.open("wb") as handle:  # a card that used to hold a bootable image
        handle.write(pi_image.raw.read_bytes()[: 64 << 20])

    def interrupted() -> Iterator[bytes]:
        for i, chunk in enumerate(image_chunks(pi_image.xz)):
            if i == 10:
                raise KeyboardInterrupt
            yield chunk

    with card.open("r+b", buffering=0) as handle, pytest.raises(KeyboardInterrupt):
        write_image(
            interrupted(),
            handle,
            size=pi_image.layout.size,
            block_map=StreamMap(pi_image.layout.size),
        )
    assert card.read_bytes()[:HEAD] == bytes(HEAD)
    table = subprocess.run(["sfdisk", "--dump", str(card)], capture_output=True, text=True)
    assert table.returncode != 0, "an interrupted card must not have a partition table"


@contextlib.contextmanager
def written_used_card(image: BuiltImage, card: Path) -> Iterator[tuple[BinaryIO, WriteResult]]:
    """A used card (every byte 0xA5) with ``image`` written to it, not finished yet."""
    fill(card, image.layout.size)
    size = image.layout.size
    with card.open("r+b", buffering=0) as handle:
        yield (
            handle,
            write_image(image_chunks(image.xz), handle, size=size, block_map=StreamMap(size)),
        )


def test_partition_table_is_written_last(pi_image: BuiltImage, tmp_path: Path) -> None:
    card = tmp_path / "card.img"
    with written_used_card(pi_image, card) as (handle, result):
        assert card.read_bytes()[:HEAD] == bytes(HEAD)  # everything else is written already
        finish_image(handle, result)
    assert card.read_bytes()[:HEAD] == pi_image.raw.read_bytes()[:HEAD]


def test_read_back_finds_corruption_after_writing(pi_image: BuiltImage, tmp_path: Path) -> None:
    card = tmp_path / "card.img"
    with written_used_card(pi_image, card) as (handle, result):
        offset, length, _ = result.runs[len(result.runs) // 2]
        with card.open("r+b") as other:  # a bit flips on the medium
            other.seek(offset + length // 2)
            byte = other.read(1)
            other.seek(offset + length // 2)
            other.write(bytes([byte[0] ^ 0x01]))
        with pytest.raises(ImageVerifyError, match=f"bytes {offset}-"):
            verify_image(handle, result)


def test_truncated_stream_is_refused_before_the_partition_table(tmp_path: Path) -> None:
    card = tmp_path / "card.img"
    card.write_bytes(b"\xff" * (8 << 20))
    with (
        card.open("r+b", buffering=0) as handle,
        pytest.raises(ImageVerifyError, match="ended after"),
    ):
        write_image(iter([b"\x01" * CHUNK]), handle, size=2 * CHUNK)
    assert card.read_bytes()[:HEAD] == bytes(HEAD)


def test_reader_thread_errors_reach_the_writer() -> None:
    def broken() -> Iterator[bytes]:
        yield b"x" * 10
        raise ImageVerifyError("bad data")

    got = []
    with pytest.raises(ImageVerifyError, match="bad data"):
        for chunk in threaded_chunks(broken()):
            got.append(chunk)
    assert got == [b"x" * 10]


def test_reader_thread_stops_when_the_writer_stops() -> None:
    produced = []

    def endless() -> Iterator[bytes]:
        i = 0
        while True:
            produced.append(i)
            yield bytes(16)
            i += 1

    stream = threaded_chunks(endless(), depth=2)
    next(stream)
    stream.close()  # the writer gives up (error, Ctrl-C)
    count = len(produced)
    assert count < 10
    assert len(produced) == count  # the reader thread is gone
