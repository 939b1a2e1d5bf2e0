"""The module pikube_daemonset_ready decides which nodes a pod network (or an addon's
DaemonSet) is still waited for on: the nodes of the run and every Ready node, never a
registered node that is down and not in the run; a pod counts once it is Ready and runs the
DaemonSet's current template, as upstream's DaemonSet controller decides it."""

from __future__ import annotations

from typing import Any

from tests.cni import plugin_module

ready = plugin_module("pikube_daemonset_ready")

UID = "ds-uid"


def daemonset(generation: int | None = None) -> dict[str, Any]:
    annotations = {} if generation is None else {ready.TEMPLATE_GENERATION: str(generation)}
    return {"metadata": {"name": "kube-flannel-ds", "uid": UID, "annotations": annotations}}


def node(name: str, is_ready: bool) -> dict[str, Any]:
    status = "True" if is_ready else "Unknown"
    return {
        "metadata": {"name": name},
        "status": {"conditions": [{"type": "Ready", "status": status}]},
    }


def pod(
    name: str, on: str, is_ready: bool, labels: dict[str, str] | None = None, owner: str = UID
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}, "ownerReferences": [{"uid": owner}]},
        "spec": {"nodeName": on},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if is_ready else "False"}],
            "containerStatuses": [] if is_ready else [
                {"name": "kube-flannel", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ],
        },
    }  # fmt: skip


def test_a_registered_node_that_is_down_and_not_in_the_run_is_not_waited_for() -> None:
    nodes = [node("node-1", True), node("node-2", True), node("node-3", False)]
    pods = [pod("a", "node-1", True), pod("b", "node-2", True), pod("c", "node-3", False)]
    waiting, done, skipped = ready.waiting_for(daemonset(), pods, nodes, ["node-1", "node-2"])
    assert (waiting, done, skipped) == ({}, ["node-1", "node-2"], ["node-3"])


def test_a_node_of_the_run_is_waited_for_while_it_is_not_ready() -> None:
    # A fresh control plane is NotReady until its pod network runs on it.
    nodes = [node("node-1", False)]
    waiting, _, skipped = ready.waiting_for(daemonset(), [], nodes, ["node-1"])
    assert waiting == {"node-1": "no pod scheduled yet"} and skipped == []
    pods = [pod("a", "node-1", False)]
    waiting, _, _ = ready.waiting_for(daemonset(), pods, nodes, ["node-1"])
    assert waiting == {
        "node-1": "pod a not Ready (container kube-flannel waiting: CrashLoopBackOff)"
    }


def test_a_ready_node_outside_the_run_is_still_waited_for() -> None:
    nodes = [node("node-1", True), node("node-2", True)]
    pods = [pod("a", "node-1", True), pod("b", "node-2", False)]
    waiting, done, _ = ready.waiting_for(daemonset(), pods, nodes, ["node-1"])
    assert list(waiting) == ["node-2"] and done == ["node-1"]


def test_a_ready_pod_of_an_older_template_generation_does_not_count() -> None:
    nodes = [node("node-1", True)]
    old = [pod("a", "node-1", True, {ready.POD_TEMPLATE_GENERATION: "1"})]
    waiting, _, _ = ready.waiting_for(daemonset(generation=2), old, nodes, ["node-1"])
    assert waiting == {"node-1": "pod a runs an older template"}
    new = [pod("b", "node-1", True, {ready.POD_TEMPLATE_GENERATION: "2"})]
    assert ready.waiting_for(daemonset(generation=2), new, nodes, ["node-1"])[0] == {}


def test_the_newest_controller_revision_hash_makes_a_pod_current() -> None:
    def revision(number: int, digest: str, owner: str = UID) -> dict[str, Any]:
        labels = {ready.REVISION_HASH: digest}
        return {
            "revision": number,
            "metadata": {"labels": labels, "ownerReferences": [{"uid": owner}]},
        }

    revisions = [revision(1, "old"), revision(3, "new"), revision(9, "other", owner="x")]
    newest = ready.newest_revision_hash(daemonset(), revisions)
    assert newest == "new"
    nodes = [node("node-1", True)]
    stale = [pod("a", "node-1", True, {ready.REVISION_HASH: "old"})]
    assert list(ready.waiting_for(daemonset(), stale, nodes, [], newest)[0]) == ["node-1"]
    fresh = [pod("a", "node-1", True, {ready.REVISION_HASH: "new"})]
    assert ready.waiting_for(daemonset(), fresh, nodes, [], newest)[0] == {}


def test_pods_of_another_owner_or_being_deleted_do_not_count() -> None:
    nodes = [node("node-1", True)]
    foreign = pod("a", "node-1", True, owner="someone-else")
    leaving = pod("b", "node-1", True)
    leaving["metadata"]["deletionTimestamp"] = "2026-12-07T00:00:00Z"
    waiting, _, _ = ready.waiting_for(daemonset(), [foreign, leaving], nodes, [])
    assert waiting == {"node-1": "no pod scheduled yet"}
