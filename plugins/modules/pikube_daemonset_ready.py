"""Wait until a DaemonSet runs, up to date and Ready, on the nodes that matter to this run.

``kubectl rollout status daemonset/...`` waits for every node the DaemonSet is scheduled on. A
registered Pi that is powered off keeps its pod there, not Ready, for ever: a run limited to
the Pis that are up (``pikube build`` with a card that never booted, ``up`` with a worker
unplugged) would wait out the whole timeout and then fail on the control plane. This module
waits for the pod on each node of the run (O(nodes), which must become Ready even while their
node is not yet Ready, as a fresh control plane waits for its pod network) and on every other
node that is Ready now; a node that is not Ready and not in the run is left out, by name.

A pod is up to date as upstream's DaemonSet controller decides it (pkg/controller/daemon/util
``IsPodUpdated``): its ``pod-template-generation`` label equals the DaemonSet's template
generation (annotation ``deprecated.daemonset.template.generation``), or its
``controller-revision-hash`` equals the DaemonSet's newest ControllerRevision; when the API
server reports neither, Ready is enough.

Runs where kubectl and the admin kubeconfig are (the bootstrap control plane). Read-only:
changes nothing, so it reports ok, also in check mode.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: pikube_daemonset_ready
short_description: Wait for a DaemonSet's pods on the nodes of this run (and the Ready others)
description:
  - Polls the DaemonSet, its pods and the nodes with kubectl until the pod on each node of
    O(nodes), and on every other node that is Ready, is up to date and Ready.
  - A registered node that is not Ready and not in O(nodes) is not waited for; it is returned
    in RV(skipped).
  - Fails after O(timeout) seconds naming each node still waited for and why.
options:
  kubeconfig:
    description: The kubeconfig kubectl uses.
    type: path
    required: true
  namespace:
    description: The DaemonSet's namespace.
    type: str
    required: true
  name:
    description: The DaemonSet's name.
    type: str
    required: true
  nodes:
    description: The nodes of this run (their Kubernetes node names), waited for even while
      they are not Ready; those not registered yet are not waited for.
    type: list
    elements: str
    default: []
  timeout:
    description: Seconds to wait before failing.
    type: int
    default: 600
  interval:
    description: Seconds between two polls.
    type: int
    default: 2
author: pikube
"""

RETURN = r"""
ready:
  description: The nodes whose pod is up to date and Ready.
  returned: success
  type: list
  elements: str
skipped:
  description: Registered nodes neither Ready nor in O(nodes), not waited for.
  returned: success
  type: list
  elements: str
"""

TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"  # annotation on the DaemonSet
POD_TEMPLATE_GENERATION = "pod-template-generation"  # label on its pods
REVISION_HASH = "controller-revision-hash"  # label on its pods and ControllerRevisions


def _condition(obj: dict[str, Any], kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in obj.get("status", {}).get("conditions") or []
    )


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def newest_revision_hash(daemonset: dict[str, Any], revisions: list[dict[str, Any]]) -> str:
    """The ``controller-revision-hash`` of the DaemonSet's newest ControllerRevision, or ""."""
    uid = daemonset["metadata"].get("uid", "")
    owned = [r for r in revisions if _owned_by(r, uid)]
    if not owned:
        return ""
    newest = max(owned, key=lambda r: int(r.get("revision", 0)))
    return str((newest["metadata"].get("labels") or {}).get(REVISION_HASH, ""))


def is_updated(pod: dict[str, Any], daemonset: dict[str, Any], revision_hash: str) -> bool:
    """Whether the pod runs the DaemonSet's current template (upstream's IsPodUpdated)."""
    labels = pod["metadata"].get("labels") or {}
    generation = (daemonset["metadata"].get("annotations") or {}).get(TEMPLATE_GENERATION)
    if generation is None and not revision_hash:
        return True  # the API server reports no revision: Ready is all that can be asked
    if generation is not None and labels.get(POD_TEMPLATE_GENERATION) == str(generation):
        return True
    return bool(revision_hash) and labels.get(REVISION_HASH) == revision_hash


