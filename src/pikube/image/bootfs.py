"""First-boot files in the FAT boot partition, written without mounting it (mtools).

mtools reads and writes a FAT file system inside an image file or a block device at a byte
offset (``mcopy -i TARGET@@OFFSET``), so the admin machine needs neither root for mount nor
vfat support. The partition's offset comes from the image's own MBR, which the writer holds
back until the very end (see ``pikube.image.writer``), so it is passed in as bytes.
"""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pikube.errors import PikubeError
from pikube.image.catalog import BootLayout

FAT_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E}


@dataclass(frozen=True)
class BootPartition:
    target: str  # image file or block device
    offset: int
    size: int
    label: str

    @property
    def mtools_image(self) -> str:
        return f"{self.target}@@{self.offset}"


def mtools_env() -> dict[str, str]:
    # Partition geometry of SD cards does not match what mtools expects from floppies/disks.
    return dict(os.environ, MTOOLS_SKIP_CHECK="1", MTOOLS_NO_VFAT="0")


def mcopy_argv(part: BootPartition, sources: list[str], dest_dir: str) -> list[str]:
    return ["mcopy", "-o", "-D", "o", "-i", part.mtools_image, *sources, f"::/{dest_dir}"]


def mtype_argv(part: BootPartition, name: str) -> list[str]:
    return ["mtype", "-i", part.mtools_image, f"::/{name}"]


def mmd_argv(part: BootPartition, folder: str) -> list[str]:
    return ["mmd", "-D", "s", "-i", part.mtools_image, f"::/{folder}"]


def _mtools(
    argv: list[str], *, what: str, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(argv, capture_output=True, env=mtools_env(), check=False)  # noqa: S603
    except FileNotFoundError:
        raise PikubeError(
            "mtools is not installed (pikube writes the boot partition with it, no mounting)",
            fix="install it: apt install mtools (macOS: brew install mtools)",
        ) from None
    if check and proc.returncode != 0:
        raise PikubeError(
            f"{what} failed: {proc.stderr.decode(errors='replace').strip()}",
            where=argv[argv.index("-i") + 1] if "-i" in argv else None,
            fix="the boot partition may be damaged; flash the card again",
        )
    return proc


def partition_entry(mbr: bytes, number: int) -> tuple[int, int, int]:
    """(offset, size, type) in bytes of MBR primary partition ``number`` (1-4)."""
    if len(mbr) < 512 or mbr[510:512] != b"\x55\xaa" or not 1 <= number <= 4:
        raise PikubeError(
            "the image has no MBR partition table",
            fix="pick an image from `pikube image list` (Raspberry Pi images use MBR)",
        )
    entry = mbr[446 + 16 * (number - 1) : 462 + 16 * (number - 1)]
    lba, count = struct.unpack("<II", entry[8:16])
    return lba * 512, count * 512, entry[4]


def fat_label(boot_sector: bytes) -> str:
    """The volume label from a FAT boot sector (FAT32 or FAT12/16 layout)."""
    fat32 = struct.unpack("<H", boot_sector[22:24])[0] == 0
    label = boot_sector[71:82] if fat32 else boot_sector[43:54]
    return label.decode("ascii", errors="replace").strip()


def locate_boot_partition(target: str, mbr: bytes, layout: BootLayout) -> BootPartition:
    """Find the FAT boot partition of ``layout`` using the image's MBR; check type and label."""
    offset, size, ptype = partition_entry(mbr, layout.partition)
    if ptype not in FAT_TYPES or size == 0:
        raise PikubeError(
            f"partition {layout.partition} of the image is not a FAT partition (type "
            f"0x{ptype:02x})",
            where="the image catalog's boot.partition",
            fix="correct boot.partition for this image in the catalog",
        )
    with open(target, "rb") as handle:
        handle.seek(offset)
        sector = handle.read(512)
    label = fat_label(sector)
    if layout.label and label.upper() != layout.label.upper():
        raise PikubeError(
            f"the boot partition is labelled {label!r}, expected {layout.label!r}",
            where=f"{target} partition {layout.partition}",
            fix="the image does not match its catalog entry; check boot.label in the catalog",
        )
    return BootPartition(target, offset, size, label)


def read_boot_file(part: BootPartition, name: str) -> bytes:
    return _mtools(mtype_argv(part, name), what=f"reading {name} from the boot partition").stdout


def write_boot_files(part: BootPartition, files: dict[str, str | bytes], folder: str = "") -> None:
    """Copy ``files`` (name -> content) into ``folder`` of the boot partition, replacing them."""
    if folder:
        _mtools(mmd_argv(part, folder), what=f"creating {folder}", check=False)
    with tempfile.TemporaryDirectory(prefix="pikube-boot-") as tmp:
        os.chmod(tmp, 0o700)  # user-data holds private host keys
        sources = []
        for name, content in files.items():
            path = Path(tmp) / name
            data = content.encode() if isinstance(content, str) else content
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            sources.append(str(path))
        _mtools(mcopy_argv(part, sources, folder), what="writing first-boot files")


def add_kernel_args(cmdline: str, args: tuple[str, ...] | None = None) -> str:
    """Append ``args`` to the single-line kernel command line, each once, keeping the rest.

    ``args`` defaults to the memory cgroup flags node preparation also adds.
    """
    if args is None:
        from pikube.distribution import memory_cgroup_flags

        args = memory_cgroup_flags()
    lines = cmdline.split("\n")
    tokens = lines[0].split()
    tokens += [arg for arg in args if arg not in tokens]
    lines[0] = " ".join(tokens)
    return "\n".join(lines) if len(lines) > 1 else lines[0] + "\n"


def edit_cmdline(part: BootPartition, layout: BootLayout) -> str:
    """Add the memory cgroup flags to cmdline.txt once; return the new line."""
    old = read_boot_file(part, layout.cmdline).decode("utf-8", errors="replace")
    new = add_kernel_args(old)
    if new != old:
        folder, _, name = layout.cmdline.rpartition("/")
        write_boot_files(part, {name: new}, folder)
    return new.split("\n")[0]
