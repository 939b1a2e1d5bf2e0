"""The top-level Vagrantfile, loaded by the real Vagrant (Debian's vagrant package).

`vagrant up` cannot run here (no hypervisor, no boxes), so these tests prove the rest:
`vagrant validate` accepts the Vagrantfile, and the machines Vagrant would build (read back
from Vagrant's own config loader by tests/vagrant/machine_plan.rb) have the hosts,
addresses and groups of `pikube inventory`, and are provisioned with pikube's inventory
and playbook, with host keys pinned before the first connection.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.factories import load_inventory, make_key_pair, plain_listing

ROOT = Path(__file__).resolve().parents[2]
PIKUBE = Path(sys.executable).with_name("pikube")
ANSIBLE_INVENTORY = Path(sys.executable).with_name("ansible-inventory")

pytestmark = pytest.mark.skipif(
    shutil.which("vagrant") is None or shutil.which("ruby") is None,
    reason="needs Vagrant and Ruby (Debian: apt-get install vagrant)",
)

SEVEN_MODELS = ["pi5-8gb", "pi4-4gb", "pi4-2gb", "pi3b-plus", None, "cm4-2gb", "pi5-4gb"]
SEVEN_SIZES = {  # (memory MB, CPUs) each VM must get: the Pi model's memory
    "node-1": (8192, 2),
    "node-2": (4096, 1),
    "node-3": (2048, 1),
    "node-4": (1024, 1),
    "node-5": (1024, 1),  # no model: the worker default
    "node-6": (2048, 1),
    "node-7": (4096, 1),
}


def copied_cluster(directory: Path, relative: str) -> Path:
    """A cluster file of this repository, pointed at a fresh key pair."""
    key = make_key_pair(directory, "id_test")
    text = (ROOT / relative).read_text()
    path = directory / "cluster.yaml"
    path.write_text(text.replace("~/.ssh/id_ed25519", str(key)))
    return path


def example_cluster(directory: Path) -> Path:
    """inventory/example/cluster.yaml, the example users copy (what `pikube init` writes)."""
    return copied_cluster(directory, "inventory/example/cluster.yaml")


def rehearsal_cluster(directory: Path) -> Path:
    """inventory/vagrant/cluster.yaml, the rehearsal file docs/vagrant.md starts from."""
    return copied_cluster(directory, "inventory/vagrant/cluster.yaml")


def seven_node_cluster(directory: Path) -> Path:
    """A generated cluster: one control plane and six workers of mixed Pi models."""
    key = make_key_pair(directory, "id_test")
    nodes = []
    for index, model in enumerate(SEVEN_MODELS, start=1):
        node: dict[str, Any] = {
            "name": f"node-{index}",
            "ip": f"10.77.0.{10 + index}",
            "role": "control-plane" if index == 1 else "worker",
        }
        if model:
            node["model"] = model
        nodes.append(node)
    cluster = {
        "name": "seven",
        "distribution": "kubeadm",
        "network": {"subnet": "10.77.0.0/24", "gateway": "10.77.0.1", "dns": ["10.77.0.1"]},
        "ssh": {"user": "pi", "public_key": f"{key}.pub", "private_key": str(key)},
        "nodes": nodes,
    }
    path = directory / "cluster.yaml"
    path.write_text(yaml.safe_dump(cluster, sort_keys=False))
    return path


CLUSTERS = {
    "example": example_cluster,
    "seven": seven_node_cluster,
    "rehearsal": rehearsal_cluster,
}


def vagrant_env(cluster_file: Path, **extra: str) -> dict[str, str]:
    scratch = cluster_file.parent
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("VAGRANT_", "PIKUBE_"))}
    return {
        **inherited,
        "PATH": "/usr/bin:/bin",  # pikube's venv is not on PATH, as for a pipx install
        "PIKUBE_BIN": str(PIKUBE),
        "PIKUBE_CLUSTER": str(cluster_file),
        "VAGRANT_HOME": str(scratch / "vagrant.d"),
        "VAGRANT_DOTFILE_PATH": str(scratch / "dot-vagrant"),  # keep the checkout clean
        "VAGRANT_CHECKPOINT_DISABLE": "1",  # no update check: no traffic leaves the host
        **extra,
    }


def machine_plan(cluster_file: Path, **extra: str) -> dict[str, Any]:
    data_dir = cluster_file.parent / "plan-data"
    data_dir.mkdir(exist_ok=True)
    out = subprocess.run(
        ["ruby", str(ROOT / "tests" / "vagrant" / "machine_plan.rb"), str(ROOT), str(data_dir)],
        env=vagrant_env(cluster_file, **extra),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    plan: dict[str, Any] = json.loads(out)
    return plan


def pikube_inventory(cluster_file: Path) -> dict[str, Any]:
    out = subprocess.run(
        [str(PIKUBE), "inventory", "--cluster", str(cluster_file)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    inventory: dict[str, Any] = load_inventory(out)
    return inventory


def ansible_inventory(path: Path) -> dict[str, Any]:
    """What Ansible itself reads from an inventory (groups and merged host vars)."""
    out = subprocess.run(
        [str(ANSIBLE_INVENTORY), "--inventory", str(path), "--list"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    listing: dict[str, Any] = plain_listing(json.loads(out))
    return listing


def groups_of(listing: dict[str, Any]) -> dict[str, list[str]]:
    return {
        "cluster": sorted(listing["cluster"]["children"]),
        "control_plane": listing["control_plane"].get("hosts", []),
        "workers": listing["workers"].get("hosts", []),
    }


@pytest.fixture(scope="module", params=sorted(CLUSTERS))
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return CLUSTERS[request.param](tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def plan(cluster: Path) -> dict[str, Any]:
    return machine_plan(cluster)


def test_vagrant_validate_accepts_the_vagrantfile(cluster: Path) -> None:
    result = subprocess.run(
        ["vagrant", "validate", "--ignore-provider"],
        cwd=ROOT,
        env=vagrant_env(cluster),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Vagrantfile validated successfully." in result.stdout


@pytest.mark.parametrize("provider", ["virtualbox", "libvirt"])
def test_one_vm_per_inventory_host_with_its_name_and_address(
    cluster: Path, plan: dict[str, Any], provider: str
) -> None:
    inventory = pikube_inventory(cluster)
    groups = inventory["all"]["children"]["cluster"]["children"]
    hosts = {
        name: hostvars["ansible_host"]
        for group in ("control_plane", "workers")
        for name, hostvars in (groups[group].get("hosts") or {}).items()
    }
    subnet = yaml.safe_load(cluster.read_text())["network"]["subnet"]
    netmask = "255.255.255.0" if subnet.endswith("/24") else None
    machines = plan["machines"]
    assert sorted(m["name"] for m in machines) == sorted(hosts)
    for machine in machines:
        vm = machine["providers"][provider]
        assert vm["hostname"] == machine["name"]
        assert vm["private_networks"] == [{"ip": hosts[machine["name"]], "netmask": netmask}]
        assert vm["synced_folders"] == {"/vagrant": True}  # disabled
    # `vagrant ssh` without a name goes to the control plane.
    control_plane = list(groups["control_plane"]["hosts"])
    assert [m["name"] for m in machines if m["primary"]] == control_plane


@pytest.mark.parametrize("provider", ["virtualbox", "libvirt"])
def test_the_last_vm_provisions_all_nodes_with_pikubes_playbook_and_inventory(
    cluster: Path, plan: dict[str, Any], provider: str
) -> None:
    machines = plan["machines"]
    ansible = [
        (index, p)
        for index, m in enumerate(machines)
        for p in m["providers"][provider]["provisioners"]
        if p["type"] == "ansible"
    ]
    assert [index for index, _ in ansible] == [len(machines) - 1]
    # ...and runs after the others are up: `vagrant up` must not start VMs in parallel.
    assert plan["no_parallel"] == "yes"
    # ...with the ansible-playbook installed alongside pikube, found first on PATH.
    assert plan["path"][0] == str(PIKUBE.parent)
    assert (PIKUBE.parent / "ansible-playbook").is_file()
    provisioner = ansible[0][1]
    assert provisioner["playbook"] == str(ROOT / "playbooks" / "site.yml")
    assert provisioner["limit"] == "all"
    assert provisioner["host_key_checking"] is True
    assert provisioner["force_remote_user"] is False  # the inventory's ansible_user counts

    # The inventory Vagrant hands to ansible-playbook, as Ansible reads it, is the Pis'
    # inventory (`pikube inventory -o`) plus pikube_node_is_vm on every host.
    vm_listing = ansible_inventory(Path(provisioner["inventory_path"]))
    pi_dir = cluster.parent / f"pi-inventory-{provider}"
    subprocess.run(
        [str(PIKUBE), "inventory", "--cluster", str(cluster), "--output", str(pi_dir)],
        check=True,
        capture_output=True,
    )
    pi_listing = ansible_inventory(pi_dir)
    assert groups_of(vm_listing) == groups_of(pi_listing)
    assert groups_of(vm_listing)["cluster"] == ["control_plane", "workers"]
    pi_hostvars = pi_listing["_meta"]["hostvars"]
    vm_hostvars = vm_listing["_meta"]["hostvars"]
    assert vm_hostvars == {
        host: {**hostvars, "pikube_node_is_vm": True} for host, hostvars in pi_hostvars.items()
    }
    assert all(v["pikube_node_ip"] == v["ansible_host"] for v in vm_hostvars.values())
    for hostvars in vm_hostvars.values():
        assert "StrictHostKeyChecking=yes" in hostvars["ansible_ssh_common_args"]


def test_each_vm_gets_the_host_key_pinned_in_known_hosts_and_the_cluster_user(
    cluster: Path, plan: dict[str, Any]
) -> None:
    settings = yaml.safe_load(cluster.read_text())
    known_hosts = cluster.parent / ".pikube" / "known_hosts"
    authorized_key = Path(settings["ssh"]["public_key"]).read_text().strip()
    for machine in plan["machines"]:
        provisioners = machine["providers"]["libvirt"]["provisioners"]
        *uploads, first_boot = provisioners[:3]
        assert [p["type"] for p in provisioners[:3]] == ["file", "file", "shell"]
        ip = machine["providers"]["libvirt"]["private_networks"][0]["ip"]
        for upload in uploads:
            # Each private key uploaded to the VM belongs to a public key OpenSSH finds
            # pinned for the node's address and name (the store a flashed card uses too).
            assert Path(upload["source"]).parent.name == machine["name"]
            assert Path(upload["source"]).parent.parent.name == "hostkeys"
            derived = subprocess.run(
                ["ssh-keygen", "-y", "-f", upload["source"]],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()[:2]
            for name in (ip, machine["name"]):
                pinned = subprocess.run(
                    ["ssh-keygen", "-F", name, "-f", str(known_hosts)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                assert " ".join(derived) in pinned
        assert first_boot["path"] == str(ROOT / "vagrant" / "prepare-node.sh")
        assert first_boot["args"] == [settings["ssh"]["user"], authorized_key]
        assert first_boot["privileged"] is True


def test_vm_memory_follows_the_pi_models(tmp_path: Path) -> None:
    plan = machine_plan(seven_node_cluster(tmp_path))
    sizes = {
        m["name"]: (m["providers"]["virtualbox"]["memory_mb"], m["providers"]["virtualbox"]["cpus"])
        for m in plan["machines"]
    }
    assert sizes == SEVEN_SIZES


def test_boxes_per_provider_and_architecture(tmp_path: Path) -> None:
    cluster = seven_node_cluster(tmp_path)
    plan = machine_plan(cluster)
    boxes = {
        (m["providers"]["virtualbox"]["box"], m["providers"]["libvirt"]["box"])
        for m in plan["machines"]
    }
    assert boxes == {("bento/ubuntu-24.04", "cloud-image/ubuntu-24.04")}
    assert plan["host_arch"] == {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "arm64",
        "arm64": "arm64",
    }
    override = machine_plan(cluster, PIKUBE_VAGRANT_BOX="example/my-box")
    assert {m["providers"][p]["box"] for m in override["machines"] for p in m["providers"]} == {
        "example/my-box"
    }


def test_invalid_cluster_file_stops_vagrant_with_pikubes_message(tmp_path: Path) -> None:
    cluster = seven_node_cluster(tmp_path)
    cluster.write_text(cluster.read_text().replace("10.77.0.13", "10.77.0.300"))
    result = subprocess.run(
        ["vagrant", "validate", "--ignore-provider"],
        cwd=ROOT,
        env=vagrant_env(cluster),
        capture_output=True,
        text=True,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "nodes[2].ip" in output  # pikube's problem report, with the fix
    assert "fix:" in output
    assert "failed (exit 3)" in output
    assert ".rb:" not in output  # no Ruby backtrace


def test_missing_pikube_is_explained(tmp_path: Path) -> None:
    cluster = seven_node_cluster(tmp_path)
    result = subprocess.run(
        ["vagrant", "validate", "--ignore-provider"],
        cwd=ROOT,
        env=vagrant_env(cluster, PIKUBE_BIN=str(tmp_path / "no-such-pikube")),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "set PIKUBE_BIN" in result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="needs shellcheck")
def test_first_boot_script_passes_shellcheck() -> None:
    subprocess.run(["shellcheck", str(ROOT / "vagrant" / "prepare-node.sh")], check=True)


PROBE_PLAYBOOK = """
- hosts: all
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: >-
          PROBE {{ inventory_hostname }} user={{ ansible_user }} host={{ ansible_host }}
          vm={{ pikube_node_is_vm }} groups={{ group_names | join(',') }}
          hostkeychecking={{ lookup('env', 'ANSIBLE_HOST_KEY_CHECKING') }}
          sshargs={{ lookup('env', 'ANSIBLE_SSH_ARGS') }} common={{ ansible_ssh_common_args }}
          roles={{ lookup('env', 'ANSIBLE_ROLES_PATH') }}
          facts={{ lookup('env', 'ANSIBLE_CACHE_PLUGIN_CONNECTION') }}
