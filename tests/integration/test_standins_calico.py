"""The API emulator takes pikube's pinned calico manifest from Debian's real kubectl.

The manifest is the one the pikube_cni_calico role copies: the pinned file with the role's
patches (pikube_cni_calico_patches) applied. Like a real cluster, the node turns Ready once the
calico-node DaemonSet exists, and the first running calico-node creates the default IP pool
from CALICO_IPV4POOL_CIDR (https://docs.tigera.io/calico/latest/reference/configure-calico-node).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _standins import requires_standin_prereqs, testing

from tests.cni import patched_manifest

pytestmark = requires_standin_prereqs
FakeNode = testing.FakeNode

POD_CIDR = "10.99.0.0/16"  # differs from the init config's podSubnet (10.244.0.0/16)


def rendered_calico_manifest(path: Path) -> Path:
    """What the role writes for pod_cidr POD_CIDR (the role's own patches, values filled in)."""
    path.write_text(
        patched_manifest("calico", pikube_pod_cidr=POD_CIDR, pikube_network_subnet="127.0.0.0/8")
    )
    return path


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeNode]:
    base = tmp_path_factory.mktemp("calico")
    node = FakeNode(base, "cp1", "127.0.4.11", port=testing.free_port("127.0.4.11"))
    try:
        cfg = base / "init.yaml"
        cfg.write_text(testing.init_config(node))
        r = node.kubeadm("init", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        yield node
    finally:
        node.cleanup()


def node_ready(cp: FakeNode) -> str:
    r = cp.kubectl(
        "get", "node", "cp1", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
    )
    return r.stdout.strip()


def pools(cp: FakeNode) -> list[dict[str, Any]]:
    r = cp.kubectl("get", "ippools.crd.projectcalico.org", "-o", "json")
    assert r.returncode == 0, r.stderr
    items: list[dict[str, Any]] = json.loads(r.stdout)["items"]
    return items


def test_apply_creates_calico_and_the_node_turns_ready(cp: FakeNode, tmp_path: Path) -> None:
    assert node_ready(cp) == "False"  # no pod network yet
    manifest = rendered_calico_manifest(tmp_path / "calico.yml")
    r = cp.kubectl("apply", "-f", str(manifest))
    assert r.returncode == 0, r.stderr
    for line in (
        "customresourcedefinition.apiextensions.k8s.io/ippools.crd.projectcalico.org created",
        "daemonset.apps/calico-node created",
        "deployment.apps/calico-typha created",
        "deployment.apps/calico-kube-controllers created",
    ):
        assert line in r.stdout
    waited = cp.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=60s")
    assert waited.returncode == 0, waited.stderr
    rollout = cp.kubectl(
        "rollout", "status", "daemonset/calico-node", "-n", "kube-system", "--timeout=60s"
    )
    assert rollout.returncode == 0 and "successfully rolled out" in rollout.stdout, rollout.stderr


def test_first_calico_node_creates_the_default_pool_from_the_manifest(cp: FakeNode) -> None:
    assert testing.wait_until(lambda: len(pools(cp)) == 1)
    (pool,) = pools(cp)
    assert pool["metadata"]["name"] == "default-ipv4-ippool"
    spec = pool["spec"]
    assert spec["cidr"] == POD_CIDR
    assert spec["ipipMode"] == "Always" and spec["natOutgoing"] is True


def test_second_apply_changes_nothing(cp: FakeNode, tmp_path: Path) -> None:
    manifest = rendered_calico_manifest(tmp_path / "calico.yml")
    r = cp.kubectl("apply", "-f", str(manifest))
    assert r.returncode == 0, r.stderr
    assert "created" not in r.stdout and "configured" not in r.stdout, r.stdout
    assert r.stdout.count("unchanged") == len(
        [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    )
    assert len(pools(cp)) == 1  # the pool is created only when none exists
