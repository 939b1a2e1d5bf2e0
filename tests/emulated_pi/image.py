"""Build, and cache, an arm64 Raspberry Pi SD image laid out like Ubuntu's preinstalled server one.

The layout copies Ubuntu's ``ubuntu-2x.04-preinstalled-server-arm64+raspi.img``:

* MBR, partition 1: FAT32 labelled ``system-boot`` (type 0x0c, bootable) holding the kernel
  (``vmlinuz``), ``initrd.img``, the device tree, ``config.txt``, ``cmdline.txt`` and the
  cloud-init NoCloud seed (``meta-data``, ``user-data``, ``network-config``) that ``pikube
  flash`` rewrites per node;
* partition 2: ext4 labelled ``writable``, the root file system, mounted by label;
* ``/etc/fstab`` mounts ``LABEL=system-boot`` at ``/boot/firmware``;
* cloud-init's only data source is NoCloud with ``fs_label: system-boot`` (Ubuntu's raspi
  images ship the same in ``/etc/cloud/cloud.cfg.d/99-fake_cloud.cfg``);
* no SSH host keys and an empty machine-id: every card gets its own at first boot (pikube
  pins pre-generated host keys through cloud-init).

The root file system is Debian bookworm arm64 (Ubuntu's own image cannot be downloaded here),
made with ``debootstrap --foreign`` and finished under qemu-user through binfmt_misc. The
device tree is ``bcm2837-rpi-3-b.dtb`` from Debian's kernel package, the one QEMU's
``raspi3b`` machine emulates. Nothing here needs a loop device or a mount: the partition
table is written with ``sfdisk`` on the file, FAT with ``mkfs.vfat --offset`` plus mtools,
ext4 with ``mke2fs -d DIR -E offset=``.

Builds are cached in ``$PIKUBE_LAB_CACHE`` (default /var/cache/pikube-lab):

* ``pi-rootfs-<hash>.tar`` keyed by the root file system recipe (the slow part: emulated
  dpkg),
* ``pi-initrd-<hash>.img`` keyed by that plus the initramfs settings (emulated mkinitramfs),
* ``pi-image-<hash>.img`` (raw, sparse) keyed by the initrd hash plus this module's source,

so an image is rebuilt only when its recipe changes. Run ``python -m tests.emulated_pi.image``
to build (or find) the image; it prints the path.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.lab.core import RASPIOS_FILES, RASPIOS_IMAGE, raspios_files, raspios_units

CACHE_DIR = Path(os.environ.get("PIKUBE_LAB_CACHE", "/var/cache/pikube-lab"))
SUITE = "bookworm"
# Raspberry Pi OS Lite (the catalog's raspios-trixie-lite-arm64) is Debian trixie.
RASPIOS_SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
# The host's caching apt proxy (tests/lab/acng.py starts one on 127.0.0.1:3142); used for the
# build when it answers so that a rebuild after a recipe change does not download again.
ACNG = ("127.0.0.1", 3142)

PACKAGES = [
    # what the brief and Ubuntu's server image have in common for a node
    "linux-image-arm64",
    "initramfs-tools",
    "systemd",
    "systemd-sysv",
    "systemd-timesyncd",
    "udev",
    "dbus",
    "openssh-server",
    "sudo",
    "python3",
    "cloud-init",
    # cryptography needs the virtual python3-cffi-backend-api-*, which debootstrap's resolver
    # does not follow: name the package that provides it.
    "python3-cffi-backend",
    "netplan.io",
    "iproute2",
    "kmod",
    "netbase",
    "ca-certificates",
    "dosfstools",
    "e2fsprogs",
    "apt-utils",
    "less",
    # On Ubuntu's server image too, and what node prep installs: with them in the image, node
    # prep's apt tasks find them (apt still updates its lists through the proxy), instead of
    # minutes of emulated dpkg in every test run. python3-apt: Ansible's apt module.
    "curl",
    "gnupg",
    "iptables",
    "python3-apt",
]

# dpkg settings for the build only: no fsync per file (the tree is thrown away if the build
# fails), which matters when every dpkg is an emulated process.
DPKG_BUILD_CFG = "force-unsafe-io\n"
# Kept in the image: no documentation, manual pages or translations (as Ubuntu's minimized
# images), which is fewer files for emulated dpkg to write and a smaller image to flash.
DPKG_MINIMIZE_CFG = """\
# Written by pikube's emulated-Pi image builder.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""

