"""Block-device safety checks: nothing is written before every one of them passed.

Facts come from sysfs and procfs under injectable roots (``sys_root``, ``proc_root``) so
that every refusal rule is tested against a fake tree:

* the target is a whole-disk block device (not a partition, not a character device);
* removable (``/sys/block/X/removable`` is 1, or an SD card in a built-in reader, whose
  ``device/type`` is ``SD``), unless ``allow_non_removable``;
* not read-only (``/sys/block/X/ro``);
* no partition of it (nor a device-mapper/LVM/RAID holder built on it) is mounted
  (``/proc/self/mountinfo``) or used as swap (``/proc/swaps``); refused with a special
  message when one of them is the running system's root file system;
* large enough for the image (``/sys/block/X/size`` in 512-byte sectors).

The CLI then opens it with ``O_EXCL``, which the kernel refuses while anything has claimed
the device (a mount, another exclusive open): the last check, closing the race between
checking and writing.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pikube.errors import FlashRefused


@dataclass
class DeviceInfo:
    path: str
    name: str  # kernel name, e.g. sdb, mmcblk0
    size: int  # bytes
    removable: bool
    read_only: bool
    model: str
    serial: str
    transport: str
    partitions: list[str] = field(default_factory=list)
    mounts: list[tuple[str, str]] = field(default_factory=list)  # (device name, mount point)
    swaps: list[str] = field(default_factory=list)

    def describe(self) -> str:
        size = human_size(self.size)
        details = ", ".join(
            x
            for x in (
                self.model or "unknown model",
                f"serial {self.serial}" if self.serial else "",
                self.transport,
                "removable" if self.removable else "NOT removable",
            )
            if x
        )
        return f"{self.path} ({self.name}): {size}, {details}"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _devnum(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FlashRefused(
            f"{path} does not exist",
            where=path,
            fix="check the device name with `lsblk` (e.g. /dev/sdb or /dev/mmcblk0)",
        ) from None
    except OSError as err:
        raise FlashRefused(f"cannot inspect {path}: {err.strerror}", where=path) from None
    if not stat.S_ISBLK(st.st_mode):
        raise FlashRefused(
            f"{path} is not a block device",
            where=path,
            fix="pass a whole disk such as /dev/sdb with --device, or write an image file "
            "with --output FILE",
        )
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def _unescape(field_: str) -> str:
    """mountinfo escapes spaces etc. as octal (\\040)."""
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and field_[i + 1 : i + 4].isdigit():
            out.append(chr(int(field_[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def probe_device(
    path: str,
    *,
    sys_root: Path = Path("/sys"),
    proc_root: Path = Path("/proc"),
    devnum: Callable[[str], tuple[int, int]] = _devnum,
) -> DeviceInfo:
    """Collect the facts the guards need about ``path`` (raises ``FlashRefused`` early)."""
    major, minor = devnum(path)
    link = sys_root / "dev" / "block" / f"{major}:{minor}"
    if not link.exists():
        raise FlashRefused(
            f"{path} (device {major}:{minor}) is not known to the kernel's sysfs",
            where=str(link),
            fix="check the device with `lsblk`",
        )
    node = Path(os.path.realpath(link))
    if (node / "partition").exists():
        disk = node.parent.name
        raise FlashRefused(
            f"{path} is a partition ({node.name}) of /dev/{disk}, not a whole disk",
            where=path,
            fix=f"pass the whole card, e.g. --device /dev/{disk}",
        )
    name = node.name
    block = sys_root / "block" / name
    sectors = _read(block / "size")
    device = block / "device"
    removable = _read(block / "removable") == "1" or _read(device / "type") == "SD"
    info = DeviceInfo(
        path=path,
        name=name,
        size=int(sectors) * 512 if sectors.isdigit() else 0,
        removable=removable,
        read_only=_read(block / "ro") == "1",
        model=" ".join(
            x
            for x in (_read(device / "vendor"), _read(device / "model") or _read(device / "name"))
            if x
        ),
        serial=_read(device / "serial") or _read(device / "wwid"),
        transport=_transport(block),
    )
    # The disk, its partitions and everything stacked on them (dm-crypt, LVM, md).
    members = {name: _read(block / "dev")}
    for child in sorted(block.iterdir()) if block.is_dir() else []:
        if (child / "partition").exists():
            info.partitions.append(child.name)
            members[child.name] = _read(child / "dev")
    _add_holders(sys_root, block, members)
    for part in info.partitions:
        _add_holders(sys_root, block / part, members)
    by_devnum = {dev: member for member, dev in members.items() if dev}
    for line in _read(proc_root / "self" / "mountinfo").splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[2] in by_devnum:
            info.mounts.append((by_devnum[fields[2]], _unescape(fields[4])))
    for line in _read(proc_root / "swaps").splitlines()[1:]:
        swap = line.split()[0] if line.split() else ""
        if os.path.basename(swap) in members:
            info.swaps.append(swap)
    return info


def _transport(block: Path) -> str:
    real = os.path.realpath(block)
    for marker, label in (
        ("/usb", "USB"),
        ("/mmc", "SD/MMC"),
        ("/nvme", "NVMe"),
        ("/virtual/", "virtual"),
    ):
        if marker in real:
            return label
    return ""


def _add_holders(sys_root: Path, node: Path, members: dict[str, str], depth: int = 0) -> None:
    holders = node / "holders"
    if depth > 8 or not holders.is_dir():
        return
    for holder in sorted(holders.iterdir()):
        members.setdefault(holder.name, _read(sys_root / "block" / holder.name / "dev"))
        _add_holders(sys_root, sys_root / "block" / holder.name, members, depth + 1)


def check_device(info: DeviceInfo, *, image_size: int, allow_non_removable: bool) -> None:
    """Refuse unsafe targets with ``FlashRefused``: what, where and how to fix it."""
    roots = [dev for dev, point in info.mounts if point == "/"]
    if roots:
        raise FlashRefused(
            f"{info.path} holds the running system (/{'dev/' + roots[0]} is mounted at /)",
            where=info.path,
            fix="this is the disk this computer runs from: pick the SD card (check `lsblk`)",
        )
    if info.mounts:
        listing = ", ".join(f"/dev/{dev} at {point}" for dev, point in info.mounts)
        raise FlashRefused(
            f"{info.path} is in use: {listing} mounted",
            where=info.path,
            fix="unmount it first, e.g. `umount " + " ".join(p for _, p in info.mounts) + "`",
        )
    if info.swaps:
        raise FlashRefused(
            f"{info.path} is in use as swap ({', '.join(info.swaps)})",
            where=info.path,
            fix=f"run `swapoff {' '.join(info.swaps)}` first, or pick another device",
        )
    if not info.removable and not allow_non_removable:
        raise FlashRefused(
            f"{info.path} is not a removable device ({info.describe()})",
            where=info.path,
            fix="SD cards in USB readers are removable; if this really is the card, pass "
            "--allow-non-removable",
        )
    if info.read_only:
        raise FlashRefused(
            f"{info.path} is read-only",
            where=info.path,
            fix="slide the card's write-protect switch to unlocked and insert it again",
        )
    if info.size < image_size:
        raise FlashRefused(
            f"{info.path} is too small: {human_size(info.size)} for a "
            f"{human_size(image_size)} image",
            where=info.path,
            fix="use a larger card",
        )


def open_exclusive(path: str) -> int:
    """Open a checked block device for reading and writing, exclusively (``O_EXCL``)."""
    try:
        return os.open(path, os.O_RDWR | os.O_EXCL | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.EBUSY:
            raise FlashRefused(
                f"{path} is busy: something else has it open exclusively (a mount, an "
                "automounter or another flash)",
                where=path,
                fix="unmount it and stop other tools using it, then try again",
            ) from None
        if err.errno in (errno.EACCES, errno.EPERM):
            raise FlashRefused(
                f"no permission to write {path}",
                where=path,
                fix="run pikube flash with sudo, or add yourself to the disk group",
            ) from None
        if err.errno == errno.EROFS:
            raise FlashRefused(f"{path} is read-only", where=path, fix="unlock the card") from None
        raise FlashRefused(f"cannot open {path}: {err.strerror}", where=path) from None
