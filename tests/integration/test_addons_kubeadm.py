"""kubeadm addons in the lab: `pikube up` with load-balancer, ingress, storage and metrics
applies MetalLB, Traefik, local-path-provisioner and metrics-server from pikube's pinned
manifests and waits for them; Traefik's LoadBalancer Service gets an address of lb_range, a
PVC naming no class is bound by the default class, `kubectl top nodes` answers; dropping
addons from the list and re-running `up` removes them, and a further run changes nothing;
doctor finds an lb_range address in use, status lists each addon's health.

Real CLI, real SSH, real kubectl against the stand-in API, whose controllers keep MetalLB's,
the PV controller's and metrics-server's contracts (standins/payload/.../addon_controllers.py).
One 2-node lab for the module; the steps build on each other in file order.
"""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.clusterlab import Pikube, cluster_lab

pytestmark = [pytest.mark.lab]

ALL = ["load-balancer", "ingress", "storage", "metrics"]
WORKLOADS = {
    "load-balancer": [
        ("metallb-system", "deployment/controller"),
        ("metallb-system", "daemonset/speaker"),
    ],
    "ingress": [("traefik", "deployment/traefik")],
    "storage": [("local-path-storage", "deployment/local-path-provisioner")],
    "metrics": [("kube-system", "deployment/metrics-server")],
}


def lb_range(subnet: IPv4Network) -> tuple[IPv4Address, IPv4Address]:
    """The top of the lab subnet, clear of the nodes (they take the low addresses)."""
    hosts = list(subnet.hosts())
    return hosts[-9], hosts[-2]


def set_addons(pk: Pikube, addons: list[str]) -> None:
    data = yaml.safe_load(pk.cluster.read_text())
    data["kubernetes"]["addons"] = addons
    first, last = lb_range(IPv4Network(data["network"]["subnet"]))
    data["network"]["lb_range"] = f"{first}-{last}"
    pk.cluster.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="module")
def pk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pikube]:
    with cluster_lab("ad", 2, "kubeadm") as lab:
        path = lab.write_cluster(tmp_path_factory.mktemp("addons") / "cluster.yaml", "kubeadm")
        pikube = Pikube(lab, path, "kubeadm")
        set_addons(pikube, ALL)
        yield pikube