# The initrd holds only what finds and mounts the root file system of this machine, as on
# Ubuntu's raspi kernel, where they are built in: the SD card controllers QEMU's raspi3b has
# (Arasan SDHCI: sdhci-iproc; SDHOST: bcm2835; Linux's pin setup decides which one the card
# is on) and ext4. Debian's default MODULES=most copies thousands of modules, each an emulated
# modprobe/cp when built under qemu-user: 25 minutes instead of about two.
INITRAMFS_CONF = """\
# Written by pikube's emulated-Pi image builder: only the modules listed in
# /usr/share/initramfs-tools/modules.d/pikube-raspi3b.
MODULES=list
"""
INITRAMFS_MODULES = """\
# The root file system of the emulated Pi: SD card controllers and ext4.
sdhci-iproc
bcm2835
ext4
crc32c_generic
"""

# /etc/cloud/cloud.cfg.d/99-fake_cloud.cfg as in Ubuntu's raspi images: the seed lives in the
# FAT partition labelled system-boot, so a user (or pikube flash) edits it on any computer.
CLOUD_CFG_NOCLOUD = """\
# Written by pikube's emulated-Pi image builder; same as Ubuntu's raspi images.
datasource_list: [ NoCloud, None ]
datasource:
  NoCloud:
    fs_label: system-boot
"""

# Ubuntu renders network-config (netplan v2) with netplan; Debian's cloud-init prefers ENI.
CLOUD_CFG_NETPLAN = """\
# Written by pikube's emulated-Pi image builder: render network-config with netplan, as
# Ubuntu's images do (netplan writes systemd-networkd units).
system_info:
  network:
    renderers: [ netplan, networkd ]
"""

# Debian's cloud-init defaults to en_US.UTF-8, which a minimal image cannot generate;
# Ubuntu's images use C.UTF-8 (built into glibc).
CLOUD_CFG_LOCALE = """\
# Written by pikube's emulated-Pi image builder: the C.UTF-8 locale, as on Ubuntu's images.
locale: C.UTF-8
"""

# No Pi has a real-time clock: Ubuntu's image syncs with ntp.ubuntu.com over the internet at
# boot. The emulated LAN has no internet; its gateway (the harness) answers NTP instead.
TIMESYNCD_LAB = """\
# Written by pikube's emulated-Pi image builder: the emulated LAN's gateway serves NTP
# (stand-in for the internet pool a real Pi uses; see tests/emulated_pi/README.md).
[Time]
FallbackNTP={gateway}
"""

# QEMU's usb-net (the emulated Pi's NIC, a stand-in for the Pi 3 B's on-board smsc95xx) has
# the USB IDs of Linux's Ethernet gadget, which cdc_subset also claims: when udev loads it
# before cdc_ether, it binds with a random MAC (usb0) and cdc_ether's probe fails (EBUSY),
# so the node's network-config, which matches the NIC by MAC, never applies. Seen at boot
# under load; cdc_subset drives nothing a Pi has.
MODPROBE_USB_NET = """\
# Written by pikube's emulated-Pi image builder: QEMU's usb-net NIC is cdc_ether's.
blacklist cdc_subset
"""

FSTAB = """\
LABEL=writable\t/\text4\tdiscard,errors=remount-ro\t0 1
LABEL=system-boot\t/boot/firmware\tvfat\tdefaults\t0 1
"""

# Ubuntu's cmdline.txt is "console=serial0,115200 dwc_otg.lpm_enable=0 console=tty1
# root=LABEL=writable rootfstype=ext4 rootwait fixrtc quiet splash". The serial console is
# last here so that /dev/console (boot and cloud-init messages) is the logged serial port.
CMDLINE = (
    "dwc_otg.lpm_enable=0 console=tty1 console=serial0,115200 root=LABEL=writable "
    "rootfstype=ext4 rootwait fixrtc\n"
)

