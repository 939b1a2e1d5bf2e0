"""Doctor checks on recorded node facts: each fault found, with the right fix and severity."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pikube.config import Cluster, load_cluster
from pikube.inventory import group_vars
from pikube.probe.doctor import Finding, diagnose, pod_network_modules
from pikube.probe.facts import FACTS_SCRIPT, NodeFacts, clock_offset, parse_facts
from pikube.probe.status import parse_kube_nodes
from pikube.resources import data_path
from tests.factories import base_cluster, edited, write_cluster

HEALTHY = {
    "hostname": "",
    "machine_id": "",
    "os": "Ubuntu 24.04.1 LTS",
    "kernel": "6.8.0-1010-raspi",
    "arch": "aarch64",
    "cpus": "4",
    "mem_kb": str(1890 * 1024),
    "swap_active": "0",
    "swap_fstab": "0",
    "swap_services": "",
    "memory_cgroup": "1",
    "device_model": "Raspberry Pi 4 Model B Rev 1.4",
    "cmdline_file": "/boot/firmware/cmdline.txt",
    "cmdline_txt": "console=tty1 root=LABEL=writable rootwait cgroup_enable=memory cgroup_memory=1",
    "vxlan": "1",
    "ntp_synced": "yes",
    "disk_free_kb": str(20 * 1024 * 1024),
    "listeners": '0.0.0.0:22|users:(("sshd"))',
    "kubeadm_initialised": "0",
    "kubelet_joined": "0",
    "microk8s": "",
}


@pytest.fixture
def cluster(tmp_path: Path, ssh_key: Path) -> Cluster:
    return load_cluster(write_cluster(tmp_path, base_cluster(ssh_key, nodes=3)))


def facts_for(cluster: Cluster, **overrides: dict[str, str]) -> list[NodeFacts]:
    result = []
    for index, node in enumerate(cluster.nodes):
        values = dict(HEALTHY, hostname=node.name, machine_id=f"{index:032x}")
        values.update(overrides.get(node.name, {}))
        result.append(NodeFacts(node.name, str(node.ip), True, values=values, clock_offset=0.2))
    return result


def checks(findings: list[Finding], node: str) -> dict[str, Finding]:
    return {f.check: f for f in findings if f.node == node}


def test_healthy_pis_have_no_findings(cluster: Cluster) -> None:
    assert diagnose(cluster, facts_for(cluster), "arm64") == []


def test_memory_cgroup_disabled(cluster: Cluster) -> None:
    facts = facts_for(cluster, **{"pi-w1": {"memory_cgroup": "0"}})
    finding = checks(diagnose(cluster, facts, "arm64"), "pi-w1")["memory-cgroup"]
    assert "/proc/cgroups" in finding.message and not finding.blocking


def test_cgroup_flags_missing_from_cmdline_txt(cluster: Cluster) -> None:
    facts = facts_for(cluster, **{"pi-w2": {"cmdline_txt": "console=tty1 root=LABEL=writable"}})
    finding = checks(diagnose(cluster, facts, "arm64"), "pi-w2")["memory-cgroup"]
    assert "/boot/firmware/cmdline.txt lacks cgroup_enable=memory" in finding.message


def test_cmdline_flags_not_checked_on_non_pi(cluster: Cluster) -> None:
    facts = facts_for(cluster, **{"pi-w2": {"cmdline_txt": "quiet", "device_model": ""}})
    assert "memory-cgroup" not in checks(diagnose(cluster, facts, "arm64"), "pi-w2")


def test_swap_on_and_coming_back(cluster: Cluster) -> None:
    facts = facts_for(
        cluster,
        **{
            "pi-w1": {
                "swap_active": "1",
                "swap_fstab": "1",
                "swap_services": "dphys-swapfile.service ",
            }
        },
    )
    findings = [f for f in diagnose(cluster, facts, "arm64") if f.check == "swap"]
    assert [f.message for f in findings] == [
        "swap is on (kubelet refuses to run with swap)",
        "swap comes back at boot (dphys-swapfile.service, /etc/fstab)",
    ]


def test_vxlan_missing_on_raspi_kernel_is_fixed_by_up(cluster: Cluster) -> None:
    facts = facts_for(cluster, **{"pi-w1": {"vxlan": "0"}})
    finding = checks(diagnose(cluster, facts, "arm64"), "pi-w1")["vxlan"]
    assert "linux-modules-extra-raspi" in finding.fix and not finding.blocking


def test_vxlan_missing_elsewhere_blocks_flannel(cluster: Cluster) -> None:
    facts = facts_for(cluster, **{"pi-w1": {"vxlan": "0", "kernel": "6.1.0-26-arm64"}})
    finding = checks(diagnose(cluster, facts, "arm64"), "pi-w1")["vxlan"]
    assert finding.blocking and "flannel's vxlan backend needs it" in finding.message


def test_flannel_does_not_need_ipip(cluster: Cluster) -> None:
    facts = facts_for(cluster, **{"pi-w1": {"ipip": "0", "kernel": "6.1.0-26-arm64"}})
    assert diagnose(cluster, facts, "arm64") == []


def calico_cluster(tmp_path: Path, ssh_key: Path) -> Cluster:
    data = edited(base_cluster(ssh_key, nodes=3), **{"kubernetes.cni": "calico"})
    return load_cluster(write_cluster(tmp_path, data))


def test_calico_needs_ipip_for_its_default_pool(tmp_path: Path, ssh_key: Path) -> None:
    cluster = calico_cluster(tmp_path, ssh_key)
    facts = facts_for(cluster, **{"pi-w1": {"ipip": "0", "kernel": "6.1.0-26-arm64"}})
    finding = checks(diagnose(cluster, facts, "arm64"), "pi-w1")["ipip"]
    assert finding.message == (
        "the ipip kernel module is missing (calico's default IP pool (IP-in-IP) needs it)"
    )
    assert finding.blocking and "with ipip" in finding.fix


def test_calico_ipip_missing_on_raspi_kernel_is_fixed_by_up(tmp_path: Path, ssh_key: Path) -> None:
    cluster = calico_cluster(tmp_path, ssh_key)
    facts = facts_for(cluster, **{"pi-w1": {"ipip": "0"}})
    finding = checks(diagnose(cluster, facts, "arm64"), "pi-w1")["ipip"]
    assert "linux-modules-extra-raspi" in finding.fix and not finding.blocking


def test_calico_does_not_need_vxlan(tmp_path: Path, ssh_key: Path) -> None:
    cluster = calico_cluster(tmp_path, ssh_key)
    facts = facts_for(cluster, **{"pi-w1": {"vxlan": "0", "kernel": "6.1.0-26-arm64"}})
    assert diagnose(cluster, facts, "arm64") == []


def test_microk8s_calico_needs_vxlan(tmp_path: Path, ssh_key: Path) -> None:
    data = edited(base_cluster(ssh_key, nodes=2, distribution="microk8s"))
    cluster = load_cluster(write_cluster(tmp_path, data))
    facts = facts_for(cluster, **{"pi-w1": {"vxlan": "0", "ipip": "0", "kernel": "6.1.0-26-arm64"}})
    found = checks(diagnose(cluster, facts, "arm64"), "pi-w1")
    assert "ipip" not in found and "MicroK8s' Calico (vxlan)" in found["vxlan"].message


def test_older_facts_without_a_module_key_are_not_flagged(tmp_path: Path, ssh_key: Path) -> None:
    """Facts recorded before the probe reported ipip say nothing about it: no finding."""
    cluster = calico_cluster(tmp_path, ssh_key)
    facts = facts_for(cluster)
    assert all("ipip" not in f.values for f in facts)
    assert diagnose(cluster, facts, "arm64") == []


def test_node_prep_checks_the_modules_doctor_checks(tmp_path: Path, ssh_key: Path) -> None:
    """The modules rendered for node prep and doctor's agree for every cluster kind; the
    role's own default (a plain list) is the default pod network's."""
    defaults = yaml.safe_load(
        data_path("roles", "pikube_node_prep", "defaults", "main.yml").read_text()
    )
    assert defaults["pikube_node_prep_required_modules"] == ["vxlan"]  # flannel on kubeadm
    kinds = {
        "kubeadm-flannel": edited(base_cluster(ssh_key, nodes=2)),
        "kubeadm-calico": edited(base_cluster(ssh_key, nodes=2), **{"kubernetes.cni": "calico"}),
        "microk8s": edited(base_cluster(ssh_key, nodes=2, distribution="microk8s")),
    }
    seen = set()
    for kind, data in kinds.items():
        cluster = load_cluster(write_cluster(tmp_path, data, name=f"{kind}.yaml"))
        modules = group_vars(cluster)["pikube_node_prep_required_modules"]
        assert isinstance(modules, list) and modules == list(pod_network_modules(cluster)), kind
        seen.add(tuple(modules))
    assert seen == {("vxlan",), ("ipip",)}


def test_facts_script_reports_each_tunnel_module(tmp_path: Path) -> None:
    """The real probe script under sh, with a kernel that has vxlan but not ipip (modinfo)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real_uname = shutil.which("uname")
    assert real_uname
    fakes = {
        # Only vxlan is a module of this kernel; modinfo fails for anything else, as it does.
        "modinfo": '[ "$2" = vxlan ] && echo /lib/modules/x/vxlan.ko && exit 0\nexit 1',
        # A kernel release without a modules.builtin on this machine.
        "uname": f'[ "$1" = -r ] && echo pikube-test-kernel && exit 0\nexec {real_uname} "$@"',
    }
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    proc = subprocess.run(
        ["sh", "-s"],
        input=FACTS_SCRIPT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"),
    )
    values = parse_facts(proc.stdout)
    assert values["kernel"] == "pikube-test-kernel"
    assert (values["vxlan"], values["ipip"]) == ("1", "0")