"""


def test_vagrants_ansible_run_connects_as_the_cluster_user_to_every_node(cluster: Path) -> None:
    """Vagrant's own provisioner code builds and runs ansible-playbook (playbook swapped
    for a probe that prints, per host, what the real play would connect with)."""
    playbook = cluster.parent / "probe.yml"
    playbook.write_text(PROBE_PLAYBOOK)
    data_dir = cluster.parent / "provisioner-data"
    result = subprocess.run(
        [
            "ruby",
            str(ROOT / "tests" / "vagrant" / "run_ansible_provisioner.rb"),
            str(ROOT),
            str(data_dir),
            str(playbook),
        ],
        env=vagrant_env(cluster),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    fields = ("user", "host", "vm", "groups", "hostkeychecking")
    pattern = r"PROBE (\S+) " + " ".join(rf"{f}=(\S+)" for f in fields)
    probes = {
        match[0]: dict(zip(fields, match[1:], strict=True))
        for match in re.findall(pattern, result.stdout)
    }
    settings = yaml.safe_load(cluster.read_text())
    expected = {
        node["name"]: {
            "user": settings["ssh"]["user"],  # not Vagrant's "vagrant"
            "host": node["ip"],  # the node address, not a forwarded port on 127.0.0.1
            "vm": "True",
            "groups": "cluster,"
            + ("control_plane" if node["role"] == "control-plane" else "workers"),
            "hostkeychecking": "true",
        }
        for node in settings["nodes"]
    }
    assert probes == expected
    assert "UserKnownHostsFile=/dev/null" not in result.stdout
    known_hosts = cluster.parent / ".pikube" / "known_hosts"
    assert f"UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes" in result.stdout
    # pikube's roles; facts cached in this cluster's state dir, never shared with the Pis.
    assert f"roles={ROOT / 'roles'}" in result.stdout
    assert f"facts={cluster.parent / '.pikube' / 'facts'}" in result.stdout