# Ubuntu's config.txt (abridged). QEMU ignores it; a real Pi's firmware reads it.
CONFIG_TXT = """\
[all]
kernel=vmlinuz
cmdline=cmdline.txt
initramfs initrd.img followkernel

[pi4]
max_framebuffers=2
arm_boost=1

[all]
# Enable the audio output, I2C and SPI interfaces on the GPIO header.
dtparam=audio=on
dtparam=i2c_arm=on
dtparam=spi=on
# Enable the serial pins
enable_uart=1
arm_64bit=1
"""

# Placeholders like Ubuntu's (whose user-data sets a default user): pikube flash replaces
# them. Without a flash the card boots with no user at all.
SEED_PLACEHOLDER = {
    "meta-data": "instance-id: pikube-emulated-pi-unflashed\n",
    "user-data": "#cloud-config\n# Replaced by `pikube flash`.\n{}\n",
    "network-config": ("version: 2\nethernets:\n  eth0:\n    dhcp4: true\n    optional: true\n"),
}

DTB = "bcm2837-rpi-3-b.dtb"
# A power of two (QEMU's SD card model needs one) and about Ubuntu's size (its preinstalled
# raspi image is ~3.5 GB): enough free space on / for `pikube doctor`'s 2 GB rule, which a
# real card gets from cloud-init growing the partition to the card.
IMAGE_SIZE = 4 << 30
BOOT_START = 1 << 20
BOOT_SIZE = 256 << 20
LAB_GATEWAY = os.environ.get("PIKUBE_EMU_GATEWAY", "10.77.6.1")

# --- the Raspberry Pi OS variant ------------------------------------------------------------
# What Raspberry Pi OS Lite has at first boot is described once, for the lab's `--pi-os
# raspios` nodes: files copied from upstream in tests/lab/raspios/ (provenance in its
# README.md) and the units pi-gen leaves enabled (tests/lab/core.py). This image uses them
# from there; what only an image has (partition table, fstab, kernel file names) is here.
# pi-gen stage2/02-net-tweaks/00-packages: NetworkManager; stage2/04-cloud-init/00-packages:
# cloud-init with netplan (both already in PACKAGES). No snapd in any of pi-gen's lists.
RASPIOS_EXTRA_PACKAGES = ["network-manager"]
# cloud-init's raspberry-pi-os variant renders network config through netplan, then
# NetworkManager (canonical/cloud-init config/cloud.cfg.tmpl, see tests/lab/raspios/README.md).
# The seed is read from the FAT partition (labelled bootfs by pi-gen's export-image), as the
# catalog's raspios entry says: user-data, network-config and meta-data next to config.txt.
CLOUD_CFG_RASPIOS = """\
# Written by pikube's emulated-Pi image builder (Raspberry Pi OS variant).
datasource_list: [ NoCloud, None ]
datasource:
  NoCloud:
    fs_label: bootfs
system_info:
  network:
    renderers: [ netplan, network-manager ]
"""
# pi-gen stage1/01-sys-tweaks/files/fstab, with BOOTDEV/ROOTDEV replaced by PARTUUIDs as
# export-image/04-set-partuuid/00-run.sh does (the disk id is the one in cmdline.txt).
RASPIOS_FSTAB = """\
proc            /proc           proc    defaults          0       0
PARTUUID={disk_id}-01  /boot/firmware  vfat    defaults          0       2
PARTUUID={disk_id}-02  /               ext4    defaults,noatime  0       1
"""