def test_clock_skew_blocks(cluster: Cluster) -> None:
    facts = facts_for(cluster)
    facts[1].clock_offset = -3600.0
    finding = checks(diagnose(cluster, facts, "arm64"), "pi-w1")["clock"]
    assert "-3600 s off" in finding.message and finding.blocking


def test_an_offset_within_the_measurements_uncertainty_is_not_skew(cluster: Cluster) -> None:
    # An emulated or overloaded node can take seconds to start the probe's shell: the time
    # it prints is then known only to within half that interval.
    facts = facts_for(cluster)
    facts[1].clock_offset, facts[1].clock_uncertainty = 7.0, 3.0
    assert "clock" not in checks(diagnose(cluster, facts, "arm64"), "pi-w1")
    facts[1].clock_uncertainty = 0.5
    assert checks(diagnose(cluster, facts, "arm64"), "pi-w1")["clock"].blocking


def test_clock_offset_is_taken_at_the_midpoint_of_the_command_not_the_login() -> None:
    # Sent at t=100 (login already done), first output at t=104: node said 110.
    assert clock_offset("110.0", 100.0, 104.0) == (8.0, 2.0)
    assert clock_offset("", 100.0, 104.0) == (None, 0.0)
    assert FACTS_SCRIPT.strip().splitlines()[2].startswith("kv time ")  # printed first


