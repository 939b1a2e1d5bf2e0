"""Flashing real block devices: loop devices over sparse files (root only; always cleaned up).

Loop devices report removable=0, so these runs pass --allow-non-removable, as a user with a
built-in reader would. Each test detaches its loop devices even when it fails.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pikube.errors import ImageVerifyError
from pikube.image.blockmap import StreamMap
from pikube.image.flash import image_chunks
from pikube.image.writer import verify_image, write_image
from tests.factories import base_cluster, write_cluster
from tests.image_support import BuiltImage, fill, is_root, loop_device, mtype
from tests.signals import interruptible

pytestmark = pytest.mark.skipif(not is_root(), reason="loop devices need root")

PIKUBE = [sys.executable, "-m", "pikube"]


@pytest.fixture
def cluster_file(tmp_path: Path, ssh_key: Path) -> Path:
    return write_cluster(tmp_path, base_cluster(ssh_key))


@pytest.fixture
def card(tmp_path: Path, pi_image: BuiltImage) -> Path:
    """A used 512 MiB card: old data everywhere."""
    path = tmp_path / "card.bin"
    fill(path, 2 * pi_image.layout.size)
    return path


def flash_argv(
    cluster_file: Path, pi_image: BuiltImage, dev: str, image: Path | None = None
) -> list[str]:
    """`pikube flash` of node pi-w1 to the loop device `dev`, as scripts run it."""
    return [
        "flash",
        "-c",
        str(cluster_file),
        "--image",
        str(image or pi_image.xz),
        "pi-w1",
        "--device",
        dev,
        "--yes",
        "--allow-non-removable",
    ]


def pikube(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PIKUBE, *args], capture_output=True, text=True)


def test_flash_a_loop_device_end_to_end(
    cluster_file: Path, pi_image: BuiltImage, card: Path
) -> None:
    layout = pi_image.layout
    with loop_device(card) as dev:
        result = pikube(*flash_argv(cluster_file, pi_image, dev))
        assert result.returncode == 0, result.stderr
        assert f"-> {dev}: wrote" in result.stderr and "verified" in result.stderr
        # Read the first-boot files back through the block device, without mounting.
        meta = yaml.safe_load(mtype(dev, layout.boot_offset, "meta-data"))
        assert meta["local-hostname"] == "pi-w1"
        table = subprocess.run(["sfdisk", "--dump", dev], capture_output=True, text=True)
        assert "type=c, bootable" in table.stdout and "type=83" in table.stdout
    raw = pi_image.raw.read_bytes()
    got = card.read_bytes()
    assert got[: layout.boot_offset] == raw[: layout.boot_offset]
    fsck = subprocess.run(
        ["e2fsck", "-fn", f"{card}?offset={layout.root_offset}"], capture_output=True, text=True
    )
    assert fsck.returncode == 0, fsck.stdout
    listing = ["debugfs", "-R", "ls -l /usr/lib1"]
    assert subprocess.run(
        [*listing, f"{card}?offset={layout.root_offset}"], capture_output=True
    ).stdout == (
        subprocess.run(
            [*listing, f"{pi_image.raw}?offset={layout.root_offset}"], capture_output=True
        ).stdout
    )


def test_device_opened_exclusively_elsewhere_is_refused(
    cluster_file: Path, pi_image: BuiltImage, card: Path
) -> None:
    before = card.read_bytes()[:4096]
    with loop_device(card) as dev:
        holder = os.open(dev, os.O_RDONLY | os.O_EXCL)
        try:
            result = pikube(*flash_argv(cluster_file, pi_image, dev))
        finally:
            os.close(holder)
    assert result.returncode == 4, result.stderr
    assert "is busy" in result.stderr
    assert card.read_bytes()[:4096] == before


def test_mounted_device_is_refused(
    cluster_file: Path, pi_image: BuiltImage, tmp_path: Path
) -> None:
    fs = tmp_path / "fs.bin"
    with fs.open("wb") as handle:
        handle.truncate(pi_image.layout.size)
    subprocess.run(["mke2fs", "-q", "-t", "ext4", str(fs)], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with loop_device(fs) as dev:
        mounted = subprocess.run(["mount", dev, str(mnt)], capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount ext4 here: {mounted.stderr.strip()}")
        try:
            result = pikube(*flash_argv(cluster_file, pi_image, dev))
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
    assert result.returncode == 4
    assert f"{mnt} mounted" in result.stderr and "umount" in result.stderr


def test_read_back_reads_the_medium_not_the_cache(pi_image: BuiltImage, card: Path) -> None:
    """Corruption under the device (in its backing file) is found by the read-back."""
    size = pi_image.layout.size
    with loop_device(card) as dev:
        fd = os.open(dev, os.O_RDWR | os.O_EXCL)
        with os.fdopen(fd, "r+b", buffering=0) as handle:
            result = write_image(
                image_chunks(pi_image.xz), handle, size=size, block_map=StreamMap(size)
            )
            verify_image(handle, result)
            offset, length, _ = result.runs[-1]
            with card.open("r+b") as backing:
                backing.seek(offset + length - 1)
                old = backing.read(1)
                backing.seek(offset + length - 1)
                backing.write(bytes([old[0] ^ 0xFF]))
                backing.flush()
                os.fsync(backing.fileno())
            with pytest.raises(ImageVerifyError, match="read-back verification failed"):
                verify_image(handle, result)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_or_kill_leaves_an_unbootable_card_and_says_so(
    cluster_file: Path, pi_image: BuiltImage, card: Path, sig: signal.Signals
) -> None:
    """Ctrl-C, `kill` (SIGTERM) and a closed terminal (SIGHUP) end a flash the same way."""
    with card.open("r+b") as handle:  # the card held a bootable image before
        handle.write(pi_image.raw.read_bytes()[: 1 << 20])
    with loop_device(card) as dev:
        proc = subprocess.Popen(
            [*PIKUBE, *flash_argv(cluster_file, pi_image, dev)],
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=interruptible,
        )
        assert proc.stderr is not None
        for line in proc.stderr:
            if "writing" in line:
                break
        proc.send_signal(sig)
        rest = proc.stderr.read()
        code = proc.wait()
        assert code == 130, rest
        assert "INCOMPLETE" in rest and "will not boot" in rest
        table = subprocess.run(["sfdisk", "--dump", dev], capture_output=True, text=True)
        assert table.returncode != 0, "an interrupted card must have no partition table"
    assert card.read_bytes()[:4096] == bytes(4096)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def test_gzip_image_leaves_the_device_byte_identical(
    cluster_file: Path, pi_image: BuiltImage, card: Path, tmp_path: Path
) -> None:
    """The image's head is decoded and checked before the device is opened for writing."""
    packed = tmp_path / "pi.img.gz"  # a gzip of a real image (its first 8 MiB)
    with pi_image.raw.open("rb") as raw:
        packed.write_bytes(gzip.compress(raw.read(8 << 20), compresslevel=1))
    before = sha256_of(card)
    with loop_device(card) as dev:
        result = pikube(*flash_argv(cluster_file, pi_image, dev, image=packed))
    assert result.returncode == 4, result.stderr
    assert "is a gzip file" in result.stderr and "fix:" in result.stderr
    assert sha256_of(card) == before


def test_one_device_under_two_names_is_one_target(
    cluster_file: Path, pi_image: BuiltImage, card: Path, tmp_path: Path
) -> None:
    before = sha256_of(card)
    with loop_device(card) as dev:
        link = tmp_path / "sd-card-by-id"
        link.symlink_to(dev)
        argv = flash_argv(cluster_file, pi_image, dev)
        result = pikube(*argv[:-2], "pi-w2", "--device", str(link), *argv[-2:])
    assert result.returncode == 2, result.stderr
    assert "each node and each target may appear only once" in result.stderr
    assert sha256_of(card) == before