@dataclass(frozen=True)
class Variant:
    """One emulated OS image: what differs between Ubuntu's Pi image and Raspberry Pi OS's."""

    name: str
    suite: str
    packages: tuple[str, ...]
    catalog_id: str  # the catalog entry whose OS family pikube flash writes the seed for
    boot_label: str
    root_label: str
    boot_size: int
    kernel: str  # file names on the FAT partition, as that OS's config.txt names them
    initrd: str
    cache_prefix: str

    def cmdline(self) -> str:
        if self.name == "raspios":
            return (RASPIOS_FILES / "cmdline.txt").read_text()
        return CMDLINE

    def config_txt(self) -> str:
        if self.name == "raspios":
            return (RASPIOS_FILES / "config.txt").read_text()
        return CONFIG_TXT

    def disk_id(self) -> str | None:
        """The MBR disk id that cmdline.txt's root=PARTUUID=<id>-02 names (None: by label)."""
        for word in self.cmdline().split():
            if word.startswith("root=PARTUUID="):
                return word.removeprefix("root=PARTUUID=").rsplit("-", 1)[0]
        return None


UBUNTU = Variant(
    name="ubuntu",
    suite=SUITE,
    packages=tuple(PACKAGES),
    catalog_id="ubuntu-24.04-server-arm64",
    boot_label="system-boot",
    root_label="writable",
    boot_size=BOOT_SIZE,
    kernel="vmlinuz",
    initrd="initrd.img",
    cache_prefix="pi-",
)
# Raspberry Pi OS Lite: pi-gen names the partitions bootfs/rootfs (export-image/prerun.sh),
# makes the boot partition 512 MiB, and the firmware loads kernel8.img (64-bit) and, with
# auto_initramfs=1 in config.txt, initramfs8.
RASPIOS = Variant(
    name="raspios",
    suite=RASPIOS_SUITE,
    packages=(*PACKAGES, *RASPIOS_EXTRA_PACKAGES),
    catalog_id=RASPIOS_IMAGE,
    boot_label="bootfs",
    root_label="rootfs",
    boot_size=512 << 20,
    kernel="kernel8.img",
    initrd="initramfs8",
    cache_prefix="pi-raspios-",
)
VARIANTS = {v.name: v for v in (UBUNTU, RASPIOS)}


def log(msg: str) -> None:
    print(f"[pi-image] {msg}", file=sys.stderr, flush=True)


def run(
    argv: list[str],
    *,
    input: bytes | None = None,
    stdout: int | IO[bytes] | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Run a build step in its own process group; on any error or signal, kill the group.

    The chroot steps start many emulated processes (dpkg, maintainer scripts): none may
    outlive a failed or interrupted build, nor write into a tree being removed.
    """
    log("$ " + " ".join(argv))
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if input is not None else None,
        stdout=stdout if stdout is not None else sys.stderr,  # stdout: the image path only
        env=env,
        start_new_session=True,
    )
    try:
        proc.communicate(input)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        # A step that exited may have left children behind (daemons a script started).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv)


def _hash(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _code(func: object) -> str:
    """A function's code without formatting and comments: reformatting rebuilds nothing."""
    return ast.dump(ast.parse(textwrap.dedent(inspect.getsource(func))))  # type: ignore[arg-type]


def rootfs_recipe(variant: Variant) -> str:
    """Everything that decides the debootstrapped tree (the slow part), as text."""
    return json.dumps(
        {
            "suite": variant.suite,
            "mirror": MIRROR,
            "packages": list(variant.packages),
            "code": _code(build_rootfs),
        },
        sort_keys=True,
    )


def rootfs_hash(variant: Variant) -> str:
    return _hash(rootfs_recipe(variant))


def initrd_hash(variant: Variant) -> str:
    return _hash(
        rootfs_hash(variant), INITRAMFS_CONF, INITRAMFS_MODULES, _code(write_initramfs_config),
        _code(build_initrd),
    )  # fmt: skip


def image_hash(variant: Variant) -> str:
    """The initrd's hash, this module's code, the variant and the upstream files it copies."""
    upstream = [p.read_text() for p in sorted(RASPIOS_FILES.iterdir()) if p.is_file()]
    return _hash(
        initrd_hash(variant), ast.dump(ast.parse(Path(__file__).read_text())), variant.name,
        *(upstream if variant.name == "raspios" else []),
        _code(raspios_files), _code(raspios_units),
    )  # fmt: skip


def image_path(variant: Variant) -> Path:
    return CACHE_DIR / f"{variant.cache_prefix}image-{image_hash(variant)}.img"


def check_binfmt() -> None:
    """qemu-user through binfmt_misc runs arm64 binaries in the chroot (F flag: works in it)."""
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)])
    entry = binfmt / "qemu-aarch64"
    if not entry.exists() and shutil.which("update-binfmts"):
        run(["update-binfmts", "--enable", "qemu-aarch64"])
    text = entry.read_text() if entry.exists() else ""
    if "enabled" not in text or "F" not in text.split("flags:")[-1].splitlines()[0]:
        raise RuntimeError(
            "binfmt_misc has no enabled qemu-aarch64 entry with the F flag: "
            "apt-get install qemu-user-static binfmt-support"
        )


