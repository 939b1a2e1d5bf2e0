"""Real cloud-init applies the NoCloud seed `pikube flash` writes: hostname, user + key,
password login off, pinned host keys and the static address, seen from outside over real SSH.

One lab node plays a freshly flashed Pi:
1. `pikube flash pi-seeded --output IMG` writes a Pi image for a node named ``pi-seeded`` at
   the lab node's address, with a new admin user and key pair (not the lab's), and pins the
   node's pre-generated host keys in its known_hosts; user-data, meta-data and network-config
   are read back from the image's FAT partition (as the Pi would find them).
2. Debian's real cloud-init (22.4, bookworm), netplan.io and udev are installed in the node
   through the lab's apt proxy; Ubuntu's Pi images ship all three, with systemd-networkd
   enabled, en_US.UTF-8 generated (cloud-init's default locale; Debian's locale-gen ignores
   the name cloud-init passes) and cloud-init limited to NoCloud
   (`datasource_list: [NoCloud, None]`), and so does the node. The seed goes to
   /var/lib/cloud/seed/nocloud/, NoCloud's seed folder: a container sees no block devices, so
   the label lookup of the `system-boot` partition cannot happen here; the files are byte for
   byte those in the image.
3. The lab's IPv4 address is removed from the node's interface and the node reboots:
   cloud-init runs at boot (local, network, config, final stages) before sshd. The node is
   reachable again only if the address came back from pikube's network-config (netplan v2,
   rendered by cloud-init's netplan renderer, applied by networkd).
The node's cluster entry has no `mac`: netplan matches `macaddress` against the permanent MAC
address (networkd's PermanentMACAddress=), which a veth does not have, so a MAC-matched config
never applies in the lab; on a Pi the NIC's own address is its permanent one.
Checks from outside use real SSH with pikube's known_hosts and StrictHostKeyChecking=yes
(no trust on first use); before cloud-init ran, the same connection is refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.factories import make_key_pair
from tests.image_support import BuiltImage, mtype

pytestmark = pytest.mark.lab

lab_core = pytest.importorskip("tests.lab.core", reason="the lab (tests/lab) is not installed")
lab_fixtures = pytest.importorskip("tests.lab.fixtures")

NODE = "pi-seeded"  # pikube's name for the node; the lab booted it as node-1
USER = "piadmin"  # not the lab's user (ubuntu), so a login proves cloud-init created it
DOMAIN = "home.arpa"
SEED_DIR = "/var/lib/cloud/seed/nocloud"
SEED_FILES = ("user-data", "meta-data", "network-config")
# As /etc/cloud/cloud.cfg.d/99-fake_cloud.cfg on Ubuntu's preinstalled Pi images, minus the
# fs_label (the seed folder is used instead, see the module docstring).
NOCLOUD_ONLY = "datasource_list: [NoCloud, None]\n"


@dataclass
class Seeded:
    lab: Any
    ip: str
    key: Path  # the admin's private key (cluster.yaml ssh.private_key)
    known_hosts: Path  # written by `pikube flash`
    state_dir: Path
    seed: dict[str, bytes]  # read back from the flashed image
    before: dict[str, subprocess.CompletedProcess[str]]  # probes before cloud-init ran
    cluster: Path
    image: BuiltImage


def pikube(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pikube", *args], capture_output=True, text=True, check=False
    )


def ssh(
    seeded: Seeded, *command: str, options: tuple[str, ...] = (), user: str = USER
) -> subprocess.CompletedProcess[str]:
    """Real SSH as the cluster's admin, trusting only the host keys pikube pinned."""
    return subprocess.run(
        [
            "ssh",
            "-i",
            str(seeded.key),
            "-o",
            f"UserKnownHostsFile={seeded.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ControlPath=none",
            "-o",
            "ConnectTimeout=10",
            *options,
            f"{user}@{seeded.ip}",
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def node_exec(lab: Any, *argv: str, timeout: float = 900, node: str = "node-1") -> str:
    proc = lab.exec(node, list(argv), timeout=timeout)
    assert proc.returncode == 0, f"{argv}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return str(proc.stdout)


def install_cloud_init(lab: Any, node: str = "node-1") -> None:
    """Debian's cloud-init, netplan.io and udev from bookworm, through the lab's apt proxy."""
    apt = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y"]
    apt += ["-o", f"Acquire::http::Proxy={lab.apt_proxy}"]
    node_exec(lab, *apt, "update", node=node)
    packages = ("cloud-init", "netplan.io", "udev")
    node_exec(lab, *apt, "install", "--no-install-recommends", *packages, node=node)
    locale = "s/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/"
    node_exec(lab, "sed", "-i", locale, "/etc/locale.gen", node=node)
    node_exec(lab, "locale-gen", node=node)


def flash_seed(cluster: Path, image: BuiltImage, work: Path) -> dict[str, bytes]:
    """`pikube flash NODE --output`, then the seed files as the Pi would read them."""
    target = work / f"{NODE}.img"
    flashed = pikube(
        "flash", "--cluster", str(cluster), "--image", str(image.xz), NODE,
        "--output", str(target),
    )  # fmt: skip
    assert flashed.returncode == 0, flashed.stderr
    try:
        return {name: mtype(target, image.layout.boot_offset, name) for name in SEED_FILES}
    finally:
        target.unlink()


def write_seed(lab: Any, seed: dict[str, bytes], node: str = "node-1") -> None:
    """Put the seed into NoCloud's seed folder in the node (root only: private host keys)."""
    node_exec(lab, "install", "-d", "-m", "0700", SEED_DIR, node=node)
    for name, content in seed.items():
        (lab.node_dir(node) / "merged" / SEED_DIR.lstrip("/") / name).write_bytes(content)
    node_exec(lab, "chmod", "0600", *(f"{SEED_DIR}/{n}" for n in SEED_FILES), node=node)


def reboot(lab: Any, node: str) -> None:
    """Reboot through systemd; the lab's supervisor boots the node again (exit 133)."""
    boots = lab.reboot_count(node)
    lab.exec(node, ["systemctl", "reboot"], timeout=60)
    deadline = time.monotonic() + 180
    while lab.reboot_count(node) == boots:
        assert time.monotonic() < deadline, f"{node} did not boot again"
        time.sleep(0.5)
    lab.wait_ready([node], timeout=300)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, pi_image: BuiltImage) -> Iterator[Seeded]:
    lab_fixtures.skip_unless_lab_possible()
    _, second_half = lab_fixtures.lab_halves()
    lab = lab_core.Lab(f"{lab_fixtures.lab_name()}-ci", second_half)
    lab.down()
    work = tmp_path_factory.mktemp("cloudinit-seed")
    try:
        lab.up(1, pi=1)
        spec = lab.node("node-1")
        key = make_key_pair(work / "admin", "id_ed25519")
        data = lab.cluster_data("kubeadm")
        data.update(
            name="seedlab",
            image="ubuntu-24.04-server-arm64",
            apt_proxy=lab.apt_proxy,
            state_dir=str(work / "state"),
            ssh={
                "user": USER,
                "public_key": f"{key}.pub",
                "private_key": str(key),
                "known_hosts": str(work / "known_hosts"),
            },
            nodes=[
                {
                    "name": NODE,
                    "ip": spec.ip,
                    "role": "control-plane",
                    "model": "pi4-2gb",
                }
            ],
        )
        data["network"]["domain"] = DOMAIN
        cluster = work / "cluster.yaml"
        cluster.write_text(yaml.safe_dump(data, sort_keys=False))
        seed = flash_seed(cluster, pi_image, work)
        seeded = Seeded(
            lab, spec.ip, key, work / "known_hosts", work / "state", seed, {}, cluster, pi_image
        )
        # Before cloud-init: the node still has the lab's host keys, user and name.
        seeded.before["login"] = ssh(seeded, "true")
        # The methods sshd offers, asked with the lab's known_hosts (its keys, still valid).
        as_lab = Seeded(**{**seeded.__dict__, "known_hosts": lab.known_hosts})
        seeded.before["auth"] = ssh(as_lab, "true", options=("-o", "PreferredAuthentications=none"))

        install_cloud_init(lab)
        write_seed(lab, seed)
        (lab.node_dir("node-1") / "merged/etc/cloud/cloud.cfg.d/99-pikube-lab.cfg").write_text(
            NOCLOUD_ONLY
        )
        node_exec(lab, "systemctl", "enable", "systemd-networkd.service")
        # Only cloud-init can bring the address back: take the lab's away (IPv4 only: the
        # kernel's IPv6 link-local address stays, as on a Pi, and networkd waits for it).
        subprocess.run(["ip", "-n", spec.netns, "-4", "addr", "flush", "dev", "eth0"], check=True)
        reboot(lab, "node-1")
        yield seeded
    finally:
        lab.down()


def test_before_cloud_init_the_pinned_keys_do_not_match(seeded: Seeded) -> None:
    # The control for every SSH check below: the lab's own host keys are not pikube's.
    assert seeded.before["login"].returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in seeded.before["login"].stderr


def test_cloud_init_ran_every_stage_from_the_nocloud_seed(seeded: Seeded) -> None:
    status = json.loads(node_exec(seeded.lab, "cloud-init", "status", "--format", "json"))
    assert status["status"] == "done", status
    assert status["errors"] == [], status
    result = json.loads(node_exec(seeded.lab, "cat", "/var/lib/cloud/data/result.json"))
    assert result["v1"]["datasource"].startswith("DataSourceNoCloud"), result
    assert result["v1"]["errors"] == [], result
    meta = yaml.safe_load(seeded.seed["meta-data"])
    instance = node_exec(seeded.lab, "cat", "/var/lib/cloud/data/instance-id").strip()
    assert instance == meta["instance-id"]  # the per-flash id pikube wrote


def test_host_keys_are_the_ones_pikube_pinned(seeded: Seeded) -> None:
    pinned = {
        line.split()[1]: line.split()[2]
        for line in seeded.known_hosts.read_text().splitlines()
        if line.split()[0] == f"{NODE},{seeded.ip}"
    }
    assert set(pinned) == {"ssh-ed25519", "ecdsa-sha2-nistp256"}
    for algorithm in pinned:
        # Offer one host key type at a time: the node must present exactly the pinned key.
        proc = ssh(seeded, "true", options=("-o", f"HostKeyAlgorithms={algorithm}"))
        assert proc.returncode == 0, f"{algorithm}: {proc.stderr}"
    # Every host key on the node's disk (/etc/ssh/ssh_host_*_key.pub, one file at a time).
    on_node = dict(line.split() for line in seeded.lab.host_keys("node-1"))
    assert on_node == pinned  # cloud-init deleted the lab's keys and wrote only pikube's
    stored = seeded.state_dir / "hostkeys" / NODE / "ssh_host_ed25519_key.pub"
    assert stored.read_text().split()[1] == pinned["ssh-ed25519"]


def test_hostname_and_fqdn_are_the_nodes(seeded: Seeded) -> None:
    proc = ssh(seeded, "hostname; cat /etc/hostname; getent hosts " + NODE)
    assert proc.returncode == 0, proc.stderr
    running, on_disk, hosts = proc.stdout.splitlines()[:3]
    assert running == NODE and on_disk == NODE  # was node-1 before cloud-init
    assert f"{NODE}.{DOMAIN}" in hosts.split()  # manage_etc_hosts with the cluster's domain


def test_admin_user_logs_in_with_the_cluster_key_only(seeded: Seeded) -> None:
    proc = ssh(seeded, "id -nG; sudo -n passwd --status " + USER)
    assert proc.returncode == 0, proc.stderr
    groups, status = proc.stdout.splitlines()[:2]
    assert "sudo" in groups.split()
    assert status.split()[1] == "L"  # lock_passwd: no password at all
    keys = ssh(seeded, "cat ~/.ssh/authorized_keys").stdout.split("\n")
    assert [k for k in keys if k.strip()] == [Path(f"{seeded.key}.pub").read_text().strip()]
    wrong_key = make_key_pair(seeded.state_dir.parent / "intruder")
    intruder = ssh(Seeded(**{**seeded.__dict__, "key": wrong_key}), "true")
    assert intruder.returncode == 255 and "Permission denied" in intruder.stderr


def test_password_login_is_off(seeded: Seeded) -> None:
    before = seeded.before["auth"].stderr
    assert "Permission denied (publickey,password)" in before  # Debian's sshd default
    # Ask for no method: the server answers with the methods it would accept.
    proc = ssh(seeded, "true", options=("-o", "PreferredAuthentications=none"))
    assert proc.returncode == 255
    assert "Permission denied (publickey)." in proc.stderr
    effective = node_exec(seeded.lab, "sshd", "-T")
    assert "passwordauthentication no" in effective.splitlines()


def test_static_address_comes_from_the_network_config(seeded: Seeded) -> None:
    # The lab's address was flushed before the boot; the lab waited for sshd on it, so it is
    # back. Show where from: the address and default route on eth0 inside the node ...
    addrs = json.loads(node_exec(seeded.lab, "ip", "-j", "-4", "addr", "show", "dev", "eth0"))
    assert [(a["local"], a["prefixlen"]) for a in addrs[0]["addr_info"]] == [
        (seeded.ip, seeded.lab.subnet.prefixlen)
    ]
    route = json.loads(node_exec(seeded.lab, "ip", "-j", "-4", "route", "show", "default"))
    assert route[0]["gateway"] == seeded.lab.bridge_ip and route[0]["dev"] == "eth0"
    # ... configured by networkd from the netplan file cloud-init rendered from pikube's v2
    # network-config (the same address, gateway and DNS).
    rendered = yaml.safe_load(node_exec(seeded.lab, "cat", "/etc/netplan/50-cloud-init.yaml"))
    eth0 = rendered["network"]["ethernets"]["eth0"]
    ours = yaml.safe_load(seeded.seed["network-config"])["ethernets"]["eth0"]
    assert eth0["addresses"] == ours["addresses"] == [f"{seeded.ip}/{seeded.lab.subnet.prefixlen}"]
    assert eth0["routes"] == [{"to": "default", "via": seeded.lab.bridge_ip}]
    assert eth0["nameservers"]["addresses"] == [seeded.lab.bridge_ip]
    status = json.loads(node_exec(seeded.lab, "networkctl", "--json=short", "status", "eth0"))
    assert status["AdministrativeState"] == "configured", status
    assert "netplan" in status["NetworkFile"], status


def test_etc_hosts_edits_after_first_boot_survive_a_reboot(seeded: Seeded) -> None:
    # Node prep names every cluster node in /etc/hosts after cloud-init's first boot; cloud-init
    # runs at every boot and must keep that (manage_etc_hosts: localhost edits only its own
    # 127.0.1.1 line; `true` would rewrite the file from its template at each boot).
    block = "# BEGIN pikube cluster nodes\n10.99.0.7 pi-other\n# END pikube cluster nodes\n"
    node_exec(seeded.lab, "sh", "-c", f"printf '%s' '{block}' >>/etc/hosts")
    reboot(seeded.lab, "node-1")
    hosts = node_exec(seeded.lab, "cat", "/etc/hosts")
    assert block in hosts
    assert f"{NODE}.{DOMAIN}" in hosts.split()  # cloud-init still names the node itself


# Last in the module: it re-flashes the node.
def test_reflash_is_a_new_instance_with_the_same_host_keys(seeded: Seeded) -> None:
    # A re-flashed card carries a new instance id, so cloud-init runs its per-instance modules
    # again (here: a second admin key, as after editing ssh.public_key); the host keys come
    # from pikube's store again, so the pinned known_hosts entry stays valid.
    first = yaml.safe_load(seeded.seed["meta-data"])["instance-id"]
    second_key = make_key_pair(seeded.state_dir.parent / "admin2")
    data = yaml.safe_load(seeded.cluster.read_text())
    data["ssh"].update(public_key=f"{second_key}.pub", private_key=str(second_key))
    seeded.cluster.write_text(yaml.safe_dump(data, sort_keys=False))
    pinned = seeded.known_hosts.read_text()
    seed = flash_seed(seeded.cluster, seeded.image, seeded.state_dir.parent)
    second = yaml.safe_load(seed["meta-data"])["instance-id"]
    assert second != first
    assert seeded.known_hosts.read_text() == pinned  # same keys, nothing re-pinned
    write_seed(seeded.lab, seed)
    reboot(seeded.lab, "node-1")
    instance = node_exec(seeded.lab, "cat", "/var/lib/cloud/data/instance-id").strip()
    assert instance == second
    again = Seeded(**{**seeded.__dict__, "key": second_key})
    proc = ssh(again, "hostname")  # pinned host keys, the new admin key
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == NODE
