"""Cards noticed as they are inserted: real loop devices that appear in a test sysfs tree
while `pikube build` (or its watcher) runs, and the same refusals as `pikube flash`.

The sysfs tree is a test one (``tests.image_support.fake_sys``) naming real loop devices,
so the build sees only the "cards" a test inserts: the loop devices other programs on this
machine attach never appear to it (nor could they be written). Root only (losetup).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pikube.image.detect import CardWatcher
from tests.factories import base_cluster, write_cluster
from tests.image_support import (
    BuiltImage,
    FakeDisk,
    fake_proc,
    fake_sys,
    is_root,
    loop_device,
    make_block_node,
)
from tests.image_support import mtype as read_boot_file

pytestmark = pytest.mark.skipif(not is_root(), reason="loop devices need root")

MIB = 1 << 20


class Readers:
    """A test sysfs root into which cards (loop devices) are inserted and removed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sys_root = root / "sys"
        self.proc_root = fake_proc(root)
        self.stack = contextlib.ExitStack()
        # The computer's own disk is there from the start: never a candidate.
        fake_sys(root, FakeDisk(name="nvme0n1", devnum=(259, 0), removable="0", partitions=2))

    def insert(self, backing: Path, **disk: object) -> str:
        """Attach a loop device over ``backing`` and make it appear as a card in a reader."""
        dev = self.stack.enter_context(loop_device(backing))
        rdev = os.stat(dev).st_rdev
        size = disk.pop("size", backing.stat().st_size)
        fake_sys(
            self.root,
            FakeDisk(
                name=Path(dev).name,
                devnum=(os.major(rdev), os.minor(rdev)),
                size=size,  # type: ignore[arg-type]
                partitions=0,
                **disk,  # type: ignore[arg-type]
            ),
        )
        return dev

    def close(self) -> None:
        self.stack.close()


@pytest.fixture
def readers(tmp_path: Path) -> Iterator[Readers]:
    made = Readers(tmp_path / "fake")
    try:
        yield made
    finally:
        made.close()


def blank(path: Path, size: int) -> Path:
    with path.open("wb") as handle:
        handle.truncate(size)
    return path


def test_watcher_offers_only_cards_inserted_during_the_watch(
    readers: Readers, tmp_path: Path
) -> None:
    before = readers.insert(blank(tmp_path / "already-in.img", 64 * MIB))
    watcher = CardWatcher(
        image_size=32 * MIB,
        sys_root=readers.sys_root,
        proc_root=readers.proc_root,
    )
    assert watcher.poll() == []  # the system disk and a card already inserted stay alone

    fixed = readers.insert(blank(tmp_path / "fixed.img", 64 * MIB), removable="0")
    small = readers.insert(blank(tmp_path / "small.img", 16 * MIB))
    refused = {found.path: found.refused for found in watcher.poll()}
    assert set(refused) == {fixed, small}
    assert "is not a removable device" in str(refused[fixed])
    assert "is too small" in str(refused[small])
    assert watcher.poll() == []  # refused once, not again while it stays

    card = readers.insert(blank(tmp_path / "card.img", 64 * MIB))
    (found,) = watcher.poll()
    assert found.path == card and found.refused is None and found.device is not None
    assert "Generic- SD/MMC CRW" in found.device.describe()
    assert watcher.poll() == []

    entry = readers.sys_root / "block" / Path(card).name
    kernel_dir = entry.readlink()
    entry.unlink()  # taken out ...
    assert watcher.poll() == []
    entry.symlink_to(kernel_dir)  # ... and put back: offered again
    assert [f.path for f in watcher.poll()] == [card]
    assert before not in {f.path for f in watcher.poll()}


def test_watcher_offers_a_card_pushed_into_an_empty_reader(
    readers: Readers, tmp_path: Path
) -> None:
    card = readers.insert(blank(tmp_path / "card.img", 64 * MIB), size=0)  # reader, no card
    watcher = CardWatcher(
        image_size=32 * MIB, sys_root=readers.sys_root, proc_root=readers.proc_root
    )
    assert watcher.poll() == []
    size_file = Path(os.path.realpath(readers.sys_root / "block" / Path(card).name)) / "size"
    size_file.write_text(f"{64 * MIB // 512}\n")  # the medium arrived
    assert [f.path for f in watcher.poll()] == [card]


