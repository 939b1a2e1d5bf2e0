"""The API emulator's addon controllers keep their upstream contracts, driven by the real
kubectl and the addon manifests pikube applies (patched as the pikube_addons role does):
MetalLB hands out pool addresses once its controller runs, the default StorageClass binds a
PVC once a scheduled Pod uses it (WaitForFirstConsumer), and the metrics API answers
`kubectl top nodes` only behind a metrics-server that can scrape the kubelets."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _standins import requires_standin_prereqs, testing

from pikube.resources import data_path
from tests.cni import plugin_module

pytestmark = requires_standin_prereqs
FakeNode = testing.FakeNode
ROLE = data_path("roles", "pikube_addons")


def manifest(addon: str, tmp: Path, *, patched: bool = True) -> str:
    """The addon's manifest as the role copies it (or upstream's, unpatched)."""
    catalog = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["pikube_addons_catalog"]
    entry = catalog[addon]
    text = (ROLE / "files" / entry["manifest"]).read_text()
    if patched:
        text = plugin_module("pikube_manifest_patch").patch_manifest(text, entry["patches"], addon)
    out = tmp / f"{addon}{'' if patched else '-upstream'}.yml"
    out.write_text(text)
    return str(out)


def wait_for(what: str, probe: Callable[[], Any], seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while not (value := probe()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {seconds} s")
        time.sleep(0.5)
    return value


def get(cp: FakeNode, *args: str) -> dict[str, Any]:
    r = cp.kubectl("get", *args, "-o", "json")
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def apply(cp: FakeNode, path: str) -> None:
    r = cp.kubectl("apply", "-f", path)
    assert r.returncode == 0, r.stderr


def rollout(cp: FakeNode, namespace: str, name: str) -> None:
    r = cp.kubectl("rollout", "status", "-n", namespace, name, "--timeout=60s")
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeNode]:
    """A control plane and a worker, Ready (flannel applied)."""
    base = tmp_path_factory.mktemp("addons")
    cp = FakeNode(base, "cp1", "127.0.5.1", port=testing.free_port("127.0.5.1"))
    w = FakeNode(base, "w1", "127.0.5.2", port=0)
    try:
        cfg = base / "init.yaml"
        cfg.write_text(testing.init_config(cp))
        assert cp.kubeadm("init", "--config", str(cfg)).returncode == 0
        join = cp.kubeadm("token", "create", "--print-join-command").stdout.split()
        assert w.kubeadm(*join[1:]).returncode == 0
        apply(cp, str(testing.FIXTURES / "kube-flannel.yml"))
        r = cp.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=60s")
        assert r.returncode == 0, r.stderr
        yield cp
    finally:
        w.cleanup()
        cp.cleanup()


def lb_address(cp: FakeNode, name: str) -> str | None:
    ingress = get(cp, "service", name).get("status", {}).get("loadBalancer", {}).get("ingress")
    return str(ingress[0]["ip"]) if ingress else None


def test_metallb_assigns_pool_addresses_once_its_controller_runs(
    cp: FakeNode, tmp_path: Path
) -> None:
    svc = tmp_path / "svc.yml"
    svc.write_text(
        "".join(
            f"---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {n}\n{extra}"
            "spec:\n  type: LoadBalancer\n  selector: {app: x}\n  ports: [{port: 80}]\n"
            for n, extra in (
                ("first", ""),
                ("asks", "  annotations: {metallb.io/loadBalancerIPs: 10.9.0.12}\n"),
                ("second", ""),
                ("third", ""),
            )
        )
    )
    apply(cp, str(svc))
    apply(cp, manifest("load-balancer", tmp_path))
    rollout(cp, "metallb-system", "deployment/controller")
    time.sleep(2)  # MetalLB runs, but no pool yet: nothing to hand out
    assert lb_address(cp, "first") is None
    pool = tmp_path / "pool.yml"
    pool.write_text(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: p\n"
        "  namespace: metallb-system\nspec:\n  addresses: [10.9.0.10-10.9.0.12]\n"
    )
    apply(cp, str(pool))
    assert wait_for("an address for first", lambda: lb_address(cp, "first")) == "10.9.0.10"
    assert wait_for("the address asked for", lambda: lb_address(cp, "asks")) == "10.9.0.12"
    assert wait_for("an address for second", lambda: lb_address(cp, "second")) == "10.9.0.11"
    time.sleep(2)
    assert lb_address(cp, "third") is None  # the pool is used up: the Service stays pending


def test_default_class_binds_a_pvc_once_a_pod_uses_it(cp: FakeNode, tmp_path: Path) -> None:
    apply(cp, manifest("storage", tmp_path))
    rollout(cp, "local-path-storage", "deployment/local-path-provisioner")
    claim = tmp_path / "claim.yml"
    claim.write_text(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\nspec:\n"
        "  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 2Gi}}\n"
    )
    apply(cp, str(claim))
    named = wait_for(
        "the default class on the claim",
        lambda: get(cp, "pvc", "data")["spec"].get("storageClassName"),
    )
    assert named == "local-path"
    time.sleep(2)  # WaitForFirstConsumer: no Pod uses it yet
    assert get(cp, "pvc", "data").get("status", {}).get("phase") == "Pending" or not get(
        cp, "pvc", "data"
    ).get("status", {}).get("phase")
    user = tmp_path / "user.yml"
    user.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: user\nspec:\n"
        "  selector: {matchLabels: {app: user}}\n  template:\n    metadata: {labels: {app: user}}\n"
        "    spec:\n      containers: [{name: c, image: busybox:1.37}]\n"
        "      volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]\n"
    )
    apply(cp, str(user))
    pvc = wait_for(
        "the binding",
        lambda: (p := get(cp, "pvc", "data")).get("status", {}).get("phase") == "Bound" and p,
    )
    pv = get(cp, "pv", pvc["spec"]["volumeName"])
    assert pv["spec"]["capacity"]["storage"] == "2Gi" and pv["status"]["phase"] == "Bound"
    assert pv["spec"]["claimRef"]["name"] == "data"
    assert cp.kubectl("delete", "-f", str(user), "-f", str(claim)).returncode == 0
    wait_for(
        "the released volume's deletion (reclaimPolicy Delete)",
        lambda: cp.kubectl("get", "pv", pvc["spec"]["volumeName"]).returncode != 0,
    )


def test_top_nodes_needs_a_metrics_server_that_can_scrape_the_kubelets(
    cp: FakeNode, tmp_path: Path
) -> None:
    unavailable = cp.kubectl("top", "nodes")
    assert unavailable.returncode != 0 and "Metrics API not available" in unavailable.stderr
    apply(cp, manifest("metrics", tmp_path, patched=False))  # upstream's, no insecure TLS
    rollout(cp, "kube-system", "deployment/metrics-server")
    service = wait_for(
        "the APIService's condition",
        lambda: get(cp, "apiservice", "v1beta1.metrics.k8s.io").get("status", {}).get("conditions"),
    )
    assert service[0]["status"] == "False" and service[0]["reason"] == "FailedDiscoveryCheck"
    assert cp.kubectl("top", "nodes").returncode != 0
    apply(cp, manifest("metrics", tmp_path))  # pikube's: --kubelet-insecure-tls
    top = wait_for(
        "`kubectl top nodes`",
        lambda: (r := cp.kubectl("top", "nodes", "--no-headers")).returncode == 0 and r.stdout,
    )
    assert {line.split()[0] for line in top.splitlines()} == {"cp1", "w1"}
    assert all(line.split()[1].endswith("m") for line in top.splitlines())
