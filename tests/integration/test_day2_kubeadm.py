"""Day 2 on a kubeadm lab (3 nodes, node-1 a Pi 4): status, reset, the instructor's drill,
upgrade 1.30 -> 1.31, remove-node of an unreachable node, add-node, doctor's seeded faults,
reset --purge.

Runs the real CLI over real SSH against systemd-nspawn nodes with the stand-in kubeadm /
kubelet packages (two minors, 1.30 and 1.31, in a signed pkgs.k8s.io-shaped repository) and
the real kubectl. One lab for the module; the steps build on each other in file order, and
the cluster is built three times only (up, then reset -> up twice: the drill).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.clusterlab import Pikube, check_remove_of_an_unreachable_node, cluster_lab

# Slow tier (PIKUBE_SLOW=1): 12-16 minutes (three builds, an upgrade, reset drills); the MicroK8s
# day-2 module (default tier) runs the same flows in 6-7 minutes.
pytestmark = [pytest.mark.lab, pytest.mark.slow]

NODES = ("node-1", "node-2", "node-3")
CA_SEEN: list[str] = []  # the cluster CA of every build, in order
KUBEADM_STATE = (
    "/etc/kubernetes/kubelet.conf",
    "/var/lib/kubelet/config.yaml",
    "/etc/cni/net.d",
    "/var/lib/etcd",
)


@pytest.fixture(scope="module")
def pk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pikube]:
    """A fresh 3-node lab whose cluster file asks for Kubernetes 1.30 (the older minor)."""
    with cluster_lab("d2", 3, "kubeadm") as lab:
        path = lab.write_cluster(tmp_path_factory.mktemp("day2") / "cluster.yaml", "kubeadm")
        # The lab writes version "1.31"; start one minor lower to prove the upgrade.
        text = path.read_text()
        assert "version: '1.31'" in text
        path.write_text(text.replace("version: '1.31'", "version: '1.30'  # start here"))
        # --skip-doctor for `up`: doctor's checks are proved in test_doctor_flags_... below.
        yield Pikube(lab, path, "kubeadm")


def ca_fingerprint(pk: Pikube) -> str:
    pem = pk.lab.exec("node-1", ["cat", "/etc/kubernetes/pki/ca.crt"]).stdout
    assert "BEGIN CERTIFICATE" in pem
    return hashlib.sha256(pem.encode()).hexdigest()


def kubelet_minors(found: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: n["status"]["nodeInfo"]["kubeletVersion"][:5] for name, n in found.items()}


def build_and_wait(pk: Pikube) -> None:
    pk.ok("up")
    pk.wait_all_ready(NODES)
    CA_SEEN.append(ca_fingerprint(pk))


def test_up_at_the_older_minor(pk: Pikube) -> None:
    build_and_wait(pk)
    assert set(kubelet_minors(pk.nodes()).values()) == {"v1.30"}


def test_status_json_reports_every_node_reachable_ready_with_versions(pk: Pikube) -> None:
    proc = pk.ok("status", "--json")
    data = json.loads(proc.stdout)  # stdout is data only
    by_name = {n["name"]: n for n in data["nodes"]}
    assert set(by_name) == set(NODES)
    for name, node in by_name.items():
        assert node["reachable"] is True, node
        assert node["kubernetes"]["registered"] is True, node
        assert node["kubernetes"]["ready"] is True, node
        assert node["kubernetes"]["version"].startswith("v1.30"), node
        assert node["arch"] and node["kernel"] and node["os"], node
        assert node["role"] == ("control-plane" if name == "node-1" else "worker")


def test_reset_without_yes_and_without_a_terminal_changes_nothing(pk: Pikube) -> None:
    runs_before = pk.runs("reset")
    proc = pk("reset")  # stdin is not a terminal: nobody can type the cluster name
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"reset cluster {pk.lab.name} on all nodes" in proc.stderr  # names the cluster
    assert "pikube reset --yes" in proc.stderr
    assert pk.runs("reset") == runs_before  # no playbook ran
    assert pk.ready_nodes() == set(NODES)


def test_reset_in_check_mode_reports_changes_but_makes_none(pk: Pikube) -> None:
    proc = pk("reset", "--check")  # no --yes needed: a check run changes nothing
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "check mode: nothing was changed" in proc.stderr
    assert all(count > 0 for count in pk.changed("reset").values())  # what it would do
    for node in NODES:
        assert pk.exists(node, "/etc/kubernetes/kubelet.conf"), node
    assert pk.kubeconfig.exists()
    assert pk.ready_nodes() == set(NODES)


def test_reset_leaves_prepared_nodes_firewall_and_ssh_and_a_second_reset_changes_nothing(
    pk: Pikube,
) -> None:
    lab = pk.lab
    assert pk.kubeconfig.exists()
    # node-2's firewall as an admin may have set it: a FORWARD DROP policy, an SSH rule, and
    # a Kubernetes chain in use (what kube-proxy leaves; the stand-in runs no kube-proxy).
    for argv in (
        ["iptables", "-P", "FORWARD", "DROP"],
        ["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
        ["iptables", "-N", "KUBE-SERVICES"],
        ["iptables", "-A", "INPUT", "-j", "KUBE-SERVICES"],
        # ... and what flanneld leaves (the stand-in runs none): its chain and interface.
        ["iptables", "-N", "FLANNEL-FWD"],
        ["iptables", "-A", "FORWARD", "-j", "FLANNEL-FWD"],
        ["ip", "link", "add", "flannel.1", "type", "bridge"],  # only the name matters
    ):
        assert lab.exec("node-2", argv).returncode == 0, argv
    pk.ok("reset", "--yes")
    for node in NODES:
        for path in KUBEADM_STATE:
            assert not pk.exists(node, path), (node, path)
        # node prep is kept: the packages are still installed and held
        assert lab.exec(node, ["dpkg-query", "-W", "kubeadm"]).returncode == 0
    assert not pk.exists("node-1", "/etc/kubernetes/admin.conf")
    assert not pk.kubeconfig.exists()  # the fetched kubeconfig is gone too
    rules = lab.exec("node-2", ["iptables", "-S"]).stdout.splitlines()
    assert "-P FORWARD DROP" in rules  # default policy untouched
    assert "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT" in rules  # SSH access kept
    assert not [r for r in rules if "KUBE-" in r]  # the Kubernetes chain and its jump gone
    assert not [r for r in rules if "FLANNEL-" in r]  # pikube_cni_flannel's reset ran
    assert "flannel.1" not in lab.exec("node-2", ["ip", "-o", "link", "show"]).stdout
    pk.ok("reset", "--yes")  # over SSH again: access survived the reset
    assert pk.changed("reset") == {"node-1": 0, "node-2": 0, "node-3": 0}
    lab.exec("node-2", ["iptables", "-P", "FORWARD", "ACCEPT"])  # flannel's pods need it


def test_up_after_reset_is_ready_with_a_new_cluster_ca(pk: Pikube) -> None:
    build_and_wait(pk)
    assert CA_SEEN[-1] != CA_SEEN[-2]


def test_instructors_drill_reset_up_again(pk: Pikube) -> None:
    # The drill repeated: up -> reset -> up (above), then reset -> up once more.
    pk.ok("reset", "--yes")
    build_and_wait(pk)
    assert len(CA_SEEN) == 3
    assert len(set(CA_SEEN)) == len(CA_SEEN)  # every build has its own CA


def test_upgrade_refuses_skipping_a_minor(pk: Pikube) -> None:
    proc = pk("upgrade", "--to", "1.32", "--yes")
    assert proc.returncode == 1
    assert "one minor" in proc.stderr and "upgrade to 1.31 first" in proc.stderr


def test_upgrade_in_check_mode_changes_no_version(pk: Pikube) -> None:
    proc = pk("upgrade", "--to", "1.31", "--check")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "check mode: nothing was changed" in proc.stderr
    assert set(kubelet_minors(pk.nodes()).values()) == {"v1.30"}
    source = pk.lab.exec("node-2", ["cat", "/etc/apt/sources.list.d/kubernetes.list"]).stdout
    assert "/v1.30/deb/" in source
    assert "version: '1.30'  # start here" in pk.cluster.read_text()


def test_upgrade_stops_at_the_first_node_that_does_not_come_back_ready(pk: Pikube) -> None:
    lab = pk.lab
    # node-2's kubelet will not run after its restart (it exits at once, systemd restarts it,
    # it never reports in): the node does not come back Ready.
    broken = "/etc/systemd/system/kubelet.service.d/99-pikube-test-broken.conf"
    lab.exec("node-2", ["mkdir", "-p", str(Path(broken).parent)], check=True)
    lab.exec(
        "node-2",
        ["sh", "-c", f"printf '[Service]\\nExecStart=\\nExecStart=/bin/false\\n' > {broken}"],
        check=True,
    )
    proc = pk("upgrade", "--to", "1.31", "--yes", "--ready-timeout", "30")
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert "node-2" in proc.stderr
    minors = kubelet_minors(pk.nodes())
    assert minors["node-1"] == "v1.31"  # the control plane went first
    assert minors["node-3"] == "v1.30"  # never started: the run stopped at node-2
    source = pk.lab.exec("node-3", ["cat", "/etc/apt/sources.list.d/kubernetes.list"]).stdout
    assert "/v1.30/deb/" in source  # node-3's repository was not even switched
    assert "version: '1.30'  # start here" in pk.cluster.read_text()  # not recorded as done
    lab.exec("node-2", ["rm", broken], check=True)


def test_upgrade_to_the_next_minor_moves_every_node(pk: Pikube) -> None:
    # The re-run after fixing node-2 finishes the job: node-2 again, then node-3.
    pk.ok("upgrade", "--to", "1.31", "--yes")
    found = pk.wait_all_ready(NODES)
    assert set(kubelet_minors(found).values()) == {"v1.31"}
    assert all(not n["spec"].get("unschedulable") for n in found.values())  # uncordoned
    server = json.loads(pk.kubectl("version", "--output", "json").stdout)["serverVersion"]
    assert server["gitVersion"].startswith("v1.31")
    assert "version: '1.31'  # start here" in pk.cluster.read_text()  # in place, comment kept
    pk.ok("upgrade", "--to", "1.31", "--yes")
    assert pk.changed("upgrade") == {"node-1": 0, "node-2": 0, "node-3": 0}


def test_up_with_a_registered_worker_cut_off_converges_the_others(pk: Pikube) -> None:
    # node-3 is a Pi that is down: registered, NotReady, its flannel pod never Ready again.
    # `up` reaches node-1 and node-2, waits for flannel there only and names node-3; it used to
    # wait for the DaemonSet on every node (`kubectl rollout status`) until the task timeout.
    pk.lab.isolate("node-3")
    try:
        pk.wait_not_ready("node-3", timeout=180)
        proc = pk("up")
    finally:
        pk.lab.heal("node-3")
    assert proc.returncode == 6, proc.stderr[-4000:]
    assert "could not reach node-3" in proc.stderr
    hosts = pk.summary("up")["hosts"]
    assert hosts["node-1"]["failed"] == hosts["node-2"]["failed"] == 0
    pk.wait_all_ready(NODES)


def test_remove_node_of_an_unreachable_node_cleans_kubernetes(pk: Pikube) -> None:
    check_remove_of_an_unreachable_node(pk, "node-3", left_behind="/etc/kubernetes/kubelet.conf")


def test_reset_limit_then_add_node_leaves_other_hosts_unchanged(pk: Pikube) -> None:
    pk.ok("reset", "--limit", "node-3", "--yes")
    assert set(pk.changed("reset")) == {"node-3"}
    assert not pk.exists("node-3", "/etc/kubernetes/kubelet.conf")
    assert pk.exists("node-1", "/etc/kubernetes/admin.conf")  # the rest untouched
    pk.ok("add-node", "node-3")
    counts = pk.changed("add-node")
    assert counts["node-1"] == 0  # the control plane only answered reads and the token
    assert "node-2" not in counts  # never contacted
    assert counts["node-3"] > 0
    pk.wait_all_ready(NODES)


def test_remove_node_of_a_live_node_drains_deletes_and_resets(pk: Pikube) -> None:
    pk.ok("remove-node", "node-3", "--yes")
    assert set(pk.nodes()) == {"node-1", "node-2"}
    assert not pk.exists("node-3", "/etc/kubernetes/kubelet.conf")
    # Removing it again: already gone from Kubernetes and already reset.
    pk.ok("remove-node", "node-3", "--yes")
    assert pk.changed("remove-node") == {"node-1": 0, "node-3": 0}


def doctor_findings(pk: Pikube) -> set[tuple[str, str]]:
    proc = pk("doctor", "--json")
    data = json.loads(proc.stdout)  # a list of findings, also when doctor exits 1
    # Lab nodes are never NTP-synchronised (a "clock" note on every node); the seeded skew is
    # the other clock finding, the one measuring an offset against this machine.
    return {
        (f["node"], "clock-offset" if "off this machine" in f["message"] else f["check"])
        for f in data
    }


def test_doctor_flags_each_seeded_fault(pk: Pikube) -> None:
    lab = pk.lab
    before = doctor_findings(pk)
    # swap coming back at boot: an fstab entry (a container cannot swapon, and doctor reads
    # /etc/fstab for "comes back at boot")
    lab.exec("node-2", ["sh", "-c", "echo '/swapfile none swap sw 0 0' >> /etc/fstab"])
    # cgroup flags missing from the Pi's cmdline.txt
    lab.exec(
        "node-1",
        ["sed", "-i", "s/ cgroup_enable=memory cgroup_memory=1//", "/boot/firmware/cmdline.txt"],
    )
    # a cloned card: node-3 gets node-2's machine-id
    machine_id = lab.exec("node-2", ["cat", "/etc/machine-id"]).stdout.strip()
    lab.exec("node-3", ["sh", "-c", f"echo {machine_id} > /etc/machine-id"])
    # clock skew: containers share the host's clock, so node-3's `date` (what the probe
    # runs, first on PATH) reports one hour ahead, as a node with a wrong clock would.
    lab.exec(
        "node-3",
        [
            "sh",
            "-c",
            "printf '#!/bin/sh\\nexec /usr/bin/date -d "
            '"@$(( $(/usr/bin/date +%%s) + 3600 ))" "$@"\\n\' '
            "> /usr/local/bin/date && chmod 755 /usr/local/bin/date",
        ],
    )
    after = doctor_findings(pk)
    seeded = {
        ("node-2", "swap"),
        ("node-1", "memory-cgroup"),
        ("node-3", "clock-offset"),
        ("node-2", "machine-id"),
        ("node-3", "machine-id"),
    }
    assert seeded <= after - before, (seeded, before, after)


def test_reset_purge_removes_the_packages_and_a_second_purge_changes_nothing(
    pk: Pikube,
) -> None:
    pk.ok("reset", "--purge", "--yes")
    for node in NODES:
        for package in ("kubeadm", "kubelet", "kubectl"):
            status = pk.lab.exec(node, ["dpkg-query", "-W", "-f", "${Status}", package]).stdout
            assert "installed" not in status.split(), (node, package, status)
        assert not pk.exists(node, "/etc/kubernetes")
    pk.ok("reset", "--purge", "--yes")
    assert pk.changed("reset") == {"node-1": 0, "node-2": 0, "node-3": 0}