def _mirror() -> str:
    try:
        with socket.create_connection(ACNG, timeout=0.5):
            return f"http://{ACNG[0]}:{ACNG[1]}/{MIRROR.split('://', 1)[1]}"
    except OSError:
        return MIRROR


def build_rootfs(root: Path, variant: Variant) -> None:
    """debootstrap --foreign (host, amd64 tools) then --second-stage under qemu-user."""
    check_binfmt()
    run(
        [
            "debootstrap",
            "--foreign",
            "--arch=arm64",
            "--variant=minbase",
            "--include=" + ",".join(variant.packages),
            variant.suite,
            str(root),
            _mirror(),
        ]
    )
    dpkg_cfg = root / "etc/dpkg/dpkg.cfg.d"
    dpkg_cfg.mkdir(parents=True, exist_ok=True)
    (dpkg_cfg / "pikube-build").write_text(DPKG_BUILD_CFG)
    (dpkg_cfg / "pikube-minimize").write_text(DPKG_MINIMIZE_CFG)
    # No daemons may start inside the build chroot.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    # No initrd here: the kernel's postinst hook skips it with INITRD=No, and the
    # initramfs-tools trigger (-u) skips it with update_initramfs=no. build_initrd() makes it
    # afterwards, cached on its own, once the configuration it needs is in place.
    initramfs_conf = root / "etc/initramfs-tools/update-initramfs.conf"
    initramfs_conf.parent.mkdir(parents=True, exist_ok=True)
    initramfs_conf.write_text("update_initramfs=no\nbackup_initramfs=no\n")
    trim_package_lists(root)
    # A private mount namespace: the mounts the second stage makes (proc, sys) die with it,
    # even when it fails half way.
    run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "chroot",
            str(root),
            "/debootstrap/debootstrap",
            "--second-stage",
        ],
        env={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LC_ALL": "C",
            "DEBIAN_FRONTEND": "noninteractive",
            "INITRD": "No",
        },
    )
    policy.unlink(missing_ok=True)  # the second stage removes the one it put there itself
    (dpkg_cfg / "pikube-build").unlink(missing_ok=True)
    initramfs_conf.write_text("update_initramfs=yes\nbackup_initramfs=no\n")


def trim_package_lists(root: Path) -> None:
    """Keep in apt's Packages lists only what the second stage installs.

    Between two packages the second stage looks names up in the whole Packages file with an
    emulated perl (debootstrap's ``pkgdetails_perl``): about a minute a lookup for trixie's
    56 MB list, most of a cold build. The first stage has already resolved and fetched every
    package (``debootstrap/required`` and ``debootstrap/base`` name them); the image drops
    apt's lists anyway (``configure_rootfs``), so nothing else reads the trimmed file.
    """
    chosen: set[str] = set()
    for name in ("required", "base"):
        chosen |= set((root / "debootstrap" / name).read_text().split())
    for lists in (root / "var/lib/apt/lists").glob("*_Packages"):
        text = lists.read_text(encoding="utf-8", errors="surrogateescape")
        kept = [
            stanza
            for stanza in text.split("\n\n")
            if stanza.startswith("Package: ") and stanza.split("\n", 1)[0][9:].strip() in chosen
        ]
        lists.write_text("\n\n".join(kept) + "\n\n", encoding="utf-8", errors="surrogateescape")


