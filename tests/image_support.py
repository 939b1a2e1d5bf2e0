"""Fixtures and helpers for the image, flash and cloud-init tests.

Import the fixtures into a test module with ``from tests.image_support import ...``.
Nothing here touches the internet: images are built locally (tests/fixtures/piimage.py)
and served over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures.piimage import PiImage, build_pi_image, xz_image

TOOLS = ("sfdisk", "mkfs.vfat", "mcopy", "mke2fs", "xz")


def need_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt: mtools dosfstools fdisk e2fsprogs xz-utils)")


@dataclass(frozen=True)
class BuiltImage:
    raw: Path
    xz: Path
    layout: PiImage


@pytest.fixture(scope="session")
def pi_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """A 256 MiB Ubuntu-like Pi image (raw + xz), built once per session."""
    need_tools(*TOOLS)
    folder = tmp_path_factory.mktemp("piimage")
    layout = build_pi_image(folder / "ubuntu-pi.img")
    packed = xz_image(layout.path, folder / "ubuntu-pi.img.xz")
    return BuiltImage(layout.path, packed, layout)


def mtools_env() -> dict[str, str]:
    return dict(os.environ, MTOOLS_SKIP_CHECK="1")


def mtype(target: Path | str, offset: int, name: str) -> bytes:
    return subprocess.run(
        ["mtype", "-i", f"{target}@@{offset}", f"::/{name}"],
        check=True,
        capture_output=True,
        env=mtools_env(),
    ).stdout


def fill(path: Path, size: int, byte: int = 0xA5) -> None:
    """A 'used card': every byte non-zero, so skipped ranges keep visible old data."""
    block = bytes([byte]) * (1 << 20)
    with path.open("wb") as handle:
        for _ in range(size >> 20):
            handle.write(block)


# -- HTTP -------------------------------------------------------------------------------


@dataclass
class Served:
    base: str
    root: Path
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> bytes, once
    ignore_range: bool = False


class _Handler(http.server.BaseHTTPRequestHandler):
    served: Served

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def do_GET(self) -> None:
        served = self.served
        rng = self.headers.get("Range")
        served.requests.append((self.path, rng))
        path = served.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if rng and not served.ignore_range and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        drop = served.drop_after.pop(self.path, None)
        if drop is not None:
            # Send part of the body, then cut the connection (a flaky mirror).
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@contextlib.contextmanager
def http_server(root: Path) -> Iterator[Served]:
    """A real HTTP server on 127.0.0.1 serving ``root`` with Range support."""
    served = Served(base="", root=root)
    handler = type("Handler", (_Handler,), {"served": served})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    served.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


# -- fake sysfs / procfs ------------------------------------------------------------------


@dataclass
class FakeDisk:
    name: str = "sdb"
    devnum: tuple[int, int] = (8, 16)
    size: int = 32 << 30
    removable: str = "1"
    ro: str = "0"
    model: str = "SD/MMC CRW"
    vendor: str = "Generic-"
    serial: str = "000000000819"
    partitions: int = 2
    dev_type: str | None = None  # mmc: "SD"


def fake_sys(root: Path, disk: FakeDisk, *, holder: str | None = None) -> Path:
    """A sysfs tree like the kernel's for one disk (and its partitions, optionally a dm holder)."""
    sys_root = root / "sys"
    block = sys_root / "devices" / "pci0000:00" / "usb1" / "block" / disk.name
    block.mkdir(parents=True)
    major, minor = disk.devnum
    (block / "dev").write_text(f"{major}:{minor}\n")
    (block / "size").write_text(f"{disk.size // 512}\n")
    (block / "removable").write_text(disk.removable + "\n")
    (block / "ro").write_text(disk.ro + "\n")
    device = block / "device"
    device.mkdir()
    (device / "model").write_text(disk.model + "\n")
    (device / "vendor").write_text(disk.vendor + "\n")
    (device / "serial").write_text(disk.serial + "\n")
    if disk.dev_type:
        (device / "type").write_text(disk.dev_type + "\n")
    (block / "holders").mkdir()
    links = sys_root / "dev" / "block"
    links.mkdir(parents=True, exist_ok=True)  # several disks may share one tree
    listing = sys_root / "block"
    listing.mkdir(exist_ok=True)
    (links / f"{major}:{minor}").symlink_to(block)
    for i in range(1, disk.partitions + 1):
        part = block / f"{disk.name}{i}"
        part.mkdir()
        (part / "partition").write_text(f"{i}\n")
        (part / "dev").write_text(f"{major}:{minor + i}\n")
        (part / "holders").mkdir()
        (links / f"{major}:{minor + i}").symlink_to(part)
    if holder:
        dm = sys_root / "devices" / "virtual" / "block" / holder
        dm.mkdir(parents=True)
        (dm / "dev").write_text("254:0\n")
        (dm / "holders").mkdir()
        (listing / holder).symlink_to(dm)
        (links / "254:0").symlink_to(dm)
        (block / f"{disk.name}2" / "holders" / holder).symlink_to(dm)
    (listing / disk.name).symlink_to(block)  # last: the disk appears complete, as to udev
    return sys_root


def fake_proc(root: Path, mounts: list[tuple[str, str]] = (), swaps: list[str] = ()) -> Path:  # type: ignore[assignment]
    """procfs with /proc/self/mountinfo lines for (major:minor, mount point) and /proc/swaps."""
    proc = root / "proc"
    (proc / "self").mkdir(parents=True)
    lines = [
        "22 1 0:21 / /sys rw,nosuid shared:7 - sysfs sysfs rw",
        "25 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw",
    ]
    for i, (devnum, point) in enumerate(mounts):
        escaped = point.replace(" ", "\\040")
        lines.append(f"{100 + i} 25 {devnum} / {escaped} rw,relatime - vfat /dev/x rw")
    (proc / "self" / "mountinfo").write_text("\n".join(lines) + "\n")
    header = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
    (proc / "swaps").write_text(header + "".join(f"{s}\tpartition\t1000\t0\t-2\n" for s in swaps))
    return proc


def is_root() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def loop_device(backing: Path) -> Iterator[str]:
    """A loop device over ``backing`` (root only), detached even when the test fails."""
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def make_block_node(path: Path, devnum: tuple[int, int]) -> None:
    """A block device node (root only) for a device that need not exist."""
    os.mknod(path, stat.S_IFBLK | 0o600, os.makedev(*devnum))
