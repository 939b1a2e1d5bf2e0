"""`kubernetes.addons` takes the same words for both flavours, `network.lb_range` is checked
against the subnet and every address in use, and group_vars carry what each flavour's role
needs (kubeadm: the words and the range; MicroK8s: its own addons, mapped once)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pikube.addons import ADDONS
from pikube.config import load_cluster
from pikube.inventory.render import group_vars as build_group_vars
from tests.factories import base_cluster, edited, write_cluster
from tests.unit.test_config_validation import only, problems_for

WORDS = ["load-balancer", "ingress", "storage", "metrics"]
RANGE = "192.168.1.240-192.168.1.250"


@pytest.fixture(params=["kubeadm", "microk8s"])
def cluster_data(request: pytest.FixtureRequest, ssh_key: Path) -> dict[str, Any]:
    data = base_cluster(ssh_key, distribution=request.param)
    data["kubernetes"]["addons"] = list(WORDS)
    data["network"]["lb_range"] = RANGE
    return data


def test_both_flavours_take_the_addon_words(tmp_path: Path, cluster_data: dict[str, Any]) -> None:
    cluster = load_cluster(write_cluster(tmp_path, cluster_data))
    assert cluster.kubernetes.addons == WORDS
    assert cluster.network.lb_range == RANGE


def test_kubeadm_group_vars_carry_the_words_and_the_range(tmp_path: Path, ssh_key: Path) -> None:
    data = edited(
        base_cluster(ssh_key),
        **{"kubernetes.addons": WORDS, "network.lb_range": "192.168.1.240/29"},
    )
    gv = build_group_vars(load_cluster(write_cluster(tmp_path, data)))
    assert gv["pikube_addons_enabled"] == WORDS
    assert gv["pikube_addons_lb_range"] == "192.168.1.240-192.168.1.247"


def test_microk8s_group_vars_map_the_words_to_its_own_addons(tmp_path: Path, ssh_key: Path) -> None:
    data = base_cluster(ssh_key, distribution="microk8s")
    data["kubernetes"]["addons"] = ["dns", *WORDS]
    data["network"]["lb_range"] = RANGE
    gv = build_group_vars(load_cluster(write_cluster(tmp_path, data)))
    assert gv["pikube_microk8s_addons"] == [
        "dns",
        f"metallb:{RANGE}",
        "ingress",
        "hostpath-storage",
        "metrics-server",
    ]
    assert set(gv["pikube_microk8s_addons_managed"]) == {a.microk8s for a in ADDONS.values()}
    assert "pikube_addons_enabled" not in gv


def test_kubeadm_refuses_microk8s_addon_names(tmp_path: Path, ssh_key: Path) -> None:
    data = edited(base_cluster(ssh_key), **{"kubernetes.addons": ["metrics", "dns"]})
    problems, _ = problems_for(tmp_path, data)
    problem = only(problems, "kubernetes.addons[1]")
    assert "'dns'" in problem.message and "load-balancer" in problem.fix
    assert problem.line is not None


def test_load_balancer_needs_lb_range(tmp_path: Path, cluster_data: dict[str, Any]) -> None:
    del cluster_data["network"]["lb_range"]
    problems, _ = problems_for(tmp_path, cluster_data)
    problem = only(problems, "kubernetes.addons[0]")
    assert "network.lb_range" in problem.message and "lb_range:" in problem.fix


@pytest.mark.parametrize(
    ("lb_range", "said"),
    [
        ("192.168.2.10-192.168.2.20", "not inside the subnet"),
        ("192.168.1.250-192.168.1.240", "ends"),
        ("192.168.1.240-banana", "not an address range"),
        ("192.168.1.100-192.168.1.110", "node 'pi-cp1'"),
        ("192.168.1.1-192.168.1.5", "gateway"),
        ("192.168.1.250-192.168.1.255", "broadcast"),
        ("192.168.1.200-192.168.1.210", "network.vip"),
    ],
)
def test_lb_range_must_be_free_addresses_of_the_subnet(
    tmp_path: Path, cluster_data: dict[str, Any], lb_range: str, said: str
) -> None:
    cluster_data["network"]["lb_range"] = lb_range
    cluster_data["network"]["vip"] = "192.168.1.205"
    problems, _ = problems_for(tmp_path, cluster_data)
    (problem, *_) = [p for p in problems if p.path == "network.lb_range" and said in p.message]
    assert problem.fix and problem.line is not None


def test_status_reports_each_addons_ready_replicas() -> None:
    from pikube.addons import kubeadm_workloads
    from pikube.probe.status import addon_health

    listing = {
        "items": [
            {
                "kind": "Deployment",
                "metadata": {"namespace": "metallb-system", "name": "controller"},
                "spec": {"replicas": 1},
                "status": {"readyReplicas": 1},
            },
            {
                "kind": "DaemonSet",
                "metadata": {"namespace": "metallb-system", "name": "speaker"},
                "status": {"numberReady": 1, "desiredNumberScheduled": 3},
            },
            {
                "kind": "Deployment",
                "metadata": {"namespace": "kube-system", "name": "metrics-server"},
                "spec": {"replicas": 1},
                "status": {"readyReplicas": 1},
            },
        ]
    }
    table = kubeadm_workloads()
    wanted = {name: table[name] for name in ("load-balancer", "metrics", "storage")}
    health = {a["name"]: a for a in addon_health(wanted, json.dumps(listing))}
    assert health["metrics"]["healthy"] is True
    assert health["load-balancer"]["healthy"] is False  # 1 of 3 speakers ready
    speaker = health["load-balancer"]["workloads"][1]
    assert (speaker["name"], speaker["ready"], speaker["desired"]) == ("daemonset/speaker", 1, 3)
    assert health["storage"]["healthy"] is False
    assert health["storage"]["workloads"][0]["ready"] is None  # not installed


def test_status_reports_microk8s_addons_by_the_workloads_upstreams_manifests_run() -> None:
    """MicroK8s clusters get each addon word's health too: the workloads of the MicroK8s addon
    it maps to (canonical/microk8s-core-addons 1.31 manifests). The listing has the shape
    `microk8s kubectl get deployments,daemonsets -A -o json` prints: a Deployment with no
    ready replica has no readyReplicas field; MicroK8s' own calico-node and coredns are there
    too and belong to no word."""
    from pikube.distribution import distribution
    from pikube.probe.status import addon_health

    def deployment(ns: str, name: str, ready: int | None) -> dict[str, Any]:
        status: dict[str, Any] = {"replicas": 1, "observedGeneration": 1}
        if ready is not None:
            status.update(readyReplicas=ready, availableReplicas=ready, updatedReplicas=1)
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"namespace": ns, "name": name, "generation": 1},
            "spec": {"replicas": 1},
            "status": status,
        }

    def daemonset(ns: str, name: str, ready: int, desired: int) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"namespace": ns, "name": name, "generation": 1},
            "status": {
                "currentNumberScheduled": desired,
                "desiredNumberScheduled": desired,
                "numberAvailable": ready,
                "numberMisscheduled": 0,
                "numberReady": ready,
                "observedGeneration": 1,
                "updatedNumberScheduled": desired,
            },
        }

    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            deployment("kube-system", "calico-kube-controllers", 1),
            deployment("kube-system", "coredns", 1),
            deployment("kube-system", "hostpath-provisioner", None),
            deployment("kube-system", "metrics-server", 1),
            deployment("metallb-system", "controller", 1),
            daemonset("kube-system", "calico-node", 2, 2),
            daemonset("metallb-system", "speaker", 2, 2),
            daemonset("ingress", "nginx-ingress-microk8s-controller", 1, 2),
        ],
        "metadata": {"resourceVersion": ""},
    }
    table = distribution("microk8s").addon_workloads()
    assert set(table) == {"load-balancer", "ingress", "storage", "metrics"}
    health = {a["name"]: a for a in addon_health(table, json.dumps(listing))}
    assert health["load-balancer"]["healthy"] is True
    assert [w["name"] for w in health["load-balancer"]["workloads"]] == [
        "deployment/controller",
        "daemonset/speaker",
    ]
    assert health["metrics"]["healthy"] is True
    assert health["ingress"]["healthy"] is False  # one of two controllers ready
    assert health["storage"]["healthy"] is False  # the provisioner has no ready replica
    assert health["storage"]["workloads"][0]["ready"] == 0


def test_doctor_probes_the_range_it_was_given() -> None:
    from pikube.probe.arp import MAX_PROBED, probed_addresses

    assert probed_addresses("10.0.0.250-10.0.0.252") == ["10.0.0.250", "10.0.0.251", "10.0.0.252"]
    assert len(probed_addresses("10.0.0.0/16")) == MAX_PROBED
