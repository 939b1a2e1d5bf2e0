"""The API emulator serves Debian's real kubectl: nodes, wait, apply, cordon, drain, delete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from _standins import requires_standin_prereqs, testing

pytestmark = requires_standin_prereqs
FakeNode = testing.FakeNode

CRD = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: ippools.crd.projectcalico.org
spec:
  group: crd.projectcalico.org
  names:
    kind: IPPool
    listKind: IPPoolList
    plural: ippools
    singular: ippool
  scope: Cluster
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"""

POOL = """apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  cidr: 10.244.0.0/16
  natOutgoing: true
"""


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeNode, FakeNode]]:
    base = tmp_path_factory.mktemp("api")
    cp = FakeNode(base, "cp1", "127.0.4.1", port=testing.free_port("127.0.4.1"))
    w = FakeNode(base, "w1", "127.0.4.2", port=0)
    try:
        cfg = base / "init.yaml"
        cfg.write_text(testing.init_config(cp))
        r = cp.kubeadm("init", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        join = cp.kubeadm("token", "create", "--print-join-command").stdout.split()
        r = w.kubeadm(*join[1:])
        assert r.returncode == 0, r.stderr
        yield cp, w
    finally:
        w.cleanup()
        cp.cleanup()


def nodes(cp: FakeNode) -> dict[str, dict[str, object]]:
    r = cp.kubectl("get", "nodes", "-o", "json")
    assert r.returncode == 0, r.stderr
    return {n["metadata"]["name"]: n for n in json.loads(r.stdout)["items"]}


def ready(node: dict[str, object]) -> dict[str, str]:
    conds = node["status"]["conditions"]  # type: ignore[index]
    return next(c for c in conds if c["type"] == "Ready")


def test_nodes_not_ready_until_a_pod_network_is_applied(api: tuple[FakeNode, FakeNode]) -> None:
    cp, _ = api
    ns = nodes(cp)
    assert set(ns) == {"cp1", "w1"}
    assert ready(ns["cp1"])["status"] == "False"
    assert "cni plugin not initialized" in ready(ns["cp1"])["message"]
    timeout = cp.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=2s")
    assert timeout.returncode != 0 and "timed out" in timeout.stderr


def test_apply_cni_manifest_then_nodes_become_ready(api: tuple[FakeNode, FakeNode]) -> None:
    cp, _ = api
    flannel = str(testing.FIXTURES / "kube-flannel.yml")
    first = cp.kubectl("apply", "-f", flannel)
    assert first.returncode == 0, first.stderr
    for line in (
        "namespace/kube-flannel created",
        "clusterrole.rbac.authorization.k8s.io/flannel created",
        "clusterrolebinding.rbac.authorization.k8s.io/flannel created",
        "serviceaccount/flannel created",
        "configmap/kube-flannel-cfg created",
        "daemonset.apps/kube-flannel-ds created",
    ):
        assert line in first.stdout
    second = cp.kubectl("apply", "-f", flannel)
    assert (
        second.returncode == 0 and "created" not in second.stdout and "unchanged" in second.stdout
    )
    listed = cp.kubectl("get", "daemonsets", "-A")
    assert "kube-flannel" in listed.stdout and "kube-flannel-ds" in listed.stdout
    waited = cp.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=60s")
    assert waited.returncode == 0, waited.stderr
    assert "node/cp1 condition met" in waited.stdout and "node/w1 condition met" in waited.stdout
    wide = cp.kubectl("get", "nodes", "-o", "wide")
    header = wide.stdout.splitlines()[0].split()
    assert header[:5] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"] and "INTERNAL-IP" in header
    row = next(ln.split() for ln in wide.stdout.splitlines() if ln.startswith("cp1"))
    assert (
        row[1] == "Ready"
        and row[2] == "control-plane"
        and row[4] == "v1.31.13"
        and row[5] == "127.0.4.1"
    )


def test_workloads_get_running_pods_and_roll_out(api: tuple[FakeNode, FakeNode]) -> None:
    cp, _ = api
    rollout = cp.kubectl(
        "rollout", "status", "daemonset/kube-flannel-ds", "-n", "kube-flannel", "--timeout=60s"
    )
    assert rollout.returncode == 0 and "successfully rolled out" in rollout.stdout, rollout.stderr
    dep = cp.kubectl(
        "rollout", "status", "deployment/coredns", "-n", "kube-system", "--timeout=60s"
    )
    assert dep.returncode == 0, dep.stderr
    waited = cp.kubectl(
        "wait", "--for=condition=Ready", "pod", "--all", "-n", "kube-flannel", "--timeout=60s"
    )
    assert waited.returncode == 0, waited.stderr
    pods = json.loads(cp.kubectl("get", "pods", "-n", "kube-flannel", "-o", "json").stdout)["items"]
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["cp1", "w1"]
    assert all(p["status"]["phase"] == "Running" for p in pods)
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet" for p in pods)


def test_apply_changed_manifest_patches_object(
    api: tuple[FakeNode, FakeNode], tmp_path: Path
) -> None:
    cp, _ = api
    changed = tmp_path / "flannel.yml"
    changed.write_text(
        (testing.FIXTURES / "kube-flannel.yml")
        .read_text()
        .replace('"Type": "vxlan"', '"Type": "host-gw"')
    )
    r = cp.kubectl("apply", "-f", str(changed))
    assert "configmap/kube-flannel-cfg configured" in r.stdout, r.stdout + r.stderr
    got = cp.kubectl(
        "get",
        "configmap",
        "-n",
        "kube-flannel",
        "kube-flannel-cfg",
        "-o",
        "jsonpath={.data.net-conf\\.json}",
    )
    assert "host-gw" in got.stdout


def test_custom_resources_like_calico(api: tuple[FakeNode, FakeNode], tmp_path: Path) -> None:
    cp, _ = api
    (tmp_path / "crd.yaml").write_text(CRD)
    (tmp_path / "pool.yaml").write_text(POOL)
    assert cp.kubectl("apply", "-f", str(tmp_path / "crd.yaml")).returncode == 0
    r = cp.kubectl("apply", "-f", str(tmp_path / "pool.yaml"))
    assert r.returncode == 0, r.stderr
    got = cp.kubectl("get", "ippools", "-o", "jsonpath={.items[0].spec.cidr}")
    assert got.stdout == "10.244.0.0/16"


def test_cordon_uncordon_drain_delete(api: tuple[FakeNode, FakeNode]) -> None:
    cp, _ = api
    assert cp.kubectl("cordon", "w1").stdout.strip() == "node/w1 cordoned"
    assert nodes(cp)["w1"]["spec"].get("unschedulable") is True  # type: ignore[union-attr]
    assert "Ready,SchedulingDisabled" in cp.kubectl("get", "node", "w1").stdout
    assert cp.kubectl("uncordon", "w1").stdout.strip() == "node/w1 uncordoned"
    assert not nodes(cp)["w1"]["spec"].get("unschedulable")  # type: ignore[union-attr]
    drained = cp.kubectl(
        "drain", "w1", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s"
    )
    assert drained.returncode == 0, drained.stderr
    # kubectl 1.20 ends with "evicted" when it evicted pods ("drained" when there were none)
    assert drained.stdout.splitlines()[-1] in ("node/w1 evicted", "node/w1 drained")
    assert "ignoring DaemonSet-managed Pods" in drained.stderr
    on_w1 = json.loads(
        cp.kubectl("get", "pods", "-A", "-o", "json", "--field-selector", "spec.nodeName=w1").stdout
    )["items"]
    assert on_w1 and all(p["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet" for p in on_w1)
    assert (
        cp.kubectl(
            "rollout", "status", "deployment/coredns", "-n", "kube-system", "--timeout=60s"
        ).returncode
        == 0
    )
    assert nodes(cp)["w1"]["spec"].get("unschedulable") is True  # type: ignore[union-attr]
    deleted = cp.kubectl("delete", "node", "w1")
    assert deleted.returncode == 0 and 'node "w1" deleted' in deleted.stdout
    assert "w1" not in nodes(cp)


def test_raw_readyz_version_cluster_info(api: tuple[FakeNode, FakeNode]) -> None:
    cp, _ = api
    assert cp.kubectl("get", "--raw", "/readyz").stdout == "ok"
    assert 'GitVersion:"v1.31.13"' in cp.kubectl("version").stdout
    info = cp.kubectl("cluster-info")
    assert "is running at" in info.stdout and f"https://{cp.ip}:{cp.port}" in info.stdout


def test_client_without_valid_credentials_is_rejected(
    api: tuple[FakeNode, FakeNode], tmp_path: Path
) -> None:
    cp, _ = api
    import yaml

    kc = yaml.safe_load((cp.root / "etc/kubernetes/admin.conf").read_text())
    kc["users"][0]["user"] = {"token": "abcdef.0123456789abcdef"}
    bogus = tmp_path / "bogus.conf"
    bogus.write_text(yaml.safe_dump(kc))
    r = cp.kubectl("get", "nodes", kubeconfig=bogus)
    assert r.returncode != 0 and "You must be logged in to the server (Unauthorized)" in r.stderr


def test_state_survives_apiserver_restart(api: tuple[FakeNode, FakeNode]) -> None:
    cp, _ = api
    cp.service("start", "pikube-standin-apiserver")
    assert testing.wait_until(lambda: cp.kubectl("get", "--raw", "/readyz").stdout == "ok")
    r = cp.kubectl("get", "configmap", "-n", "kube-flannel", "kube-flannel-cfg", "-o", "name")
    assert r.stdout.strip() == "configmap/kube-flannel-cfg"


def test_stopped_kubelet_makes_node_not_ready(api: tuple[FakeNode, FakeNode]) -> None:
    cp, _ = api
    assert cp.kubectl("wait", "--for=condition=Ready", "node/cp1", "--timeout=60s").returncode == 0
    cp.service("stop", "kubelet")
    r = cp.kubectl("wait", "--for=condition=Ready=Unknown", "node/cp1", "--timeout=60s")
    assert r.returncode == 0, r.stderr
    assert "NotReady" in cp.kubectl("get", "node", "cp1").stdout
    assert ready(nodes(cp)["cp1"])["message"] == "Kubelet stopped posting node status."
    cp.service("start", "kubelet")
    assert cp.kubectl("wait", "--for=condition=Ready", "node/cp1", "--timeout=60s").returncode == 0


def test_oversized_crd_needs_create_not_apply(
    api: tuple[FakeNode, FakeNode], tmp_path: Path
) -> None:
    """Client-side apply stores the whole object in an annotation, capped at 256 KiB upstream."""
    cp, _ = api
    big = (
        CRD.replace("ippools", "bigpools").replace("IPPool", "BigPool").replace("ippool", "bigpool")
    )
    big = big.replace(
        "        type: object\n",
        "        type: object\n        description: " + "x" * 300_000 + "\n",
    )
    (tmp_path / "big.yaml").write_text(big)
    applied = cp.kubectl("apply", "-f", str(tmp_path / "big.yaml"))
    assert applied.returncode != 0
    assert "Too long: must have at most 262144 bytes" in applied.stderr
    created = cp.kubectl("create", "-f", str(tmp_path / "big.yaml"))
    assert created.returncode == 0, created.stderr


def test_invalid_object_name_is_rejected(api: tuple[FakeNode, FakeNode]) -> None:
    cp, _ = api
    r = cp.kubectl("create", "namespace", "Bad_Name")
    assert r.returncode != 0 and "a lowercase RFC 1123" in r.stderr


def test_a_request_body_never_desynchronises_a_kept_alive_connection(
    api: tuple[FakeNode, FakeNode], tmp_path: Path
) -> None:
    """kubectl sends DeleteOptions as the body of DELETE and reuses its connections: the
    emulator must consume every body, or the next response on that connection is garbage."""
    import base64
    import http.client
    import ssl
    import urllib.parse

    import yaml

    cp, _ = api
    assert cp.kubectl("create", "configmap", "framing", "-n", "kube-system").returncode == 0
    kc = yaml.safe_load((cp.root / "etc/kubernetes/admin.conf").read_text())
    files = {
        "ca": kc["clusters"][0]["cluster"]["certificate-authority-data"],
        "cert": kc["users"][0]["user"]["client-certificate-data"],
        "key": kc["users"][0]["user"]["client-key-data"],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(base64.b64decode(data))
    context = ssl.create_default_context(cafile=str(tmp_path / "ca"))
    context.load_cert_chain(str(tmp_path / "cert"), str(tmp_path / "key"))
    server = urllib.parse.urlsplit(kc["clusters"][0]["cluster"]["server"])
    conn = http.client.HTTPSConnection(server.hostname or "", server.port, context=context)
    try:
        options = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        conn.request(
            "DELETE",
            "/api/v1/namespaces/kube-system/configmaps/framing",
            body=json.dumps(options),
            headers={"Content-Type": "application/json"},
        )
        deleted = conn.getresponse()
        assert deleted.status == 200, deleted.read()
        deleted.read()
        conn.request("GET", "/version")  # the same connection
        version = conn.getresponse()
        assert version.status == 200
        assert json.loads(version.read())["gitVersion"].startswith("v1.")
    finally:
        conn.close()
