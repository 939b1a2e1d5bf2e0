"""The API emulator's controllers for what cluster addons provide, each keeping its upstream
contract as far as clients (kubectl, pikube's roles) can see it.

- MetalLB's controller: a Service of type LoadBalancer gets the first free address of an
  ``IPAddressPool`` (metallb.io/v1beta1) in ``status.loadBalancer.ingress`` once MetalLB's
  controller Deployment runs (https://metallb.io/concepts/, "Address allocation"); a Service
  asking for an address (``metallb.io/loadBalancerIPs`` or ``spec.loadBalancerIP``) gets it
  when a pool holds it and it is free, else none.
- The PV controller and a dynamic provisioner (local-path-provisioner): a PVC naming no class
  gets the default StorageClass (``storageclass.kubernetes.io/is-default-class: "true"``;
  retroactive default class assignment, GA in 1.28); with ``WaitForFirstConsumer`` it is
  provisioned once a scheduled Pod uses it, with ``Immediate`` at once; the provisioner of the
  class must run. A PV is created and both are Bound; a released PV with the Delete
  reclaim policy is deleted.
- The aggregation layer with metrics-server behind it: APIService ``v1beta1.metrics.k8s.io``
  is Available once metrics-server's Deployment is ready and can scrape the kubelets. The
  lab's kubelets serve self-signed certificates (kubeadm's default, no serverTLSBootstrap), so
  metrics-server scrapes them only with ``--kubelet-insecure-tls``, as on a real kubeadm
  cluster (metrics-server README, "Requirements"). Then ``metrics.k8s.io/v1beta1`` serves a
  NodeMetrics per Ready node (what ``kubectl top nodes`` reads).

``tick(api)`` runs in the emulator's controller loop with the store lock held;
``served(objects)`` adds the aggregated resources to discovery while they are available.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import ipaddress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .apiserver import Api, Res

Key = tuple[str, str, str, str]
METALLB_CONTROLLER: Key = ("apps", "deployments", "metallb-system", "controller")
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
# A provisioner name -> the Deployment that runs it (what must be up to provision).
PROVISIONERS: dict[str, Key] = {
    "rancher.io/local-path": (
        "apps",
        "deployments",
        "local-path-storage",
        "local-path-provisioner",
    ),
}
METRICS_APISERVICE: Key = ("apiregistration.k8s.io", "apiservices", "", "v1beta1.metrics.k8s.io")


def tick(api: Api) -> None:
    _load_balancers(api)
    _volumes(api)
    _metrics(api)


def served(objects: dict[Key, dict[str, Any]]) -> list[Res]:
    """The aggregated APIs discovery lists: metrics.k8s.io while its APIService is Available."""
    from .apiserver import Res

    service = objects.get(METRICS_APISERVICE)
    if service is None or not _condition(service, "Available"):
        return []
    return [Res("metrics.k8s.io", "v1beta1", "NodeMetrics", "nodes", False)]


# --------------------------------------------------------------------------- helpers
def _ts() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(obj: dict[str, Any], typ: str) -> bool:
    return any(
        c.get("type") == typ and c.get("status") == "True"
        for c in obj.get("status", {}).get("conditions", [])
    )


def _ready(api: Api, key: Key) -> bool:
    deploy = api.store.objects.get(key)
    return deploy is not None and int(deploy.get("status", {}).get("readyReplicas") or 0) >= 1


def _modified(api: Api, key: Key, obj: dict[str, Any]) -> None:
    """Write back a changed copy (a conflict leaves it to the next tick, as a controller)."""
    api._save(key, obj)


def _of(api: Api, group: str, plural: str) -> list[tuple[Key, dict[str, Any]]]:
    """Copies of the cached objects of one resource: the store's cache is read-only."""
    return [
        (k, copy.deepcopy(o))
        for k, o in api.store.objects.items()
        if k[0] == group and k[1] == plural
    ]


# --------------------------------------------------------------------------- MetalLB
def _pool_addresses(pool: dict[str, Any]) -> list[ipaddress.IPv4Address]:
    out: list[ipaddress.IPv4Address] = []
    for entry in pool.get("spec", {}).get("addresses", []):
        text = str(entry)
        if "-" in text:
            first, last = (ipaddress.IPv4Address(p.strip()) for p in text.split("-", 1))
        else:
            net = ipaddress.IPv4Network(text, strict=False)
            first, last = net.network_address, net.broadcast_address
        out += [ipaddress.IPv4Address(i) for i in range(int(first), int(last) + 1)]
    return out


