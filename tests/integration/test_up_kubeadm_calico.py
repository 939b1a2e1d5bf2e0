"""`pikube up` (kubeadm) with `cni: calico` on lab nodes: 1 control plane + 1 worker.

The real CLI over real SSH against systemd-nspawn nodes, the stand-in kubeadm / kubelet
packages and the API emulator, and the real kubectl through the fetched kubeconfig. The pod
network is pikube's pinned Calico manifest with the cluster's pod_cidr substituted; the
emulator's calico-node creates the default IP pool from it, as upstream calico-node does.
Also runs the control-plane tag on its own (no prepare play before it).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.clusterlab import Pikube, cluster_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]  # the default tier's budget: flannel's up is there


POD_CIDR = "10.42.0.0/16"  # not the kubeadm default, so a lost substitution shows


@pytest.fixture(scope="module")
def calico_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """A fresh 2-node lab with the stand-in repository and a cluster file choosing calico."""
    with cluster_lab("cal", 2, "kubeadm", pi=0) as lab:
        data = lab.cluster_data("kubeadm")
        data["kubernetes"].update(cni="calico", pod_cidr=POD_CIDR)
        cluster = tmp_path_factory.mktemp("calico") / "cluster.yaml"
        cluster.write_text(yaml.safe_dump(data, sort_keys=False))
        yield lab, cluster


def pikube(lab: Any, cluster: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # --skip-doctor for `up`: calico's default IP pool is IP-in-IP and lab nodes have no ipip
    # module, which doctor rightly reports as blocking (test_doctor_asks_for_ipip_not_vxlan);
    # the API emulator's calico-node needs no tunnel.
    return Pikube(lab, cluster, "kubeadm", skip_doctor=True)(*args, timeout=1800)


def state_dir(lab: Any) -> Path:
    return Path(lab.cluster_data("kubeadm")["state_dir"])


def changed_per_host(lab: Any) -> dict[str, int]:
    runs = sorted((state_dir(lab) / "runs").iterdir())
    summary = json.loads((runs[-1] / "summary.json").read_text())
    return {h: s["changed"] for h, s in summary["hosts"].items()}


def kubectl_json(lab: Any, *args: str) -> Any:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(state_dir(lab) / "kubeconfig"), *args, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_doctor_asks_for_ipip_not_vxlan(calico_lab: tuple[Any, Path]) -> None:
    """Doctor probes the nodes over SSH for calico's tunnel module, not flannel's.

    The lab nodes' modules.builtin lists vxlan but not ipip (tests/lab/rootfs.py), and their
    kernel is not a raspi one, so each node must report ipip as missing and blocking.
    """
    lab, cluster = calico_lab
    proc = pikube(lab, cluster, "doctor", "--json")
    assert proc.returncode == 1, proc.stderr[-3000:]
    findings = json.loads(proc.stdout)
    tunnel = {
        (f["node"], f["check"], f["blocking"]) for f in findings if f["check"] in ("vxlan", "ipip")
    }
    assert tunnel == {("node-1", "ipip", True), ("node-2", "ipip", True)}


def test_up_with_calico_makes_every_node_ready(calico_lab: tuple[Any, Path]) -> None:
    lab, cluster = calico_lab
    proc = pikube(lab, cluster, "up")
    assert proc.returncode == 0, proc.stderr[-3000:]
    nodes = kubectl_json(lab, "get", "nodes")["items"]
    ready = {
        n["metadata"]["name"]
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    }
    assert ready == {"node-1", "node-2"}
    namespaces = {n["metadata"]["name"] for n in kubectl_json(lab, "get", "namespaces")["items"]}
    assert "kube-flannel" not in namespaces  # calico, not the default CNI


def test_calico_gets_the_cluster_pod_cidr_and_network(calico_lab: tuple[Any, Path]) -> None:
    lab, _ = calico_lab
    ds = kubectl_json(lab, "get", "daemonset", "calico-node", "--namespace", "kube-system")
    container = next(
        c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "calico-node"
    )
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CALICO_IPV4POOL_CIDR"] == POD_CIDR
    assert env["IP_AUTODETECTION_METHOD"] == f"cidr={lab.cluster_data()['network']['subnet']}"
    assert container["image"] == "docker.io/calico/node:v3.29.5"
    pools = kubectl_json(lab, "get", "ippools.crd.projectcalico.org")["items"]
    assert [p["spec"]["cidr"] for p in pools] == [POD_CIDR]


def test_second_run_changes_nothing(calico_lab: tuple[Any, Path]) -> None:
    lab, cluster = calico_lab
    proc = pikube(lab, cluster, "up")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert changed_per_host(lab) == {"node-1": 0, "node-2": 0}


def test_control_plane_tag_runs_alone(calico_lab: tuple[Any, Path]) -> None:
    """`--tags control_plane` skips the prepare play; the control-plane check must still pass."""
    lab, cluster = calico_lab
    proc = pikube(lab, cluster, "up", "--tags", "control_plane")
    assert proc.returncode == 0, proc.stderr[-3000:]
    changed = changed_per_host(lab)
    assert changed.get("node-1") == 0 and set(changed.values()) == {0}


def test_reset_removes_what_calico_leaves_and_a_second_reset_changes_nothing(
    calico_lab: tuple[Any, Path],
) -> None:
    """reset.yml runs pikube_cni_calico's reset: calico's interfaces, firewall chains (with the
    rules jumping to them) and state go; an administrator's rules stay. The API emulator runs
    no calico-node, so node-2 gets what a real one leaves first."""
    lab, cluster = calico_lab
    for argv in (
        ["ip", "link", "add", "vxlan.calico", "type", "bridge"],  # only the name matters
        ["iptables", "-N", "cali-FORWARD"],
        ["iptables", "-A", "FORWARD", "-j", "cali-FORWARD"],
        ["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
        ["mkdir", "-p", "/var/lib/calico", "/etc/cni/net.d"],
        ["touch", "/var/lib/calico/nodename", "/etc/cni/net.d/10-calico.conflist"],
    ):
        assert lab.exec("node-2", argv).returncode == 0, argv
    pk = Pikube(lab, cluster, "kubeadm")
    pk.ok("reset", "--yes")
    links = lab.exec("node-2", ["ip", "-o", "link", "show"]).stdout
    assert "vxlan.calico" not in links
    rules = lab.exec("node-2", ["iptables", "-S"]).stdout.splitlines()
    assert not [r for r in rules if "cali-" in r]
    assert "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT" in rules
    for path in ("/var/lib/calico", "/etc/cni/net.d", "/etc/kubernetes/kubelet.conf"):
        assert not pk.exists("node-2", path), path
    pk.ok("reset", "--yes")
    assert pk.changed("reset") == {"node-1": 0, "node-2": 0}
