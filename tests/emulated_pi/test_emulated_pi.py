"""Flash-to-SSH and node prep on an emulated Raspberry Pi 3 (QEMU raspi3b, arm64).

The real flow, end to end: ``pikube flash`` writes the cached Pi image plus the node's
first-boot config to a card image; QEMU boots the card; Debian's cloud-init applies hostname,
user, key, the pinned host keys and the static address from the card's NoCloud seed; SSH
answers with the host key pikube already trusts (and nothing else is trusted); node prep
(``pikube up --tags prepare``: the product's prepare play, role ``pikube_node_prep``) adds the
memory cgroup flags to cmdline.txt, reboots once and turns off a swap file planted before;
``pikube doctor`` then finds the memory cgroup on and swap off. pikube, ssh and Ansible run
inside the lab's network namespace (``harness.netns_argv``), where the node is.

The node is a Pi 3 B (what QEMU emulates: 1 GB, 4 cores). kubeadm refuses a 1 GB control
plane, so the one-node cluster uses distribution microk8s, for which node prep is the same
role. No Kubernetes is installed here: this tier proves flashing, first boot and node prep on
ARM; the Kubernetes flows are proven in the lab tier.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.emulated_pi import harness
from tests.emulated_pi.conftest import TIMINGS
from tests.factories import make_key_pair

pytestmark = [pytest.mark.slow]

NODE = "pi-emu1"
NODE_IP = "10.77.6.10"
USER = "pikube"
CGROUP_FLAGS = ("cgroup_enable=memory", "cgroup_memory=1")


def pikube(
    *args: str, cwd: Path, check: bool = True, netns: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the pikube CLI; ``netns``: inside the lab namespace, where the node is reachable."""
    argv = [sys.executable, "-m", "pikube", *args]
    proc = subprocess.run(
        harness.netns_argv(argv) if netns else argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"pikube {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.key = make_key_pair(root / "keys")
        self.file = root / "cluster.yaml"
        self.known_hosts = root / "known_hosts"
        data: dict[str, Any] = {
            "name": "emulated",
            "distribution": "microk8s",
            "kubernetes": {"channel": "1.31/stable", "addons": ["dns"]},
            "network": {
                "subnet": f"{harness.GATEWAY}/{harness.PREFIXLEN}".replace(".1/", ".0/"),
                "gateway": harness.GATEWAY,
                "dns": [harness.GATEWAY],
            },
            "ssh": {
                "user": USER,
                "public_key": f"{self.key}.pub",
                "private_key": str(self.key),
                "known_hosts": str(self.known_hosts),
            },
            "apt_proxy": f"http://{harness.GATEWAY}:{harness.ACNG_PORT}",
            # The mac: Debian's udev names a USB NIC with a universally administered MAC by
            # that MAC (73-usb-net-by-mac.rules: enxb827eb770810), so the seed matches the
            # NIC by MAC and names it eth0, as pikube does for any node with a mac.
            "nodes": [
                {
                    "name": NODE,
                    "ip": NODE_IP,
                    "role": "control-plane",
                    "model": "pi3b",
                    "mac": harness.GUEST_MAC,
                }
            ],
        }
        self.file.write_text(yaml.safe_dump(data, sort_keys=False))

    def ssh_argv(self, *command: str, known_hosts: Path | None = None) -> list[str]:
        return harness.netns_argv([
            "ssh",
            "-F", "none",
            "-i", str(self.key),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=15",
            f"{USER}@{NODE_IP}",
            *command,
        ])  # fmt: skip

    def ssh(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.ssh_argv(*command), capture_output=True, text=True, check=False, timeout=300
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"ssh {command} exited {proc.returncode}: {proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    return Cluster(tmp_path_factory.mktemp("cluster"))


@pytest.fixture(scope="module")
def card(cluster: Cluster, pi_image: Path) -> Iterator[Path]:
    """A card image written by ``pikube flash`` (removed afterwards: it is 4 GiB)."""
    path = cluster.root / "card.img"
    started = time.monotonic()
    pikube(
        "flash", NODE, "--output", str(path), "--image", str(pi_image),
        "-c", str(cluster.file), cwd=cluster.root,
    )  # fmt: skip
    TIMINGS["pikube flash (4 GiB card image)"] = time.monotonic() - started
    yield path
    if not os.environ.get("PIKUBE_EMU_KEEP"):
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def flashed_cmdline(card: Path) -> str:
    """cmdline.txt as pikube flash wrote it, read before anything else touches the card."""
    return harness.read_boot_text(card, "cmdline.txt")


@pytest.fixture(scope="module")
def pi(card: Path, flashed_cmdline: str, emu_lab: harness.Lab) -> Iterator[harness.EmulatedPi]:
    """The card booted in QEMU, SSH answering.

    Before the first boot the cgroup flags are taken out of cmdline.txt again, as on a card
    written by another tool (Raspberry Pi Imager): so node prep's own cmdline edit and reboot
    are exercised too (the flags pikube flash writes are checked in their own test).
    """
    stripped = " ".join(w for w in flashed_cmdline.split() if w not in CGROUP_FLAGS) + "\n"
    harness.write_boot_file(card, "cmdline.txt", stripped)
    booted = emu_lab.boot(card)
    try:
        TIMINGS["boot 1 to SSH"] = booted.wait_for_ssh(NODE_IP)
        yield booted
    finally:
        booted.stop()


def test_flash_writes_seed_and_cgroup_flags(card: Path, flashed_cmdline: str) -> None:
    """pikube flash puts the NoCloud seed on system-boot and the cgroup flags in cmdline.txt."""
    for flag in CGROUP_FLAGS:
        assert flag in flashed_cmdline.split(), flashed_cmdline
    assert "root=LABEL=writable" in flashed_cmdline
    user_data = harness.read_boot_text(card, "user-data")
    assert user_data.startswith("#cloud-config")
    config = yaml.safe_load(user_data)
    assert config["hostname"] == NODE
    assert config["users"][0]["name"] == USER
    network = yaml.safe_load(harness.read_boot_text(card, "network-config"))
    assert network["ethernets"]["eth0"]["addresses"] == [f"{NODE_IP}/24"]


def test_ssh_with_pinned_host_key(cluster: Cluster, pi: harness.EmulatedPi) -> None:
    """The first SSH connection is verified against the key pikube flash pinned (no TOFU)."""
    assert cluster.known_hosts.is_file(), "pikube flash wrote no known_hosts"
    pinned = cluster.known_hosts.read_text()
    assert NODE_IP in pinned, pinned
    assert cluster.ssh("true").returncode == 0


def test_wrong_host_key_is_refused(cluster: Cluster, pi: harness.EmulatedPi) -> None:
    """With a known_hosts that names another key for the node, ssh refuses to connect."""
    other = make_key_pair(cluster.root / "other-host-key", "ssh_host_ed25519_key")
    public = Path(f"{other}.pub").read_text().split()
    wrong = cluster.root / "wrong_known_hosts"
    wrong.write_text(f"{NODE_IP} {public[0]} {public[1]}\n")
    proc = subprocess.run(
        cluster.ssh_argv("true", known_hosts=wrong), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in proc.stderr


def test_cloud_init_applied_first_boot_config(cluster: Cluster, pi: harness.EmulatedPi) -> None:
    """Debian's cloud-init read the seed from system-boot: hostname, user, static address, keys."""
    status = cluster.ssh("cloud-init", "status", "--wait", "--long", check=False)
    assert "status: done" in status.stdout, status.stdout + status.stderr
    assert "DataSourceNoCloud" in status.stdout, status.stdout
    assert cluster.ssh("hostname").stdout.strip() == NODE
    groups = cluster.ssh("id", "-nG").stdout.split()
    assert "sudo" in groups
    assert cluster.ssh("sudo", "-n", "true").returncode == 0
    addr = json.loads(cluster.ssh("ip", "-j", "-4", "addr", "show", "dev", "eth0").stdout)
    assert [(a["local"], a["prefixlen"]) for a in addr[0]["addr_info"]] == [(NODE_IP, 24)]
    route = cluster.ssh("ip", "-4", "route", "show", "default").stdout
    assert f"via {harness.GATEWAY}" in route
    # Only the pinned host keys exist (ssh_deletekeys + ssh_keys: nothing generated on the Pi).
    keys = cluster.ssh("sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub").stdout
    pinned = cluster.known_hosts.read_text()
    for line in keys.splitlines():
        assert line.split()[1] in pinned, f"host key {line.split()[0]} was not pinned by flash"
    # The boot partition is mounted where Ubuntu mounts it.
    mounts = cluster.ssh("findmnt", "-n", "-o", "SOURCE,FSTYPE", "/boot/firmware").stdout
    assert "vfat" in mounts
    model = cluster.ssh("tr", "-d", r"\0", "<", "/proc/device-tree/model").stdout
    assert model.startswith("Raspberry Pi 3 Model B"), model
    assert cluster.ssh("uname", "-m").stdout.strip() == "aarch64"


@pytest.fixture(scope="module")
def swap_planted(cluster: Cluster, pi: harness.EmulatedPi) -> None:
    """A swap file that is on and comes back at boot (as dphys-swapfile keeps one on Raspberry
    Pi OS): node prep must turn it off for good, and doctor must see it before and not after."""
    script = (
        "dd if=/dev/zero of=/swapfile bs=1M count=32 status=none; chmod 600 /swapfile; "
        "mkswap /swapfile >/dev/null; swapon /swapfile; "
        "echo '/swapfile none swap sw 0 0' >> /etc/fstab"
    )
    # ssh joins its arguments with spaces for the remote shell: one quoted command string.
    cluster.ssh(f"sudo sh -ec {shlex.quote(script)}")


def doctor_findings(cluster: Cluster) -> tuple[int, list[dict[str, Any]]]:
    # An emulated Pi on a busy host answers slowly: a generous probe timeout, and a probe
    # that timed out is a failure here, not a finding to look past.
    args = ("doctor", "--json", "--timeout", "120", "-c", str(cluster.file))
    proc = pikube(*args, cwd=cluster.root, check=False, netns=True)
    try:
        findings = json.loads(proc.stdout)
    except json.JSONDecodeError as err:
        raise AssertionError(f"doctor printed no JSON ({err}): {proc.stdout}{proc.stderr}") from err
    mine = [f for f in findings if f["node"] == NODE]
    assert not [f for f in mine if f["check"] == "reachable"], mine
    return proc.returncode, mine


def test_doctor_before_prep_reports_memory_cgroup_and_swap(
    cluster: Cluster, pi: harness.EmulatedPi, swap_planted: None
) -> None:
    """Without the flags the (emulated) Pi kernel has no memory cgroup and the planted swap is
    on: doctor reports both, with what `pikube up` does about them."""
    _, findings = doctor_findings(cluster)
    messages = {(f["check"], f["message"]) for f in findings}
    assert ("memory-cgroup", "the memory cgroup is not enabled (/proc/cgroups)") in messages
    assert any(check == "swap" and "swap is on" in msg for check, msg in messages), findings
    assert any(check == "swap" and "/etc/fstab" in msg for check, msg in messages), findings


def state_runs(cluster: Cluster) -> list[Path]:
    runs = cluster.root / ".pikube" / "runs"
    return sorted(runs.iterdir()) if runs.is_dir() else []


def changed_per_host(run: Path) -> dict[str, int]:
    summary = json.loads((run / "summary.json").read_text())
    return {host: stats["changed"] for host, stats in summary["hosts"].items()}


PREPARE = ("up", "--tags", "prepare")


@pytest.fixture(scope="module")
def prepared(
    cluster: Cluster, pi: harness.EmulatedPi, swap_planted: None
) -> subprocess.CompletedProcess[str]:
    """The first `pikube up --tags prepare`: the product's prepare play (pikube_node_prep)."""
    started = time.monotonic()
    proc = pikube(*PREPARE, "-c", str(cluster.file), cwd=cluster.root, check=False, netns=True)
    TIMINGS["node prep: pikube up --tags prepare (first, incl. reboot)"] = (
        time.monotonic() - started
    )
    (cluster.root / "prep-1.log").write_text(proc.stdout + proc.stderr)
    return proc


def test_node_prep_on_arm_reboots_once_with_cgroup_flags(
    cluster: Cluster, pi: harness.EmulatedPi, prepared: subprocess.CompletedProcess[str]
) -> None:
    """Node prep succeeds with changes, adds each cgroup flag to the card's cmdline.txt once
    and reboots the node once: QEMU was started again with the new command line."""
    assert prepared.returncode == 0, prepared.stderr[-8000:]
    assert changed_per_host(state_runs(cluster)[-1])[NODE] > 0
    assert len(pi.boots) == 2, "node prep did not reboot the node"
    assert "cgroup_enable=memory" in pi.boots[1].cmdline
    assert "cgroup_disable=memory" not in pi.boots[1].cmdline
    on_card = harness.read_boot_text(pi.card, "cmdline.txt").split()
    assert [w for w in on_card if w in CGROUP_FLAGS] == list(CGROUP_FLAGS), on_card


def test_doctor_after_prep_memory_cgroup_on_swap_off(
    cluster: Cluster, pi: harness.EmulatedPi, prepared: subprocess.CompletedProcess[str]
) -> None:
    """After node prep and its reboot, doctor finds neither a memory cgroup nor a swap
    problem, and the node shows the memory controller and no swap."""
    assert prepared.returncode == 0, "node prep failed; see the test above"
    _, findings = doctor_findings(cluster)
    checks = {f["check"] for f in findings}
    assert "memory-cgroup" not in checks, findings
    assert "swap" not in checks, findings
    # Nothing else may block `pikube up` (the clock included: doctor measures the node's
    # time over the command, not the slow emulated SSH handshake).
    blocking = {f["check"] for f in findings if f["blocking"]}
    assert not blocking, findings
    cgroups = cluster.ssh("cat", "/sys/fs/cgroup/cgroup.controllers").stdout.split()
    assert "memory" in cgroups
    assert cluster.ssh("cat", "/proc/swaps").stdout.strip().count("\n") == 0
    assert "/swapfile" not in cluster.ssh("cat", "/proc/swaps").stdout  # swapon is in /sbin


def test_node_prep_second_run_changes_nothing(
    cluster: Cluster, pi: harness.EmulatedPi, prepared: subprocess.CompletedProcess[str]
) -> None:
    """A second `pikube up --tags prepare` changes nothing and does not reboot."""
    assert prepared.returncode == 0, "node prep failed; see the tests above"
    started = time.monotonic()
    second = pikube(*PREPARE, "-c", str(cluster.file), cwd=cluster.root, check=False, netns=True)
    TIMINGS["node prep: second run (no changes)"] = time.monotonic() - started
    (cluster.root / "prep-2.log").write_text(second.stdout + second.stderr)
    assert second.returncode == 0, second.stderr[-8000:]
    assert changed_per_host(state_runs(cluster)[-1]) == {NODE: 0}
    assert len(pi.boots) == 2, "the second node prep run rebooted again"
