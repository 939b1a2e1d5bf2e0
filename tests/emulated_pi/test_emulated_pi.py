"""From a blank card to a prepared node on an emulated Raspberry Pi 3 (QEMU raspi3b, arm64).

The real flow, end to end, for each image variant (Ubuntu's Pi server image, Raspberry Pi
OS Lite): ``pikube build --until booted`` asks for a card, notices the one inserted (a loop
device appearing in a test sysfs tree, as in tests/integration/test_build_cards.py), writes
the cached Pi image plus the node's first-boot config to it and waits for the Pi; the card
goes "into the Pi" (QEMU boots it); cloud-init applies hostname, user, key, the pinned host
keys and the static address from the card's NoCloud seed; the build sees SSH answer with the
host key pinned when the card was written (and nothing else is trusted). ``pikube build
--until prepared`` then resumes: node prep (the product's prepare play, role
``pikube_node_prep``) adds the memory cgroup flags to cmdline.txt, reboots once and turns off
a swap file planted before; ``pikube doctor`` then finds the memory cgroup on and swap off.
pikube, ssh and Ansible run inside the lab's network namespace (``harness.netns_argv``),
where the node is.

The node is a Pi 3 B (what QEMU emulates: 1 GB, 4 cores). kubeadm refuses a 1 GB control
plane, so the one-node cluster uses distribution microk8s, for which node prep is the same
role. No Kubernetes is installed here: this tier proves flashing, first boot and node prep on
ARM; the Kubernetes flows are proven in the lab tier.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pikube.build import CARD_WRITTEN, PREPARED, SSH_UP
from tests.emulated_pi import harness, image
from tests.emulated_pi.conftest import TIMINGS
from tests.factories import make_key_pair
from tests.image_support import FakeDisk, fake_proc, fake_sys, loop_device

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
    def __init__(self, root: Path, variant: image.Variant) -> None:
        self.root = root
        self.variant = variant
        self.key = make_key_pair(root / "keys")
        self.file = root / "cluster.yaml"
        self.known_hosts = root / "known_hosts"
        data: dict[str, Any] = {
            "name": "emulated",
            "distribution": "microk8s",
            # The catalog entry whose OS family the card's first-boot files are written for.
            "image": variant.catalog_id,
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
def cluster(tmp_path_factory: pytest.TempPathFactory, variant: image.Variant) -> Cluster:
    return Cluster(tmp_path_factory.mktemp(f"cluster-{variant.name}"), variant)


class Transcript:
    """A command's stderr, read as it comes, so the test can act when a line appears."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.lines.append("")  # end of output
            self.changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> None:
        with self.changed:
            self.changed.wait_for(
                lambda: any(text in line for line in self.lines) or "" in self.lines,
                timeout=timeout,
            )
        assert any(text in line for line in self.lines), f"no {text!r} in:\n{self.text()}"

    def text(self) -> str:
        return "".join(self.lines)


# A generous deadline: on this shared 2-core machine a first boot under TCG takes minutes.
BOOT_TIMEOUT = "2400"


@dataclass
class Build:
    """The first `pikube build --until booted`: the card it wrote and the Pi booted from it."""

    card: Path
    flashed_cmdline: str
    transcript: str
    returncode: int
    pi: harness.EmulatedPi


def build_stages(cluster: Cluster) -> dict[str, float]:
    state = json.loads((cluster.root / ".pikube" / "build.json").read_text())
    stages: dict[str, float] = state["nodes"][NODE]["stages"]
    return stages


def wait_for_build(proc: subprocess.Popen[str], pi: harness.EmulatedPi, deadline: float) -> int:
    """The build's exit code once it ends; a boot that failed for certain (panic, emergency
    mode, QEMU gone) ends the wait at once with the console's tail, not at the deadline."""
    while proc.poll() is None:
        failure = pi.failure()
        if failure:
            raise AssertionError(f"the Pi did not come up: {failure}")
        if time.monotonic() > deadline + 600:  # the build's own --boot-timeout ends it first
            raise AssertionError(f"the build still runs; console tail:\n{pi.console_tail()}")
        time.sleep(5)
    return proc.returncode


