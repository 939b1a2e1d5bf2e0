"""Kubernetes API emulator: enough of the REST API for the real kubectl.

Serves TLS with client-certificate auth against the cluster CA (plus bootstrap
tokens, like kube-apiserver's --enable-bootstrap-token-auth), discovery
(/api, /apis, /apis/G/V), /openapi/v2 (an empty protobuf document: kubectl
skips validation of kinds it does not find), CRUD + list + watch on built-in
kinds and CRD-defined kinds, merge / strategic-merge / JSON patches, Table
output for `kubectl get`, and the controllers the stand-ins need:
node lifecycle (NotReady after a grace period), bootstrap signer (JWS in
kube-public/cluster-info), token cleaner, CSR signer, workload status, and every API
server's endpoint reconciler (its address in Endpoints default/kubernetes while it runs).

Flags follow kube-apiserver's names; it reads them from a kubeadm static-pod
manifest (--from-manifest) or a MicroK8s args file (--from-args-file).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import select
import shlex
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import addon_controllers, common, storage
from .storage import Conflict, KeyExists, Unavailable

# --------------------------------------------------------------------------- registry


@dataclass
class Res:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    singular: str = ""
    categories: tuple[str, ...] = ()

    @property
    def gv(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


BUILTIN: list[Res] = [
    Res("", "v1", "Namespace", "namespaces", False, ("ns",), ("status", "finalize")),
    Res("", "v1", "Node", "nodes", False, ("no",), ("status", "proxy")),
    Res(
        "",
        "v1",
        "Pod",
        "pods",
        True,
        ("po",),
        ("status", "eviction", "log", "exec"),
        categories=("all",),
    ),
    Res("", "v1", "Service", "services", True, ("svc",), ("status", "proxy"), categories=("all",)),
    Res("", "v1", "Endpoints", "endpoints", True, ("ep",)),
    Res("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    Res("", "v1", "Secret", "secrets", True),
    Res("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",), ("token",)),
    Res("", "v1", "Event", "events", True, ("ev",)),
    Res("", "v1", "PersistentVolume", "persistentvolumes", False, ("pv",), ("status",)),
    Res("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ("pvc",), ("status",)),
    Res("", "v1", "LimitRange", "limitranges", True, ("limits",)),
    Res("", "v1", "ResourceQuota", "resourcequotas", True, ("quota",), ("status",)),
    Res("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",), ("status",), categories=("all",)),
    Res(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        True,
        ("deploy",),
        ("status", "scale"),
        categories=("all",),
    ),
    Res(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        True,
        ("rs",),
        ("status", "scale"),
        categories=("all",),
    ),
    Res(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        True,
        ("sts",),
        ("status", "scale"),
        categories=("all",),
    ),
    Res("apps", "v1", "ControllerRevision", "controllerrevisions", True),
    Res("batch", "v1", "Job", "jobs", True, (), ("status",), categories=("all",)),
    Res("batch", "v1", "CronJob", "cronjobs", True, ("cj",), ("status",), categories=("all",)),
    Res("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    Res("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    Res("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    Res("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    Res("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ("pdb",), ("status",)),
    Res("coordination.k8s.io", "v1", "Lease", "leases", True),
    Res(
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        False,
        ("csr",),
        ("status", "approval"),
    ),
    Res(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        False,
        ("crd", "crds"),
        ("status",),
    ),
    Res("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ("netpol",)),
    Res("networking.k8s.io", "v1", "Ingress", "ingresses", True, ("ing",), ("status",)),
    Res("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False),
    Res("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, ("sc",)),
    Res("storage.k8s.io", "v1", "CSIDriver", "csidrivers", False),
    Res("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", False, ("pc",)),
    Res(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        False,
    ),
    Res(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        False,
    ),
    Res("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True),
    Res("apiregistration.k8s.io", "v1", "APIService", "apiservices", False, (), ("status",)),
]

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SEED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
HEALTH = ("/healthz", "/readyz", "/livez")
CNI_DAEMONSETS = re.compile(r"flannel|calico-node|cilium|weave-net|kube-router|canal")


# kube-apiserver's lease endpoint reconciler: renew every 10 s, a lease lives 15 s
# (pkg/controlplane: DefaultEndpointReconcilerInterval, --endpoint-reconciler ttl).
ENDPOINT_RECONCILE_S = 10.0
ENDPOINT_LEASE_TTL_S = 15.0


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ts(t: dt.datetime | None = None) -> str:
    return (t or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(s: str) -> dt.datetime:
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration (kubectl's AGE column)."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


def status_obj(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    o: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 300 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        o["details"] = details
    return o


class HttpError(Exception):
    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.body = status_obj(code, reason, message, details)
        self.code = code


def conflict(plural: str, name: str) -> HttpError:
    """kube-apiserver's 409 for a write based on an outdated resourceVersion."""
    return HttpError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
    )


# --------------------------------------------------------------------------- patches
# How long a PATCH is re-applied after the storage's compare-and-swap failed (kube-apiserver's
# GuaranteedUpdate loops until it succeeds; the request's own timeout bounds it there).
PATCH_RETRY_S = 30.0


def names_version(patch: Any) -> bool:
    """Whether a patch sets metadata.resourceVersion: a precondition, as kube-apiserver reads it."""
    if isinstance(patch, list):  # JSON patch
        return any(op.get("path") == "/metadata/resourceVersion" for op in patch)
    return isinstance(patch, dict) and bool((patch.get("metadata") or {}).get("resourceVersion"))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


MERGE_KEYS = (
    "name",
    "type",
    "containerPort",
    "mountPath",
    "devicePath",
    "key",
    "ip",
    "topologyKey",
)


