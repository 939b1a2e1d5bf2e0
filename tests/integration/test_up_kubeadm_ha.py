"""`pikube up` of a highly available kubeadm cluster on lab nodes: three control planes behind
a VIP (Debian's real keepalived and haproxy) and one worker, then the VIP's holder is powered
off and the real kubectl, through the fetched kubeconfig, keeps answering.

Default tier, one lab for the module: the HA `up`, the secrets check and the failover; the
slow tier adds a re-run. The failover gap and the `up` time are measured and printed (``-s``
shows them, ``bench/ha_bench.py`` records them); nothing asserts on time.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.clusterlab import Pikube, cluster_lab, is_ready

pytestmark = pytest.mark.lab

CONTROL_PLANES = ("node-1", "node-2", "node-3")
WORKER = "node-4"
# Files that hold a certificate key or a join token while pikube uses them; gone after.
TRANSIENT = ("/etc/pikube/kubeadm-upload-certs.yaml", "/etc/pikube/kubeadm-join-control-plane.yaml")
CERTIFICATE_KEY_SHAPE = re.compile(r"(?i)certificate[-_ ]?key[\"'=:\s]+[0-9a-f]{64}")
MEASURED: dict[str, float] = {}


def ha_cluster_data(lab: Any) -> dict[str, Any]:
    """The lab's cluster file with three control planes and the VIP above the nodes."""
    data = lab.cluster_data("kubeadm")
    for node in data["nodes"]:
        node["role"] = "control-plane" if node["name"] in CONTROL_PLANES else "worker"
    data["network"]["vip"] = str(IPv4Network(lab.subnet).network_address + 100)
    return data


@pytest.fixture(scope="module")
def ha_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Pikube, str]]:
    """A fresh 4-node lab and its HA cluster file; the CLI runs against it."""
    with cluster_lab("kha", 4, "kubeadm", pi=0) as lab:
        data = ha_cluster_data(lab)
        path = tmp_path_factory.mktemp("kubeadm-ha") / "cluster.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        yield lab, Pikube(lab, path, "kubeadm"), data["network"]["vip"]


def state_dir(pk: Pikube) -> Path:
    return Path(yaml.safe_load(pk.cluster.read_text())["state_dir"])


def latest_summary(pk: Pikube) -> dict[str, Any]:
    runs = sorted((state_dir(pk) / "runs").iterdir())
    return json.loads((runs[-1] / "summary.json").read_text())


def kubectl(pk: Pikube, *args: str, timeout: str = "10s") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(state_dir(pk) / "kubeconfig"),
            f"--request-timeout={timeout}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def nodes(pk: Pikube) -> dict[str, dict[str, Any]]:
    proc = kubectl(pk, "get", "nodes", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    return {n["metadata"]["name"]: n for n in json.loads(proc.stdout)["items"]}


def vip_holders(lab: Any, vip: str, stopped: tuple[str, ...] = ()) -> list[str]:
    found = []
    for name in CONTROL_PLANES:
        if name in stopped:
            continue
        addresses = lab.exec(name, ["ip", "-4", "-o", "addr", "show"]).stdout
        if f" {vip}/32 " in addresses:
            found.append(name)
    return found


def test_ha_up_builds_three_control_planes_and_a_worker_behind_the_vip(
    ha_lab: tuple[Any, Pikube, str],
) -> None:
    lab, pk, vip = ha_lab
    start = time.monotonic()
    proc = pk("up", timeout=2400)
    MEASURED["up_s"] = time.monotonic() - start
    print(f"\n4-node HA up (3 control planes + 1 worker): {MEASURED['up_s']:.0f} s")
    assert proc.returncode == 0, proc.stderr[-6000:]

    found = nodes(pk)
    assert set(found) == {*CONTROL_PLANES, WORKER}
    assert all(is_ready(node) for node in found.values()), {
        name: node["status"].get("conditions") for name, node in found.items()
    }
    for name in CONTROL_PLANES:
        assert "node-role.kubernetes.io/control-plane" in found[name]["metadata"]["labels"], name
    assert "node-role.kubernetes.io/control-plane" not in found[WORKER]["metadata"]["labels"]

    # One address for every client: the kubeconfig, kubeadm's endpoint, the worker's kubelet.
    config = yaml.safe_load((state_dir(pk) / "kubeconfig").read_text())
    assert config["clusters"][0]["cluster"]["server"] == f"https://{vip}:8443"
    kubelet = lab.exec(WORKER, ["cat", "/etc/kubernetes/kubelet.conf"]).stdout
    assert f"server: https://{vip}:8443" in kubelet
    assert len(vip_holders(lab, vip)) == 1
    for name in CONTROL_PLANES:
        active = lab.exec(name, ["systemctl", "is-active", "keepalived", "haproxy"]).stdout
        assert active.split() == ["active", "active"], (name, active)


# Slow tier: a 4-node re-run costs minutes of the default tier's 30; the 3-node `up` modules
# prove a re-run changes nothing there, with the same roles.
@pytest.mark.slow
def test_a_rerun_changes_nothing(ha_lab: tuple[Any, Pikube, str]) -> None:
    _, pk, _ = ha_lab
    proc = pk("up")
    assert proc.returncode == 0, proc.stderr[-4000:]
    changed = {host: s["changed"] for host, s in latest_summary(pk)["hosts"].items()}
    assert changed == dict.fromkeys((*CONTROL_PLANES, WORKER), 0)


def test_certificate_key_and_vrrp_password_appear_nowhere(ha_lab: tuple[Any, Pikube, str]) -> None:
    lab, pk, _ = ha_lab
    password_file = state_dir(pk) / "vrrp-auth-pass"
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    runs = state_dir(pk) / "runs"
    texts = [p.read_text(errors="replace") for p in runs.rglob("*") if p.is_file()]
    texts += pk.outputs
    assert not any(password in text for text in texts)
    assert not any(CERTIFICATE_KEY_SHAPE.search(text) for text in texts)
    for name in CONTROL_PLANES:
        for path in TRANSIENT:
            assert lab.exec(name, ["test", "-e", path]).returncode == 1, (name, path)
    kept = lab.exec("node-1", ["cat", "/etc/pikube/kubeadm-init.yaml"]).stdout
    assert "certificateKey" not in kept and "controlPlaneEndpoint" in kept


def test_kubectl_keeps_answering_when_the_vip_holder_is_powered_off(
    ha_lab: tuple[Any, Pikube, str],
) -> None:
    lab, pk, vip = ha_lab
    (holder,) = vip_holders(lab, vip)
    assert kubectl(pk, "get", "nodes").returncode == 0
    lab.stop(holder)
    start = time.monotonic()
    failures = 0
    while True:
        proc = kubectl(pk, "get", "nodes", "--output", "json", timeout="2s")
        if proc.returncode == 0:
            break
        failures += 1
        if time.monotonic() - start > 180:
            pytest.fail(
                f"kubectl through the VIP {vip} did not answer within 180 s of powering off "
                f"{holder}: {proc.stderr[-500:]}"
            )
        time.sleep(0.2)
    MEASURED["failover_gap_s"] = time.monotonic() - start
    print(
        f"\nfailover: {holder} powered off, kubectl answered again after "
        f"{MEASURED['failover_gap_s']:.1f} s ({failures} failed requests)"
    )
    names = {n["metadata"]["name"] for n in json.loads(proc.stdout)["items"]}
    assert names == {*CONTROL_PLANES, WORKER}  # the same cluster, served by another member
    (new_holder,) = vip_holders(lab, vip, stopped=(holder,))
    assert new_holder != holder