def wait_for(what: str, probe: Any, seconds: float = 120) -> Any:
    """Poll ``probe`` until it returns something truthy (controllers tick once a second)."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {seconds} s")
        time.sleep(1)


def get_json(pk: Pikube, *args: str) -> dict[str, Any]:
    proc = pk.kubectl("get", *args, "--output", "json")
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_doctor_flags_an_lb_range_address_that_answers_arp(pk: Pikube) -> None:
    """Before MetalLB owns the range: node-2 holding an address of it is found by ARP from
    the control plane, with the MAC that answered; once freed, nothing is reported."""
    data = yaml.safe_load(pk.cluster.read_text())
    first, _last = lb_range(IPv4Network(data["network"]["subnet"]))
    taken = f"{first + 3}"
    pk.lab.exec("node-2", ["ip", "address", "add", f"{taken}/32", "dev", "eth0"])
    try:
        proc = pk("doctor", "--json")
    finally:
        pk.lab.exec("node-2", ["ip", "address", "del", f"{taken}/32", "dev", "eth0"])
    arp = [f for f in json.loads(proc.stdout) if f["check"] == "lb_range_arp"]
    assert len(arp) == 1 and arp[0]["blocking"] and proc.returncode == 1, proc.stdout
    assert f"{taken} of network.lb_range answers ARP" in arp[0]["message"]
    again = pk("doctor", "--json")
    assert not [f for f in json.loads(again.stdout) if f["check"] == "lb_range_arp"]


def test_up_installs_every_addon_and_waits_for_it(pk: Pikube) -> None:
    pk.ok("up")
    for addon, workloads in WORKLOADS.items():
        for namespace, name in workloads:
            status = get_json(pk, "--namespace", namespace, name)["status"]
            ready = status.get("readyReplicas", status.get("numberReady"))
            assert ready and ready >= 1, (addon, name, status)


def test_ingress_service_gets_an_address_from_lb_range(pk: Pikube) -> None:
    data = yaml.safe_load(pk.cluster.read_text())
    first, last = lb_range(IPv4Network(data["network"]["subnet"]))

    def address() -> str | None:
        svc = get_json(pk, "--namespace", "traefik", "service/traefik")
        ingress = svc.get("status", {}).get("loadBalancer", {}).get("ingress") or []
        return str(ingress[0]["ip"]) if ingress else None

    ip = IPv4Address(wait_for("traefik's LoadBalancer address", address))
    assert first <= ip <= last


def test_a_pvc_naming_no_class_is_bound_by_the_default_class(pk: Pikube, tmp_path: Path) -> None:
    manifest = tmp_path / "app.yml"
    manifest.write_text(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "data", "namespace": "default"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                },
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "app", "namespace": "default"},
                    "spec": {
                        "selector": {"matchLabels": {"app": "app"}},
                        "template": {
                            "metadata": {"labels": {"app": "app"}},
                            "spec": {
                                "containers": [
                                    {"name": "app", "image": "docker.io/library/busybox:1.37"}
                                ],
                                "volumes": [
                                    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}
                                ],
                            },
                        },
                    },
                },
            ]
        )
    )
    proc = pk.kubectl("apply", "--filename", str(manifest))
    assert proc.returncode == 0, proc.stderr

    def bound() -> dict[str, Any] | None:
        pvc = get_json(pk, "--namespace", "default", "pvc/data")
        return pvc if pvc.get("status", {}).get("phase") == "Bound" else None

    pvc = wait_for("the PVC binding", bound)
    assert pvc["spec"]["storageClassName"] == "local-path"
    pv = get_json(pk, "pv", pvc["spec"]["volumeName"])
    assert pv["spec"]["claimRef"]["name"] == "data"


def test_kubectl_top_nodes_answers(pk: Pikube) -> None:
    def top() -> str | None:
        proc = pk.kubectl("top", "nodes", "--no-headers")
        return proc.stdout if proc.returncode == 0 else None

    out = wait_for("`kubectl top nodes`", top)
    assert {line.split()[0] for line in out.splitlines()} == {"node-1", "node-2"}


def test_status_lists_each_addons_health(pk: Pikube) -> None:
    data = json.loads(pk.ok("status", "--json").stdout)
    assert {a["name"]: a["healthy"] for a in data["addons"]} == dict.fromkeys(ALL, True)
    text = pk.ok("status").stdout
    assert "addon metrics: healthy (deployment/metrics-server 1/1 ready)" in text


def test_dropping_addons_removes_them_and_a_rerun_changes_nothing(pk: Pikube) -> None:
    """`up --tags addons` runs the validate play and the addons play only (the full site
    playbook's second run changing nothing is test_up_kubeadm's)."""
    set_addons(pk, ["load-balancer", "storage"])
    pk.ok("up", "--tags", "addons")
    assert pk.changed("up")["node-1"] > 0
    gone = pk.kubectl("get", "--namespace", "kube-system", "deployment/metrics-server")
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    gone = pk.kubectl("get", "namespace", "traefik")
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    assert not pk.exists("node-1", "/etc/pikube/addons/metrics.yml")
    kept = get_json(pk, "--namespace", "metallb-system", "deployment/controller")
    assert kept["status"]["readyReplicas"] >= 1
    pk.ok("up", "--tags", "addons")
    changed = pk.changed("up")
    assert "node-1" in changed and set(changed.values()) == {0}, changed


def configmap(pk: Pikube, name: str) -> subprocess.CompletedProcess[str]:
    return pk.kubectl("get", "--namespace", "default", f"configmap/{name}", "--output", "name")


def test_backup_then_restore_brings_back_the_snapshot_and_drops_what_came_after(
    pk: Pikube,
) -> None:
    """Issue #16 on this module's cluster: object A, `pikube backup`, object B, `pikube
    restore --yes`: A is there, B is gone (the API server reads the restored etcd), every node
    is Ready; the archive is 0600 with its sha256 recorded; `--schedule daily` installs the
    timer on the control plane and a second call changes nothing. Secrets stay out of output."""
    assert pk.kubectl("create", "configmap", "before-backup", "--from-literal=a=1").returncode == 0
    started = time.monotonic()
    taken = pk.ok("backup", "--keep", "3")
    print(f"backup: {time.monotonic() - started:.0f} s; {taken.stderr.strip().splitlines()[-1]}")
    folder = pk.state_dir / "backups"
    (archive,) = sorted(folder.glob("*.tar.gz"))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    record = Path(f"{archive}.sha256")
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert record.read_text() == f"{digest}  {archive.name}\n"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "etcd/snapshot.db" in names and "pki/etcd/ca.key" in names
    assert pk.kubectl("create", "configmap", "after-backup", "--from-literal=b=2").returncode == 0

    started = time.monotonic()
    pk.ok("restore", str(archive), "--yes")
    print(f"restore: {time.monotonic() - started:.0f} s")  # for the record, not asserted
    assert configmap(pk, "before-backup").returncode == 0
    gone = configmap(pk, "after-backup")
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    pk.wait_all_ready(("node-1", "node-2"))
    assert not pk.exists("node-1", "/etc/kubernetes/manifests.pikube-restore")

    pk.ok("backup", "--schedule", "daily", "--keep", "2")
    timers = pk.lab.exec("node-1", ["systemctl", "list-timers", "--all", "pikube-backup.timer"])
    assert "pikube-backup.timer" in timers.stdout, timers.stdout
    unit = pk.lab.exec("node-1", ["systemctl", "cat", "pikube-backup.service"]).stdout
    assert "/usr/local/sbin/pikube-backup-scheduled /var/backups/pikube 2" in unit
    pk.ok("backup", "--schedule", "daily", "--keep", "2")
    changed = pk.changed("backup")
    assert "node-1" in changed and set(changed.values()) == {0}, changed
    for text in pk.outputs:
        assert "PRIVATE KEY" not in text
    for run in pk.runs("backup") + pk.runs("restore"):
        for path in run.rglob("*"):
            assert not path.is_file() or b"PRIVATE KEY" not in path.read_bytes(), path