def strategic_merge(target: Any, patch: Any) -> Any:
    """Approximation of strategic merge patch: maps merge, lists of objects merge by key."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: v for k, v in copy.deepcopy(patch).items() if k != "$patch"}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith(
            ("$setElementOrder/", "$retainKeys", "$deleteFromPrimitiveList/", "$patch")
        ):
            continue
        if v is None:
            result.pop(k, None)
        elif (
            isinstance(v, list)
            and isinstance(result.get(k), list)
            and v
            and all(isinstance(i, dict) for i in v)
        ):
            result[k] = _merge_list(result[k], v)
        else:
            result[k] = strategic_merge(result.get(k), v)
    return result


def _merge_list(old: list[Any], new: list[Any]) -> list[Any]:
    key = next(
        (mk for mk in MERGE_KEYS if all(mk in i for i in new if "$patch" not in i or mk in i)), None
    )
    if key is None or not all(isinstance(i, dict) for i in old):
        return [i for i in copy.deepcopy(new) if i.get("$patch") != "delete"]
    out = copy.deepcopy(old)
    for item in new:
        idx = next((n for n, o in enumerate(out) if o.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append(copy.deepcopy(item))
        else:
            out[idx] = strategic_merge(out[idx], item)
    return out


def json_patch(target: Any, ops: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(target)

    def split(p: str) -> list[str]:
        return (
            [s.replace("~1", "/").replace("~0", "~") for s in p.lstrip("/").split("/")] if p else []
        )

    for op in ops:
        parts = split(op["path"])
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1] if parts else ""
        kind = op["op"]
        if kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last, None)
        elif kind == "test":
            cur = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if cur != op["value"]:
                raise HttpError(422, "Invalid", f"test operation failed at {op['path']}")
    return doc


# --------------------------------------------------------------------------- selectors
def get_path(obj: dict[str, Any], dotted: str) -> Any:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def field_match(obj: dict[str, Any], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if str(get_path(obj, k) or "") == v:
                return False
        else:
            k, v = term.split("==", 1) if "==" in term else term.split("=", 1)
            if str(get_path(obj, k) or "") != v:
                return False
    return True


def label_match(obj: dict[str, Any], selector: str) -> bool:
    labels: dict[str, str] = get_path(obj, "metadata.labels") or {}
    terms = re.findall(r"[^,(]+(?:\([^)]*\))?", selector)
    for raw in terms:
        term = raw.strip()
        if not term:
            continue
        m = re.match(r"^([\w./-]+)\s+(in|notin)\s+\((.*)\)$", term)
        if m:
            vals = {v.strip() for v in m.group(3).split(",")}
            has = m.group(1) in labels and labels[m.group(1)] in vals
            if (m.group(2) == "in") != has:
                return False
        elif "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


# --------------------------------------------------------------------------- server state
@dataclass
class Settings:
    bind: str
    port: int
    advertise: str
    cert: Path
    key: Path
    client_ca: Path
    ca_key: Path | None
    state: Path | None
    version: str
    require_cni: bool
    node_grace: float
    flavour: str = "kubeadm"
    etcd_servers: tuple[str, ...] = ()
    etcd_cafile: Path | None = None
    etcd_certfile: Path | None = None
    etcd_keyfile: Path | None = None


def make_store(s: Settings) -> storage.Store:
    """etcd when --etcd-servers is given (kubeadm; MicroK8s' dqlite stand-in), else the local
    state file."""
    if s.etcd_servers:
        from .etcd import Etcd

        client = Etcd(
            list(s.etcd_servers), ca=s.etcd_cafile, cert=s.etcd_certfile, key=s.etcd_keyfile
        )
        return storage.EtcdStore(client=client, builtin={r.plural: r.group for r in BUILTIN})
    assert s.state is not None
    return storage.LocalStore(state_file=s.state)


class Api:
    def __init__(self, s: Settings) -> None:
        self.s = s
        self.store = make_store(s)
        self.store.start()
        self.ca_pem = s.client_ca.read_bytes()
        self.started = now()
        with self.store.cond:
            for ns in SEED_NAMESPACES:
                key = ("", "namespaces", "", ns)
                if key not in self.store.objects:
                    with contextlib.suppress(HttpError):  # another API server seeded it
                        self._create_locked(
                            self.res_for("", "namespaces"),
                            "",
                            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                        )

    # ---- registry
    def resources(self) -> list[Res]:
        out = list(BUILTIN)
        for (g, plural, _ns, _name), crd in list(self.store.objects.items()):
            if g != "apiextensions.k8s.io" or plural != "customresourcedefinitions":
                continue
            spec = crd.get("spec", {})
            names = spec.get("names", {})
            for v in spec.get("versions", []):
                if not v.get("served", True):
                    continue
                out.append(
                    Res(
                        spec.get("group", ""),
                        v["name"],
                        names.get("kind", ""),
                        names.get("plural", ""),
                        spec.get("scope", "Namespaced") == "Namespaced",
                        tuple(names.get("shortNames", [])),
                        ("status",) if v.get("subresources", {}).get("status") is not None else (),
                        names.get("singular", ""),
                        tuple(names.get("categories", [])),
                    )
                )
        return out + addon_controllers.served(self.store.objects)

    def res_for(self, group: str, plural: str, version: str | None = None) -> Res:
        for r in self.resources():
            if (
                r.group == group
                and r.plural == plural
                and (version is None or r.version == version)
            ):
                return r
        raise HttpError(404, "NotFound", "the server could not find the requested resource")

    # ---- helpers
    @staticmethod
    def key(r: Res, ns: str, name: str) -> tuple[str, str, str, str]:
        return (r.group, r.plural, ns if r.namespaced else "", name)

    def _save(self, k: tuple[str, str, str, str], obj: dict[str, Any]) -> bool:
        """Controllers: write back a changed copy of a cached object (False on a conflict: the
        next tick sees the newer version)."""
        try:
            self.store.replace(k, obj, obj["metadata"]["resourceVersion"])
        except Conflict:
            return False
        return True

    def get(self, r: Res, ns: str, name: str) -> dict[str, Any]:
        obj = self.store.objects.get(self.key(r, ns, name))
        if obj is None:
            gr = f"{r.plural}.{r.group}" if r.group else r.plural
            raise HttpError(
                404,
                "NotFound",
                f'{gr} "{name}" not found',
                {"name": name, "group": r.group, "kind": r.plural},
            )
        return self.present(r, obj)

    def present(self, r: Res, obj: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        out["apiVersion"] = r.gv
        out["kind"] = r.kind
        if (
            r.plural == "configmaps"
            and obj["metadata"].get("namespace") == "kube-public"
            and obj["metadata"]["name"] == "cluster-info"
        ):
            out.setdefault("data", {}).update(
                self.jws_signatures(out.get("data", {}).get("kubeconfig", ""))
            )
        return out

    def list(self, r: Res, ns: str, fsel: str, lsel: str) -> list[dict[str, Any]]:
        items = []
        for (g, p, ons, _n), obj in sorted(self.store.objects.items()):
            if g != r.group or p != r.plural or (ns and ons != ns):
                continue
            o = self.present(r, obj)
            if fsel and not field_match(o, fsel):
                continue
            if lsel and not label_match(o, lsel):
                continue
            items.append(o)
        return items

    def _create_locked(self, r: Res, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise HttpError(
                422,
                "Invalid",
                f"{r.kind} is invalid: metadata.name: Required value: name or "
                "generateName is required",
            )
        if r.namespaced:
            ns = ns or meta.get("namespace") or "default"
            if meta.get("namespace") and meta["namespace"] != ns:
                raise HttpError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request",
                )
            meta["namespace"] = ns
            if ("", "namespaces", "", ns) not in self.store.objects:
                raise HttpError(
                    404,
                    "NotFound",
                    f'namespaces "{ns}" not found',
                    {"name": ns, "kind": "namespaces"},
                )
        else:
            meta.pop("namespace", None)
        k = self.key(r, ns, name)
        if k in self.store.objects:
            gr = f"{r.plural}.{r.group}" if r.group else r.plural
            raise HttpError(
                409,
                "AlreadyExists",
                f'{gr} "{name}" already exists',
                {"name": name, "group": r.group, "kind": r.plural},
            )
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = ts()
        meta.pop("resourceVersion", None)
        meta.setdefault("generation", 1)
        body["apiVersion"], body["kind"] = r.gv, r.kind
        self.validate(r, body)
        self.normalise(r, body)
        if r.plural == "namespaces":
            body["status"] = {"phase": "Active"}
        try:
            body = self.store.create(k, body)
        except KeyExists:
            gr = f"{r.plural}.{r.group}" if r.group else r.plural
            raise HttpError(
                409,
                "AlreadyExists",
                f'{gr} "{name}" already exists',
                {"name": name, "group": r.group, "kind": r.plural},
            ) from None
        return self.present(r, body)

    def create(self, r: Res, ns: str, body: dict[str, Any], user: User) -> dict[str, Any]:
        with self.store.cond:
            if r.plural == "certificatesigningrequests":
                body = self.sign_csr(body, user)
            return self._create_locked(r, ns, body)

    @staticmethod
    def validate(r: Res, body: dict[str, Any]) -> None:
        """The apiserver's generic object validation that clients run into in practice."""
        meta = body.get("metadata", {})
        name = str(meta.get("name", ""))
        causes = []
        checked = ("nodes", "namespaces", "configmaps", "secrets", "daemonsets", "deployments")
        if r.plural in checked and not (
            re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and len(name) <= 253
        ):
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.name",
                    "message": f'Invalid value: "{name}": a lowercase RFC 1123 subdomain '
                    "must consist of lower case alphanumeric characters, '-' or '.', and must "
                    "start and end with an alphanumeric character",
                }
            )
        total = sum(len(k) + len(str(v)) for k, v in (meta.get("annotations") or {}).items())
        if total > 262144:
            causes.append(
                {
                    "reason": "FieldValueTooLong",
                    "field": "metadata.annotations",
                    "message": "Too long: must have at most 262144 bytes",
                }
            )
        if causes:
            text = ", ".join(f"{c['field']}: {c['message']}" for c in causes)
            raise HttpError(
                422,
                "Invalid",
                f'{r.kind} "{name}" is invalid: {text}',
                {"name": name, "group": r.group, "kind": r.kind, "causes": causes},
            )

    @staticmethod
    def normalise(r: Res, body: dict[str, Any]) -> None:
        spec = body.get("spec")
        if r.group == "apps" and isinstance(
            spec, dict
        ):  # API defaulting (pkg/apis/apps/v1/defaults.go)
            if r.plural == "daemonsets":
                spec.setdefault(
                    "updateStrategy",
                    {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
                    },
                )
            elif r.plural == "deployments":
                spec.setdefault("replicas", 1)
                spec.setdefault(
                    "strategy",
                    {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
                    },
                )
                spec.setdefault("progressDeadlineSeconds", 600)
            elif r.plural == "statefulsets":
                spec.setdefault("replicas", 1)
                spec.setdefault(
                    "updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
                )
            spec.setdefault("revisionHistoryLimit", 10)
        if r.plural == "secrets" and "stringData" in body:
            data = body.setdefault("data", {})
            for k, v in body.pop("stringData").items():
                data[k] = base64.b64encode(str(v).encode()).decode()

    def update(
        self, r: Res, ns: str, name: str, new: dict[str, Any], sub: str = ""
    ) -> dict[str, Any]:
        with self.store.cond:
            k = self.key(r, ns, name)
            old = self.store.objects.get(k)
            if old is None:
                self.get(r, ns, name)  # raises NotFound
                raise AssertionError
            rv = new.get("metadata", {}).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise conflict(r.plural, name)
            merged = copy.deepcopy(new)
            meta = merged.setdefault("metadata", {})
            for f in ("uid", "creationTimestamp", "name", "namespace"):
                if f in old["metadata"]:
                    meta[f] = old["metadata"][f]
            if "status" in r.subresources:
                if sub == "status":
                    merged = {**copy.deepcopy(old), "status": merged.get("status", {})}
                else:
                    merged["status"] = copy.deepcopy(old.get("status", {}))
            if sub != "status" and merged.get("spec") != old.get("spec"):
                meta["generation"] = old["metadata"].get("generation", 1) + 1
            else:
                meta["generation"] = old["metadata"].get("generation", 1)
            self.validate(r, merged)
            self.normalise(r, merged)
            merged["apiVersion"], merged["kind"] = r.gv, r.kind
            if r.plural == "nodes":
                self.node_effective(merged)
            if _strip_rv(merged) == _strip_rv(old):
                return self.present(r, old)
            try:
                merged = self.store.replace(k, merged, old["metadata"]["resourceVersion"])
            except Conflict:
                raise conflict(r.plural, name) from None
            return self.present(r, merged)

    def delete(self, r: Res, ns: str, name: str) -> dict[str, Any]:
        with self.store.cond:
            obj = self.get(r, ns, name)
            k = self.key(r, ns, name)
            try:
                gone = self.store.delete(k, obj["metadata"]["resourceVersion"])
            except Conflict:
                raise conflict(r.plural, name) from None
            obj["metadata"]["resourceVersion"] = gone["metadata"]["resourceVersion"]
            if r.plural == "namespaces":
                for kk in [kk for kk in self.store.objects if kk[2] == name]:
                    with contextlib.suppress(Conflict):
                        self.store.delete(kk)
            return obj

    # ---- controllers
    def cni_present(self) -> bool:
        return any(
            g == "apps" and p == "daemonsets" and CNI_DAEMONSETS.search(n)
            for (g, p, _ns, n) in self.store.objects
        )

    def node_effective(self, node: dict[str, Any]) -> None:
        """What kubelet + node lifecycle controller would report for this node."""
        conds = node.setdefault("status", {}).setdefault("conditions", [])
        ready = next((c for c in conds if c.get("type") == "Ready"), None)
        if ready is None:
            return
        beat = ready.get("lastHeartbeatTime")
        stale = beat is None or (now() - parse_ts(beat)).total_seconds() > self.s.node_grace
        if stale:
            if ready.get("status") != "Unknown":
                ready.update(
                    status="Unknown",
                    reason="NodeStatusUnknown",
                    message="Kubelet stopped posting node status.",
                    lastTransitionTime=ts(),
                )
        elif ready.get("status") == "True" and self.s.require_cni and not self.cni_present():
            ready.update(
                status="False",
                reason="KubeletNotReady",
                lastTransitionTime=ts(),
                message="container runtime network not ready: NetworkReady=false "
                "reason:NetworkPluginNotReady message:Network plugin returns error: "
                "cni plugin not initialized",
            )

    def controllers(self) -> None:
        while True:
            time.sleep(1.0)
            try:
                if not self.store.leader():  # one controller manager at a time
                    continue
                with self.store.cond:
                    self._tick()
            except Unavailable:
                continue
            except Exception as e:  # a controller must survive its own bugs; log them
                common.log(f"apiserver: controller error: {e!r}")

    # ---- the endpoint reconciler (kube-apiserver's default --endpoint-reconciler-type=lease,
    # pkg/controlplane/reconcilers/lease.go): every API server, leader or not, renews a lease
    # on its advertise address every ENDPOINT_RECONCILE_S with a TTL of ENDPOINT_LEASE_TTL_S
    # and writes the addresses of the unexpired leases, port "https" = its secure port, into
    # Endpoints default/kubernetes. Upstream keeps the leases in etcd under
    # /registry/masterleases/; here they are an annotation of that object. MicroK8s workers'
    # apiserver-proxy reads the object to find every control plane.
    ENDPOINT_LEASES = "pikube.standin/master-leases"

    def endpoint_reconciler(self) -> None:
        while True:
            try:
                with self.store.cond:
                    self._reconcile_endpoints()
            except Unavailable:
                pass
            except Exception as e:  # a controller must survive its own bugs; log them
                common.log(f"apiserver: endpoint reconciler error: {e!r}")
            time.sleep(ENDPOINT_RECONCILE_S)

    def _reconcile_endpoints(self) -> None:
        r = self.res_for("", "endpoints")
        k = self.key(r, "default", "kubernetes")
        cached = self.store.objects.get(k)
        obj: dict[str, Any] = (
            copy.deepcopy(cached)
            if cached is not None
            else {"metadata": {"name": "kubernetes", "namespace": "default"}}
        )
        annotations = obj["metadata"].setdefault("annotations", {})
        try:
            leases = {
                ip: float(expiry)
                for ip, expiry in json.loads(annotations.get(self.ENDPOINT_LEASES, "{}")).items()
            }
        except (ValueError, AttributeError, TypeError):
            leases = {}
        t = time.time()
        leases = {ip: expiry for ip, expiry in leases.items() if expiry > t}
        leases[self.s.advertise] = t + ENDPOINT_LEASE_TTL_S
        annotations[self.ENDPOINT_LEASES] = json.dumps(leases, sort_keys=True)
        obj["subsets"] = [
            {
                "addresses": [{"ip": ip} for ip in sorted(leases)],
                "ports": [{"name": "https", "port": self.s.port, "protocol": "TCP"}],
            }
        ]
        if cached is None:
            with contextlib.suppress(HttpError, KeyExists, Conflict):
                self._create_locked(r, "default", obj)
        else:
            self._save(k, obj)

    def _tick(self) -> None:
        for k, cached in list(self.store.objects.items()):
            obj = copy.deepcopy(cached)
            if k[:2] == ("", "nodes"):
                self.node_effective(obj)
                if obj != cached:
                    self._save(k, obj)
            elif k[1] == "secrets" and obj.get("type") == "bootstrap.kubernetes.io/token":
                exp = obj.get("data", {}).get("expiration")
                if exp:
                    when = dt.datetime.fromisoformat(
                        base64.b64decode(exp).decode().replace("Z", "+00:00")
                    )
                    if when < now():
                        self._delete_locked(k, obj)
        self._collect_garbage()
        self._pods()
        self._workload_status()
        self._calico_default_pool()
        addon_controllers.tick(self)

    def _collect_garbage(self) -> None:
        """The garbage collector for Secrets owned by a Secret: kubeadm's "kubeadm-certs" goes
        when the bootstrap token owning it expires (the token cleaner deletes the token above).
        https://kubernetes.io/docs/concepts/architecture/garbage-collection/"""
        uids = {o["metadata"].get("uid") for o in self.store.objects.values()}
        for k, obj in list(self.store.objects.items()):
            if k[1] != "secrets":
                continue
            refs = obj["metadata"].get("ownerReferences") or []
            if refs and all(r.get("kind") == "Secret" and r.get("uid") not in uids for r in refs):
                self._delete_locked(k, obj)

    def rbac_binding_exists(self, ns: str, name: str) -> bool:
        key = ("rbac.authorization.k8s.io", "rolebindings", ns, name)
        return key in self.store.objects

    # ---- calico-node's startup step that creates the default IPv4 pool when no pool exists.
    # https://docs.tigera.io/calico/latest/reference/configure-calico-node ("Configuring the
    # default IP pool(s)"); without CALICO_IPV4POOL_CIDR a kubeadm cluster's podSubnet is used
    # (https://docs.tigera.io/archive/v3.22/getting-started/kubernetes/self-managed-onprem/onpremises),
    # else 192.168.0.0/16.
    CALICO_POOL_CRD = (
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "",
        "ippools.crd.projectcalico.org",
    )

    def _calico_default_pool(self) -> None:
        if self.CALICO_POOL_CRD not in self.store.objects or any(
            k[:2] == ("crd.projectcalico.org", "ippools") for k in self.store.objects
        ):
            return
        node_ds = self.store.objects.get(("apps", "daemonsets", "kube-system", "calico-node"))
        running = any(  # the pool is created by the first calico-node that starts
            k[:3] == ("", "pods", "kube-system")
            and any(
                ref.get("kind") == "DaemonSet" and ref.get("name") == "calico-node"
                for ref in o["metadata"].get("ownerReferences", [])
            )
            and o.get("status", {}).get("phase") == "Running"
            for k, o in self.store.objects.items()
        )
        if node_ds is None or not running:
            return
        containers = node_ds["spec"]["template"]["spec"].get("containers", [])
        node = next((c for c in containers if c.get("name") == "calico-node"), {})
        env = {e["name"]: e.get("value") for e in node.get("env", []) if "name" in e}
        if env.get("NO_DEFAULT_POOLS") == "true":
            return
        cidr = env.get("CALICO_IPV4POOL_CIDR") or self._kubeadm_pod_subnet() or "192.168.0.0/16"
        pool = {
            "apiVersion": "crd.projectcalico.org/v1",
            "kind": "IPPool",
            "metadata": {"name": "default-ipv4-ippool"},
            "spec": {
                "cidr": cidr,
                "blockSize": int(env.get("CALICO_IPV4POOL_BLOCK_SIZE") or 26),
                "ipipMode": env.get("CALICO_IPV4POOL_IPIP") or "Always",
                "vxlanMode": env.get("CALICO_IPV4POOL_VXLAN") or "Never",
                "natOutgoing": (env.get("CALICO_IPV4POOL_NAT_OUTGOING") or "true") == "true",
                "nodeSelector": env.get("CALICO_IPV4POOL_NODE_SELECTOR") or "all()",
            },
        }
        self._create_locked(self.res_for("crd.projectcalico.org", "ippools"), "", pool)

    def _kubeadm_pod_subnet(self) -> str | None:
        import yaml

        cm = self.store.objects.get(("", "configmaps", "kube-system", "kubeadm-config"))
        if cm is None:
            return None
        doc = yaml.safe_load(cm.get("data", {}).get("ClusterConfiguration", "")) or {}
        subnet = (doc.get("networking") or {}).get("podSubnet")
        return str(subnet) if subnet else None

    # ---- workloads: the DaemonSet / Deployment / StatefulSet controllers, the scheduler and
    # the kubelets' pod status, collapsed: Pods appear Running on their node, Ready while it is.
    def _nodes(self) -> list[dict[str, Any]]:
        return [o for k, o in self.store.objects.items() if k[1] == "nodes" and not k[0]]

    @staticmethod
    def _node_ready(node: dict[str, Any]) -> bool:
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in node.get("status", {}).get("conditions", [])
        )

    @staticmethod
    def _selects(node: dict[str, Any], workload: dict[str, Any]) -> bool:
        sel = workload.get("spec", {}).get("template", {}).get("spec", {}).get("nodeSelector") or {}
        labels = node["metadata"].get("labels", {})
        return all(labels.get(k) == v for k, v in sel.items())

    def _pod_body(
        self,
        wk: tuple[str, str, str, str],
        wl: dict[str, Any],
        name: str,
        node: dict[str, Any] | None,
    ) -> dict[str, Any]:
        tmpl = wl.get("spec", {}).get("template", {})
        owner_kind = {"daemonsets": "DaemonSet", "statefulsets": "StatefulSet"}.get(
            wk[1], "ReplicaSet"
        )
        owner_name = (
            wk[3]
            if owner_kind != "ReplicaSet"
            else f"{wk[3]}-{wl['metadata']['uid'][:10].replace('-', '')}"
        )
        spec = copy.deepcopy(tmpl.get("spec", {}))
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": wk[2],
                "labels": dict(tmpl.get("metadata", {}).get("labels", {})),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": owner_kind,
                        "name": owner_name,
                        "uid": wl["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": spec,
            "status": {"phase": "Pending", "conditions": [], "qosClass": "BestEffort"},
        }
        if node is not None:
            self._bind(body, node)
        return body

    def _bind(self, pod: dict[str, Any], node: dict[str, Any]) -> None:
        addrs = {a["type"]: a["address"] for a in node.get("status", {}).get("addresses", [])}
        pod["spec"]["nodeName"] = node["metadata"]["name"]
        host_ip = addrs.get("InternalIP", "")
        digest = hashlib.sha256(pod["metadata"]["name"].encode()).digest()
        pod_ip = (
            host_ip
            if pod["spec"].get("hostNetwork")
            else f"10.244.{digest[0]}.{digest[1] % 250 + 2}"
        )
        pod["status"].update(phase="Running", hostIP=host_ip, podIP=pod_ip, startTime=ts())

    def _pod_status(self, pod: dict[str, Any], node: dict[str, Any] | None) -> None:
        ready = "True" if node is not None and self._node_ready(node) else "False"
        if not pod["spec"].get("nodeName"):
            pod["status"]["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": f"0/{len(self._nodes())} nodes are available.",
                }
            ]
            return
        conds = [
            {"type": t, "status": ready if t in ("Ready", "ContainersReady") else "True"}
            for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
        ]
        started = pod["status"].get("startTime", ts())
        pod["status"]["conditions"] = conds
        pod["status"]["containerStatuses"] = [
            {
                "name": c.get("name", ""),
                "image": c.get("image", ""),
                "ready": ready == "True",
                "restartCount": 0,
                "started": ready == "True",
                "state": {"running": {"startedAt": started}},
            }
            for c in pod["spec"].get("containers", [])
        ]

    def _pods(self) -> None:
        pods_res = self.res_for("", "pods")
        nodes = {n["metadata"]["name"]: n for n in self._nodes()}
        workloads = {
            o["metadata"]["uid"]: (k, o)
            for k, o in self.store.objects.items()
            if k[0] == "apps" and k[1] in ("daemonsets", "deployments", "statefulsets")
        }
        owned: dict[str, list[tuple[tuple[str, str, str, str], dict[str, Any]]]] = {}
        for k, pod in list(self.store.objects.items()):
            if k[1] != "pods" or k[0]:
                continue
            refs = pod["metadata"].get("ownerReferences") or []
            uid = refs[0].get("uid") if refs else None
            node_name = pod["spec"].get("nodeName")
            if (uid and uid not in workloads) or (node_name and node_name not in nodes):
                self._delete_locked(k, pod)  # garbage collector / pod GC
                continue
            if uid:
                owned.setdefault(uid, []).append((k, pod))
        for uid, (wk, wl) in workloads.items():
            pods = owned.get(uid, [])
            if wk[1] == "daemonsets":
                have = {p["spec"].get("nodeName") for _k, p in pods}
                for n in nodes.values():
                    if n["metadata"]["name"] not in have and self._selects(n, wl):
                        suffix = hashlib.sha256((uid + n["metadata"]["name"]).encode()).hexdigest()[
                            :5
                        ]
                        self._create_pod(pods_res, wk, wl, f"{wk[3]}-{suffix}", n)
                continue
            want = int(wl.get("spec", {}).get("replicas", 1))
            for k, p in pods[want:]:
                self._delete_locked(k, p)
            candidates = [
                n
                for n in nodes.values()
                if self._node_ready(n)
                and not n.get("spec", {}).get("unschedulable")
                and self._selects(n, wl)
            ]
            for k, cached in pods[:want]:  # bind Pending pods once a node is available
                if not cached["spec"].get("nodeName") and candidates:
                    p = copy.deepcopy(cached)
                    self._bind(p, min(candidates, key=lambda n: self._load(n)))
                    self._save(k, p)
            for i in range(len(pods), want):
                node = min(candidates, key=lambda n: self._load(n)) if candidates else None
                name = (
                    f"{wk[3]}-{i}"
                    if wk[1] == "statefulsets"
                    else f"{wk[3]}-{uuid.uuid4().hex[:10]}-{uuid.uuid4().hex[:5]}"
                )
                self._create_pod(pods_res, wk, wl, name, node)
        for k, cached in list(self.store.objects.items()):
            if k[1] == "pods" and not k[0]:
                pod = copy.deepcopy(cached)
                self._pod_status(pod, nodes.get(pod["spec"].get("nodeName", "")))
                if pod.get("status") != cached.get("status"):
                    self._save(k, pod)

    def _load(self, node: dict[str, Any]) -> int:
        name = node["metadata"]["name"]
        return sum(
            1
            for k, p in self.store.objects.items()
            if k[1] == "pods" and p["spec"].get("nodeName") == name
        )

    def _create_pod(
        self,
        res: Res,
        wk: tuple[str, str, str, str],
        wl: dict[str, Any],
        name: str,
        node: dict[str, Any] | None,
    ) -> None:
        body = self._pod_body(wk, wl, name, node)
        self._pod_status(body, node)
        with contextlib.suppress(HttpError):
            self._create_locked(res, wk[2], body)

    def _delete_locked(self, k: tuple[str, str, str, str], obj: dict[str, Any]) -> None:
        with contextlib.suppress(Conflict):
            self.store.delete(k, obj["metadata"]["resourceVersion"])

    def _workload_status(self) -> None:
        pods_by_owner: dict[str, list[dict[str, Any]]] = {}
        for k, p in self.store.objects.items():
            if k[1] == "pods" and not k[0]:
                for ref in p["metadata"].get("ownerReferences") or []:
                    pods_by_owner.setdefault(ref.get("uid", ""), []).append(p)
        for k, cached in list(self.store.objects.items()):
            if k[0] != "apps" or k[1] not in ("daemonsets", "deployments", "statefulsets"):
                continue
            obj = copy.deepcopy(cached)
            gen = obj["metadata"].get("generation", 1)
            pods = pods_by_owner.get(obj["metadata"]["uid"], [])
            ready = sum(
                1
                for p in pods
                if any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in p["status"].get("conditions", [])
                )
            )
            scheduled = sum(1 for p in pods if p["spec"].get("nodeName"))
            if k[1] == "daemonsets":
                st: dict[str, Any] = {
                    "desiredNumberScheduled": scheduled,
                    "currentNumberScheduled": scheduled,
                    "numberReady": ready,
                    "updatedNumberScheduled": scheduled,
                    "numberAvailable": ready,
                    "numberMisscheduled": 0,
                    "observedGeneration": gen,
                }
                if scheduled - ready:
                    st["numberUnavailable"] = scheduled - ready
            else:
                st = {
                    "replicas": len(pods),
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                    "updatedReplicas": len(pods),
                    "observedGeneration": gen,
                }
                if k[1] == "deployments":
                    want = int(obj.get("spec", {}).get("replicas", 1))
                    st["conditions"] = [
                        {
                            "type": "Available",
                            "status": "True" if ready >= want else "False",
                            "reason": "MinimumReplicasAvailable"
                            if ready >= want
                            else "MinimumReplicasUnavailable",
                            "lastUpdateTime": ts(),
                            "lastTransitionTime": ts(),
                        },
                        {
                            "type": "Progressing",
                            "status": "True",
                            "reason": "NewReplicaSetAvailable",
                            "lastUpdateTime": ts(),
                            "lastTransitionTime": ts(),
                        },
                    ]
            old = {kk: v for kk, v in obj.get("status", {}).items() if kk != "conditions"}
            new = {kk: v for kk, v in st.items() if kk != "conditions"}
            if old != new:
                obj["status"] = st
                self._save(k, obj)

    # ---- bootstrap tokens
    def bootstrap_tokens(self) -> dict[str, dict[str, str]]:
        out = {}
        for (g, p, ns, _n), obj in self.store.objects.items():
            if (
                g
                or p != "secrets"
                or ns != "kube-system"
                or obj.get("type") != "bootstrap.kubernetes.io/token"
            ):
                continue
            data = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
            exp = data.get("expiration")
            if exp and dt.datetime.fromisoformat(exp.replace("Z", "+00:00")) < now():
                continue
            if "token-id" in data:
                out[data["token-id"]] = data
        return out

    def jws_signatures(self, kubeconfig: str) -> dict[str, str]:
        sigs = {}
        for tid, data in self.bootstrap_tokens().items():
            if data.get("usage-bootstrap-signing") != "true":
                continue
            sigs[f"jws-kubeconfig-{tid}"] = detached_jws(
                kubeconfig, tid, data.get("token-secret", "")
            )
        return sigs

    def sign_csr(self, body: dict[str, Any], user: User) -> dict[str, Any]:
        """csrapproving + csrsigning controllers: approve and sign kubelet client CSRs."""
        if self.s.ca_key is None:
            return body
        from . import pki

        req = base64.b64decode(body.get("spec", {}).get("request", ""))
        try:
            cert, cn, orgs = pki.sign_csr(self.ca_pem, self.s.ca_key.read_bytes(), req)
        except ValueError as e:
            raise HttpError(
                422, "Invalid", f"CertificateSigningRequest is invalid: spec.request: {e}"
            ) from e
        if not (cn.startswith("system:node:") and orgs == ["system:nodes"]):
            raise HttpError(
                403,
                "Forbidden",
                "stand-in signs only kubelet client certificates "
                "(CN=system:node:NAME, O=system:nodes)",
            )
        body.setdefault("spec", {})["username"] = user.name
        body["spec"]["groups"] = user.groups
        body["status"] = {
            "conditions": [
                {
                    "type": "Approved",
                    "status": "True",
                    "reason": "AutoApproved",
                    "message": "Auto approving kubelet client certificate after "
                    "SubjectAccessReview.",
                    "lastUpdateTime": ts(),
                    "lastTransitionTime": ts(),
                }
            ],
            "certificate": base64.b64encode(cert).decode(),
        }
        return body