def test_clock_not_synchronised_is_a_note(cluster: Cluster) -> None:
    facts = facts_for(cluster, **{"pi-w1": {"ntp_synced": "no"}})
    assert not checks(diagnose(cluster, facts, "arm64"), "pi-w1")["clock"].blocking


def test_duplicate_machine_ids_from_cloned_cards(cluster: Cluster) -> None:
    same = {"machine_id": "f" * 32}
    facts = facts_for(cluster, **{"pi-w1": same, "pi-w2": same})
    findings = [f for f in diagnose(cluster, facts, "arm64") if f.check == "machine-id"]
    assert {f.node for f in findings} == {"pi-w1", "pi-w2"}
    assert all(f.blocking and "systemd-machine-id-setup" in f.fix for f in findings)


def test_duplicate_hostnames(cluster: Cluster) -> None:
    facts = facts_for(cluster, **{"pi-w1": {"hostname": "ubuntu"}, "pi-w2": {"hostname": "ubuntu"}})
    found = [f for f in diagnose(cluster, facts, "arm64") if f.check == "hostname"]
    assert len(found) == 2 and "shared with pi-w2" in found[0].message


def test_control_plane_below_kubeadm_minimum(cluster: Cluster) -> None:
    facts = facts_for(cluster, **{"pi-cp1": {"mem_kb": str(900 * 1024), "cpus": "1"}})
    found = [f for f in diagnose(cluster, facts, "arm64") if f.check == "resources"]
    assert len(found) == 2 and all(f.blocking for f in found)


