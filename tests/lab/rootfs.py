"""The node root filesystem: Debian bookworm from debootstrap, built once and cached.

The cache key is a hash of the recipe (suite, packages, the customisation below, the host's
kernel release for ``modules.builtin`` and any extra packages the stand-ins ask for), so the
rootfs is rebuilt only when one of those changes. Builds go to a temporary directory that is
renamed into place, under a lock, so concurrent labs never see a half-built tree.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .acng import ACNG_LOCAL_URL

CACHE_ROOT = Path(os.environ.get("PIKUBE_LAB_CACHE", "/var/cache/pikube-lab"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "sudo",
    "iproute2",
    "kmod",
    "ca-certificates",
    "gnupg",
    "curl",
    "apt-transport-https",
    "iputils-ping",
    "procps",
    "less",
)
# Modules a Pi kernel ships as loadable modules and pikube's roles load with modprobe. The
# lab kernel either has them built in or cannot load them into a container anyway, so the
# rootfs lists them in modules.builtin: `modprobe NAME` then succeeds, as on a Pi.
BUILTIN_MODULES = (
    "kernel/net/bridge/br_netfilter.ko",
    "kernel/fs/overlayfs/overlay.ko",
    # The host kernel has vxlan (flannel and calico need it); on Ubuntu's Pi kernels it
    # lives in linux-modules-extra-raspi, which is what `pikube doctor` checks for.
    "kernel/drivers/net/vxlan/vxlan.ko",
)
USER = "ubuntu"
# Timers and services that only add noise (apt locks, scrubbing) or need hardware.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-pstore.service",
    "console-getty.service",
    "getty@tty1.service",
    # Debian's etcd-server (baked for the kubeadm stand-in's stacked etcd) would start its own
    # member on localhost:2379 with data in /var/lib/etcd/default.
    "etcd.service",
)

HOSTKEYS_UNIT = """\
[Unit]
Description=Generate this node's SSH host keys at first boot (the lab rootfs carries none)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target ssh.service
"""

# "Kernel flags take effect at the next reboot": the node's effective kernel command line
# is what /boot/firmware/cmdline.txt said when the node booted.
CMDLINE_UNIT = """\
[Unit]
Description=Record the kernel command line this node booted with (lab: from cmdline.txt)
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mkdir -p /run/pikube-lab && if [ -f /boot/firmware/cmdline.txt ]; \
then cp /boot/firmware/cmdline.txt /run/pikube-lab/cmdline; \
else cp /proc/cmdline /run/pikube-lab/cmdline; fi'