def _strip_rv(o: dict[str, Any]) -> dict[str, Any]:
    c = copy.deepcopy(o)
    c.get("metadata", {}).pop("resourceVersion", None)
    return c


def detached_jws(content: str, kid: str, secret: str) -> str:
    def b64u(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    header = b64u(json.dumps({"alg": "HS256", "kid": kid}, separators=(",", ":")).encode())
    payload = b64u(content.encode())
    sig = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}..{b64u(sig)}"


@dataclass
class User:
    name: str
    groups: list[str]


# --------------------------------------------------------------------------- tables
def _cond(obj: dict[str, Any], typ: str) -> str | None:
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type") == typ:
            return str(c.get("status"))
    return None


def table_for(r: Res, items: list[dict[str, Any]], include: str, rv: str) -> dict[str, Any]:
    def age(o: dict[str, Any]) -> str:
        c = o.get("metadata", {}).get("creationTimestamp")
        return human_duration((now() - parse_ts(c)).total_seconds()) if c else "<unknown>"

    cols: list[tuple[str, str, int]] = [("Name", "string", 0)]
    rows = []
    if r.plural == "nodes":
        cols += [
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ]
    elif r.plural == "pods":
        cols += [
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ]
    elif r.plural == "daemonsets":
        cols += [
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            ("Age", "string", 0),
        ]
    elif r.plural == "deployments":
        cols += [
            ("Ready", "string", 0),
            ("Up-to-date", "string", 0),
            ("Available", "string", 0),
            ("Age", "string", 0),
        ]
    elif r.plural == "namespaces":
        cols += [("Status", "string", 0), ("Age", "string", 0)]
    elif r.plural == "services":
        cols += [
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
        ]
    elif r.plural == "configmaps":
        cols += [("Data", "integer", 0), ("Age", "string", 0)]
    elif r.plural == "secrets":
        cols += [("Type", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)]
    else:
        cols += [("Age", "string", 0)]
    for o in items:
        name = o["metadata"]["name"]
        st = o.get("status", {})
        spec = o.get("spec", {})
        if r.plural == "nodes":
            ready = _cond(o, "Ready")
            status = "Ready" if ready == "True" else ("Unknown" if ready is None else "NotReady")
            if spec.get("unschedulable"):
                status += ",SchedulingDisabled"
            roles = sorted(
                k.split("/", 1)[1]
                for k in o["metadata"].get("labels", {})
                if k.startswith("node-role.kubernetes.io/")
            )
            addrs = {a["type"]: a["address"] for a in st.get("addresses", [])}
            info = st.get("nodeInfo", {})
            cells: list[Any] = [
                name,
                status,
                ",".join(roles) or "<none>",
                age(o),
                info.get("kubeletVersion", ""),
                addrs.get("InternalIP", "<none>"),
                addrs.get("ExternalIP", "<none>"),
                info.get("osImage", ""),
                info.get("kernelVersion", ""),
                info.get("containerRuntimeVersion", ""),
            ]
        elif r.plural == "pods":
            cs = st.get("containerStatuses") or []
            total = len(spec.get("containers", [])) or len(cs)
            nready = sum(1 for c in cs if c.get("ready"))
            cells = [
                name,
                f"{nready}/{total}",
                st.get("phase", "Pending"),
                "0",
                age(o),
                st.get("podIP", "<none>"),
                spec.get("nodeName", "<none>"),
                "<none>",
                "<none>",
            ]
        elif r.plural == "daemonsets":
            sel = ",".join(
                f"{k}={v}"
                for k, v in (
                    spec.get("template", {}).get("spec", {}).get("nodeSelector") or {}
                ).items()
            )
            cells = [
                name,
                st.get("desiredNumberScheduled", 0),
                st.get("currentNumberScheduled", 0),
                st.get("numberReady", 0),
                st.get("updatedNumberScheduled", 0),
                st.get("numberAvailable", 0),
                sel or "<none>",
                age(o),
            ]
        elif r.plural == "deployments":
            cells = [
                name,
                f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
                str(st.get("updatedReplicas", 0)),
                str(st.get("availableReplicas", 0)),
                age(o),
            ]
        elif r.plural == "namespaces":
            cells = [name, st.get("phase", "Active"), age(o)]
        elif r.plural == "services":
            ports = ",".join(
                f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports", [])
            )
            cells = [
                name,
                spec.get("type", "ClusterIP"),
                spec.get("clusterIP", "<none>"),
                "<none>",
                ports or "<none>",
                age(o),
            ]
        elif r.plural == "configmaps":
            cells = [
                name,
                len(o.get("data", {}) or {}) + len(o.get("binaryData", {}) or {}),
                age(o),
            ]
        elif r.plural == "secrets":
            cells = [name, o.get("type", "Opaque"), len(o.get("data", {}) or {}), age(o)]
        else:
            cells = [name, age(o)]
        if include == "Object":
            ref: dict[str, Any] = o
        elif include == "None":
            ref = {}
        else:
            ref = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"],
            }
        row: dict[str, Any] = {"cells": cells}
        if ref:
            row["object"] = ref
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": [
            {
                "name": n,
                "type": t,
                "format": "name" if n == "Name" else "",
                "description": n,
                "priority": p,
            }
            for n, t, p in cols
        ],
        "rows": rows,
    }