def waiting_for(
    daemonset: dict[str, Any],
    pods: list[dict[str, Any]],
    nodes: list[dict[str, Any]],
    run_nodes: list[str],
    revision_hash: str = "",
) -> tuple[dict[str, str], list[str], list[str]]:
    """(node -> why it is still waited for, the nodes done, the nodes not waited for)."""
    uid = daemonset["metadata"].get("uid", "")
    by_node: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        if _owned_by(pod, uid) and not pod["metadata"].get("deletionTimestamp"):
            by_node.setdefault(pod.get("spec", {}).get("nodeName", ""), []).append(pod)
    waiting: dict[str, str] = {}
    ready: list[str] = []
    skipped: list[str] = []
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        name = node["metadata"]["name"]
        if name not in run_nodes and not _condition(node, "Ready"):
            skipped.append(name)
            continue
        on_node = by_node.get(name, [])
        current = [p for p in on_node if is_updated(p, daemonset, revision_hash)]
        if any(_condition(p, "Ready") for p in current):
            ready.append(name)
        elif not on_node:
            waiting[name] = "no pod scheduled yet"
        elif not current:
            waiting[name] = f"pod {on_node[0]['metadata']['name']} runs an older template"
        else:
            waiting[name] = f"pod {current[0]['metadata']['name']} not Ready ({_why(current[0])})"
    return waiting, ready, skipped


def _why(pod: dict[str, Any]) -> str:
    status = pod.get("status", {})
    for container in status.get("initContainerStatuses", []) + status.get("containerStatuses", []):
        for state in ("waiting", "terminated"):
            detail = (container.get("state") or {}).get(state)
            if detail and detail.get("reason"):
                return f"container {container.get('name', '?')} {state}: {detail['reason']}"
    return f"phase {status.get('phase', 'unknown')}"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "kubeconfig": {"type": "path", "required": True},
            "namespace": {"type": "str", "required": True},
            "name": {"type": "str", "required": True},
            "nodes": {"type": "list", "elements": "str", "default": []},
            "timeout": {"type": "int", "default": 600},
            "interval": {"type": "int", "default": 2},
        },
        supports_check_mode=True,
    )
    p = module.params
    kubectl = ["kubectl", "--kubeconfig", p["kubeconfig"]]

    def read(*args: str) -> dict[str, Any]:
        rc, out, err = module.run_command([*kubectl, *args, "--output", "json"])
        if rc != 0:
            module.fail_json(msg=f"kubectl {' '.join(args)} failed: {err.strip() or out.strip()}")
        return dict(json.loads(out))

    deadline = time.monotonic() + p["timeout"]
    while True:
        daemonset = read("get", "daemonset", p["name"], "--namespace", p["namespace"])
        selector = (daemonset.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        pods = read("get", "pods", "--namespace", p["namespace"], "--selector", label_selector)
        revisions = read(
            "get", "controllerrevisions", "--namespace", p["namespace"],
            "--selector", label_selector,
        )  # fmt: skip
        nodes = read("get", "nodes")
        waiting, ready, skipped = waiting_for(
            daemonset,
            pods.get("items", []),
            nodes.get("items", []),
            p["nodes"],
            newest_revision_hash(daemonset, revisions.get("items", [])),
        )
        if not waiting:
            module.exit_json(changed=False, ready=ready, skipped=skipped)
        if time.monotonic() >= deadline:
            module.fail_json(
                msg=(
                    f"daemonset {p['namespace']}/{p['name']} is not running on every node after "
                    f"{p['timeout']} s: "
                    + "; ".join(f"{node}: {why}" for node, why in sorted(waiting.items()))
                    + (f" (not waited for, not Ready: {', '.join(skipped)})" if skipped else "")
                ),
                ready=ready,
                skipped=skipped,
            )
        time.sleep(p["interval"])


if __name__ == "__main__":
    main()
