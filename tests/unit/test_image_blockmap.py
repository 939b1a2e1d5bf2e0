"""Block maps: computed from MBR + FAT + ext4 metadata, or read from bmaptool's .bmap."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pikube.errors import EXIT_CONFIG, ConfigError, ImageVerifyError
from pikube.image.blockmap import (
    ALWAYS_MAPPED,
    BmapMap,
    StreamMap,
    _bits_clear,
    bmap_path_for,
    parse_bmap,
)
from pikube.image.writer import CHUNK, SEGMENT
from pikube.image.xz import iter_raw
from tests.image_support import BuiltImage


def streamed(raw: Path) -> StreamMap:
    smap = StreamMap(raw.stat().st_size)
    offset = 0
    with raw.open("rb") as handle:
        for chunk in iter_raw(handle, CHUNK):
            smap.feed(offset, chunk)
            offset += len(chunk)
    return smap


def dumpe2fs_ranges(raw: Path, offset: int, size: int) -> tuple[int, list[tuple[int, int]]]:
    """(block size, free block ranges) as e2fsprogs reports them.

    The partition is copied out first: e2fsprogs 1.47.2 (trixie) no longer opens
    ``FILE?offset=N``.
    """
    part = raw.with_name(raw.name + ".root")
    with raw.open("rb") as src, part.open("wb") as dst:
        src.seek(offset)
        left = size
        while left:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                break
            dst.write(chunk)
            left -= len(chunk)
    try:
        out = subprocess.run(["dumpe2fs", str(part)], capture_output=True, text=True, check=True)
    finally:
        part.unlink()
    out = out.stdout
    block_size = int(re.search(r"Block size:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    free = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Free blocks: ") and line != "Free blocks: ":
            for part in line[len("Free blocks: ") :].split(", "):
                lo, _, hi = part.partition("-")
                free.append((int(lo), int(hi or lo)))
    return block_size, free


def test_partitions_are_found_and_described(pi_image: BuiltImage) -> None:
    text = streamed(pi_image.raw).describe()
    assert "p1 FAT32 64 MiB free clusters skipped" in text
    assert "p2 ext4" in text and "free blocks skipped" in text


def test_first_mib_is_always_mapped_and_free_space_outside_partitions_is_not(
    pi_image: BuiltImage,
) -> None:
    smap = streamed(pi_image.raw)
    layout = pi_image.layout
    assert not smap.skippable(ALWAYS_MAPPED - SEGMENT, ALWAYS_MAPPED)
    end_of_root = layout.root_offset + layout.root_size
    assert smap.skippable(end_of_root, end_of_root + SEGMENT)  # unpartitioned tail


def test_ext4_map_agrees_with_e2fsprogs(pi_image: BuiltImage) -> None:
    """Every block dumpe2fs calls used is mapped; whole free 64 KiB segments are skippable."""
    if shutil.which("dumpe2fs") is None:
        pytest.skip("needs e2fsprogs")
    smap = streamed(pi_image.raw)
    base = pi_image.layout.root_offset
    block_size, free = dumpe2fs_ranges(pi_image.raw, base, pi_image.layout.root_size)
    total_blocks = pi_image.layout.root_size // block_size
    free_blocks = set()
    for lo, hi in free:
        free_blocks.update(range(lo, hi + 1))
    per_segment = SEGMENT // block_size
    skippable_segments = checked_used = 0
    for seg in range(total_blocks // per_segment):
        blocks = range(seg * per_segment, (seg + 1) * per_segment)
        skippable = smap.skippable(
            base + blocks[0] * block_size, base + (blocks[-1] + 1) * block_size
        )
        if any(b not in free_blocks for b in blocks):
            assert not skippable, f"segment with used blocks {blocks} was called unmapped"
            checked_used += 1
        elif skippable:
            skippable_segments += 1
    assert checked_used > 100
    # Nearly all fully free segments are found (metadata such as inode tables aside).
    fully_free = sum(
        all(b in free_blocks for b in range(s * per_segment, (s + 1) * per_segment))
        for s in range(total_blocks // per_segment)
    )
    assert skippable_segments >= fully_free * 0.95


def test_fat_map_keeps_file_clusters_and_skips_free_ones(pi_image: BuiltImage) -> None:
    smap = streamed(pi_image.raw)
    raw = pi_image.raw.read_bytes()
    start, end = (
        pi_image.layout.boot_offset,
        pi_image.layout.boot_offset + pi_image.layout.boot_size,
    )
    kept = skipped = 0
    for off in range(start, end, SEGMENT):
        seg = raw[off : off + SEGMENT]
        if smap.skippable(off, off + SEGMENT):
            assert seg == bytes(SEGMENT), f"non-zero data at {off} called unmapped"
            skipped += 1
        else:
            kept += 1
    assert skipped > (end - start) // SEGMENT // 2  # the partition is mostly empty
    assert kept * SEGMENT >= 7 << 20  # kernel 3 + initrd 3 (1 of it zeros, still mapped) + FATs


def test_non_mbr_image_maps_everything() -> None:
    smap = StreamMap(8 << 20)
    smap.feed(0, bytes(8 << 20))
    assert not smap.skippable(4 << 20, (4 << 20) + SEGMENT)
    assert "every block is written" in smap.describe()


def test_gpt_protective_mbr_maps_everything() -> None:
    mbr = bytearray(512)
    mbr[446 + 4] = 0xEE
    mbr[446 + 8 : 446 + 16] = (1).to_bytes(4, "little") + (100000).to_bytes(4, "little")
    mbr[510:512] = b"\x55\xaa"
    smap = StreamMap(64 << 20)
    smap.feed(0, bytes(mbr) + bytes((64 << 20) - 512))
    assert not smap.skippable(32 << 20, (32 << 20) + SEGMENT)


@pytest.mark.parametrize(
    ("bitmap", "first", "last", "clear"),
    [
        (b"\x00\x00", 0, 15, True),
        (b"\x01\x00", 0, 15, False),
        (b"\x01\x00", 1, 15, True),
        (b"\x00\x80", 0, 14, True),
        (b"\x00\x80", 0, 15, False),
        (b"\xff\x00\x00\xff", 8, 23, True),
        (b"\xff\x00\x10\xff", 8, 23, False),
        (b"\x00", 0, 9, False),  # past the bitmap: unknown, so not clear
    ],
)
def test_bits_clear(bitmap: bytes, first: int, last: int, clear: bool) -> None:
    assert _bits_clear(bitmap, first, last) is clear


# -- .bmap files --------------------------------------------------------------------------


@pytest.fixture
def bmapped(pi_image: BuiltImage, tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("bmaptool") is None:
        pytest.skip("needs bmap-tools")
    raw = tmp_path / "img.img"
    subprocess.run(["cp", "--sparse=always", str(pi_image.raw), str(raw)], check=True)
    bmap = tmp_path / "img.img.bmap"
    subprocess.run(["bmaptool", "create", "-o", str(bmap), str(raw)], check=True)
    return raw, bmap


def test_bmap_file_is_found_next_to_the_image(tmp_path: Path) -> None:
    image = tmp_path / "x.img.xz"
    image.touch()
    assert bmap_path_for(image) is None
    (tmp_path / "x.img.bmap").write_text("")
    assert bmap_path_for(image) == tmp_path / "x.img.bmap"


def test_bmap_ranges_decide_what_is_skipped(bmapped: tuple[Path, Path]) -> None:
    raw, bmap_file = bmapped
    bmap = parse_bmap(bmap_file)
    assert bmap.image_size == raw.stat().st_size and bmap.checksum_type == "sha256"
    bmap_map = BmapMap(bmap, source=str(bmap_file))
    first, last, _ = bmap.ranges[0]
    bs = bmap.block_size
    assert not bmap_map.skippable(first * bs, (last + 1) * bs)
    gap_start = (bmap.ranges[0][1] + 1) * bs
    gap_end = bmap.ranges[1][0] * bs
    assert bmap_map.skippable(gap_start, gap_end)
    offset = 0
    with raw.open("rb") as handle:  # the data matches every range's checksum
        for chunk in iter_raw(handle, CHUNK):
            bmap_map.feed(offset, chunk)
            offset += len(chunk)
    bmap_map.check_complete()


def test_bmap_checksum_catches_damaged_image_data(bmapped: tuple[Path, Path]) -> None:
    raw, bmap_file = bmapped
    bmap = parse_bmap(bmap_file)
    data = bytearray(raw.read_bytes())
    first, last, _ = bmap.ranges[-1]
    data[first * bmap.block_size + 10] ^= 0x55
    bmap_map = BmapMap(bmap, source="x.bmap")
    with pytest.raises(ImageVerifyError, match=f"blocks {first}-{last}"):
        for offset in range(0, len(data), CHUNK):
            bmap_map.feed(offset, bytes(data[offset : offset + CHUNK]))


def test_edited_bmap_file_is_refused(bmapped: tuple[Path, Path]) -> None:
    _, bmap_file = bmapped
    text = bmap_file.read_text()
    bmap_file.write_text(
        re.sub(r"<Range chksum=\"(\w+)\">\s*(\d+)", r'<Range chksum="\1"> 1\2', text, count=1)
    )
    with pytest.raises(ImageVerifyError, match="its own checksum"):
        parse_bmap(bmap_file)


def test_malformed_bmap_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.bmap"
    path.write_text("<bmap version='2.0'><ImageSize>x</ImageSize><BlockMap/></bmap>")
    with pytest.raises(ConfigError) as err:
        parse_bmap(path)
    assert "missing or non-numeric <ImageSize>" in err.value.render()
    assert err.value.exit_code == EXIT_CONFIG
    path.write_text("<bmap version='2.0'>\n<ImageSize>1</ImageSize>\n<BlockMap>\n")
    with pytest.raises(ConfigError) as err:
        parse_bmap(path)
    text = err.value.render()  # the line XML parsing stopped at, and a fix
    assert f"block map {path} is invalid" in text and f"in {path}:4" in text and "fix:" in text
