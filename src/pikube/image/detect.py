"""Notice SD cards as they are inserted: block devices whose media appear in sysfs.

A card shows up in one of two ways: a USB reader plugged in with its card makes a new
``/sys/block/sdX``; a card pushed into a reader that is already there (or into a built-in
slot) turns the reader's ``size`` from 0 into the card's size. Both are "a medium
appeared": a device listed under ``SYS/block`` with a size above zero that did not have one
when watching began (or last time it was looked at). Every disk that holds media when the
watch starts is left alone, so the system disk and any card already inserted are never
candidates. A device that leaves (or whose medium does) is forgotten, so taking a card out
and putting it back offers it again.

Each newly seen medium passes ``pikube.image.device``'s checks, the same as ``pikube
flash --device`` (removable, not read-only, not mounted or swap, not the running system,
large enough); a refused one is reported once and the watch goes on. Roots are injectable
(``sys_root``, ``proc_root``, ``dev_root``) so tests run against a fake sysfs tree that
names real loop devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pikube.errors import FlashRefused
from pikube.image.device import DeviceInfo, check_device, probe_device


@dataclass(frozen=True)
class Insertion:
    """One medium that appeared: a checked card (``device``) or a refusal."""

    name: str  # kernel name, e.g. sdb
    path: str  # the device node
    device: DeviceInfo | None = None
    refused: FlashRefused | None = None


class CardWatcher:
    """Polls ``SYS/block`` for media that appear; see the module docstring."""

    def __init__(
        self,
        *,
        image_size: int,
        allow_non_removable: bool = False,
        sys_root: Path = Path("/sys"),
        proc_root: Path = Path("/proc"),
        dev_root: Path = Path("/dev"),
    ) -> None:
        self.image_size = image_size
        self.allow_non_removable = allow_non_removable
        self.sys_root = sys_root
        self.proc_root = proc_root
        self.dev_root = dev_root
        self._seen = self._media()  # present at the start: never a candidate

    def _media(self) -> dict[str, str]:
        """Kernel name -> ``major:minor`` of every whole disk that holds a medium now."""
        media = {}
        listing = self.sys_root / "block"
        for entry in sorted(listing.iterdir()) if listing.is_dir() else []:
            size = _read(entry / "size")
            if size.isdigit() and int(size) > 0:
                media[entry.name] = _read(entry / "dev")
        return media

    def poll(self) -> list[Insertion]:
        """The media that appeared since the last poll, each checked (or refused)."""
        now = self._media()
        new = [name for name, dev in now.items() if self._seen.get(name) != dev]
        # udev creates the device node a moment after sysfs shows the disk: until then,
        # the disk is not seen yet (looked at again next time), rather than refused.
        for name in new:
            if not (self.dev_root / name).exists():
                now.pop(name)
        self._seen = now  # removed ones are forgotten: inserted again, they are new
        return [self._check(name) for name in new if name in now]

    def forget(self, name: str) -> None:
        """Offer ``name`` again at the next poll if it still holds a medium."""
        self._seen.pop(name, None)

    def _check(self, name: str) -> Insertion:
        path = str(self.dev_root / name)
        try:
            device = probe_device(path, sys_root=self.sys_root, proc_root=self.proc_root)
            check_device(
                device, image_size=self.image_size, allow_non_removable=self.allow_non_removable
            )
        except FlashRefused as refused:
            return Insertion(name, path, refused=refused)
        return Insertion(name, path, device=device)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""