# --------------------------------------------------------------------------- HTTP
OPENAPI_V2_PB = b"\n\x032.0"  # gnostic openapi_v2.Document{swagger: "2.0"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver-standin"
    api: Api

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("PIKUBE_STANDIN_APISERVER_LOG"):
            super().log_message(format, *args)

    # ---- plumbing
    def send_json(self, code: int, obj: Any, ctype: str = "application/json") -> None:
        raw = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)

    def send_raw(self, code: int, raw: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def read_body(self) -> bytes:
        """The request's body, read once (every request, whatever its method, so that a
        keep-alive connection stays framed: kubectl sends DeleteOptions with DELETE)."""
        if not hasattr(self, "_raw_body"):
            n = int(self.headers.get("Content-Length") or 0)
            self._raw_body = self.rfile.read(n) if n > 0 else b""
        return self._raw_body

    def body(self) -> Any:
        raw = self.read_body()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            import yaml

            return yaml.safe_load(raw)

    def user(self) -> User:
        cert = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        if cert:
            subj = {k: v for rdn in cert.get("subject", ()) for k, v in rdn}
            groups = [
                v for rdn in cert.get("subject", ()) for k, v in rdn if k == "organizationName"
            ]
            return User(str(subj.get("commonName", "")), [*groups, "system:authenticated"])
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            tok = auth[7:].strip()
            m = re.fullmatch(r"([a-z0-9]{6})\.([a-z0-9]{16})", tok)
            if m:
                data = self.api.bootstrap_tokens().get(m.group(1))
                if (
                    data
                    and hmac.compare_digest(data.get("token-secret", ""), m.group(2))
                    and data.get("usage-bootstrap-authentication") == "true"
                ):
                    extra = [g for g in data.get("auth-extra-groups", "").split(",") if g]
                    return User(
                        f"system:bootstrap:{m.group(1)}",
                        ["system:bootstrappers", *extra, "system:authenticated"],
                    )
            raise HttpError(401, "Unauthorized", "Unauthorized")
        return User("system:anonymous", ["system:unauthenticated"])

    def authorize(self, user: User, verb: str, r: Res | None, ns: str, name: str, url: str) -> None:
        if {"system:masters", "kubeadm:cluster-admins", "system:nodes"} & set(user.groups):
            return
        if user.name.startswith("system:bootstrap:"):
            allowed = (
                (
                    r is not None
                    and r.plural == "certificatesigningrequests"
                    and verb in ("create", "get", "watch", "list")
                )
                or (r is not None and r.plural == "nodes" and verb == "get")
                or (
                    r is not None
                    and r.plural == "configmaps"
                    and verb == "get"
                    and ns in ("kube-system", "kube-public")
                )
                or r is None
                or (
                    # kubeadm's Role/RoleBinding "kubeadm:get-kubeadm-certs" (upload-certs) let
                    # the bootstrap group read that one Secret: without them, 403 as with RBAC.
                    r is not None
                    and r.plural == "secrets"
                    and verb == "get"
                    and ns == "kube-system"
                    and name == "kubeadm-certs"
                    and "system:bootstrappers:kubeadm:default-node-token" in user.groups
                    and self.api.rbac_binding_exists("kube-system", "kubeadm:get-kubeadm-certs")
                )
            )
            if allowed:
                return
        if r is None and url.split("?")[0] in ("/version", "/healthz", "/readyz", "/livez"):
            return
        if (
            r is not None
            and r.plural == "configmaps"
            and ns == "kube-public"
            and name == "cluster-info"
            and verb == "get"
        ):
            return
        if r is None and user.name != "system:anonymous":
            return
        what = f'resource "{r.plural}" in API group "{r.group}"' if r else f'path "{url}"'
        scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
        raise HttpError(
            403,
            "Forbidden",
            f"{r.plural if r else 'forbidden'}"
            f"{' ' + repr(name).replace(chr(39), chr(34)) if name else ''} is forbidden: "
            f'User "{user.name}" cannot {verb} {what} {scope}',
        )

    # ---- dispatch
    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def do_PATCH(self) -> None:
        self.dispatch("PATCH")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def dispatch(self, method: str) -> None:
        if hasattr(self, "_raw_body"):  # the handler object serves the whole connection
            del self._raw_body
        try:
            self.read_body()
            try:
                self.api.store.sync()  # consistent reads: the cache has caught up with etcd
            except Unavailable as e:
                if urllib.parse.urlsplit(self.path).path.rstrip("/") in HEALTH:
                    self.send_raw(
                        500,
                        b"[+]ping ok\n[-]etcd failed: reason withheld\nhealthz check failed\n",
                        "text/plain; charset=utf-8",
                    )
                    return
                raise HttpError(500, "InternalError", str(e)) from None
            self.route(method)
        except HttpError as e:
            self.send_json(e.code, e.body)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        except Exception as e:
            common.log(f"apiserver: internal error on {method} {self.path}: {e!r}")
            self.send_json(500, status_obj(500, "InternalError", f"Internal error occurred: {e}"))

    def route(self, method: str) -> None:
        u = urllib.parse.urlsplit(self.path)
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(u.query).items()}
        p = u.path.rstrip("/") or "/"
        user = self.user()
        api = self.api
        if p in (
            *HEALTH,
            "/version",
            "/api",
            "/apis",
            "/openapi/v2",
        ) or p.startswith(("/readyz/", "/livez/", "/healthz/")):
            self.authorize(user, "get", None, "", "", p)
            if p == "/version":
                maj, minor = api.s.version.lstrip("v").split(".")[:2]
                self.send_json(
                    200,
                    {
                        "major": maj,
                        "minor": minor,
                        "gitVersion": api.s.version,
                        "gitCommit": "0" * 40,
                        "gitTreeState": "clean",
                        "buildDate": "2025-01-01T00:00:00Z",
                        "goVersion": "go1.22",
                        "compiler": "gc",
                        "platform": "linux/amd64",
                    },
                )
            elif p == "/api":
                self.send_json(
                    200,
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [
                            {
                                "clientCIDR": "0.0.0.0/0",
                                "serverAddress": f"{api.s.advertise}:{api.s.port}",
                            }
                        ],
                    },
                )
            elif p == "/apis":
                self.send_json(200, self.group_list())
            elif p == "/openapi/v2":
                self.send_raw(200, OPENAPI_V2_PB, "application/octet-stream")
            elif "verbose" in q:
                self.send_raw(
                    200,
                    f"[+]ping ok\n[+]etcd ok\n{p.strip('/')} check passed\n".encode(),
                    "text/plain",
                )
            else:
                self.send_raw(200, b"ok", "text/plain; charset=utf-8")
            return
        parts = [urllib.parse.unquote(x) for x in p.strip("/").split("/")]
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        elif parts[0] == "apis" and len(parts) == 2:
            self.authorize(user, "get", None, "", "", p)
            g = next((x for x in self.group_list()["groups"] if x["name"] == parts[1]), None)
            if g is None:
                raise HttpError(404, "NotFound", "the server could not find the requested resource")
            self.send_json(200, {"kind": "APIGroup", "apiVersion": "v1", **g})
            return
        else:
            raise HttpError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            self.authorize(user, "get", None, "", "", p)
            self.send_json(200, self.resource_list(group, version))
            return
        ns = ""
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            ns, rest = rest[1], rest[2:]
        plural, name, sub = (
            rest[0],
            rest[1] if len(rest) > 1 else "",
            rest[2] if len(rest) > 2 else "",
        )
        r = api.res_for(group, plural, version)
        verb = {
            "GET": "get" if name else ("watch" if q.get("watch") in ("true", "1") else "list"),
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }[method]
        self.authorize(user, verb, r, ns, name, p)
        if method == "GET" and not name:
            if verb == "watch":
                self.watch(r, ns, q)
            else:
                self.list_(r, ns, q)
        elif method == "GET":
            if sub not in ("", "status"):
                raise HttpError(404, "NotFound", "the server could not find the requested resource")
            obj = api.get(r, ns, name)
            self.respond_obj(r, obj, q)
        elif method == "POST":
            body = self.body() or {}
            if name and sub == "eviction":
                api.delete(
                    self.api.res_for("", "pods"), ns, name
                )  # no PodDisruptionBudgets modelled
                self.send_json(201, status_obj(201, "", "", None) | {"status": "Success"})
                return
            if name:
                raise HttpError(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            if q.get("dryRun"):
                self.send_json(201, body)
                return
            self.send_json(201, api.create(r, ns, body, user))
        elif method == "PUT":
            self.send_json(200, api.update(r, ns, name, self.body() or {}, sub))
        elif method == "PATCH":
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            patch = self.body()
            # kube-apiserver applies a patch inside the storage's GuaranteedUpdate
            # (k8s.io/apiserver pkg/storage/etcd3/store.go): when etcd's compare-and-swap
            # fails because the object moved on (a kubelet's status write landing between the
            # read and the write), it reads the object again and re-applies the patch. Only a
            # patch that names a resourceVersion can end in a 409 Conflict.
            deadline = time.monotonic() + PATCH_RETRY_S
            while True:
                try:
                    self.patch_once(api, r, ns, name, sub, q, ctype, patch)
                    return
                except HttpError as e:
                    if e.code != 409 or names_version(patch) or time.monotonic() > deadline:
                        raise
                api.store.sync(timeout=5.0)
        elif method == "DELETE":
            if not name:
                raise HttpError(
                    405, "MethodNotAllowed", "deletecollection is not supported by the stand-in"
                )
            obj = api.delete(r, ns, name)
            self.send_json(
                200,
                status_obj(
                    200,
                    "",
                    "",
                    {
                        "name": name,
                        "group": r.group,
                        "kind": r.plural,
                        "uid": obj["metadata"].get("uid"),
                    },
                ),
            )

    def wants_table(self) -> bool:
        return "as=Table" in (self.headers.get("Accept") or "")

    def patch_once(
        self, api: Api, r: Res, ns: str, name: str, sub: str, q: dict[str, str], ctype: str,
        patch: Any,
    ) -> None:  # fmt: skip
        """Apply ``patch`` to the object as stored now and write it (409 if it moved on)."""
        with api.store.cond:
            cur = api.get(r, ns, name)
            if ctype == "application/merge-patch+json":
                new = merge_patch(cur, patch)
            elif ctype == "application/strategic-merge-patch+json":
                new = strategic_merge(cur, patch)
            elif ctype == "application/json-patch+json":
                new = json_patch(cur, patch)
            else:
                raise HttpError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown "
                    f"format - accepted media types include: application/json-patch+json, "
                    f"application/merge-patch+json, application/strategic-merge-patch+json "
                    f"(got {ctype!r})",
                )
            new.setdefault("metadata", {})["resourceVersion"] = cur["metadata"]["resourceVersion"]
            if q.get("dryRun"):
                self.send_json(200, new)
                return
            self.send_json(200, api.update(r, ns, name, new, sub))

    def respond_obj(self, r: Res, obj: dict[str, Any], q: dict[str, str]) -> None:
        if self.wants_table():
            self.send_json(
                200,
                table_for(
                    r, [obj], q.get("includeObject", "Metadata"), obj["metadata"]["resourceVersion"]
                ),
            )
        else:
            self.send_json(200, obj)

    def list_(self, r: Res, ns: str, q: dict[str, str]) -> None:
        with self.api.store.cond:
            items = self.api.list(r, ns, q.get("fieldSelector", ""), q.get("labelSelector", ""))
            rv = str(self.api.store.rv)
        if self.wants_table():
            self.send_json(200, table_for(r, items, q.get("includeObject", "Metadata"), rv))
            return
        self.send_json(
            200,
            {
                "kind": f"{r.kind}List",
                "apiVersion": r.gv,
                "metadata": {"resourceVersion": rv},
                "items": items,
            },
        )

    def watch(self, r: Res, ns: str, q: dict[str, str]) -> None:
        fsel, lsel = q.get("fieldSelector", ""), q.get("labelSelector", "")
        timeout = float(q.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        start_rv = q.get("resourceVersion") or "0"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        store = self.api.store

        def send(typ: str, obj: dict[str, Any]) -> None:
            obj = self.api.present(r, obj)
            raw = json.dumps({"type": typ, "object": obj}).encode() + b"\n"
            self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            self.wfile.flush()

        def matches(k: tuple[str, str, str, str], obj: dict[str, Any]) -> bool:
            return (
                k[0] == r.group
                and k[1] == r.plural
                and (not ns or k[2] == ns)
                and (not fsel or field_match(obj, fsel))
                and (not lsel or label_match(obj, lsel))
            )

        with store.cond:
            if start_rv == "0":
                pending = [("ADDED", o) for o in self.api.list(r, ns, fsel, lsel)]
                last = store.rv
            else:
                last = int(start_rv)
                pending = [
                    (e.type, e.obj) for e in store.events if e.rv > last and matches(e.key, e.obj)
                ]
                last = store.rv
        try:
            for typ, obj in pending:
                send(typ, obj)
            while time.monotonic() < deadline:
                with store.cond:
                    store.cond.wait(timeout=1.0)
                    new = [
                        (e.type, e.obj)
                        for e in store.events
                        if e.rv > last and matches(e.key, e.obj)
                    ]
                    last = store.rv
                for typ, obj in new:
                    send(typ, obj)
                readable, _, _ = select.select([self.connection], [], [], 0)
                if readable:  # the client closed the watch
                    return
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            return
        finally:
            self.close_connection = True

    # ---- discovery documents
    def group_list(self) -> dict[str, Any]:
        groups: dict[str, list[str]] = {}
        for r in self.api.resources():
            if r.group:
                groups.setdefault(r.group, [])
                if r.version not in groups[r.group]:
                    groups[r.group].append(r.version)
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                    "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                }
                for g, vs in groups.items()
            ],
        }

    def resource_list(self, group: str, version: str) -> dict[str, Any]:
        rs = [r for r in self.api.resources() if r.group == group and r.version == version]
        if not rs:
            raise HttpError(404, "NotFound", "the server could not find the requested resource")
        out: list[dict[str, Any]] = []
        for r in rs:
            entry: dict[str, Any] = {
                "name": r.plural,
                "singularName": r.singular or r.kind.lower(),
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": VERBS,
            }
            if r.short:
                entry["shortNames"] = list(r.short)
            if r.categories:
                entry["categories"] = list(r.categories)
            out.append(entry)
            for sub in r.subresources:
                kind = {"eviction": "Eviction", "scale": "Scale", "token": "TokenRequest"}.get(
                    sub, r.kind
                )
                sg = {"eviction": "policy"}.get(sub)
                e2: dict[str, Any] = {
                    "name": f"{r.plural}/{sub}",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": kind,
                    "verbs": ["create"]
                    if sub in ("eviction", "token")
                    else ["get", "patch", "update"],
                }
                if sg:
                    e2["group"], e2["version"] = sg, "v1"
                out.append(e2)
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": out,
        }


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


