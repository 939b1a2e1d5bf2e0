"""Real cloud-init applies the NoCloud seed `pikube flash` writes: hostname, user + key,
password login off, pinned host keys and the static address, seen from outside over real SSH.

Twice, once per OS personality of a lab Pi node (tests/lab/core.py PI_OSES): Ubuntu's Pi
image, and Raspberry Pi OS (sshd disabled until enabled, raspberrypi-sys-mods' host-key
regeneration enabled, NetworkManager rendering netplan; tests/lab/raspios/README.md).
One lab node plays a freshly flashed Pi:
1. `pikube flash pi-seeded --output IMG` writes a Pi image for a node named ``pi-seeded`` at
   the lab node's address, with a new admin user and key pair (not the lab's), and pins the
   node's pre-generated host keys in its known_hosts; user-data, meta-data and network-config
   are read back from the image's FAT partition (as the Pi would find them). The cluster's
   `image` is the personality's catalog image, so the seed is the one for that OS.
2. Real cloud-init is installed in the node as that OS ships it (tests/integration/firstboot.py:
   Debian's cloud-init 22.4, netplan.io, udev; networkd for Ubuntu, NetworkManager for
   Raspberry Pi OS) and the seed goes to NoCloud's seed folder.
3. The lab's IPv4 address is removed from the node's interface and the node reboots:
   cloud-init runs at boot (local, network, config, final stages) before sshd. The node is
   reachable again only if the address came back from pikube's network-config (netplan v2,
   rendered by cloud-init's netplan renderer, applied by networkd or NetworkManager).
The node's cluster entry has no `mac`: netplan matches `macaddress` against the permanent MAC
address (networkd's PermanentMACAddress=), which a veth does not have, so a MAC-matched config
never applies in the lab; on a Pi the NIC's own address is its permanent one.
Checks from outside use real SSH with pikube's known_hosts and StrictHostKeyChecking=yes
(no trust on first use); before cloud-init ran, the same connection is refused.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.factories import make_key_pair
from tests.image_support import BuiltImage
from tests.integration.firstboot import (
    flash_seed,
    forget_address,
    install_cloud_init,
    reboot,
    write_seed,
)
from tests.integration.firstboot import node_exec as exec_on

pytestmark = pytest.mark.lab

lab_core = pytest.importorskip("tests.lab.core", reason="the lab (tests/lab) is not installed")
lab_fixtures = pytest.importorskip("tests.lab.fixtures")

NODE = "pi-seeded"  # pikube's name for the node; the lab booted it as node-1
USER = "piadmin"  # not the lab's user (ubuntu), so a login proves cloud-init created it
DOMAIN = "home.arpa"
IMAGES = {"ubuntu": "ubuntu-24.04-server-arm64", "raspios": "raspios-trixie-lite-arm64"}


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
    os: str  # the lab node's OS personality


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


def node_exec(lab: Any, *argv: str, timeout: float = 900) -> str:
    return exec_on(lab, "node-1", *argv, timeout=timeout)


@pytest.fixture(scope="module", params=["ubuntu", "raspios"])
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pi_image: BuiltImage
) -> Iterator[Seeded]:
    personality: str = request.param
    lab_fixtures.skip_unless_lab_possible()
    _, second_half = lab_fixtures.lab_halves()
    lab = lab_core.Lab(f"{lab_fixtures.lab_name()}-ci", second_half)
    lab.down()
    work = tmp_path_factory.mktemp(f"cloudinit-seed-{personality}")
    try:
        lab.up(1, pi=1, pi_os=personality)
        spec = lab.node("node-1")
        key = make_key_pair(work / "admin", "id_ed25519")
        data = lab.cluster_data("kubeadm")
        data.update(
            name="seedlab",
            image=IMAGES[personality],
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
        seed = flash_seed(cluster, pi_image, work, NODE)
        seeded = Seeded(
            lab,
            spec.ip,
            key,
            work / "known_hosts",
            work / "state",
            seed,
            {},
            cluster,
            pi_image,
            personality,
        )
        # Before cloud-init: the node still has the lab's host keys, user and name.
        seeded.before["login"] = ssh(seeded, "true")
        # The methods sshd offers, asked with the lab's known_hosts (its keys, still valid).
        as_lab = Seeded(**{**seeded.__dict__, "known_hosts": lab.known_hosts})
        seeded.before["auth"] = ssh(as_lab, "true", options=("-o", "PreferredAuthentications=none"))

        install_cloud_init(lab, "node-1")
        write_seed(lab, "node-1", seed)
        # Only cloud-init can bring the address back: take the lab's away.
        forget_address(lab, "node-1")
        reboot(lab, "node-1")
        yield seeded
    finally:
        lab.down()


def test_before_cloud_init_the_pinned_keys_do_not_match(seeded: Seeded) -> None:
    # The control for every SSH check below: the lab's own host keys are not pikube's, and
    # Raspberry Pi OS does not even listen (sshd ships disabled).
    assert seeded.before["login"].returncode == 255
    if seeded.os == "raspios":
        assert "Connection refused" in seeded.before["login"].stderr
    else:
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in seeded.before["login"].stderr


def test_raspberry_pi_os_sshd_is_enabled_for_good(seeded: Seeded) -> None:
    # The seed enables it (as Imager does): it answers now and comes back at every boot.
    if seeded.os != "raspios":
        pytest.skip("Ubuntu's image ships sshd enabled")
    assert node_exec(seeded.lab, "systemctl", "is-enabled", "ssh.service").strip() == "enabled"
    assert ssh(seeded, "true").returncode == 0


def test_raspberry_pi_os_host_key_regeneration_never_ran(seeded: Seeded) -> None:
    # Enabled in the image, ordered after cloud-init wrote the pinned keys: the seed masked it
    # before its turn, so it neither ran nor stays enabled for a later boot.
    if seeded.os != "raspios":
        pytest.skip("Ubuntu's image has no host-key regeneration service")
    unit = "regenerate_ssh_host_keys.service"
    show = node_exec(
        seeded.lab, "systemctl", "show", "-p", "UnitFileState,ExecMainStartTimestampMonotonic", unit
    )
    props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    assert props["UnitFileState"] == "masked", props
    assert props["ExecMainStartTimestampMonotonic"] == "0", props  # never started this boot


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
    if seeded.os == "ubuntu":  # Raspberry Pi OS answered nothing before cloud-init
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
    if seeded.os == "raspios":  # NetworkManager applied netplan's connection, networkd is off
        assert rendered["network"]["renderer"] == "NetworkManager"
        connection = node_exec(
            seeded.lab, "nmcli", "-g", "GENERAL.CONNECTION,GENERAL.STATE", "device", "show", "eth0"
        ).split("\n")
        assert connection[0] == "netplan-eth0" and connection[1].startswith("100"), connection
        networkd = seeded.lab.exec("node-1", ["systemctl", "is-active", "systemd-networkd"])
        assert networkd.stdout.strip() == "inactive"
        return
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
    seed = flash_seed(seeded.cluster, seeded.image, seeded.state_dir.parent, NODE)
    second = yaml.safe_load(seed["meta-data"])["instance-id"]
    assert second != first
    assert seeded.known_hosts.read_text() == pinned  # same keys, nothing re-pinned
    write_seed(seeded.lab, "node-1", seed)
    reboot(seeded.lab, "node-1")
    instance = node_exec(seeded.lab, "cat", "/var/lib/cloud/data/instance-id").strip()
    assert instance == second
    again = Seeded(**{**seeded.__dict__, "key": second_key})
    proc = ssh(again, "hostname")  # pinned host keys, the new admin key
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == NODE
