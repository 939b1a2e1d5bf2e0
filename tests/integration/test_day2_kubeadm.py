"""Day 2 on a kubeadm lab (3 nodes, node-1 a Pi 4): status, reset, the instructor's drill,
upgrade 1.30 -> 1.31, remove-node of an unreachable node, add-node, doctor's seeded faults.

Runs the real CLI over real SSH against systemd-nspawn nodes with the stand-in kubeadm /
kubelet packages (two minors, 1.30 and 1.31, in a signed pkgs.k8s.io-shaped repository) and
the real kubectl. One lab for the module; the steps build on each other in file order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Slow tier (PIKUBE_SLOW=1): a 30-40 minute module (up at 1.30, upgrade, reset drills).
pytestmark = [pytest.mark.lab, pytest.mark.slow]

lab_core = pytest.importorskip("tests.lab.core", reason="the lab (tests/lab) is not installed")
lab_fixtures = pytest.importorskip("tests.lab.fixtures")

NODES = ("node-1", "node-2", "node-3")


def pikube_bin() -> str:
    candidate = Path(sys.executable).parent / "pikube"
    return str(candidate) if candidate.exists() else "pikube"


@pytest.fixture(scope="module")
def day2_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """A fresh 3-node lab whose cluster file asks for Kubernetes 1.30 (the older minor)."""
    lab_fixtures.skip_unless_lab_possible()
    if shutil.which("kubectl") is None:
        pytest.fail("the real kubectl is needed: apt-get install kubernetes-client")
    _, second_half = lab_fixtures.lab_halves()
    lab = lab_core.Lab(f"{lab_fixtures.lab_name()}-d2", second_half)
    lab.down()
    try:
        lab.up(3, distribution="kubeadm", pi=1)
        if not any(lab.www_dir.glob("core:/stable:/v*/deb/Release.key")):
            from tests.lab.standins import build_repo

            build_repo(lab.www_dir)
        path = tmp_path_factory.mktemp("day2") / "cluster.yaml"
        lab.write_cluster(path, "kubeadm")
        # The lab writes version "1.31"; start one minor lower to prove the upgrade.
        text = path.read_text()
        assert "version: '1.31'" in text
        path.write_text(text.replace("version: '1.31'", "version: '1.30'  # start here"))
        yield lab, path
    finally:
        lab.down()


def pikube(cluster: Path, *args: str, doctor: bool = False) -> subprocess.CompletedProcess[str]:
    # --skip-doctor for `up`: lab nodes are amd64 containers without vxlan, which doctor
    # rightly reports for a cluster file naming an arm64 Pi image.
    extra = ["--skip-doctor"] if args[0] == "up" and not doctor else []
    return subprocess.run(
        [pikube_bin(), *args, *extra, "--cluster", str(cluster)],
        capture_output=True,
        text=True,
        timeout=2400,
        check=False,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, PIKUBE_DEBUG="0"),
    )


def state_dir(lab: Any) -> Path:
    return Path(lab.cluster_data("kubeadm")["state_dir"])


def latest_summary(lab: Any, command: str) -> dict[str, Any]:
    runs = sorted(p for p in (state_dir(lab) / "runs").iterdir() if command in p.name)
    return json.loads((runs[-1] / "summary.json").read_text())


def changed(lab: Any, command: str) -> dict[str, int]:
    return {h: s["changed"] for h, s in latest_summary(lab, command)["hosts"].items()}


def kubectl(lab: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(state_dir(lab) / "kubeconfig"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def nodes(lab: Any) -> dict[str, dict[str, Any]]:
    proc = kubectl(lab, "get", "nodes", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    return {n["metadata"]["name"]: n for n in json.loads(proc.stdout)["items"]}


def ready(node: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
    return conditions.get("Ready") == "True"


def wait_all_ready(lab: Any, names: tuple[str, ...] = NODES) -> dict[str, dict[str, Any]]:
    proc = kubectl(lab, "wait", "--for=condition=Ready", "node", "--all", "--timeout=180s")
    assert proc.returncode == 0, proc.stderr
    found = nodes(lab)
    assert set(found) == set(names)
    assert all(ready(n) for n in found.values())
    return found


def ca_fingerprint(lab: Any) -> str:
    pem = lab.exec("node-1", ["cat", "/etc/kubernetes/pki/ca.crt"]).stdout
    assert "BEGIN CERTIFICATE" in pem
    return hashlib.sha256(pem.encode()).hexdigest()


def exists(lab: Any, node: str, path: str) -> bool:
    return lab.exec(node, ["test", "-e", path]).returncode == 0


def up_ok(cluster: Path) -> None:
    proc = pikube(cluster, "up")
    assert proc.returncode == 0, proc.stderr[-4000:]


CA_SEEN: list[str] = []


def test_up_at_the_older_minor(day2_lab: tuple[Any, Path]) -> None:
    lab, cluster = day2_lab
    up_ok(cluster)
    found = wait_all_ready(lab)
    assert {n["status"]["nodeInfo"]["kubeletVersion"][:5] for n in found.values()} == {"v1.30"}
    CA_SEEN.append(ca_fingerprint(lab))


def test_status_json_reports_every_node_reachable_ready_with_versions(
    day2_lab: tuple[Any, Path],
) -> None:
    _, cluster = day2_lab
    proc = pikube(cluster, "status", "--json")
    assert proc.returncode == 0, proc.stderr
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


def test_reset_leaves_prepared_nodes_and_a_second_reset_changes_nothing(
    day2_lab: tuple[Any, Path],
) -> None:
    lab, cluster = day2_lab
    kubeconfig = state_dir(lab) / "kubeconfig"
    assert kubeconfig.exists()
    proc = pikube(cluster, "reset", "--yes")
    assert proc.returncode == 0, proc.stderr[-4000:]
    for node in NODES:
        for path in (
            "/etc/kubernetes/kubelet.conf",
            "/var/lib/kubelet/config.yaml",
            "/etc/cni/net.d",
            "/var/lib/etcd",
        ):
            assert not exists(lab, node, path), (node, path)
        # node prep is kept: the packages are still installed and held
        assert lab.exec(node, ["dpkg-query", "-W", "kubeadm"]).returncode == 0
    assert not exists(lab, "node-1", "/etc/kubernetes/admin.conf")
    assert not kubeconfig.exists()  # the fetched kubeconfig is gone too
    proc = pikube(cluster, "reset", "--yes")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert changed(lab, "reset") == {"node-1": 0, "node-2": 0, "node-3": 0}


def test_up_after_reset_is_ready_with_a_new_cluster_ca(day2_lab: tuple[Any, Path]) -> None:
    lab, cluster = day2_lab
    up_ok(cluster)
    wait_all_ready(lab)
    CA_SEEN.append(ca_fingerprint(lab))
    assert CA_SEEN[-1] != CA_SEEN[-2]


def test_instructors_drill_reset_up_twice_more(day2_lab: tuple[Any, Path]) -> None:
    lab, cluster = day2_lab
    for _ in range(2):
        proc = pikube(cluster, "reset", "--yes")
        assert proc.returncode == 0, proc.stderr[-4000:]
        up_ok(cluster)
        wait_all_ready(lab)
        CA_SEEN.append(ca_fingerprint(lab))
    assert len(set(CA_SEEN)) == len(CA_SEEN)  # every build has its own CA


def test_upgrade_refuses_skipping_a_minor(day2_lab: tuple[Any, Path]) -> None:
    _, cluster = day2_lab
    proc = pikube(cluster, "upgrade", "--to", "1.32", "--yes")
    assert proc.returncode == 1
    assert "one minor" in proc.stderr and "upgrade to 1.31 first" in proc.stderr


def test_upgrade_to_the_next_minor_moves_every_node(day2_lab: tuple[Any, Path]) -> None:
    lab, cluster = day2_lab
    proc = pikube(cluster, "upgrade", "--to", "1.31", "--yes")
    assert proc.returncode == 0, proc.stderr[-4000:]
    found = wait_all_ready(lab)
    assert {n["status"]["nodeInfo"]["kubeletVersion"][:5] for n in found.values()} == {"v1.31"}
    assert all(not n["spec"].get("unschedulable") for n in found.values())  # uncordoned
    server = json.loads(kubectl(lab, "version", "--output", "json").stdout)["serverVersion"]
    assert server["gitVersion"].startswith("v1.31")
    text = cluster.read_text()
    assert "version: '1.31'  # start here" in text  # updated in place, comment kept
    # Workers went one at a time: the event log shows node-2 finished before node-3 began.
    proc = pikube(cluster, "upgrade", "--to", "1.31", "--yes")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert changed(lab, "upgrade") == {"node-1": 0, "node-2": 0, "node-3": 0}


def test_remove_node_of_an_unreachable_node_cleans_kubernetes(day2_lab: tuple[Any, Path]) -> None:
    lab, cluster = day2_lab
    lab.isolate("node-3")
    try:
        proc = pikube(cluster, "remove-node", "node-3", "--yes", "--force", "--drain-timeout", "20")
    finally:
        lab.heal("node-3")
    assert proc.returncode == 6, proc.stderr[-4000:]
    assert "node-3 was removed from Kubernetes but could not be reached" in proc.stderr
    assert "pikube reset --limit node-3 --yes" in proc.stderr
    assert set(nodes(lab)) == {"node-1", "node-2"}
    assert exists(lab, "node-3", "/etc/kubernetes/kubelet.conf")  # honestly not reset


def test_reset_limit_then_add_node_leaves_other_hosts_unchanged(
    day2_lab: tuple[Any, Path],
) -> None:
    lab, cluster = day2_lab
    proc = pikube(cluster, "reset", "--limit", "node-3", "--yes")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert set(changed(lab, "reset")) == {"node-3"}
    assert not exists(lab, "node-3", "/etc/kubernetes/kubelet.conf")
    assert exists(lab, "node-1", "/etc/kubernetes/admin.conf")  # the rest untouched
    proc = pikube(cluster, "add-node", "node-3")
    assert proc.returncode == 0, proc.stderr[-4000:]
    counts = changed(lab, "add-node")
    assert counts["node-1"] == 0  # the control plane only answered reads and the token
    assert "node-2" not in counts  # never contacted
    assert counts["node-3"] > 0
    wait_all_ready(lab)


def test_remove_node_of_a_live_node_drains_deletes_and_resets(day2_lab: tuple[Any, Path]) -> None:
    lab, cluster = day2_lab
    proc = pikube(cluster, "remove-node", "node-3", "--yes")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert set(nodes(lab)) == {"node-1", "node-2"}
    assert not exists(lab, "node-3", "/etc/kubernetes/kubelet.conf")
    # Removing it again: already gone from Kubernetes and already reset.
    proc = pikube(cluster, "remove-node", "node-3", "--yes")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert changed(lab, "remove-node") == {"node-1": 0, "node-3": 0}


def doctor_findings(cluster: Path) -> set[tuple[str, str]]:
    proc = pikube(cluster, "doctor", "--json")
    data = json.loads(proc.stdout)  # a list of findings, also when doctor exits 1
    # Lab nodes are never NTP-synchronised (a "clock" note on every node); the seeded skew is
    # the other clock finding, the one measuring an offset against this machine.
    return {
        (f["node"], "clock-offset" if "off this machine" in f["message"] else f["check"])
        for f in data
    }


def test_doctor_flags_each_seeded_fault(day2_lab: tuple[Any, Path]) -> None:
    lab, cluster = day2_lab
    before = doctor_findings(cluster)
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
    after = doctor_findings(cluster)
    seeded = {
        ("node-2", "swap"),
        ("node-1", "memory-cgroup"),
        ("node-3", "clock-offset"),
        ("node-2", "machine-id"),
        ("node-3", "machine-id"),
    }
    assert seeded <= after - before, (seeded, before, after)