def _load_balancers(api: Api) -> None:
    pools = _of(api, "metallb.io", "ipaddresspools")
    if not pools or not _ready(api, METALLB_CONTROLLER):
        return
    services = _of(api, "", "services")
    used = {
        i.get("ip")
        for _k, s in services
        for i in s.get("status", {}).get("loadBalancer", {}).get("ingress", []) or []
    }
    for key, svc in services:
        spec = svc.get("spec", {})
        if spec.get("type") != "LoadBalancer" or spec.get("loadBalancerClass"):
            continue
        if svc.get("status", {}).get("loadBalancer", {}).get("ingress"):
            continue
        wanted = (svc["metadata"].get("annotations") or {}).get(
            "metallb.io/loadBalancerIPs"
        ) or spec.get("loadBalancerIP")
        free = [
            str(a)
            for _pk, pool in sorted(pools)
            for a in _pool_addresses(pool)
            if str(a) not in used and (not wanted or str(a) == wanted)
        ]
        if not free:
            continue
        svc.setdefault("status", {})["loadBalancer"] = {
            "ingress": [{"ip": free[0], "ipMode": "VIP"}]
        }
        used.add(free[0])
        _modified(api, key, svc)


# --------------------------------------------------------------------------- volumes
def _default_class(api: Api) -> dict[str, Any] | None:
    classes = [
        o
        for _k, o in _of(api, "storage.k8s.io", "storageclasses")
        if (o["metadata"].get("annotations") or {}).get(DEFAULT_CLASS) == "true"
    ]
    # Several defaults: the newest wins (kube-apiserver's DefaultStorageClass admission).
    return (
        max(classes, key=lambda o: o["metadata"].get("creationTimestamp", "")) if classes else None
    )


def _consumer_node(api: Api, ns: str, claim: str) -> str | None:
    for k, pod in api.store.objects.items():
        if k[:3] != ("", "pods", ns) or not pod["spec"].get("nodeName"):
            continue
        for vol in pod["spec"].get("volumes") or []:
            if (vol.get("persistentVolumeClaim") or {}).get("claimName") == claim:
                return str(pod["spec"]["nodeName"])
    return None


def _volumes(api: Api) -> None:
    default = _default_class(api)
    classes = {k[3]: o for k, o in _of(api, "storage.k8s.io", "storageclasses")}
    pvcs = _of(api, "", "persistentvolumeclaims")
    for key, pvc in pvcs:
        spec = pvc.setdefault("spec", {})
        if spec.get("storageClassName") is None and default is not None:
            spec["storageClassName"] = default["metadata"]["name"]
            _modified(api, key, pvc)
            continue  # bound on the next tick, from the object as written
        if spec.get("volumeName") or pvc.get("status", {}).get("phase") == "Bound":
            continue
        sc = classes.get(str(spec.get("storageClassName")))
        if sc is None:
            continue
        provisioner = str(sc.get("provisioner", ""))
        runner = PROVISIONERS.get(provisioner)
        if runner is None or not _ready(api, runner):
            continue
        node = _consumer_node(api, key[2], key[3])
        if sc.get("volumeBindingMode", "Immediate") == "WaitForFirstConsumer" and node is None:
            continue
        _provision(api, key, pvc, sc, provisioner, node)
    claims = {(k[2], k[3]) for k, _o in pvcs}
    for key, pv in _of(api, "", "persistentvolumes"):
        ref = pv.get("spec", {}).get("claimRef") or {}
        released = (ref.get("namespace"), ref.get("name")) not in claims
        if released and pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
            api._delete_locked(key, pv)


