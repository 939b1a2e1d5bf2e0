"""Streaming xz decompression: exact sizes, multi-stream files, damage, bounded memory."""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pikube.errors import ImageVerifyError
from pikube.image.xz import (
    block_dict_size,
    decode_workers,
    image_size,
    iter_decompressed,
    iter_decompressed_parallel,
    xz_blocks,
    xz_uncompressed_size,
)
from tests.image_support import BuiltImage

CHUNK = 1 << 20


def _xz_list_size(path: Path) -> int:
    out = subprocess.run(["xz", "--robot", "--list", str(path)], capture_output=True, text=True)
    totals = next(line for line in out.stdout.splitlines() if line.startswith("totals"))
    return int(totals.split("\t")[4])


def test_uncompressed_size_from_the_index_matches_xz_list(pi_image: BuiltImage) -> None:
    assert xz_uncompressed_size(pi_image.xz) == _xz_list_size(pi_image.xz)
    assert image_size(pi_image.xz) == pi_image.raw.stat().st_size
    assert image_size(pi_image.raw) == pi_image.raw.stat().st_size


def test_stream_is_the_raw_image_in_exact_chunks(pi_image: BuiltImage) -> None:
    digest = hashlib.sha256()
    sizes = []
    with pi_image.xz.open("rb") as handle:
        for chunk in iter_decompressed(handle, CHUNK):
            sizes.append(len(chunk))
            digest.update(chunk)
    assert set(sizes) == {CHUNK}  # 256 MiB is a multiple of the chunk size
    assert digest.hexdigest() == hashlib.sha256(pi_image.raw.read_bytes()).hexdigest()


def test_concatenated_streams_with_padding_decode_as_one(tmp_path: Path) -> None:
    first, second = b"a" * 3_000_000 + bytes(100), b"second stream" * 1000
    path = tmp_path / "multi.xz"
    path.write_bytes(lzma.compress(first) + b"\0" * 8 + lzma.compress(second))
    assert xz_uncompressed_size(path) == len(first) + len(second)
    out = b"".join(iter_decompressed(path.open("rb"), 65536))
    assert out == first + second


def test_truncated_file_is_an_error_not_a_short_image(tmp_path: Path) -> None:
    data = lzma.compress(bytes(range(256)) * 50_000)
    path = tmp_path / "cut.img.xz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageVerifyError, match="not a complete xz file"):
        xz_uncompressed_size(path)
    with pytest.raises(ImageVerifyError, match="truncated"):
        b"".join(iter_decompressed(path.open("rb"), CHUNK))


def test_corrupt_data_is_reported_with_a_fix(tmp_path: Path) -> None:
    data = bytearray(lzma.compress(bytes(range(256)) * 50_000))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(ImageVerifyError) as err:
        b"".join(iter_decompressed(io.BytesIO(bytes(data)), CHUNK, name="x.img.xz"))
    assert "x.img.xz" in err.value.what and err.value.fix