def test_small_worker_is_fine(cluster: Cluster) -> None:
    facts = facts_for(cluster, **{"pi-w1": {"mem_kb": str(900 * 1024)}})
    assert diagnose(cluster, facts, "arm64") == []


def test_low_disk(cluster: Cluster) -> None:
    facts = facts_for(cluster, **{"pi-w1": {"disk_free_kb": str(512 * 1024)}})
    assert "only 512 MiB free" in checks(diagnose(cluster, facts, "arm64"), "pi-w1")["disk"].message


def test_wrong_architecture_for_the_image(cluster: Cluster) -> None:
    facts = facts_for(cluster, **{"pi-w1": {"arch": "x86_64"}})
    finding = checks(diagnose(cluster, facts, "arm64"), "pi-w1")["arch"]
    assert finding.message.startswith("node is amd64 but image")


def test_api_port_taken_before_install(cluster: Cluster) -> None:
    facts = facts_for(
        cluster,
        **{"pi-cp1": {"listeners": '0.0.0.0:22|users:(("sshd")) *:6443|users:(("nginx",pid=7))'}},
    )
    finding = checks(diagnose(cluster, facts, "arm64"), "pi-cp1")["ports"]
    assert "port 6443 is taken by" in finding.message and "nginx" in finding.message


def test_ports_of_a_running_cluster_are_its_own(cluster: Cluster) -> None:
    facts = facts_for(
        cluster, **{"pi-cp1": {"listeners": "*:6443|x *:10250|y", "kubeadm_initialised": "1"}}
    )
    assert "ports" not in checks(diagnose(cluster, facts, "arm64"), "pi-cp1")


def test_unreachable_node_is_blocking(cluster: Cluster) -> None:
    facts = facts_for(cluster)
    facts[2] = NodeFacts("pi-w2", "192.168.1.103", False, "no answer (timed out)", "power?")
    finding = checks(diagnose(cluster, facts, "arm64"), "pi-w2")["reachable"]
    assert finding.blocking and "timed out" in finding.message


def test_microk8s_ports(tmp_path: Path, ssh_key: Path) -> None:
    data = edited(base_cluster(ssh_key, nodes=2, distribution="microk8s"))
    cluster = load_cluster(write_cluster(tmp_path, data))
    facts = facts_for(cluster, **{"pi-cp1": {"listeners": '*:25000|users:(("x"))'}})
    assert "25000" in checks(diagnose(cluster, facts, "arm64"), "pi-cp1")["ports"].message


def test_parse_facts_ignores_noise() -> None:
    assert parse_facts("a=1\nnoise\nb=x=y\n=z\n") == {"a": "1", "b": "x=y"}


def test_parse_kube_nodes() -> None:
    text = """{"items": [
      {"metadata": {"name": "a"}, "spec": {"unschedulable": true},
       "status": {"conditions": [{"type": "Ready", "status": "True"}],
                  "nodeInfo": {"kubeletVersion": "v1.31.13"}}},
      {"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Ready",
       "status": "Unknown"}], "nodeInfo": {"kubeletVersion": "v1.31.13"}}}]}"""
    nodes = parse_kube_nodes(text)
    assert nodes["a"].ready is True and nodes["a"].unschedulable
    assert nodes["b"].ready is False and nodes["b"].version == "v1.31.13"