[Install]
WantedBy=sysinit.target
"""

SOURCES_LIST = f"""\
deb {MIRROR} {SUITE} main
deb {MIRROR} {SUITE}-updates main
deb http://deb.debian.org/debian-security {SUITE}-security main
"""

SUDOERS = f"{USER} ALL=(ALL) NOPASSWD:ALL\n"


def kernel_release() -> str:
    return os.uname().release


def extra_packages() -> tuple[str, ...]:
    """Packages the stand-ins ask for (``lab.standins.rootfs_packages()``), if present."""
    try:
        from . import standins  # type: ignore[attr-defined]
    except ImportError:
        return ()
    hook = getattr(standins, "rootfs_packages", None)
    return tuple(sorted(hook())) if callable(hook) else ()


def recipe() -> dict[str, object]:
    """Everything the rootfs depends on; its hash names the cache directory."""
    return {
        "suite": SUITE,
        "mirror": MIRROR,
        "packages": sorted(PACKAGES + extra_packages()),
        "builtin_modules": list(BUILTIN_MODULES),
        "kernel": kernel_release(),
        "masked": list(MASKED_UNITS),
        "customize": inspect.getsource(customize),
        "units": [HOSTKEYS_UNIT, CMDLINE_UNIT, SOURCES_LIST, SUDOERS],
    }


def recipe_hash() -> str:
    blob = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def rootfs_path() -> Path:
    return CACHE_ROOT / f"rootfs-{recipe_hash()}"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_rootfs(log: bool = True) -> tuple[Path, float]:
    """Return the cached rootfs (building it first if needed) and the build time (0 if cached)."""
    target = rootfs_path()
    if (target / ".pikube-lab-complete").exists():
        os.utime(target)  # last used: keeps prune_stale() away
        return target, 0.0
    with _locked(CACHE_ROOT / "rootfs.lock"):
        if (target / ".pikube-lab-complete").exists():
            return target, 0.0
        started = time.monotonic()
        build = target.with_name(target.name + ".building")
        if build.exists():
            shutil.rmtree(build)
        packages = ",".join(sorted(PACKAGES + extra_packages()))
        argv = [
            "debootstrap",
            "--variant=minbase",
            f"--include={packages}",
            SUITE,
            str(build),
            ACNG_LOCAL_URL + "/deb.debian.org/debian",
        ]
        if log:
            print(f"lab: building rootfs {target.name} (debootstrap, ~1 min)", file=sys.stderr)
        logfile = CACHE_ROOT / f"{target.name}.debootstrap.log"
        try:
            with logfile.open("w") as out:
                result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"debootstrap failed (exit {result.returncode}); see {logfile}")
            customize(build)
        except BaseException:
            _discard(build)  # interrupted or failed: no half-built tree, no mounts left in it
            raise
        (build / ".pikube-lab-complete").write_text(json.dumps(recipe(), sort_keys=True))
        build.rename(target)
        prune_stale(keep=target)
        return target, time.monotonic() - started


def _discard(build: Path) -> None:
    """Unmount whatever debootstrap mounted inside a build tree (proc, sys...), delete it."""
    prefix = str(build) + "/"
    points = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(prefix)
    ]
    for point in sorted(points, key=len, reverse=True):
        if subprocess.run(["umount", point], check=False, capture_output=True).returncode:
            subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
    shutil.rmtree(build, ignore_errors=True)


STALE_AFTER = 2 * 86400  # other labs (other branches) may use other recipes: keep 2 days


def prune_stale(keep: Path) -> None:
    """Delete rootfs trees of other recipes unused for two days (no node has them mounted)."""
    in_use = Path("/proc/self/mountinfo").read_text()
    for old in CACHE_ROOT.glob("rootfs-*"):
        if old == keep or not old.is_dir() or f"lowerdir={old}" in in_use:
            continue
        if time.time() - old.stat().st_mtime < STALE_AFTER:
            continue
        shutil.rmtree(old, ignore_errors=True)
        old.with_name(old.name + ".debootstrap.log").unlink(missing_ok=True)


def _chroot(root: Path, *argv: str) -> None:
    subprocess.run(["chroot", str(root), *argv], check=True, capture_output=True)


def customize(root: Path) -> None:
    """Turn a debootstrap tree into a lab node image (like Ubuntu's Pi image, minus the kernel)."""
    (root / "etc/apt/sources.list").write_text(SOURCES_LIST)
    # The `ubuntu` user with passwordless sudo, as cloud-init sets it up on Ubuntu's Pi images.
    _chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", "--groups", "adm,sudo", USER)
    _chroot(root, "usermod", "--password", "*", USER)
    sudoers = root / "etc/sudoers.d/90-cloud-init-users"
    sudoers.write_text(SUDOERS)
    sudoers.chmod(0o440)
    # No SSH host keys in the image: every node generates its own at first boot.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    units = root / "etc/systemd/system"
    (units / "pikube-lab-hostkeys.service").write_text(HOSTKEYS_UNIT)
    (units / "pikube-lab-cmdline.service").write_text(CMDLINE_UNIT)
    _chroot(
        root, "systemctl", "enable", "pikube-lab-hostkeys.service", "pikube-lab-cmdline.service"
    )
    for unit in MASKED_UNITS:
        _chroot(root, "systemctl", "mask", unit)
    # modprobe br_netfilter / overlay succeed as on a Pi (DESIGN.md, "Kernel modules").
    kver = kernel_release()
    moddir = root / "lib/modules" / kver
    moddir.mkdir(parents=True, exist_ok=True)
    (moddir / "modules.builtin").write_text("".join(m + "\n" for m in BUILTIN_MODULES))
    (moddir / "modules.order").write_text("")
    (moddir / "modules.builtin.modinfo").write_bytes(b"")
    _chroot(root, "depmod", "-a", kver)  # the rootfs's kmod, not the host's
    # Per-node identity is written at node creation; the image carries none.
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").write_text("localhost\n")
    subprocess.run(
        ["rm", "-rf", str(root / "var/cache/apt/archives"), str(root / "var/lib/apt/lists")],
        check=True,
    )
    (root / "var/cache/apt/archives/partial").mkdir(parents=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
