"""Block-device guards against a fake sysfs/procfs tree: every refusal rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from pikube.errors import EXIT_FLASH_REFUSED, FlashRefused
from pikube.image.device import DeviceInfo, check_device, probe_device
from tests.image_support import FakeDisk, fake_proc, fake_sys

IMAGE = 4 << 30


def probe(tmp_path: Path, disk: FakeDisk | None = None, **kw: object) -> DeviceInfo:
    disk = disk or FakeDisk()
    holder = kw.pop("holder", None)
    sys_root = fake_sys(tmp_path, disk, holder=holder)  # type: ignore[arg-type]
    proc_root = fake_proc(tmp_path, **kw)  # type: ignore[arg-type]
    return probe_device(
        f"/dev/{disk.name}", sys_root=sys_root, proc_root=proc_root, devnum=lambda _: disk.devnum
    )


def refused(info: DeviceInfo, *, allow: bool = False, image: int = IMAGE) -> FlashRefused:
    with pytest.raises(FlashRefused) as err:
        check_device(info, image_size=image, allow_non_removable=allow)
    assert err.value.exit_code == EXIT_FLASH_REFUSED
    assert err.value.fix, "every refusal says how to fix it"
    return err.value


def test_a_removable_unmounted_card_passes_and_is_described(tmp_path: Path) -> None:
    info = probe(tmp_path)
    check_device(info, image_size=IMAGE, allow_non_removable=False)
    assert info.size == 32 << 30 and info.partitions == ["sdb1", "sdb2"]
    assert info.describe() == (
        "/dev/sdb (sdb): 32.0 GiB, Generic- SD/MMC CRW, serial 000000000819, USB, removable"
    )


def test_non_removable_disk_is_refused_unless_allowed(tmp_path: Path) -> None:
    info = probe(tmp_path, FakeDisk(removable="0"))
    assert "--allow-non-removable" in (refused(info).fix or "")
    check_device(info, image_size=IMAGE, allow_non_removable=True)


def test_sd_card_in_a_built_in_reader_counts_as_removable(tmp_path: Path) -> None:
    disk = FakeDisk(name="mmcblk0", devnum=(179, 0), removable="0", dev_type="SD")
    info = probe(tmp_path, disk)
    assert info.removable
    check_device(info, image_size=IMAGE, allow_non_removable=False)


def test_mounted_partition_is_refused_with_its_mount_point(tmp_path: Path) -> None:
    info = probe(tmp_path, mounts=[("8:17", "/media/me/system boot")])
    err = refused(info, allow=True)
    assert "/dev/sdb1 at /media/me/system boot" in err.what
    assert "umount" in (err.fix or "")


def test_disk_holding_the_running_system_is_refused(tmp_path: Path) -> None:
    info = probe(tmp_path, mounts=[("8:18", "/")])
    err = refused(info, allow=True)
    assert "holds the running system" in err.what


def test_mount_through_a_device_mapper_holder_is_found(tmp_path: Path) -> None:
    info = probe(tmp_path, holder="dm-0", mounts=[("254:0", "/")])
    assert "holds the running system" in refused(info, allow=True).what


def test_swap_partition_is_refused(tmp_path: Path) -> None:
    info = probe(tmp_path, swaps=["/dev/sdb2"])
    assert "swap" in refused(info).what


def test_read_only_card_is_refused(tmp_path: Path) -> None:
    info = probe(tmp_path, FakeDisk(ro="1"))
    assert "write-protect" in (refused(info).fix or "")


def test_too_small_card_is_refused(tmp_path: Path) -> None:
    info = probe(tmp_path, FakeDisk(size=2 << 30))
    assert "too small: 2.0 GiB for a 4.0 GiB image" in refused(info).what


def test_partition_instead_of_disk_is_refused(tmp_path: Path) -> None:
    sys_root = fake_sys(tmp_path, FakeDisk())
    with pytest.raises(FlashRefused, match="is a partition") as err:
        probe_device("/dev/sdb1", sys_root=sys_root, proc_root=tmp_path, devnum=lambda _: (8, 17))
    assert "/dev/sdb" in (err.value.fix or "")


def test_regular_file_and_missing_path_are_refused(tmp_path: Path) -> None:
    plain = tmp_path / "file.img"
    plain.write_bytes(b"x")
    with pytest.raises(FlashRefused, match="not a block device"):
        probe_device(str(plain))
    with pytest.raises(FlashRefused, match="does not exist"):
        probe_device(str(tmp_path / "nope"))


def test_unknown_device_number_is_refused(tmp_path: Path) -> None:
    sys_root = fake_sys(tmp_path, FakeDisk())
    with pytest.raises(FlashRefused, match="not known"):
        probe_device("/dev/sdz", sys_root=sys_root, proc_root=tmp_path, devnum=lambda _: (8, 99))
