"""The FAT boot partition, written with mtools and no mount: seed files and cmdline.txt."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pikube.errors import PikubeError
from pikube.image.bootfs import (
    add_kernel_args,
    edit_cmdline,
    locate_boot_partition,
    mcopy_argv,
    partition_entry,
    read_boot_file,
    write_boot_files,
)
from pikube.image.catalog import BootLayout
from tests.image_support import BuiltImage, mtype

CMDLINE = "console=serial0,115200 console=tty1 root=LABEL=writable rootwait fixrtc quiet splash\n"


@pytest.fixture
def image(pi_image: BuiltImage, tmp_path: Path) -> Path:
    if shutil.which("mcopy") is None:
        pytest.skip("needs mtools")
    copy = tmp_path / "img"
    shutil.copyfile(pi_image.raw, copy)
    return copy


def mbr(path: Path) -> bytes:
    return path.read_bytes()[:512]


def test_kernel_args_are_added_once_keeping_the_rest() -> None:
    once = add_kernel_args(CMDLINE)
    assert once == CMDLINE.strip() + " cgroup_enable=memory cgroup_memory=1\n"
    assert add_kernel_args(once) == once
    partial = add_kernel_args("root=/dev/mmcblk0p2 cgroup_memory=1")
    assert partial == "root=/dev/mmcblk0p2 cgroup_memory=1 cgroup_enable=memory\n"


def test_partition_entry_reads_the_mbr(image: Path, pi_image: BuiltImage) -> None:
    offset, size, ptype = partition_entry(mbr(image), 1)
    assert (offset, size, ptype) == (pi_image.layout.boot_offset, pi_image.layout.boot_size, 0x0C)
    with pytest.raises(PikubeError, match="no MBR"):
        partition_entry(bytes(512), 1)


def test_seed_files_are_written_and_read_back_without_mounting(image: Path) -> None:
    part = locate_boot_partition(str(image), mbr(image), BootLayout())
    assert part.label == "system-boot"
    files = {"user-data": "#cloud-config\nhostname: x\n", "meta-data": "instance-id: i-1\n"}
    write_boot_files(part, files)
    for name, content in files.items():
        assert mtype(image, part.offset, name).decode() == content
        assert read_boot_file(part, name) == content.encode()
    assert b"kernel=vmlinuz" in read_boot_file(part, "config.txt")  # the rest is untouched


def test_seed_folder_is_created_when_the_layout_asks(image: Path) -> None:
    part = locate_boot_partition(str(image), mbr(image), BootLayout())
    write_boot_files(part, {"user-data": "#cloud-config\n"}, "seed")
    assert mtype(image, part.offset, "seed/user-data") == b"#cloud-config\n"


def test_cmdline_gets_the_cgroup_flags_once(image: Path) -> None:
    layout = BootLayout()
    part = locate_boot_partition(str(image), mbr(image), layout)
    first = edit_cmdline(part, layout)
    second = edit_cmdline(part, layout)
    text = mtype(image, part.offset, "cmdline.txt").decode()
    assert first == second == text.strip()
    assert text.count("cgroup_enable=memory") == 1 and text.count("cgroup_memory=1") == 1
    assert text.startswith("console=serial0,115200") and text.count("\n") == 1


def test_wrong_label_or_partition_is_refused(image: Path) -> None:
    with pytest.raises(PikubeError, match="labelled 'system-boot', expected 'bootfs'"):
        locate_boot_partition(str(image), mbr(image), BootLayout(label="bootfs"))
    with pytest.raises(PikubeError, match="not a FAT partition"):
        locate_boot_partition(str(image), mbr(image), BootLayout(partition=2))


def test_mtools_argv_is_a_list_with_the_offset() -> None:
    from pikube.image.bootfs import BootPartition

    part = BootPartition("/dev/sdb", 1048576, 1, "system-boot")
    assert mcopy_argv(part, ["/tmp/a"], "") == [
        "mcopy",
        "-o",
        "-D",
        "o",
        "-i",
        "/dev/sdb@@1048576",
        "/tmp/a",
        "::/",
    ]
