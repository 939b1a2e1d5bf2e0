"""Block maps: which byte ranges of an image must reach the card.

Like bmaptool (yoctoproject/bmaptool), pikube writes only the *mapped* parts of an image.
An image's block map comes from one of two places:

* a ``.bmap`` file next to the image (bmaptool's XML format, versions 1.x and 2.x): exactly
  its ranges are written, and the image data of every range is checked against the range's
  checksum while it streams by;
* otherwise it is computed while the image streams through (:class:`StreamMap`): the MBR
  partition table says where partitions are; space outside every partition is unmapped; in
  a FAT partition the free clusters (FAT entry 0) are unmapped; in an ext2/3/4 partition the
  free blocks of each block group's bitmap are unmapped (groups flagged ``BLOCK_UNINIT`` are
  free apart from their metadata). Superblocks, group descriptors, reserved GDT blocks,
  bitmaps and inode tables are always mapped. Anything pikube cannot parse (GPT, extended
  partitions, other file systems, metadata that streams by only *after* the blocks it
  describes) is treated as mapped, so a computed map only ever errs towards writing more.

The writer skips a range only when it is all zeros *and* unmapped, so every byte of image
data is written and a card that held something else before can only keep old bytes in
places the new file systems consider free. The first MiB (partition table, boot code, a
possible old GPT header) is always written.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pikube.errors import ConfigError, ImageVerifyError, Problem

ALWAYS_MAPPED = 1 << 20  # the first MiB: MBR, boot code, old GPT headers
SECTOR = 512
FAT_TYPES = {
    0x01: "FAT12",
    0x04: "FAT16",
    0x06: "FAT16",
    0x0B: "FAT32",
    0x0C: "FAT32",
    0x0E: "FAT16",
}
LINUX_TYPE = 0x83
MAX_FAT_BYTES = 64 << 20  # larger FATs are not buffered: the partition is then fully mapped

EXT4_MAGIC = 0xEF53
EXT4_INCOMPAT_META_BG = 0x10
EXT4_INCOMPAT_64BIT = 0x80
EXT4_RO_COMPAT_SPARSE_SUPER = 0x1
EXT4_BG_BLOCK_UNINIT = 0x2


class BlockMap(Protocol):
    """What the writer asks a block map."""

    def feed(self, offset: int, data: bytes) -> None:
        """See the image bytes at ``offset`` (called for every chunk, in order)."""

    def skippable(self, start: int, end: int) -> bool:
        """True when ``[start, end)`` is known to be unmapped (the writer checks it is zero)."""

    def describe(self) -> str:
        """One line for people: where the map comes from and what it skips."""


class NoMap:
    """Everything is mapped (``--no-bmap`` or nothing parseable)."""

    def feed(self, offset: int, data: bytes) -> None:
        return None

    def skippable(self, start: int, end: int) -> bool:
        return False

    def describe(self) -> str:
        return "no block map: every block is written"


# --------------------------------------------------------------------------------------
# Computed while streaming


@dataclass
class _Want:
    start: int
    length: int
    callback: Callable[[bytes], None]
    buf: bytearray = field(default_factory=bytearray)
    filled: int = 0


class StreamMap:
    """A block map computed from the image itself as it streams through the writer."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._pos = 0  # everything before this offset has been fed
        self._wants: list[_Want] = []
        self._parts: list[tuple[int, int, _Region]] = []  # (start, end, region), sorted
        self._starts: list[int] = []
        self._table = "unknown"  # "unknown" until sector 0 is seen, then "mbr" or "none"
        self.want(0, SECTOR, self._mbr)

    # -- capturing metadata as it streams by ------------------------------------------

    def want(self, start: int, length: int, callback: Callable[[bytes], None]) -> bool:
        """Call ``callback(bytes)`` once ``[start, start+length)`` has streamed by.

        Returns False (and never calls back) if that range already went by.
        """
        if start < self._pos or length <= 0 or start + length > self.size:
            return False
        self._wants.append(_Want(start, length, callback, bytearray(length)))
        return True

    def feed(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        done = True
        while done:  # callbacks may want more of this very chunk
            done = False
            for want in list(self._wants):
                w_end = want.start + want.length
                if want.start >= end or w_end <= offset:
                    continue
                lo, hi = max(want.start, offset), min(w_end, end)
                want.buf[lo - want.start : hi - want.start] = data[lo - offset : hi - offset]
                want.filled += hi - lo
                if want.filled >= want.length:
                    self._wants.remove(want)
                    # Unparseable metadata: what it would have described stays mapped.
                    with contextlib.suppress(struct.error, IndexError, ValueError):
                        want.callback(bytes(want.buf))
                    done = True
        self._pos = end
        # Wants whose start went by unfilled can never complete; forget them.
        self._wants = [w for w in self._wants if w.start + w.length > end]

    # -- partition table ------------------------------------------------------------------

    def _mbr(self, sector: bytes) -> None:
        if sector[510:512] != b"\x55\xaa":
            self._table = "none"
            return
        entries = []
        for i in range(4):
            entry = sector[446 + 16 * i : 462 + 16 * i]
            ptype = entry[4]
            lba, count = struct.unpack("<II", entry[8:16])
            if ptype == 0 or count == 0:
                continue
            if ptype == 0xEE:  # protective MBR: a GPT disk, not parsed here
                self._table = "none"
                return
            entries.append((i + 1, ptype, lba * SECTOR, min((lba + count) * SECTOR, self.size)))
        if not entries:
            self._table = "none"
            return
        self._table = "mbr"
        for number, ptype, start, end in sorted(entries, key=lambda e: e[2]):
            region: _Region
            if ptype in FAT_TYPES and ptype != 0x01:
                region = _FatRegion(self, number, start, end)
            elif ptype == LINUX_TYPE:
                region = _ExtRegion(self, number, start, end)
            else:
                region = _Region(number, start, end, f"type 0x{ptype:02x}")
            self._parts.append((start, end, region))
        self._parts.sort(key=lambda p: p[0])
        self._starts = [p[0] for p in self._parts]

    # -- queries -----------------------------------------------------------------------

    def skippable(self, start: int, end: int) -> bool:
        if self._table != "mbr" or start < ALWAYS_MAPPED:
            return False
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        while i < len(self._parts):
            p_start, p_end, region = self._parts[i]
            if p_start >= end:
                break
            if p_end > start:
                lo, hi = max(start, p_start), min(end, p_end)
                if not region.is_free(lo - p_start, hi - p_start):
                    return False
            i += 1
        return True  # outside every partition, or free inside the ones it touches

    def describe(self) -> str:
        if self._table != "mbr":
            return "no MBR partition table found: every block is written"
        parts = ", ".join(region.describe() for _, _, region in self._parts)
        return f"block map computed from the MBR ({parts}); unpartitioned space skipped"


class _Region:
    """A partition whose contents pikube does not understand: fully mapped."""

    def __init__(self, number: int, start: int, end: int, kind: str) -> None:
        self.number, self.start, self.end, self.kind = number, start, end, kind
        self.note = "written in full"

    def is_free(self, start: int, end: int) -> bool:
        return False

    def describe(self) -> str:
        return f"p{self.number} {self.kind} {(self.end - self.start) >> 20} MiB {self.note}"


class _FatRegion(_Region):
    """FAT12/16/32: a cluster whose FAT entry is 0 is free."""

    def __init__(self, smap: StreamMap, number: int, start: int, end: int) -> None:
        super().__init__(number, start, end, "FAT")
        self._smap = smap
        self._fat: bytes | None = None
        self._entry = 0
        self._data_start = 0
        self._cluster = 0
        self._clusters = 0
        self.note = "written in full (FAT not parsed)"
        smap.want(start, SECTOR, self._boot_sector)

    def _boot_sector(self, bs: bytes) -> None:
        if bs[510:512] != b"\x55\xaa":
            return
        bps, spc, reserved, nfats, root_entries, total16 = struct.unpack("<HBHBHH", bs[11:21])
        fat16_size = struct.unpack("<H", bs[22:24])[0]
        total32, fat32_size = struct.unpack("<II", bs[32:40])
        if bps not in (512, 1024, 2048, 4096) or spc == 0 or spc & (spc - 1) or nfats == 0:
            return
        fat_size = fat16_size or fat32_size
        total = total16 or total32
        root_sectors = (root_entries * 32 + bps - 1) // bps
        data_sector = reserved + nfats * fat_size + root_sectors
        clusters = (total - data_sector) // spc
        if clusters < 4085:
            self.kind = "FAT12"
            return  # 12-bit entries: not worth it for boot partitions
        self.kind, self._entry = ("FAT16", 2) if clusters < 65525 else ("FAT32", 4)
        fat_bytes = (clusters + 2) * self._entry
        if fat_bytes > MAX_FAT_BYTES or fat_bytes > fat_size * bps:
            return
        self._data_start = data_sector * bps
        self._cluster = spc * bps
        self._clusters = clusters
        self._smap.want(self.start + reserved * bps, fat_bytes, self._got_fat)

    def _got_fat(self, fat: bytes) -> None:
        self._fat = fat
        self.note = "free clusters skipped"

    def is_free(self, start: int, end: int) -> bool:
        if self._fat is None or start < self._data_start:
            return False
        first = (start - self._data_start) // self._cluster + 2
        last = (end - 1 - self._data_start) // self._cluster + 2
        last = min(last, self._clusters + 1)  # past the last cluster: unused by the FAT
        if first > last:
            return True
        lo, hi = first * self._entry, (last + 1) * self._entry
        return self._fat.count(0, lo, hi) == hi - lo


def _sparse_super_group(group: int) -> bool:
    if group <= 1:
        return True
    for base in (3, 5, 7):
        value = base
        while value < group:
            value *= base
        if value == group:
            return True
    return False


class _ExtRegion(_Region):
    """ext2/3/4: blocks whose bit is clear in their group's block bitmap are free."""

    def __init__(self, smap: StreamMap, number: int, start: int, end: int) -> None:
        super().__init__(number, start, end, "Linux")
        self._smap = smap
        self._ready = False
        self._bs = 0
        self._fs_blocks = 0
        self._first = 0
        self._per_group = 0
        self._meta_starts: list[int] = []
        self._meta_ends: list[int] = []
        self._bitmaps: dict[int, bytes] = {}
        self._uninit: set[int] = set()
        self.note = "written in full (not ext2/3/4)"
        smap.want(start + 1024, 1024, self._superblock)

    def _superblock(self, sb: bytes) -> None:
        magic = struct.unpack("<H", sb[0x38:0x3A])[0]
        if magic != EXT4_MAGIC:
            return
        self.kind = "ext4"
        blocks_lo, _, _, _, first_data, log_bs = struct.unpack("<IIIIII", sb[4:28])
        per_group = struct.unpack("<I", sb[0x20:0x24])[0]
        inodes_per_group = struct.unpack("<I", sb[0x28:0x2C])[0]
        inode_size = struct.unpack("<H", sb[0x58:0x5A])[0] or 128
        incompat, ro_compat = struct.unpack("<II", sb[0x60:0x68])[0:2]
        reserved_gdt = struct.unpack("<H", sb[0xCE:0xD0])[0]
        desc_size = struct.unpack("<H", sb[0xFE:0x100])[0]
        blocks_hi = struct.unpack("<I", sb[0x150:0x154])[0]
        is64 = bool(incompat & EXT4_INCOMPAT_64BIT)
        if incompat & EXT4_INCOMPAT_META_BG or per_group == 0 or log_bs > 6:
            self.note = "written in full (meta_bg layout)"
            return
        self._bs = 1024 << log_bs
        self._fs_blocks = blocks_lo | (blocks_hi << 32 if is64 else 0)
        self._first = first_data
        self._per_group = per_group
        self._desc_size = desc_size if is64 and desc_size >= 32 else 32
        self._is64 = is64 and self._desc_size >= 64
        self._groups = (self._fs_blocks - first_data + per_group - 1) // per_group
        self._itable_blocks = (inodes_per_group * inode_size + self._bs - 1) // self._bs
        gdt_blocks = (self._groups * self._desc_size + self._bs - 1) // self._bs
        self._gdt_span = 1 + gdt_blocks + reserved_gdt  # superblock + GDT + reserved GDT
        self._sparse = bool(ro_compat & EXT4_RO_COMPAT_SPARSE_SUPER)
        self._smap.want(
            self.start + (first_data + 1) * self._bs,
            self._groups * self._desc_size,
            self._descriptors,
        )

    def _descriptors(self, gdt: bytes) -> None:
        meta: list[tuple[int, int]] = [(0, self._first + self._gdt_span)]
        for group in range(self._groups):
            base = self._first + group * self._per_group
            if group and (not self._sparse or _sparse_super_group(group)):
                meta.append((base, base + self._gdt_span))
            d = gdt[group * self._desc_size : (group + 1) * self._desc_size]
            bbitmap, ibitmap, itable = struct.unpack("<III", d[0:12])
            flags = struct.unpack("<H", d[0x12:0x14])[0]
            if self._is64:
                hi_b, hi_i, hi_t = struct.unpack("<III", d[0x20:0x2C])
                bbitmap, ibitmap, itable = (
                    bbitmap | hi_b << 32,
                    ibitmap | hi_i << 32,
                    itable | hi_t << 32,
                )
            meta += [(bbitmap, bbitmap + 1), (ibitmap, ibitmap + 1)]
            meta.append((itable, itable + self._itable_blocks))
            if flags & EXT4_BG_BLOCK_UNINIT:
                self._uninit.add(group)
            else:
                self._smap.want(
                    self.start + bbitmap * self._bs,
                    self._per_group // 8 or 1,
                    functools.partial(self._bitmaps.__setitem__, group),
                )
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(meta):
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self._meta_starts = [m[0] for m in merged]
        self._meta_ends = [m[1] for m in merged]
        self._ready = True
        self.note = "free blocks skipped"

    def is_free(self, start: int, end: int) -> bool:
        if not self._ready:
            return False
        bs = self._bs
        first, last = start // bs, (end - 1) // bs  # inclusive block numbers
        if first >= self._fs_blocks:
            return True  # after the end of the file system
        last = min(last, self._fs_blocks - 1)
        i = bisect.bisect_right(self._meta_starts, last) - 1
        if i >= 0 and self._meta_ends[i] > first:
            return False  # touches metadata
        block = first
        while block <= last:
            if block < self._first:
                return False
            group, index = divmod(block - self._first, self._per_group)
            run_end = min(last, self._first + (group + 1) * self._per_group - 1)
            if group not in self._uninit:
                bitmap = self._bitmaps.get(group)
                if bitmap is None or not _bits_clear(bitmap, index, index + run_end - block):
                    return False
            block = run_end + 1
        return True


def _bits_clear(bitmap: bytes, first: int, last: int) -> bool:
    """True if bits ``first..last`` (inclusive, little-endian bit order) are all 0."""
    lo_byte, hi_byte = first >> 3, last >> 3
    if hi_byte >= len(bitmap):
        return False
    if hi_byte - lo_byte > 1 and bitmap.count(0, lo_byte + 1, hi_byte) != hi_byte - lo_byte - 1:
        return False
    lo_mask = (0xFF << (first & 7)) & 0xFF
    hi_mask = 0xFF >> (7 - (last & 7))
    if lo_byte == hi_byte:
        return not bitmap[lo_byte] & lo_mask & hi_mask
    return not (bitmap[lo_byte] & lo_mask) and not (bitmap[hi_byte] & hi_mask)


# --------------------------------------------------------------------------------------
# bmaptool's .bmap files


@dataclass
class BmapFile:
    image_size: int
    block_size: int
    mapped_blocks: int
    checksum_type: str  # "sha256", "sha1" or "" (no range checksums)
    ranges: list[tuple[int, int, str]]  # (first block, last block inclusive, hex digest)


def bmap_path_for(image: Path) -> Path | None:
    """The ``.bmap`` next to an image: ``X.img.xz`` -> ``X.img.bmap`` or ``X.img.xz.bmap``."""
    name = image.name
    candidates = [image.with_name(name + ".bmap")]
    if name.endswith(".xz"):
        candidates.insert(0, image.with_name(name[:-3] + ".bmap"))
    return next((c for c in candidates if c.is_file()), None)


def parse_bmap(path: Path) -> BmapFile:
    """Parse and check a bmaptool ``.bmap`` file (format 1.x or 2.x)."""

    def bad(reason: str, line: int | None = None) -> ConfigError:
        # An input file like any other: its location and a fix, exit 3.
        fix = "remove the .bmap file (pikube then computes a block map) or fetch it again"
        return ConfigError(
            [Problem("", f"block map {path} is invalid: {reason}", fix, line, str(path))],
            file=str(path),
        )

    try:
        raw = path.read_bytes()
        root = ET.fromstring(raw)  # noqa: S314 - a local file the user put next to the image
    except OSError as err:
        raise bad(str(err)) from None
    except ET.ParseError as err:
        raise bad(str(err), err.position[0]) from None
    if root.tag != "bmap":
        raise bad("the root element is not <bmap>")
    version = root.get("version", "1.0")
    major = version.split(".")[0]
    if major not in ("1", "2"):
        raise bad(f"unsupported format version {version}")

    def number(tag: str) -> int:
        text = root.findtext(tag)
        if text is None or not text.strip().isdigit():
            raise bad(f"missing or non-numeric <{tag}>")
        return int(text.strip())

    checksum_type = root.findtext("ChecksumType") or ("sha256" if major == "2" else "sha1")
    checksum_type = checksum_type.strip()
    if checksum_type not in ("sha256", "sha1"):
        raise bad(f"unknown checksum type {checksum_type}")
    file_sum = root.findtext("BmapFileChecksum") or root.findtext("BmapFileSHA1")
    if file_sum:
        file_sum = file_sum.strip()
        zeroed = raw.replace(file_sum.encode(), b"0" * len(file_sum), 1)
        if hashlib.new(checksum_type, zeroed).hexdigest() != file_sum:
            raise ImageVerifyError(
                f"block map {path} is invalid: its own checksum does not match (the file is "
                "damaged or edited)",
                where=str(path),
                fix="remove the .bmap file (pikube then computes a block map) or fetch it again",
            )
    ranges = []
    block_map = root.find("BlockMap")
    if block_map is None:
        raise bad("no <BlockMap>")
    for element in block_map.findall("Range"):
        text = (element.text or "").strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", text)
        if not match:
            raise bad(f"range {text!r} is not FIRST-LAST")
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if last < first:
            raise bad(f"range {text!r} ends before it starts")
        ranges.append((first, last, (element.get("chksum") or "").strip()))
    ranges.sort()
    info = BmapFile(
        image_size=number("ImageSize"),
        block_size=number("BlockSize"),
        mapped_blocks=number("MappedBlocksCount"),
        checksum_type=checksum_type if any(r[2] for r in ranges) else "",
        ranges=ranges,
    )
    if info.block_size <= 0 or info.block_size % SECTOR:
        raise bad(f"block size {info.block_size} is not a multiple of 512")
    return info


class BmapMap:
    """A block map from a ``.bmap`` file; checks every range's checksum as data streams by."""

    def __init__(self, bmap: BmapFile, *, source: str = ".bmap") -> None:
        self.bmap = bmap
        self.source = source
        bs = bmap.block_size
        self._starts = [first * bs for first, _, _ in bmap.ranges]
        self._ends = [min((last + 1) * bs, bmap.image_size) for _, last, _ in bmap.ranges]
        self._current = 0  # index of the range being hashed
        self._hash: hashlib._Hash | None = None

    def feed(self, offset: int, data: bytes) -> None:
        if not self.bmap.checksum_type:
            return
        end = offset + len(data)
        view = memoryview(data)
        while self._current < len(self._starts):
            r_start, r_end = self._starts[self._current], self._ends[self._current]
            if r_start >= end:
                return
            if r_end <= offset:  # a range the stream skipped: cannot happen in order
                self._current += 1
                continue
            if self._hash is None:
                self._hash = hashlib.new(self.bmap.checksum_type)
            lo, hi = max(r_start, offset), min(r_end, end)
            self._hash.update(view[lo - offset : hi - offset])
            if hi < r_end:
                return
            expected = self.bmap.ranges[self._current][2]
            if self._hash.hexdigest() != expected:
                first, last, _ = self.bmap.ranges[self._current]
                raise ImageVerifyError(
                    f"image data of blocks {first}-{last} do not match the checksum in "
                    f"{self.source}",
                    where=self.source,
                    fix="the image or its .bmap is damaged or they do not belong together; "
                    "fetch the image again",
                )
            self._hash = None
            self._current += 1

    def skippable(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self._starts, end - 1) - 1
        return i < 0 or self._ends[i] <= start

    def describe(self) -> str:
        mapped = self.bmap.mapped_blocks * self.bmap.block_size
        return (
            f"block map from {self.source}: {mapped >> 20} MiB of "
            f"{self.bmap.image_size >> 20} MiB mapped"
        )

    def check_complete(self) -> None:
        """After the whole image streamed by: every range was checked."""
        if self.bmap.checksum_type and self._current < len(self._starts):
            raise ImageVerifyError(
                f"the image ended before the ranges in {self.source} did",
                where=self.source,
                fix="the image is truncated or the .bmap belongs to another image",
            )
