"""A lab node made to boot like a freshly flashed card: real cloud-init reads pikube's seed.

Shared by the seed test (tests/integration/test_cloudinit_seed_lab.py) and the `up` tests on
Raspberry Pi OS nodes. Per OS personality of the lab (tests/lab/core.py PI_OSES):

- ``ubuntu``: Debian's cloud-init, netplan.io and udev, systemd-networkd enabled (Ubuntu's
  Pi images ship all of them, networkd rendering netplan);
- ``raspios``: the same plus network-manager, networkd left off and cloud-init configured as
  its ``raspberry-pi-os`` variant renders networks (canonical/cloud-init
  config/cloud.cfg.tmpl: ``renderers: ['netplan', 'network-manager']``), as pi-gen's
  stage2/02-net-tweaks and 04-cloud-init install them.

Both generate en_US.UTF-8 (cloud-init's default locale) and limit cloud-init to NoCloud
(``datasource_list: [NoCloud, None]``, as Ubuntu's 99-fake_cloud.cfg). The seed goes to
/var/lib/cloud/seed/nocloud/, NoCloud's seed folder: a container sees no block devices, so
the label lookup of the boot partition cannot happen here; the files are byte for byte those
`pikube flash` wrote into the image.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.image_support import BuiltImage, mtype

SEED_DIR = "/var/lib/cloud/seed/nocloud"
SEED_FILES = ("user-data", "meta-data", "network-config")
NOCLOUD_ONLY = "datasource_list: [NoCloud, None]\n"
RASPIOS_NETWORK = (
    "system_info:\n  network:\n    renderers: ['netplan', 'network-manager']\n"
    "    activators: ['netplan', 'network-manager']\n"
)


def pikube(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pikube", *args], capture_output=True, text=True, check=False
    )


def node_exec(lab: Any, node: str, *argv: str, timeout: float = 900) -> str:
    proc = lab.exec(node, list(argv), timeout=timeout)
    assert proc.returncode == 0, f"{node} {argv}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return str(proc.stdout)


def install_cloud_init(lab: Any, node: str) -> None:
    """cloud-init and what renders its network config, as the node's OS personality ships."""
    raspios = lab.node(node).os == "raspios"
    apt = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y"]
    apt += ["-o", f"Acquire::http::Proxy={lab.apt_proxy}"]
    node_exec(lab, node, *apt, "update")
    packages = ["cloud-init", "netplan.io", "udev"] + (["network-manager"] if raspios else [])
    node_exec(lab, node, *apt, "install", "--no-install-recommends", *packages)
    node_exec(
        lab, node, "sed", "-i", "s/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/", "/etc/locale.gen"
    )
    node_exec(lab, node, "locale-gen")
    config = NOCLOUD_ONLY + (RASPIOS_NETWORK if raspios else "")
    (lab.node_dir(node) / "merged/etc/cloud/cloud.cfg.d/99-pikube-lab.cfg").write_text(config)
    if not raspios:
        node_exec(lab, node, "systemctl", "enable", "systemd-networkd.service")
    else:
        # A flashed card's first boot is cloud-init's: the image's host-key regeneration is
        # still enabled then. The lab node's own first boot (before cloud-init was here) ran
        # it, and it disabled itself: enable it again, as the card has it.
        node_exec(lab, node, "systemctl", "enable", "regenerate_ssh_host_keys.service")


def flash_seed(cluster: Path, image: BuiltImage, work: Path, node: str) -> dict[str, bytes]:
    """`pikube flash NODE --output`, then the seed files as the Pi would read them."""
    target = work / f"{node}.img"
    flashed = pikube(
        "flash", "--cluster", str(cluster), "--image", str(image.xz), node,
        "--output", str(target),
    )  # fmt: skip
    assert flashed.returncode == 0, flashed.stderr
    try:
        return {name: mtype(target, image.layout.boot_offset, name) for name in SEED_FILES}
    finally:
        target.unlink()


def write_seed(lab: Any, node: str, seed: dict[str, bytes]) -> None:
    """Put the seed into NoCloud's seed folder in the node (root only: private host keys)."""
    node_exec(lab, node, "install", "-d", "-m", "0700", SEED_DIR)
    for name, content in seed.items():
        (lab.node_dir(node) / "merged" / SEED_DIR.lstrip("/") / name).write_bytes(content)
    node_exec(lab, node, "chmod", "0600", *(f"{SEED_DIR}/{n}" for n in SEED_FILES))


def forget_address(lab: Any, node: str) -> None:
    """Take the lab's IPv4 address away, so only cloud-init's network-config can bring it
    back (the kernel's IPv6 link-local address stays, as on a Pi)."""
    netns = lab.node(node).netns
    subprocess.run(["ip", "-n", netns, "-4", "addr", "flush", "dev", "eth0"], check=True)


def reboot(lab: Any, node: str) -> None:
    """Reboot through systemd; the lab's supervisor boots the node again (exit 133)."""
    boots = lab.reboot_count(node)
    lab.exec(node, ["systemctl", "reboot"], timeout=60)
    deadline = time.monotonic() + 180
    while lab.reboot_count(node) == boots:
        assert time.monotonic() < deadline, f"{node} did not boot again"
        time.sleep(0.5)
    lab.wait_ready([node], timeout=300)