def _provision(
    api: Api,
    key: Key,
    pvc: dict[str, Any],
    sc: dict[str, Any],
    provisioner: str,
    node: str | None,
) -> None:
    spec = pvc["spec"]
    name = f"pvc-{pvc['metadata']['uid']}"
    size = spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")
    pv: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": provisioner}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.get("accessModes", ["ReadWriteOnce"]),
            "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy", "Delete"),
            "storageClassName": sc["metadata"]["name"],
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": key[2],
                "name": key[3],
                "uid": pvc["metadata"]["uid"],
            },
            "hostPath": {
                "path": f"/opt/local-path-provisioner/{name}_{key[2]}_{key[3]}",
                "type": "DirectoryOrCreate",
            },
        },
        "status": {"phase": "Bound"},
    }
    if node:
        pv["spec"]["nodeAffinity"] = {
            "required": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                        ]
                    }
                ]
            }
        }
    api._create_locked(api.res_for("", "persistentvolumes"), "", pv)
    annotations = pvc["metadata"].setdefault("annotations", {})
    annotations.update(
        {
            "pv.kubernetes.io/bind-completed": "yes",
            "pv.kubernetes.io/bound-by-controller": "yes",
            "volume.kubernetes.io/storage-provisioner": provisioner,
        }
    )
    if node:
        annotations["volume.kubernetes.io/selected-node"] = node
    spec["volumeName"] = name
    pvc["status"] = {
        "phase": "Bound",
        "accessModes": pv["spec"]["accessModes"],
        "capacity": {"storage": size},
    }
    _modified(api, key, pvc)


# --------------------------------------------------------------------------- metrics
def _metrics_server_state(api: Api, service: dict[str, Any]) -> tuple[bool, str, str]:
    """(available, reason, message) of the metrics APIService."""
    ref = service.get("spec", {}).get("service") or {}
    deploy_key: Key = ("apps", "deployments", ref.get("namespace", ""), ref.get("name", ""))
    svc_key: Key = ("", "services", ref.get("namespace", ""), ref.get("name", ""))
    if svc_key not in api.store.objects:
        return (
            False,
            "ServiceNotFound",
            f"service/{ref.get('name')} in {ref.get('namespace')} is not present",
        )
    if not _ready(api, deploy_key):
        return (
            False,
            "MissingEndpoints",
            "endpoints for service/{} have no addresses".format(ref.get("name")),
        )
    containers = api.store.objects[deploy_key]["spec"]["template"]["spec"].get("containers", [])
    args = [str(a) for c in containers for a in (c.get("args") or [])]
    if "--kubelet-insecure-tls" not in args:
        return (
            False,
            "FailedDiscoveryCheck",
            "failing or missing response: metrics-server cannot scrape the kubelets: "
            "x509: cannot validate certificate (kubelet serving certificates are self-signed; "
            "run metrics-server with --kubelet-insecure-tls)",
        )
    return True, "Passed", "all checks passed"


def _metrics(api: Api) -> None:
    cached = api.store.objects.get(METRICS_APISERVICE)
    service = copy.deepcopy(cached) if cached is not None else None
    metrics = _of(api, "metrics.k8s.io", "nodes")
    available = False
    if service is not None:
        available, reason, message = _metrics_server_state(api, service)
        status = "True" if available else "False"
        conds = service.get("status", {}).get("conditions", [])
        if not conds or conds[0].get("status") != status or conds[0].get("reason") != reason:
            service["status"] = {
                "conditions": [
                    {
                        "type": "Available",
                        "status": status,
                        "reason": reason,
                        "message": message,
                        "lastTransitionTime": _ts(),
                    }
                ]
            }
            _modified(api, METRICS_APISERVICE, service)
    nodes = (
        {o["metadata"]["name"]: o for o in api._nodes() if api._node_ready(o)} if available else {}
    )
    for key, obj in metrics:
        if key[3] not in nodes:
            api._delete_locked(key, obj)
    have = {k[3] for k, _o in metrics}
    for name, node in nodes.items():
        if name in have:
            continue
        # A steady reading: a small share of the node's CPUs and memory.
        digest = hashlib.sha256(name.encode()).digest()
        memory_ki = int(str(node["status"]["capacity"]["memory"]).removesuffix("Ki")) // 8
        body = {
            "apiVersion": "metrics.k8s.io/v1beta1",
            "kind": "NodeMetrics",
            "metadata": {"name": name, "labels": dict(node["metadata"].get("labels", {}))},
            "timestamp": _ts(),
            "window": "15s",
            "usage": {"cpu": f"{100_000_000 + digest[0] * 1_000_000}n", "memory": f"{memory_ki}Ki"},
        }
        api._create_locked(api.res_for("metrics.k8s.io", "nodes"), "", body)
