"""``pikube flash`` through CliRunner: image files, refusals, confirmation, interruption."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

import pikube.image.flash as flash_core
from pikube.cli.main import cli
from pikube.errors import (
    EXIT_CONFIG,
    EXIT_FLASH_REFUSED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    EXIT_VERIFY_FAILED,
)
from tests.factories import base_cluster, edited, make_key_pair, write_cluster
from tests.image_support import (
    BuiltImage,
    FakeDisk,
    fake_proc,
    fake_sys,
    is_root,
    make_block_node,
    mtype,
)


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def cluster_file(tmp_path: Path, ssh_key: Path) -> Path:
    data = edited(base_cluster(ssh_key), **{"network.domain": "home.lan"})
    return write_cluster(tmp_path, data)


def flash(cluster_file: Path, image: Path, *args: str, input: str | None = None) -> Result:
    return run("flash", "--cluster", str(cluster_file), "--image", str(image), *args, input=input)


def test_flash_to_an_image_file_writes_image_and_first_boot(
    cluster_file: Path,
    pi_image: BuiltImage,
    tmp_path: Path,
) -> None:
    out = tmp_path / "pi-w1.img"
    result = flash(cluster_file, pi_image.xz, "pi-w1", "--output", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "block map computed from the MBR" in result.stderr and "verified" in result.stderr
    layout = pi_image.layout
    raw = pi_image.raw.read_bytes()
    got = out.read_bytes()
    # Outside the boot partition the card is the image, byte for byte.
    assert got[: layout.boot_offset] == raw[: layout.boot_offset]
    end = layout.boot_offset + layout.boot_size
    assert hashlib.sha256(got[end:]).digest() == hashlib.sha256(raw[end:]).digest()
    user_data = mtype(out, layout.boot_offset, "user-data")
    assert yaml.safe_load(user_data)["hostname"] == "pi-w1"
    meta = yaml.safe_load(mtype(out, layout.boot_offset, "meta-data"))
    assert meta["instance-id"].startswith("pikube-pi-w1-")
    net = yaml.safe_load(mtype(out, layout.boot_offset, "network-config"))
    assert net["ethernets"]["eth0"]["addresses"] == ["192.168.1.102/24"]
    cmdline = mtype(out, layout.boot_offset, "cmdline.txt").decode()
    assert cmdline.endswith("quiet splash cgroup_enable=memory cgroup_memory=1\n")
    if shutil.which("cloud-init"):
        seed = tmp_path / "user-data"
        seed.write_bytes(user_data)
        check = subprocess.run(
            ["cloud-init", "schema", "--config-file", str(seed)], capture_output=True
        )
        assert check.returncode == 0, check.stdout
    known = (tmp_path / ".pikube" / "known_hosts").read_text().splitlines()
    assert [line.split()[:2] for line in known] == [
        ["pi-w1,192.168.1.102", "ssh-ed25519"],
        ["pi-w1,192.168.1.102", "ecdsa-sha2-nistp256"],
    ]
    assert not list(tmp_path.glob(".*pikube-partial"))


def test_parallel_flash_gives_each_node_its_own_config(
    cluster_file: Path,
    pi_image: BuiltImage,
    tmp_path: Path,
) -> None:
    outs = [tmp_path / "a.img", tmp_path / "b.img"]
    result = flash(
        cluster_file,
        pi_image.xz,
        "pi-cp1",
        "pi-w2",
        "--output",
        str(outs[0]),
        "--output",
        str(outs[1]),
        "--parallel",
        "--no-verify",
    )
    assert result.exit_code == 0, result.stderr
    assert "NOT verified (--no-verify)" in result.stderr
    offset = pi_image.layout.boot_offset
    metas = [yaml.safe_load(mtype(o, offset, "meta-data")) for o in outs]
    assert [m["local-hostname"] for m in metas] == ["pi-cp1", "pi-w2"]
    assert metas[0]["instance-id"] != metas[1]["instance-id"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pi-w1"], "give either --device or --output"),
        (["pi-w1", "--output", "a", "--device", "/dev/null"], "give either --device or --output"),
        (["pi-w1", "pi-w2", "--output", "a"], "2 node(s) but 1 target(s)"),
        (["pi-w1", "--output", "a.img", "pi-w1", "--output", "b.img"], "only once"),
        (["pi-nope", "--output", "a.img"], "no node 'pi-nope'"),
    ],
)
def test_usage_errors_exit_2(
    cluster_file: Path,
    pi_image: BuiltImage,
    args: list[str],
    message: str,
) -> None:
    result = flash(cluster_file, pi_image.xz, *args)
    assert result.exit_code == EXIT_USAGE
    assert message in result.stderr


def test_regular_file_as_device_is_refused_untouched(
    cluster_file: Path,
    pi_image: BuiltImage,
    tmp_path: Path,
) -> None:
    target = tmp_path / "not-a-disk"
    target.write_bytes(b"precious")
    result = flash(cluster_file, pi_image.xz, "pi-w1", "--device", str(target), "--yes")
    assert result.exit_code == EXIT_FLASH_REFUSED
    assert f"Error: {target} is not a block device" in result.stderr
    assert "--output FILE" in result.stderr
    assert target.read_bytes() == b"precious"


def test_output_into_a_folder_is_refused(
    cluster_file: Path, pi_image: BuiltImage, tmp_path: Path
) -> None:
    result = flash(cluster_file, pi_image.xz, "pi-w1", "--output", str(tmp_path))
    assert result.exit_code == EXIT_FLASH_REFUSED and "is a folder" in result.stderr


def test_missing_image_file_is_an_error(cluster_file: Path, tmp_path: Path) -> None:
    result = flash(cluster_file, tmp_path / "nope.img.xz", "pi-w1", "--output", str(tmp_path / "o"))
    assert result.exit_code == 1 and "does not exist" in result.stderr


def test_catalog_image_with_a_bad_checksum_is_never_flashed(
    cluster_file: Path,
    pi_image: BuiltImage,
    tmp_path: Path,
) -> None:
    cat = tmp_path / "catalog.yaml"
    cat.write_text(
        f"images:\n  - id: bad\n    url: {pi_image.xz.as_uri()}\n    sha256: {'ab' * 32}\n"
        "    arch: arm64\n"
    )
    out = tmp_path / "out.img"
    result = run(
        "flash",
        "--cluster",
        str(cluster_file),
        "--image",
        "bad",
        "--catalog",
        str(cat),
        "--cache-dir",
        str(tmp_path / "cache"),
        "pi-w1",
        "--output",
        str(out),
    )
    assert result.exit_code == EXIT_VERIFY_FAILED and "checksum mismatch" in result.stderr
    assert not out.exists() and list((tmp_path / "cache").iterdir()) == []


def test_interrupted_flash_exits_130_and_leaves_no_file(
    cluster_file: Path,
    pi_image: BuiltImage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = flash_core.image_chunks

    def interrupted(image: Path) -> Iterator[bytes]:
        for i, chunk in enumerate(real(image)):
            if i == 5:
                raise KeyboardInterrupt  # Ctrl-C while writing
            yield chunk

    monkeypatch.setattr(flash_core, "image_chunks", interrupted)
    out = tmp_path / "out.img"
    result = flash(cluster_file, pi_image.xz, "pi-w1", "--output", str(out))
    assert result.exit_code == EXIT_INTERRUPTED
    assert "Error: interrupted" in result.stderr and "partial file removed" in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".*pikube-partial"))


# -- refusals for block devices: fake device nodes + a fake sysfs tree (root only) ---------

needs_root = pytest.mark.skipif(not is_root(), reason="mknod of a block device node needs root")


def device_case(tmp_path: Path, disk: FakeDisk, **proc: list[object]) -> list[str]:
    node = tmp_path / disk.name
    make_block_node(node, disk.devnum)
    sys_root = fake_sys(tmp_path / "fake", disk)
    proc_root = fake_proc(tmp_path / "fake", **proc)  # type: ignore[arg-type]
    return ["--device", str(node), "--sys-root", str(sys_root), "--proc-root", str(proc_root)]


# Device numbers no real disk uses (major 240-254 is "local/experimental use").
FAKE = (240, 16)


@needs_root
@pytest.mark.parametrize(
    ("disk", "proc", "extra", "message"),
    [
        (FakeDisk(devnum=FAKE, removable="0"), {}, [], "is not a removable device"),
        (
            FakeDisk(devnum=FAKE),
            {"mounts": [("240:17", "/media/boot")]},
            ["--allow-non-removable"],
            "/media/boot mounted",
        ),
        (FakeDisk(devnum=FAKE), {"mounts": [("240:18", "/")]}, [], "holds the running system"),
        (FakeDisk(devnum=FAKE, size=64 << 20), {}, [], "is too small"),
        (FakeDisk(devnum=FAKE, ro="1"), {}, [], "is read-only"),
    ],
)
def test_device_refusals_exit_4_before_anything_is_written(
    cluster_file: Path,
    pi_image: BuiltImage,
    tmp_path: Path,
    disk: FakeDisk,
    proc: dict[str, list[object]],
    extra: list[str],
    message: str,
) -> None:
    args = device_case(tmp_path, disk, **proc)
    result = flash(cluster_file, pi_image.xz, "pi-w1", *args, *extra, "--yes")
    assert result.exit_code == EXIT_FLASH_REFUSED, result.stderr
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert "fix:" in result.stderr
    assert not (tmp_path / ".pikube" / "hostkeys").exists()  # refused before any preparation


@needs_root
@pytest.mark.parametrize("answer", ["n\n", "", "maybe\nno\n"])
def test_unconfirmed_device_is_not_written(
    cluster_file: Path,
    pi_image: BuiltImage,
    tmp_path: Path,
    answer: str,
) -> None:
    args = device_case(tmp_path, FakeDisk(devnum=FAKE))
    result = flash(cluster_file, pi_image.xz, "pi-w1", *args, input=answer)
    assert result.exit_code == EXIT_FLASH_REFUSED
    assert "Generic- SD/MMC CRW, serial 000000000819" in result.stderr  # shown before asking
    assert "not confirmed: nothing was written" in result.stderr


def test_one_failed_card_does_not_spoil_the_others(
    cluster_file: Path,
    pi_image: BuiltImage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pikube.errors import ImageVerifyError

    real = flash_core.flash_image

    def flaky(image: Path, target: object, target_path: str, **kw: object) -> object:
        if "bad.img" in target_path:
            raise ImageVerifyError("read-back verification failed: bytes 0-1 differ")
        return real(image, target, target_path, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(flash_core, "flash_image", flaky)
    good, bad = tmp_path / "good.img", tmp_path / "bad.img"
    result = flash(
        cluster_file,
        pi_image.xz,
        "pi-w1",
        "pi-w2",
        "--output",
        str(good),
        "--output",
        str(bad),
        "--parallel",
    )
    assert result.exit_code == EXIT_VERIFY_FAILED
    assert "pi-w1 -> " in result.stderr and "read-back verification failed" in result.stderr
    assert good.is_file() and not bad.exists()
    assert not list(tmp_path.glob(".*pikube-partial"))
    known = (tmp_path / ".pikube" / "known_hosts").read_text()
    assert "pi-w1," in known and "pi-w2," not in known


def test_vm_only_image_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """The x86 image that rehearsals name is never flashed: refused with exit code 4."""
    from click.testing import CliRunner

    from pikube.cli.main import cli
    from pikube.errors import EXIT_FLASH_REFUSED
    from tests.factories import base_cluster, make_key_pair, write_cluster

    key = make_key_pair(tmp_path / "keys")
    data = base_cluster(key)
    data["image"] = "ubuntu-24.04-server-amd64"
    cluster = write_cluster(tmp_path, data)
    out = tmp_path / "card.img"
    result = CliRunner().invoke(
        cli, ["flash", "pi-w1", "--cluster", str(cluster), "--output", str(out), "--yes"]
    )
    assert result.exit_code == EXIT_FLASH_REFUSED, result.stderr
    assert "not SD cards" in result.stderr
    assert not out.exists()


PEAK_RSS_LIMIT_MIB = 80  # the issue: "bounded memory (well under 100 MB)"


@pytest.mark.parametrize("cards", [1, 3])
def test_flash_peak_memory_stays_well_under_100_mb(
    cluster_file: Path, pi_image: BuiltImage, tmp_path: Path, cards: int
) -> None:
    """The whole `pikube flash` process, interpreter included, on an image packed the way
    Ubuntu's are (xz -6: 8 MiB dictionaries, several blocks, so the decoders run in
    parallel); with --parallel the image is decoded once for all cards. VmHWM is this
    process's own peak RSS, read as it exits."""
    packed = tmp_path / "ubuntu-pi-6.img.xz"
    with packed.open("wb") as handle:
        subprocess.run(["xz", "-c", "-6", "-T2", str(pi_image.raw)], stdout=handle, check=True)
    # As installed from a wheel (pip compiles it): a checkout's first run would also count
    # the compiler's memory (+8-10 MiB measured in a fresh clone), which is not flashing's.
    package = Path(flash_core.__file__).parent.parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
    report = tmp_path / "vmhwm"
    code = (
        "import sys\n"
        "from pikube.cli.main import main\n"
        "report = sys.argv.pop(1)\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "    open(report, 'w').write(hwm.split()[1])\n"
    )
    nodes = ["pi-cp1", "pi-w1", "pi-w2"][:cards]
    outs = [tmp_path / f"{node}.img" for node in nodes]
    argv = ["flash", "--cluster", str(cluster_file), "--image", str(packed), *nodes]
    argv += [arg for out in outs for arg in ("--output", str(out))]
    proc = subprocess.run(
        [sys.executable, "-c", code, str(report), *argv, *(["--parallel"] if cards > 1 else [])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("verified") == cards
    assert all(out.stat().st_size == pi_image.raw.stat().st_size for out in outs)
    peak_mib = int(report.read_text()) / 1024
    assert peak_mib < PEAK_RSS_LIMIT_MIB, f"pikube flash peaked at {peak_mib:.1f} MiB"


# -- nothing overwritten unasked, nothing half-written, secrets owner-only ---------------


def test_existing_output_is_refused_unless_force(
    cluster_file: Path, pi_image: BuiltImage, tmp_path: Path
) -> None:
    out = tmp_path / "cluster-backup.img"
    out.write_bytes(b"precious")
    result = flash(cluster_file, pi_image.xz, "pi-w1", "--output", str(out))
    assert result.exit_code == EXIT_FLASH_REFUSED, result.stderr
    assert f"Error: {out} already exists" in result.stderr and "--force" in result.stderr
    assert out.read_bytes() == b"precious"
    assert not (tmp_path / ".pikube" / "hostkeys").exists()  # refused before preparing
    # The cluster file itself is just another existing file.
    before = cluster_file.read_bytes()
    result = flash(cluster_file, pi_image.xz, "pi-w1", "--output", str(cluster_file))
    assert result.exit_code == EXIT_FLASH_REFUSED and cluster_file.read_bytes() == before
    result = flash(cluster_file, pi_image.xz, "pi-w1", "--output", str(out), "--force")
    assert result.exit_code == 0, result.stderr
    assert out.stat().st_size == pi_image.raw.stat().st_size


def test_output_onto_the_source_image_is_refused_even_with_force(
    cluster_file: Path, pi_image: BuiltImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src" / "pi.img"
    source.parent.mkdir()
    shutil.copyfile(pi_image.raw, source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    monkeypatch.chdir(tmp_path)
    for spelling, extra in ((str(source), []), ("src/../src/pi.img", ["--force"])):
        result = flash(cluster_file, source, "pi-w1", "--output", spelling, *extra)
        assert result.exit_code == EXIT_FLASH_REFUSED, result.stderr
        assert "is the source image" in result.stderr
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest


def test_output_image_and_its_partial_file_are_owner_only(
    cluster_file: Path,
    pi_image: BuiltImage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The image holds the node's private host keys: 0600 from the first byte."""
    real = flash_core.image_chunks
    partial_modes: list[int] = []

    def watched(image: Path) -> Iterator[bytes]:
        for i, chunk in enumerate(real(image)):
            if i == 5:  # mid-write: the partial file as other users would see it
                partial_modes.extend(p.stat().st_mode & 0o777 for p in tmp_path.glob(".*partial"))
            yield chunk

    monkeypatch.setattr(flash_core, "image_chunks", watched)
    old_umask = os.umask(0o022)
    try:
        out = tmp_path / "pi-w1.img"
        result = flash(cluster_file, pi_image.xz, "pi-w1", "--output", str(out))
    finally:
        os.umask(old_umask)
    assert result.exit_code == 0, result.stderr
    assert partial_modes == [0o600]
    assert out.stat().st_mode & 0o777 == 0o600


def test_one_output_spelled_two_ways_is_one_target(
    cluster_file: Path, pi_image: BuiltImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "a.img"
    result = flash(
        cluster_file, pi_image.xz, "pi-w1", "pi-w2", "--output", "a.img", "--output", str(out)
    )
    assert result.exit_code == EXIT_USAGE and "only once" in result.stderr
    assert not out.exists()


PIKUBE = [sys.executable, "-m", "pikube"]


def flash_argv(cluster_file: Path, image: Path, out: Path) -> list[str]:
    """`pikube flash` of node pi-w1 from ``image`` to the file ``out``."""
    return ["flash", "-c", str(cluster_file), "--image", str(image), "pi-w1", "--output", str(out)]


def start_flash(cluster_file: Path, image: Path, out: Path) -> subprocess.Popen[str]:
    """A real `pikube flash` process, returned once it has begun writing ``out``."""
    proc = subprocess.Popen(
        [*PIKUBE, *flash_argv(cluster_file, image, out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "writing" in line:
            return proc
    proc.wait()
    raise AssertionError(f"pikube flash never started writing (exit {proc.returncode})")


def test_second_flash_to_an_output_being_written_is_refused(
    cluster_file: Path, pi_image: BuiltImage, tmp_path: Path
) -> None:
    out = tmp_path / "pi-w1.img"
    first = start_flash(cluster_file, pi_image.xz, out)
    first.send_signal(signal.SIGSTOP)  # the first is mid-write for as long as we look
    try:
        second = subprocess.run(
            [*PIKUBE, *flash_argv(cluster_file, pi_image.xz, out)],
            capture_output=True,
            text=True,
        )
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.stderr is not None
    rest = first.stderr.read()
    assert first.wait() == 0, rest
    assert second.returncode == EXIT_FLASH_REFUSED, second.stderr
    assert "being written by another pikube flash" in second.stderr
    assert "verified" in rest
    got = out.read_bytes()
    end = pi_image.layout.boot_offset + pi_image.layout.boot_size
    assert got[end:] == pi_image.raw.read_bytes()[end:]
    assert not list(tmp_path.glob(".pi-w1.img*"))  # no partial file, no lock file left


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_a_flash_like_ctrl_c(
    cluster_file: Path, pi_image: BuiltImage, tmp_path: Path, sig: signal.Signals
) -> None:
    out = tmp_path / "pi-w1.img"
    proc = start_flash(cluster_file, pi_image.xz, out)
    proc.send_signal(sig)
    assert proc.stderr is not None
    rest = proc.stderr.read()
    assert proc.wait() == EXIT_INTERRUPTED, rest
    assert "Error: interrupted" in rest and "partial file removed" in rest
    assert not out.exists() and not list(tmp_path.glob(".pi-w1.img*"))


def test_missing_mtools_is_refused_before_the_first_byte(
    cluster_file: Path, pi_image: BuiltImage, tmp_path: Path
) -> None:
    only = tmp_path / "bin"
    only.mkdir()
    keygen = shutil.which("ssh-keygen")
    assert keygen is not None
    (only / "ssh-keygen").symlink_to(keygen)
    out = tmp_path / "pi-w1.img"
    result = CliRunner().invoke(
        cli,
        flash_argv(cluster_file, pi_image.xz, out),
        env={"PATH": str(only)},
    )
    assert result.exit_code == EXIT_FLASH_REFUSED, result.stderr
    assert "mcopy, mtype, mmd not found" in result.stderr
    assert "apt-get install mtools" in result.stderr
    assert "writing" not in result.stderr  # refused before the first byte
    assert not out.exists() and not (tmp_path / ".pikube" / "hostkeys").exists()


@pytest.mark.parametrize("kind", ["gzip", "xz of a non-image"])
def test_non_image_input_is_refused_before_the_first_byte(
    cluster_file: Path, pi_image: BuiltImage, tmp_path: Path, kind: str
) -> None:
    """A gzip file, or anything else without an MBR, is refused after reading its head."""
    if kind == "gzip":
        packed = tmp_path / "pi.img.gz"  # its first 8 MiB are enough to be refused
        with pi_image.raw.open("rb") as raw:
            packed.write_bytes(gzip.compress(raw.read(8 << 20), compresslevel=1))
        message = "is a gzip file"
    else:
        notes = tmp_path / "notes.img"
        notes.write_bytes(b"not a disk image\n" * 200_000)  # 3.4 MB, bigger than a boot sector
        subprocess.run(["xz", "-0", str(notes)], check=True)
        packed = tmp_path / "notes.img.xz"
        message = "has no MBR partition table"
    out = tmp_path / "pi-w1.img"
    result = flash(cluster_file, packed, "pi-w1", "--output", str(out))
    assert result.exit_code == EXIT_FLASH_REFUSED, result.stderr
    assert message in result.stderr and "fix:" in result.stderr
    assert "writing" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".pi-w1.img*"))


@contextlib.contextmanager
def throwaway_user(home: Path) -> Iterator[pwd.struct_passwd]:
    """A real unprivileged user with ``home`` (created, then removed with its group)."""
    name = f"pikube-t{secrets.token_hex(4)}"
    options = ["--no-create-home", "--home-dir", str(home), "--shell", "/usr/sbin/nologin"]
    subprocess.run(["useradd", *options, "--user-group", name], check=True)
    try:
        home.mkdir()
        entry = pwd.getpwnam(name)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        yield entry
    finally:
        subprocess.run(["userdel", name], check=False)


@needs_root
@pytest.mark.parametrize("sudo_home", ["root's", "the user's"])
def test_sudo_flash_uses_the_users_home_and_leaves_their_files_theirs(
    pi_image: BuiltImage, tmp_path: Path, sudo_home: str
) -> None:
    """`sudo pikube flash`: `~` is the invoking user's (their SSH key goes on the card), and
    the state folder, host keys, known_hosts and the image belong to them, so a later
    `pikube up` as that user can use and update them. sudo sets HOME to root's home by
    default; some setups keep the user's."""
    home = tmp_path / "home"
    with throwaway_user(home) as user:
        key = make_key_pair(home / ".ssh")
        data = base_cluster(key)
        data["ssh"]["public_key"] = "~/.ssh/id_ed25519.pub"
        data["ssh"]["private_key"] = "~/.ssh/id_ed25519"
        cluster_file = write_cluster(home, data)
        for path in [home / ".ssh", *(home / ".ssh").iterdir(), cluster_file]:
            os.chown(path, user.pw_uid, user.pw_gid)
        out = home / "pi-w1.img"
        env = dict(
            os.environ, SUDO_USER=user.pw_name, HOME="/root" if sudo_home == "root's" else str(home)
        )
        result = subprocess.run(
            [*PIKUBE, *flash_argv(cluster_file, pi_image.xz, out)],
            capture_output=True,
            text=True,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        user_data = mtype(out, pi_image.layout.boot_offset, "user-data").decode()
        assert Path(f"{key}.pub").read_text().split()[1] in user_data
        state = home / ".pikube"
        created = [state, state / "known_hosts", out, *state.rglob("*")]
        assert len(created) > 6
        assert {(str(p), p.stat().st_uid) for p in created} == {
            (str(p), user.pw_uid) for p in created
        }


def test_malformed_block_map_is_a_located_input_error_before_writing(
    cluster_file: Path, pi_image: BuiltImage, tmp_path: Path
) -> None:
    image = tmp_path / "pi.img.xz"
    shutil.copyfile(pi_image.xz, image)
    bmap = tmp_path / "pi.img.bmap"
    bmap.write_text("<bmap version='2.0'>\n  <ImageSize>268435456</ImageSize>\n  <BlockMap>\n")
    out = tmp_path / "pi-w1.img"
    result = flash(cluster_file, image, "pi-w1", "--output", str(out))
    assert result.exit_code == EXIT_CONFIG, result.stderr
    assert f"block map {bmap} is invalid" in result.stderr and f"in {bmap}:4" in result.stderr
    assert "fix: remove the .bmap file" in result.stderr
    assert "writing" not in result.stderr and not out.exists()


def test_unreadable_known_hosts_is_a_located_error_before_writing(
    cluster_file: Path, pi_image: BuiltImage, tmp_path: Path
) -> None:
    """known_hosts is an input file too: found bad after the write, the card's keys could
    not be pinned."""
    known = tmp_path / ".pikube" / "known_hosts"
    known.parent.mkdir()
    known.write_bytes(b"pi-cp1,192.168.1.101 ssh-ed25519 AAAA\nh\xe9te ssh-ed25519 AAAB\n")
    out = tmp_path / "pi-w1.img"
    result = flash(cluster_file, pi_image.xz, "pi-w1", "--output", str(out))
    assert result.exit_code == EXIT_CONFIG, result.stderr
    assert f"known_hosts file {known} is not UTF-8" in result.stderr
    assert "fix:" in result.stderr and "Traceback" not in result.output
    assert "writing" not in result.stderr and not out.exists()