def write_initramfs_config(root: Path) -> None:
    """The image's initramfs-tools settings (also used when its kernel is upgraded)."""
    conf_d = root / "etc/initramfs-tools/conf.d"
    conf_d.mkdir(parents=True, exist_ok=True)
    (conf_d / "pikube-raspi3b.conf").write_text(INITRAMFS_CONF)
    modules_d = root / "usr/share/initramfs-tools/modules.d"
    modules_d.mkdir(parents=True, exist_ok=True)
    (modules_d / "pikube-raspi3b").write_text(INITRAMFS_MODULES)


def kernel_version(root: Path) -> str:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise RuntimeError(f"expected one kernel in {root}/boot, found {kernels}")
    return kernels[0].name.removeprefix("vmlinuz-")


def build_initrd(root: Path) -> Path:
    """update-initramfs -c in the tree under qemu-user, in a private mount namespace."""
    write_initramfs_config(root)
    version = kernel_version(root)
    script = 'mount -t proc proc "$1/proc"; exec chroot "$1" update-initramfs -c -k "$2"'
    run(
        [
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-ec", script, "sh", str(root), version,
        ],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
    )  # fmt: skip
    return root / "boot" / f"initrd.img-{version}"


# Emulation only, not a Pi's setting (see "Emulation accommodations" in tests/emulated_pi/
# README.md). QEMU's TCG runs the Cortex-A53 10-50x slower than a Pi: at first boot on this
# shared machine udevd started ~90 s after systemd, so systemd's 90 s wait for the fstab
# devices (LABEL=system-boot on /boot/firmware) expired and the boot went to emergency mode.
# Scaled by 10, not disabled: a device that never appears still fails the boot. A setting of
# the image, not the harness's kernel command line, because Debian bookworm's systemd 252 has
# DefaultDeviceTimeoutSec= (backported) without its command-line switch.
EMULATED_CPU_SYSTEMD_CONF = """\
# Written by pikube's emulated-Pi image builder: for an emulated CPU, not a Pi's setting.
[Manager]
DefaultDeviceTimeoutSec=900s
"""