# --------------------------------------------------------------------------- startup
def flags_from_manifest(p: Path) -> list[str]:
    import yaml

    doc = yaml.safe_load(p.read_text())
    cmd = doc["spec"]["containers"][0]["command"]
    return [a for a in cmd[1:] if a.startswith("--")]


def flags_from_args_file(p: Path) -> list[str]:
    out = []
    for line in p.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out += shlex.split(line)
    return out


def parse(argv: list[str]) -> Settings:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--from-manifest")
    pre.add_argument("--from-args-file")
    ns0, rest = pre.parse_known_args(argv)
    flags: list[str] = []
    if ns0.from_manifest:
        flags += flags_from_manifest(Path(ns0.from_manifest))
    if ns0.from_args_file:
        flags += flags_from_args_file(Path(ns0.from_args_file))
    flags += rest
    ap = argparse.ArgumentParser(prog="kube-apiserver (pikube stand-in)")
    ap.add_argument("--advertise-address", default="127.0.0.1")
    ap.add_argument("--bind-address", default="0.0.0.0")  # noqa: S104 - kube-apiserver's default
    ap.add_argument("--secure-port", type=int, default=6443)
    ap.add_argument("--tls-cert-file", required=True)
    ap.add_argument("--tls-private-key-file", required=True)
    ap.add_argument("--client-ca-file", required=True)
    ap.add_argument("--standin-signing-key-file", default="")
    ap.add_argument("--standin-state-file", default="")
    ap.add_argument("--etcd-servers", default="")
    ap.add_argument("--etcd-cafile")
    ap.add_argument("--etcd-certfile")
    ap.add_argument("--etcd-keyfile")
    ap.add_argument("--standin-version", default="v1.31.13")
    ap.add_argument("--standin-require-cni", default="true")
    ap.add_argument("--standin-flavour", default="kubeadm")
    a, _unknown = ap.parse_known_args(
        flags
    )  # real kube-apiserver flags we do not model are accepted
    return Settings(
        bind=a.bind_address,
        port=a.secure_port,
        advertise=a.advertise_address,
        cert=Path(a.tls_cert_file),
        key=Path(a.tls_private_key_file),
        client_ca=Path(a.client_ca_file),
        ca_key=Path(a.standin_signing_key_file) if a.standin_signing_key_file else None,
        state=Path(a.standin_state_file) if a.standin_state_file else None,
        version=a.standin_version,
        require_cni=a.standin_require_cni.lower() == "true",
        node_grace=float(common.env("PIKUBE_STANDIN_NODE_GRACE", "30")),
        flavour=a.standin_flavour,
        etcd_servers=tuple(filter(None, a.etcd_servers.split(","))),
        etcd_cafile=Path(a.etcd_cafile) if a.etcd_cafile else None,
        etcd_certfile=Path(a.etcd_certfile) if a.etcd_certfile else None,
        etcd_keyfile=Path(a.etcd_keyfile) if a.etcd_keyfile else None,
    )


def make_server(s: Settings) -> Server:
    api = Api(s)
    handler = type("BoundHandler", (Handler,), {"api": api})
    srv = Server((s.bind, s.port), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(s.cert), str(s.key))
    ctx.load_verify_locations(str(s.client_ca))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=api.controllers, daemon=True).start()
    threading.Thread(target=api.endpoint_reconciler, daemon=True).start()
    return srv


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        manifest = common.path("/etc/kubernetes/manifests/kube-apiserver.yaml")
        args = ["--from-manifest", str(manifest)]
    s = parse(args)
    common.start_watchdog()
    srv = make_server(s)
    common.log(
        f"kube-apiserver stand-in serving on https://{s.bind}:{s.port} (version {s.version})"
    )
    with contextlib.suppress(KeyboardInterrupt):
        srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
