"""What the HA day-2 modules of both flavours share: the lab's layout (three control planes
behind a VIP and a worker), reading the VIP holder from the nodes, `status --json` and its
quorum, and the drill (reset, then up) that ends each module."""

from __future__ import annotations

import json
import time
from typing import Any

import yaml

from tests.integration.clusterlab import Pikube

CONTROL_PLANES = ("node-1", "node-2", "node-3")
WORKER = "node-4"
NODES = (*CONTROL_PLANES, WORKER)
VIP_SERVICES = ("keepalived", "haproxy")
EXIT_UNREACHABLE = 6
EXIT_QUORUM = 7


def vip(pk: Pikube) -> str:
    return str(yaml.safe_load(pk.cluster.read_text())["network"]["vip"])


def holders(pk: Pikube, up: tuple[str, ...] = CONTROL_PLANES) -> list[str]:
    """The nodes with the VIP on an interface, read from the nodes (not through pikube)."""
    return [n for n in up if f" {vip(pk)}/" in pk.lab.exec(n, ["ip", "-4", "-o", "addr"]).stdout]


def status_json(pk: Pikube, expect: int = 0) -> dict[str, Any]:
    proc = pk("status", "--json")
    assert proc.returncode == expect, proc.stderr[-3000:]
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def wait_quorum_ok(pk: Pikube, members: int = 3, timeout: float = 300) -> dict[str, Any]:
    """status --json until every node answers and the datastore's quorum is ok with
    ``members``."""
    deadline = time.monotonic() + timeout
    while True:
        proc = pk("status", "--json")
        data: dict[str, Any] = json.loads(proc.stdout) if proc.stdout.startswith("{") else {}
        plane = data.get("control_plane") or {}
        quorum = plane.get("quorum") or {}
        if proc.returncode == 0 and quorum.get("level") == "ok" and quorum.get("total") == members:
            return data
        assert time.monotonic() < deadline, proc.stdout[-3000:] + proc.stderr[-2000:]
        time.sleep(5)


def drill(pk: Pikube) -> None:
    """Issue #15's drill on the HA cluster: `reset --yes` stops keepalived and haproxy on
    every control plane, so nobody holds the VIP; `up` builds the cluster again: three
    members with quorum ok, every node Ready, exactly one VIP holder."""
    pk.ok("reset", "--yes")
    for node in CONTROL_PLANES:
        states = [
            pk.lab.exec(node, ["systemctl", "is-active", service]).stdout.strip()
            for service in VIP_SERVICES
        ]
        assert "active" not in states, (node, states)
    assert holders(pk) == []
    pk.ok("up")
    wait_quorum_ok(pk)
    pk.wait_all_ready(NODES)
    assert len(holders(pk)) == 1