def configure_rootfs(root: Path, variant: Variant) -> None:
    """Make the debootstrapped tree a Pi image root: fstab, cloud-init, no per-machine state.

    Runs on a fresh copy of the cached tree for every image build (it is quick), so editing
    it rebuilds the image but not the debootstrapped tree.
    """
    suite = variant.suite
    (root / "etc/apt/sources.list").write_text(
        f"deb {MIRROR} {suite} main\n"
        f"deb {MIRROR} {suite}-updates main\n"
        f"deb http://deb.debian.org/debian-security {suite}-security main\n"
    )
    disk_id = variant.disk_id()
    (root / "etc/fstab").write_text(RASPIOS_FSTAB.format(disk_id=disk_id) if disk_id else FSTAB)
    (root / "etc/modprobe.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/modprobe.d/pikube-usb-net.conf").write_text(MODPROBE_USB_NET)
    (root / "boot/firmware").mkdir(parents=True, exist_ok=True)
    hostname = "raspberrypi" if variant.name == "raspios" else "debian"  # pi-gen's default
    (root / "etc/hostname").write_text(f"{hostname}\n")
    (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n")
    cfg = root / "etc/cloud/cloud.cfg.d"
    cfg.mkdir(parents=True, exist_ok=True)
    if variant.name == "raspios":
        (cfg / "99-pikube-raspios.cfg").write_text(CLOUD_CFG_RASPIOS)
    else:
        (cfg / "99-fake_cloud.cfg").write_text(CLOUD_CFG_NOCLOUD)
        (cfg / "90-pikube-netplan.cfg").write_text(CLOUD_CFG_NETPLAN)
    (cfg / "90-pikube-locale.cfg").write_text(CLOUD_CFG_LOCALE)
    manager = root / "etc/systemd/system.conf.d"
    manager.mkdir(parents=True, exist_ok=True)
    (manager / "pikube-emulated-cpu.conf").write_text(EMULATED_CPU_SYSTEMD_CONF)
    tsd = root / "etc/systemd/timesyncd.conf.d"
    tsd.mkdir(parents=True, exist_ok=True)
    (tsd / "pikube-lab.conf").write_text(TIMESYNCD_LAB.format(gateway=LAB_GATEWAY))
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "systemd-networkd.service"
    if variant.name == "raspios":
        # NetworkManager runs the network; systemd-networkd stays off (pi-gen
        # stage2/02-net-tweaks). sshd off and the host-key regeneration on, as upstream.
        link.unlink(missing_ok=True)
        raspios_personality(root)
    elif not link.is_symlink():
        # netplan writes systemd-networkd units; networkd must run at boot.
        link.symlink_to("/lib/systemd/system/systemd-networkd.service")
    # Per-machine state must not be in an image that becomes many cards.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    with contextlib.suppress(FileNotFoundError):
        (root / "var/lib/dbus/machine-id").unlink()
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (root / junk).glob("*"):
            if path.is_file():
                path.unlink()
    shutil.rmtree(root / "debootstrap", ignore_errors=True)
    # systemd sets the clock to at least this file's mtime at boot (a Pi has no RTC).
    (root / "usr/lib/clock-epoch").touch()
    write_initramfs_config(root)


def raspios_personality(root: Path) -> None:
    """raspberrypi-sys-mods' host-key regeneration (files as the package installs them) and
    the units pi-gen leaves enabled and disabled, from the lab's one description of them."""
    for path, (data, mode) in raspios_files().items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode)
    raspios_units(root)


def kernel_files(root: Path) -> tuple[Path, Path, Path]:
    """(vmlinuz, initrd.img, raspi3b dtb) of the installed Debian kernel."""
    version = kernel_version(root)
    initrd = root / "boot" / f"initrd.img-{version}"
    dtb = root / "usr/lib" / f"linux-image-{version}" / "broadcom" / DTB
    for path in (initrd, dtb):
        if not path.is_file():
            raise RuntimeError(f"{path} is missing from the root file system")
    return root / "boot" / f"vmlinuz-{version}", initrd, dtb


def sfdisk_script(variant: Variant) -> str:
    sector = 512
    disk_id = variant.disk_id()
    return (
        "label: dos\n"
        + (f"label-id: 0x{disk_id}\n" if disk_id else "")
        + f"start={BOOT_START // sector}, size={variant.boot_size // sector}, type=c, bootable\n"
        f"start={(BOOT_START + variant.boot_size) // sector}, type=83\n"
    )