def test_a_disk_is_offered_once_its_device_node_exists(readers: Readers, tmp_path: Path) -> None:
    dev_root = tmp_path / "dev"  # where udev would create the node
    dev_root.mkdir()
    watcher = CardWatcher(
        image_size=32 * MIB,
        sys_root=readers.sys_root,
        proc_root=readers.proc_root,
        dev_root=dev_root,
    )
    card = readers.insert(blank(tmp_path / "card.img", 64 * MIB))  # in sysfs, no node yet
    assert watcher.poll() == []  # not refused: not there yet
    rdev = os.stat(card).st_rdev
    node = dev_root / Path(card).name
    make_block_node(node, (os.major(rdev), os.minor(rdev)))
    (found,) = watcher.poll()
    assert found.path == str(node) and found.device is not None


# -- `pikube build --cards-only` as a user runs it, cards inserted while it waits -----------


def start_build(cluster_file: Path, image: Path, readers: Readers, *extra: str) -> Any:
    return subprocess.Popen(
        [*start_build_argv(cluster_file, image, readers), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Transcript:
    """The build's stderr, read as it comes, so a test can act when a line appears."""

    def __init__(self, proc: Any) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: Any) -> None:
        for line in proc.stderr:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.lines.append("")  # end of output
            self.changed.notify_all()

    def wait_for(self, text: str, count: int = 1, timeout: float = 120) -> None:
        with self.changed:
            ok = self.changed.wait_for(
                lambda: sum(text in line for line in self.lines) >= count or "" in self.lines,
                timeout=timeout,
            )
        assert ok and sum(text in line for line in self.lines) >= count, self.text()

    def text(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def cluster_file(tmp_path: Path, ssh_key: Path) -> Path:
    return write_cluster(tmp_path, base_cluster(ssh_key, nodes=3))


def test_build_writes_each_inserted_card_for_the_next_node_and_remembers_it(
    cluster_file: Path, pi_image: BuiltImage, readers: Readers, tmp_path: Path
) -> None:
    size = 2 * pi_image.layout.size
    proc = start_build(cluster_file, pi_image.xz, readers)
    try:
        out = Transcript(proc)
        out.wait_for("insert the card for pi-cp1")
        fixed = readers.insert(blank(tmp_path / "disk.img", size), removable="0")
        out.wait_for(f"not using {fixed}")
        first = readers.insert(blank(tmp_path / "a.img", size))
        out.wait_for("card for pi-cp1 written")
        out.wait_for("insert the card for pi-w1")
        # Two readers: both cards are written at once, for the next two nodes.
        second = readers.insert(blank(tmp_path / "b.img", size))
        third = readers.insert(blank(tmp_path / "c.img", size))
        assert proc.wait(timeout=300) == 0, out.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.thread.join(10)
    text = out.text()
    assert "card for pi-w1 written" in text and "card for pi-w2 written" in text
    assert "Traceback" not in text
    layout = pi_image.layout
    hostnames = {
        dev: yaml.safe_load(read_boot_file(dev, layout.boot_offset, "meta-data"))["local-hostname"]
        for dev in (first, second, third)
    }
    assert hostnames[first] == "pi-cp1"
    assert sorted([hostnames[second], hostnames[third]]) == ["pi-w1", "pi-w2"]
    assert (tmp_path / "disk.img").read_bytes().strip(b"\0") == b""  # refused: untouched
    known = (tmp_path / ".pikube" / "known_hosts").read_text()
    assert all(f"{name}," in known for name in ("pi-cp1", "pi-w1", "pi-w2"))

    # Run again: every card is written, none is asked for; --reflash asks for one again.
    again = subprocess.run(
        start_build_argv(cluster_file, pi_image.xz, readers), capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert "insert the card" not in again.stderr
    proc = start_build(cluster_file, pi_image.xz, readers, "--reflash", "pi-w2")
    try:
        out = Transcript(proc)
        out.wait_for("insert the card for pi-w2")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert "pi-cp1" not in out.text().split("insert the card", 1)[1]


def start_build_argv(cluster_file: Path, image: Path, readers: Readers) -> list[str]:
    return [
        sys.executable, "-m", "pikube", "build", "-c", str(cluster_file), "--image", str(image),
        "--cards-only", "--yes", "--sys-root", str(readers.sys_root),
        "--proc-root", str(readers.proc_root),
    ]  # fmt: skip