def test_memory_stays_bounded_for_gigabytes_of_zeros(tmp_path: Path) -> None:
    """1 GiB of zeros compresses to a few hundred KB; decoding must not hold them in memory."""
    zeros = tmp_path / "zeros.img"
    with zeros.open("wb") as handle:
        handle.truncate(1 << 30)  # sparse: reads as zeros
    subprocess.run(["xz", "-0", "-T1", str(zeros)], check=True)
    path = tmp_path / "zeros.img.xz"
    assert xz_uncompressed_size(path) == 1 << 30
    # VmHWM is the peak RSS of this process image alone (ru_maxrss would include the
    # forking pytest's memory at fork time).
    code = (
        "import sys\n"
        "from pikube.image.xz import iter_decompressed\n"
        "from pikube.image.writer import CHUNK\n"
        "n = sum(len(c) for c in iter_decompressed(open(sys.argv[1], 'rb'), CHUNK))\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print(n, hwm.split()[1])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    total, max_rss_kib = map(int, out.stdout.split())
    assert total == 1 << 30, f"decoded {total} bytes"
    assert max_rss_kib < 100 * 1024, f"peak RSS {max_rss_kib} KiB"


@pytest.fixture
def multi_block(tmp_path: Path) -> tuple[Path, bytes]:
    data = b"".join(bytes([i % 7]) * 300_000 + os.urandom(200_000) for i in range(12))
    raw = tmp_path / "multi.img"
    raw.write_bytes(data)
    subprocess.run(["xz", "-3", "-T2", "--block-size=1MiB", "-k", str(raw)], check=True)
    return tmp_path / "multi.img.xz", data


def test_parallel_decoding_of_blocks_gives_the_same_stream(multi_block: tuple[Path, bytes]) -> None:
    path, data = multi_block
    blocks = xz_blocks(path)
    assert len(blocks) == 6 and sum(b.size for b in blocks) == len(data)
    assert block_dict_size(path, blocks[0]) == 4 << 20  # xz -3
    chunks = list(iter_decompressed_parallel(path, 700_000, workers=3))
    assert {len(c) for c in chunks[:-1]} == {700_000}  # re-cut across block borders
    assert b"".join(chunks) == data


def test_parallel_decoding_reports_a_damaged_block(multi_block: tuple[Path, bytes]) -> None:
    path, _ = multi_block
    damaged = bytearray(path.read_bytes())
    block = xz_blocks(path)[3]
    damaged[block.offset + 200] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(ImageVerifyError):
        b"".join(iter_decompressed_parallel(path, 1 << 20, workers=2))


def test_parallel_decoding_stops_its_threads_when_abandoned(
    multi_block: tuple[Path, bytes],
) -> None:
    path, _ = multi_block
    before = threading.active_count()
    stream = iter_decompressed_parallel(path, 65536, workers=3, window=65536)
    next(stream)
    stream.close()
    assert threading.active_count() == before


def test_decoder_memory_limits_the_workers(multi_block: tuple[Path, bytes]) -> None:
    path, _ = multi_block
    blocks = xz_blocks(path)
    assert decode_workers(path, blocks, cpus=8) == 4
    assert decode_workers(path, blocks, cpus=1) == 1
    assert decode_workers(path, blocks[:1], cpus=8) == 1


def test_flash_pipeline_memory_is_bounded_with_parallel_decoding(pi_image: BuiltImage) -> None:
    """The whole read side of a flash (parallel decoders, queues) stays far below 100 MB."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pikube.image.flash import image_chunks\n"
        "def status(key):\n"
        "    line = [l for l in open('/proc/self/status') if l.startswith(key)][0]\n"
        "    return int(line.split()[1])\n"
        "base = status('VmRSS:')\n"
        "n = sum(len(c) for c in image_chunks(Path(sys.argv[1])))\n"
        "print(n, status('VmHWM:') - base)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(pi_image.xz)], capture_output=True, text=True, check=True
    )
    total, growth_kib = map(int, out.stdout.split())
    assert total == pi_image.layout.size
    assert growth_kib < 64 * 1024, f"the pipeline grew by {growth_kib} KiB"


def test_decoded_window_bounds_blocks_ahead_but_not_zeros_or_the_current_block() -> None:
    """What lets two decoders run at once in little memory: a block decoded ahead may hold
    only `budget` bytes (beyond its first piece) until the consumer reaches it; the shared
    zero chunk costs nothing; the block being consumed always has its floor."""
    from pikube.image.xz import _Window

    window = _Window(budget=4, floor=2)
    for i in (0, 1):
        window.open(i)
    assert window.put(1, "data", b"a", 3)  # a block's first piece always fits
    assert window.put(1, "data", b"", 0)  # shared zeros cost nothing
    blocked = threading.Thread(target=window.put, args=(1, "data", b"b", 3))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # 3 + 3 > 4: block 1 must wait for the consumer
    assert window.put(0, "data", b"c", 1)  # block 0 (current) is not held up by block 1
    assert window.put(0, "data", b"d", 1)  # ... up to its floor of 2
    assert window.get(0) == ("data", b"c")
    window.close(0)
    assert window.get(1) == ("data", b"a")  # frees 3 bytes: the waiting put goes in
    blocked.join(5)
    assert not blocked.is_alive()
    assert window.get(1) == ("data", b"")
    assert window.get(1) == ("data", b"b")
    window.stop()
    assert not window.put(1, "data", b"e", 9)  # after stop nothing is queued