def assemble_image(root: Path, out: Path, work: Path, variant: Variant) -> None:
    """Partition a sparse file and fill both partitions without mounting anything.

    The image stays raw and sparse (about 1.1 GB of its 4 GiB hold data): xz took longer
    than the whole root file system under a loaded machine's emulation, and pikube writes a
    raw image as it writes an .img.xz.
    """
    img = work / "pi.img"
    with open(img, "wb") as handle:
        handle.truncate(IMAGE_SIZE)
    script = sfdisk_script(variant).encode()
    run(["sfdisk", "--no-reread", "--no-tell-kernel", str(img)], input=script)
    # FAT32 inside partition 1; -s 1 clusters keep mtools happy with the geometry.
    run(
        [
            "mkfs.vfat",
            "-F",
            "32",
            "-s",
            "1",
            "-n",
            variant.boot_label,
            "--offset",
            str(BOOT_START // 512),
            str(img),
            str(variant.boot_size // 1024),
        ]
    )
    boot = work / "boot"
    boot.mkdir()
    vmlinuz, initrd, dtb = kernel_files(root)
    shutil.copyfile(vmlinuz, boot / variant.kernel)
    shutil.copyfile(initrd, boot / variant.initrd)
    shutil.copyfile(dtb, boot / DTB)
    (boot / "cmdline.txt").write_text(variant.cmdline())
    (boot / "config.txt").write_text(variant.config_txt())
    for name, text in SEED_PLACEHOLDER.items():
        (boot / name).write_text(text)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    run(
        [
            "mcopy",
            "-o",
            "-i",
            f"{img}@@{BOOT_START}",
            *sorted(str(p) for p in boot.iterdir()),
            "::/",
        ],
        env=env,
    )
    root_start = BOOT_START + variant.boot_size
    root_kb = (IMAGE_SIZE - root_start) // 1024
    run(
        [
            "mke2fs",
            "-F",
            "-q",
            "-t",
            "ext4",
            "-L",
            variant.root_label,
            "-d",
            str(root),
            "-E",
            f"offset={root_start}",
            str(img),
            f"{root_kb}k",
        ]
    )
    img.rename(out)  # the work dir is in the cache's file system: atomic


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pi-build-", dir=CACHE_DIR))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_rootfs_tar(variant: Variant) -> Path:
    tar = CACHE_DIR / f"{variant.cache_prefix}rootfs-{rootfs_hash(variant)}.tar"
    if tar.exists():
        return tar
    with _workdir() as work:
        root = work / "root"
        root.mkdir()
        started = time.monotonic()
        build_rootfs(root, variant)
        log(f"root file system built in {time.monotonic() - started:.0f} s")
        part = tar.with_suffix(".part")
        try:
            run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(part), "."])
            part.rename(tar)
        finally:
            part.unlink(missing_ok=True)
    return tar


def ensure_initrd(tar: Path, variant: Variant) -> Path:
    initrd = CACHE_DIR / f"{variant.cache_prefix}initrd-{initrd_hash(variant)}.img"
    if initrd.exists():
        return initrd
    with _workdir() as work:
        root = work / "root"
        root.mkdir()
        run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-xf", str(tar)])
        started = time.monotonic()
        built = build_initrd(root)
        log(f"initrd built in {time.monotonic() - started:.0f} s")
        part = initrd.with_suffix(".part")
        shutil.copyfile(built, part)
        part.rename(initrd)
    return initrd


def ensure_image(variant: Variant = UBUNTU) -> Path:
    """The variant's cached image for the current recipe, built first if it is missing."""
    out = image_path(variant)
    if out.exists():
        log(f"cached: {out}")
        return out
    for tool in ("debootstrap", "sfdisk", "mkfs.vfat", "mcopy", "mke2fs"):
        if not shutil.which(tool):
            raise RuntimeError(
                f"{tool} is missing: apt-get install debootstrap qemu-user-static "
                "binfmt-support fdisk dosfstools mtools e2fsprogs xz-utils"
            )
    tar = ensure_rootfs_tar(variant)
    initrd = ensure_initrd(tar, variant)
    with _workdir() as work:
        root = work / "root"
        root.mkdir()
        run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-xf", str(tar)])
        configure_rootfs(root, variant)
        shutil.copyfile(initrd, root / "boot" / f"initrd.img-{kernel_version(root)}")
        assemble_image(root, out, work, variant)
    log(f"built {out}")
    prune(keep={out, tar, initrd}, variant=variant)
    return out


def prune(keep: set[Path], variant: Variant) -> None:
    """Remove the variant's cached builds of other recipes (a rootfs tar is ~1 GB): one of
    each stays per variant."""
    prefix = variant.cache_prefix
    patterns = (f"{prefix}image-*.img*", f"{prefix}initrd-*.img", f"{prefix}rootfs-*.tar")
    for pattern in patterns:
        for path in CACHE_DIR.glob(pattern):
            if path not in keep:
                log(f"removing the outdated {path}")
                path.unlink(missing_ok=True)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks: no half-built tree is left


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    t0 = time.monotonic()
    path = ensure_image(VARIANTS[sys.argv[1] if len(sys.argv) > 1 else "ubuntu"])
    log(f"done in {time.monotonic() - t0:.1f} s")
    print(path)
