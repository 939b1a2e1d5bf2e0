"""MicroK8s' datastore stand-in: an etcd cluster across the full members, in dqlite's place.

Upstream (canonical/microk8s v1.31, 9029c514): every MicroK8s node that is not a worker runs
k8s-dqlite (kine on dqlite, a Raft database) as its API server's storage, even alone;
`microk8s join` without `--worker` adds the node to the dqlite cluster
(scripts/wrappers/join.py join_dqlite_master_node -> update_dqlite: the cluster's voters and
this node's ``Address`` IP:19001 into ``var/kubernetes/backend/init.yaml``, then
k8s-dqlite restarts and the API server starts on it), so every full member serves the same
API state. dqlite keeps three voters, then stand-bys, then spares (go-dqlite app roles);
`microk8s status` lists them (common/utils.py get_dqlite_info: role 0 voter, 1 standby,
2 spare) and says ``high-availability: yes`` once there are three voters
(scripts/wrappers/status.py ha_cluster_formed). `remove-node --force` drops a member
(remove_node.py remove_dqlite_node), `leave` takes this node out (leave.py).

Deviation: dqlite cannot run here (no snap and no Debian dqlite server). Debian's etcd is a
Raft database too, and MicroK8s' own API server runs on etcd when told so (join.py:
``etcd_servers``), so the stand-in runs etcd where k8s-dqlite runs, as
``snap.microk8s.daemon-k8s-dqlite``: peers on dqlite's port 19001, clients on kine's port
12379 of the node's loopback (the node's bind address in host tests), one etcd member per full
member, the API emulator storing its state in it (the etcd storage layer the kubeadm
stand-in's stacked etcd uses). Members' roles follow join order (the first three voters,
the next three stand-bys, then spares), not dqlite's health-driven reassignment; peer traffic
is plain HTTP (dqlite's uses TLS with the shared cluster.crt).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from . import common
from .etcd import Etcd, EtcdError, etcd_binary, supervise

T = TypeVar("T")

UNIT = "snap.microk8s.daemon-k8s-dqlite"
# go-dqlite app defaults (app/options.go WithVoters 3, WithStandBys 3): the roles by join order.
VOTERS = 3
STANDBYS = 3
# Where the join order lives in the datastore (dqlite keeps roles in its Raft configuration).
ORDER_KEY = "/pikube-standin/dqlite/members"


def data() -> Path:
    return common.path("/var/snap/microk8s/current")


def backend() -> Path:
    return data() / "var/kubernetes/backend"


def peer_port() -> int:
    return int(common.env("PIKUBE_STANDIN_MICROK8S_DQLITE_PORT", "19001"))


def client_port() -> int:
    return int(common.env("PIKUBE_STANDIN_MICROK8S_KINE_PORT", "12379"))


def client_host() -> str:
    bind = common.env("PIKUBE_STANDIN_BIND_ADDRESS", "0.0.0.0")  # noqa: S104
    return "127.0.0.1" if bind == "0.0.0.0" else bind  # noqa: S104


def client_url() -> str:
    return f"http://{client_host()}:{client_port()}"


def address(ip: str | None = None) -> str:
    """A member's dqlite address, IP:19001 (info.yaml ``Address``)."""
    return f"{ip or common.default_ip()}:{peer_port()}"


def client() -> Etcd:
    return Etcd([client_url()], timeout=5)


def read_yaml(p: Path) -> dict[str, Any]:
    import yaml

    return (yaml.safe_load(p.read_text()) or {}) if p.exists() else {}


def write_init(voters: list[str], initial_cluster: str) -> None:
    """update_dqlite(): init.yaml with the cluster's voters and this node's address; the
    stand-in adds etcd's --initial-cluster for the member the cluster agent added."""
    import yaml

    common.write_file(
        backend() / "init.yaml",
        yaml.safe_dump(
            {"Cluster": voters, "Address": address(), "InitialCluster": initial_cluster}
        ),
        0o600,
    )


def reset() -> None:
    """A fresh single-member datastore (install, leave): the data and init.yaml go."""
    common.rmtree_contents(backend())
    backend().mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------- membership