@pytest.fixture(scope="module")
def built(cluster: Cluster, pi_image: Path, emu_lab: harness.Lab) -> Iterator[Build]:
    """`pikube build --until booted` as a user runs it: it asks for a card; a blank 4 GiB
    "card" (a loop device in a test sysfs tree: a removable SD/MMC reader) is inserted; the
    build writes it; the card is taken out of the reader and put into the Pi (QEMU boots the
    file); the build ends once the Pi answers SSH with the host key pinned on the card.

    Before the first boot the cgroup flags are taken out of cmdline.txt again, as on a card
    written by another tool (Raspberry Pi Imager): so node prep's own cmdline edit and reboot
    are exercised too (the flags the build writes are checked in their own test).
    """
    card = cluster.root / "card.img"
    with open(card, "wb") as handle:
        handle.truncate(image.IMAGE_SIZE)
    fake = cluster.root / "fake"
    proc_root = fake_proc(fake)
    fake_sys(fake, FakeDisk(name="nvme0n1", devnum=(259, 0), removable="0", partitions=2))
    argv = [
        sys.executable, "-m", "pikube", "build", "-c", str(cluster.file),
        "--image", str(pi_image), "--yes", "--until", "booted", "--boot-timeout", BOOT_TIMEOUT,
        "--sys-root", str(fake / "sys"), "--proc-root", str(proc_root),
    ]  # fmt: skip
    reader = contextlib.ExitStack()
    proc = subprocess.Popen(
        harness.netns_argv(argv),
        cwd=cluster.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pi: harness.EmulatedPi | None = None
    try:
        out = Transcript(proc)
        out.wait_for(f"insert the card for {NODE}", timeout=600)
        dev = reader.enter_context(loop_device(card))
        rdev = os.stat(dev).st_rdev
        fake_sys(
            fake,
            FakeDisk(
                name=Path(dev).name,
                devnum=(os.major(rdev), os.minor(rdev)),
                size=image.IMAGE_SIZE,
                partitions=0,
            ),
        )
        inserted = time.monotonic()
        out.wait_for(f"card for {NODE} written", timeout=3600)
        TIMINGS[f"{cluster.variant.name}: card inserted to written (4 GiB, verified)"] = (
            time.monotonic() - inserted
        )
        reader.close()  # out of the reader ...
        flashed = harness.read_boot_text(card, "cmdline.txt")
        stripped = " ".join(w for w in flashed.split() if w not in CGROUP_FLAGS) + "\n"
        harness.write_boot_file(card, "cmdline.txt", stripped)
        pi = emu_lab.boot(card)  # ... into the Pi, powered on
        returncode = wait_for_build(proc, pi, deadline=time.monotonic() + float(BOOT_TIMEOUT))
        out.thread.join(10)
        if returncode == 0:
            stages = build_stages(cluster)
            TIMINGS[f"{cluster.variant.name}: card written to SSH up (pinned key)"] = (
                stages[SSH_UP] - stages[CARD_WRITTEN]
            )
        yield Build(card, flashed, out.text(), returncode, pi)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if pi is not None:
            pi.stop()
        reader.close()
        if not os.environ.get("PIKUBE_EMU_KEEP"):
            card.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def pi(built: Build) -> harness.EmulatedPi:
    """The Pi the build waited for (a failed build fails every test that needs the node)."""
    assert built.returncode == 0, (
        f"{built.transcript[-8000:]}\nconsole tail:\n{built.pi.console_tail()}"
    )
    return built.pi


def test_build_writes_the_inserted_card_with_seed_and_cgroup_flags(
    built: Build, variant: image.Variant
) -> None:
    """The build noticed the card inserted while it waited, wrote the image, the NoCloud
    seed (on the variant's boot partition) and the cgroup flags in cmdline.txt, and said
    which Pi the card is for."""
    assert f"{NODE}: card " in built.transcript, built.transcript
    assert f"card for {NODE} written: label it {NODE}" in built.transcript, built.transcript
    flashed_cmdline = built.flashed_cmdline
    for flag in CGROUP_FLAGS:
        assert flag in flashed_cmdline.split(), flashed_cmdline
    root = "root=LABEL=writable" if variant.name == "ubuntu" else "root=PARTUUID="
    assert root in flashed_cmdline
    card = built.card
    user_data = harness.read_boot_text(card, "user-data")
    assert user_data.startswith("#cloud-config")
    config = yaml.safe_load(user_data)
    assert config["hostname"] == NODE
    assert config["users"][0]["name"] == USER
    network = yaml.safe_load(harness.read_boot_text(card, "network-config"))
    assert network["ethernets"]["eth0"]["addresses"] == [f"{NODE_IP}/24"]


def test_build_waits_for_first_boot_proven_by_the_pinned_host_key(
    cluster: Cluster, built: Build, pi: harness.EmulatedPi
) -> None:
    """The build recorded the Pi's SSH up (it logged in with the key pinned when the card
    was written, no TOFU) and stopped there (--until booted); ssh does the same."""
    assert "every node is booted" in built.transcript, built.transcript
    stages = build_stages(cluster)
    assert SSH_UP in stages and PREPARED not in stages, stages
    assert cluster.known_hosts.is_file(), "the build wrote no known_hosts"
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
    # The boot partition is mounted where Ubuntu and Raspberry Pi OS mount it.
    mounts = cluster.ssh("findmnt", "-n", "-o", "SOURCE,FSTYPE", "/boot/firmware").stdout
    assert "vfat" in mounts
    model = cluster.ssh("tr", "-d", r"\0", "<", "/proc/device-tree/model").stdout
    assert model.startswith("Raspberry Pi 3 Model B"), model
    assert cluster.ssh("uname", "-m").stdout.strip() == "aarch64"


def test_raspios_first_boot_services_left_the_seed_in_charge(
    cluster: Cluster, variant: image.Variant, pi: harness.EmulatedPi
) -> None:
    """On the Raspberry Pi OS image (sshd shipped disabled, the host-key regeneration
    enabled, NetworkManager, no snapd) the seed enabled sshd for good, kept the regeneration
    from replacing the pinned keys, and NetworkManager runs the static address."""
    if variant.name != "raspios":
        pytest.skip("Raspberry Pi OS's first-boot services")
    assert cluster.ssh("systemctl", "is-enabled", "ssh.service").stdout.strip() == "enabled"
    regen = cluster.ssh("systemctl", "is-enabled", "regenerate_ssh_host_keys.service", check=False)
    assert regen.stdout.strip() == "masked", regen.stdout + regen.stderr
    nm = cluster.ssh("nmcli", "-t", "-f", "DEVICE,STATE", "device", "status").stdout
    assert "eth0:connected" in nm.splitlines(), nm
    networkd = cluster.ssh("systemctl", "is-active", "systemd-networkd.service", check=False)
    assert networkd.stdout.strip() != "active", networkd.stdout
    # One command string: ssh joins its arguments with spaces for the remote shell.
    assert cluster.ssh("command -v snap", check=False).returncode != 0


@pytest.fixture(scope="module")
def clock_synchronised(cluster: Cluster, pi: harness.EmulatedPi) -> None:
    """Wait for the node's first NTP synchronisation (from the harness's gateway) before doctor
    judges its clock. An emulation accommodation: a Pi has no real-time clock, so until then it
    keeps the image's clock-epoch; under QEMU's TCG systemd-timesyncd's first exchange came
    minutes after the network (on the trixie image, one run's doctor found the clock 303 s
    behind), where a Pi's takes seconds."""
    deadline = time.monotonic() + 900
    while True:
        synced = cluster.ssh("timedatectl show -p NTPSynchronized --value", check=False)
        if synced.stdout.strip() == "yes":
            return
        if time.monotonic() > deadline:
            status = cluster.ssh("timedatectl timesync-status", check=False).stdout
            raise AssertionError(f"no NTP synchronisation within 900 s:\n{status}")
        time.sleep(10)


@pytest.fixture(scope="module")
def swap_planted(cluster: Cluster, pi: harness.EmulatedPi, clock_synchronised: None) -> None:
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


# The build again, resumed: the card is written and the Pi booted, so it goes on with the
# prepare play (pikube_node_prep) and stops before anything of Kubernetes is installed.
PREPARE = ("build", "--until", "prepared", "--boot-timeout", BOOT_TIMEOUT)


@pytest.fixture(scope="module")
def prepared(
    cluster: Cluster, pi: harness.EmulatedPi, swap_planted: None
) -> subprocess.CompletedProcess[str]:
    """The first `pikube build --until prepared`: node prep, its reboot, then a stop."""
    started = time.monotonic()
    proc = pikube(*PREPARE, "-c", str(cluster.file), cwd=cluster.root, check=False, netns=True)
    TIMINGS[f"{cluster.variant.name}: node prep: pikube build --until prepared (incl. reboot)"] = (
        time.monotonic() - started
    )
    (cluster.root / "prep-1.log").write_text(proc.stdout + proc.stderr)
    return proc


def test_node_prep_on_arm_reboots_once_with_cgroup_flags(
    cluster: Cluster, pi: harness.EmulatedPi, prepared: subprocess.CompletedProcess[str]
) -> None:
    """The resumed build asks for no card, prepares the node with changes, adds each cgroup
    flag to the card's cmdline.txt once and reboots the node once (QEMU was started again
    with the new command line), records it prepared and stops there."""
    assert prepared.returncode == 0, (
        prepared.stderr[-8000:] + "\n" + (pi.failure() or "console:\n" + pi.console_tail())
    )
    assert "insert the card" not in prepared.stderr
    assert "every node is prepared" in prepared.stderr, prepared.stderr[-4000:]
    assert PREPARED in build_stages(cluster)
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
    """A second `pikube build --until prepared` changes nothing and does not reboot."""
    assert prepared.returncode == 0, "node prep failed; see the tests above"
    started = time.monotonic()
    second = pikube(*PREPARE, "-c", str(cluster.file), cwd=cluster.root, check=False, netns=True)
    TIMINGS[f"{cluster.variant.name}: node prep: second run (no changes)"] = (
        time.monotonic() - started
    )
    (cluster.root / "prep-2.log").write_text(second.stdout + second.stderr)
    assert second.returncode == 0, second.stderr[-8000:]
    assert changed_per_host(state_runs(cluster)[-1]) == {NODE: 0}
    assert len(pi.boots) == 2, "the second node prep run rebooted again"