def ordered(members: list[dict[str, Any]]) -> list[str]:
    """The members' addresses in join order (the order key, then any it lacks)."""
    present = [m["peerURLs"][0].split("://", 1)[1] for m in members if m.get("peerURLs")]
    try:
        kv = client().get(ORDER_KEY)
        order = [a for a in json.loads(b64decode(kv["value"])) if a in present] if kv else []
    except (EtcdError, ValueError, KeyError):
        order = []
    return order + sorted(a for a in present if a not in order)


def b64decode(value: str) -> str:
    return base64.b64decode(value).decode()


def info() -> list[tuple[str, str]]:
    """get_dqlite_info(): (address, role) of every member; [] when the datastore is down."""
    try:
        members = client().members()
    except EtcdError:
        return []
    roles = []
    for i, member in enumerate(ordered(members)):
        role = "voter" if i < VOTERS else "standby" if i < VOTERS + STANDBYS else "spare"
        roles.append((member, role))
    return roles


def add_member(name: str, new: str) -> tuple[list[str], str]:
    """The cluster agent's part of a full join: record the join order, add the member; returns
    the voters and etcd's --initial-cluster for the new member. Both are worked out before the
    member is added: until it starts, a two-member cluster has no quorum."""
    c = client()
    order = [a for a, _role in info() if a != new] + [new]
    c.put(ORDER_KEY, json.dumps(order))
    voters = order[:VOTERS]
    added = member_add(c, f"http://{new}")
    peers = [
        f"{m.get('name') or name}={m['peerURLs'][0]}"
        for m in added.get("members") or []
        if m.get("peerURLs")
    ]
    return voters, ",".join(peers)


def reconfigure(call: Callable[[], T], timeout: float = 60.0) -> T:
    """etcd refuses a membership change while a member is not connected to every peer for a
    few seconds yet ("unhealthy cluster", its strict reconfiguration check); dqlite's join and
    leave wait for the cluster likewise (join.py update_dqlite, leave.py)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except EtcdError as e:
            if "unhealthy cluster" not in e.message or time.monotonic() > deadline:
                raise
        time.sleep(1)


def member_add(c: Etcd, peer_url: str, timeout: float = 60.0) -> dict[str, Any]:
    return reconfigure(lambda: c.member_add([peer_url]), timeout)


def remove_member(addr: str) -> bool:
    """remove_dqlite_node(): drop the member at ``addr`` (IP:port); False if none is."""
    c = client()
    ids = [str(m["ID"]) for m in c.members() if (m.get("peerURLs") or [""])[0] == f"http://{addr}"]
    for member_id in ids[:1]:
        reconfigure(functools.partial(c.member_remove, member_id))
    return bool(ids)


def healthy() -> bool:
    try:
        client().status(timeout=2)
        c = client()
        c.range("/pikube-standin/health")  # a linearizable read needs a quorum
    except EtcdError:
        return False
    return True


# --------------------------------------------------------------------------- daemon
def etcd_argv() -> list[str]:
    """Debian's etcd as this node's datastore member: a new single-member cluster, or the
    member the cluster agent added (init.yaml's InitialCluster) when this node joined."""
    ip, name = common.default_ip(), common.node_name()
    peer = f"http://{address(ip)}"
    listen = common.env("PIKUBE_STANDIN_BIND_ADDRESS", "0.0.0.0")  # noqa: S104 - as dqlite
    argv = [
        etcd_binary(),
        f"--name={name}",
        f"--data-dir={backend() / 'etcd'}",
        f"--listen-peer-urls=http://{listen}:{peer_port()}",
        f"--initial-advertise-peer-urls={peer}",
        f"--listen-client-urls={client_url()}",
        f"--advertise-client-urls={client_url()}",
        "--log-level=warn",
    ]
    init = read_yaml(backend() / "init.yaml")
    if (backend() / "etcd/member").exists():
        return argv  # restarts use the member's own data
    if init.get("InitialCluster"):
        joined = f"--initial-cluster={init['InitialCluster']}"
        return [*argv, joined, "--initial-cluster-state=existing"]
    return [*argv, f"--initial-cluster={name}={peer}", "--initial-cluster-state=new"]


def main() -> int:
    backend().mkdir(parents=True, exist_ok=True)
    return supervise(etcd_argv()[1:])


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
