"""Day 2 on a highly available kubeadm lab: three control planes behind a VIP and a worker.

`status` names the VIP holder and each etcd member's health; `remove-node` refuses to break
etcd's quorum and otherwise removes a control plane's member first; `add-node` joins it back
as a control plane; two of three control planes stopped is lost quorum (exit 7), and
starting them again restores it; `upgrade` takes the control planes one at a time (`upgrade
apply` on the first, `upgrade node` on the others), then the worker.

Real CLI, real SSH, Debian's real keepalived and haproxy, the stand-in kubeadm with stacked
etcd on Debian's real etcd (tests/lab/standins), the real kubectl and etcdctl. One lab for
the module; the steps build on each other in file order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest
import yaml

from tests.integration.clusterlab import Pikube, cluster_lab
from tests.integration.ha_day2 import (
    CONTROL_PLANES,
    EXIT_QUORUM,
    EXIT_UNREACHABLE,
    NODES,
    VIP_SERVICES,
    drill,
    holders,
    status_json,
    vip,
    wait_quorum_ok,
)

# Slow tier (PIKUBE_SLOW=1): an HA build, an upgrade of four nodes, a removal and a re-add.
pytestmark = [pytest.mark.lab, pytest.mark.slow]

HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"


@pytest.fixture(scope="module")
def pk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pikube]:
    """Four lab nodes: node-1..3 control planes behind a VIP, node-4 a worker, at 1.30."""
    with cluster_lab("ha2", 4, "kubeadm", pi=0) as lab:
        data = lab.cluster_data("kubeadm")
        data["kubernetes"]["version"] = "1.30"  # one minor below the newest: the upgrade
        for node in data["nodes"]:
            node["role"] = "control-plane" if node["name"] in CONTROL_PLANES else "worker"
        data["network"]["vip"] = str(IPv4Network(lab.subnet).network_address + 100)
        path = tmp_path_factory.mktemp("ha-day2") / "cluster.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        yield Pikube(lab, path, "kubeadm")


def etcd_member_names(pk: Pikube, via: str = "node-1") -> set[str]:
    pki = "/etc/kubernetes/pki/etcd"
    proc = pk.lab.exec(
        via,
        [
            "etcdctl",
            "--endpoints=https://127.0.0.1:2379",
            f"--cacert={pki}/ca.crt",
            f"--cert={pki}/healthcheck-client.crt",
            f"--key={pki}/healthcheck-client.key",
            "member",
            "list",
            "-w",
            "json",
        ],
    )
    assert proc.returncode == 0, proc.stderr
    return {m.get("name", "") for m in json.loads(proc.stdout)["members"]}


def test_up_and_status_show_the_vip_holder_every_member_and_quorum_ok(pk: Pikube) -> None:
    pk.ok("up")
    pk.wait_all_ready(NODES)
    data = wait_quorum_ok(pk)
    plane = data["control_plane"]
    assert plane["vip"] == vip(pk) and plane["datastore"] == "etcd"
    assert plane["vip_holders"] == holders(pk) and len(plane["vip_holders"]) == 1
    assert {m["node"] for m in plane["members"]} == set(CONTROL_PLANES)
    assert all(m["healthy"] for m in plane["members"]), plane["members"]
    assert plane["quorum"] == {
        "level": "ok",
        "healthy": 3,
        "total": 3,
        "needed": 2,
        "message": "3/3 etcd members healthy",
        "fix": None,
    }
    text = pk.ok("status").stdout
    assert f"VIP: {vip(pk)} on {holders(pk)[0]}" in text
    assert "etcd: ok: 3/3 etcd members healthy" in text


def test_removing_a_healthy_member_while_another_is_down_is_refused(pk: Pikube) -> None:
    pk.lab.stop("node-3")
    try:
        data = status_json(pk, expect=EXIT_UNREACHABLE)
        quorum = data["control_plane"]["quorum"]
        assert (quorum["level"], quorum["healthy"], quorum["total"]) == ("warning", 2, 3)
        assert "node-3" in quorum["message"]
        runs_before = pk.runs("remove-node")
        proc = pk("remove-node", "node-2", "--yes")
        assert proc.returncode == EXIT_QUORUM, proc.stderr[-3000:]
        assert "refusing to remove node-2" in proc.stderr
        assert "would lose quorum" in proc.stderr and "nothing was changed" in proc.stderr
        assert pk.runs("remove-node") == runs_before  # no playbook ran
        assert etcd_member_names(pk) == set(CONTROL_PLANES)
    finally:
        pk.lab.start("node-3")
    wait_quorum_ok(pk)


def node_ip(pk: Pikube, name: str) -> str:
    nodes = yaml.safe_load(pk.cluster.read_text())["nodes"]
    return str(next(n["ip"] for n in nodes if n["name"] == name))


def vip_members(pk: Pikube, node: str) -> tuple[set[str], set[str]]:
    """(haproxy's backend servers as "name address", keepalived's unicast peers) on a node."""
    haproxy = pk.lab.exec(node, ["cat", HAPROXY_CFG])
    keepalived = pk.lab.exec(node, ["cat", KEEPALIVED_CONF])
    assert haproxy.returncode == 0, haproxy.stderr
    assert keepalived.returncode == 0, keepalived.stderr
    servers = {
        " ".join(line.split()[1:3]).rsplit(":", 1)[0]
        for line in haproxy.stdout.splitlines()
        if line.strip().startswith("server ")
    }
    peers_block = keepalived.stdout.split("unicast_peer {", 1)[1].split("}", 1)[0]
    return servers, set(peers_block.split())


def service_pids(pk: Pikube, node: str) -> list[str]:
    """keepalived's and haproxy's main PIDs: a reload keeps them, a restart does not."""
    proc = pk.lab.exec(node, ["systemctl", "show", "--property=MainPID", "--value", *VIP_SERVICES])
    assert proc.returncode == 0, proc.stderr
    pids = proc.stdout.split()
    assert len(pids) == 2 and "0" not in pids, pids  # both running
    return pids


def check_vip_members(pk: Pikube, planes: tuple[str, ...]) -> None:
    """Every control plane of ``planes`` lists exactly ``planes`` in haproxy and keepalived."""
    for node in planes:
        servers, peers = vip_members(pk, node)
        assert servers == {f"{n} {node_ip(pk, n)}" for n in planes}, (node, servers)
        assert peers == {node_ip(pk, n) for n in planes if n != node}, (node, peers)


def test_remove_a_control_plane_then_add_it_back(pk: Pikube) -> None:
    check_vip_members(pk, CONTROL_PLANES)
    stay = ("node-1", "node-2")
    pids = {n: service_pids(pk, n) for n in stay}
    pk.ok("remove-node", "node-3", "--yes")
    assert etcd_member_names(pk) == {"node-1", "node-2"}
    assert "node-3" not in pk.nodes()  # through the VIP
    assert not pk.exists("node-3", "/etc/kubernetes/manifests/etcd.yaml")
    assert pk.kubeconfig.exists()  # the cluster is still there: its kubeconfig stays
    # The removed node neither holds nor bids for the VIP, nor forwards to API servers; the
    # others reloaded (same PIDs: the VIP stayed up) without it.
    for args in (["is-active"], ["is-enabled"]):
        state = pk.lab.exec("node-3", ["systemctl", *args, *VIP_SERVICES]).stdout.split()
        assert state == (["inactive"] * 2 if args == ["is-active"] else ["disabled"] * 2), state
    for path in (HAPROXY_CFG, KEEPALIVED_CONF):
        assert not pk.exists("node-3", path)
    check_vip_members(pk, stay)
    assert {n: service_pids(pk, n) for n in stay} == pids
    assert len(holders(pk, stay)) == 1
    data = status_json(pk)
    quorum = data["control_plane"]["quorum"]
    # node-3 is still in cluster.yaml, but no longer an etcd member: the datastore decides.
    assert (quorum["level"], quorum["healthy"], quorum["total"]) == ("ok", 2, 2)
    pk.ok("add-node", "node-3")
    pk.wait_all_ready(NODES)  # through the VIP
    assert etcd_member_names(pk) == set(CONTROL_PLANES)
    check_vip_members(pk, CONTROL_PLANES)
    assert {n: service_pids(pk, n) for n in stay} == pids  # reloaded, not restarted
    service_pids(pk, "node-3")
    assert len(holders(pk)) == 1
    wait_quorum_ok(pk)


def test_two_of_three_control_planes_stopped_is_lost_quorum(pk: Pikube) -> None:
    pk.lab.stop("node-2")
    pk.lab.stop("node-3")
    proc = pk("status")
    assert proc.returncode == EXIT_QUORUM, proc.stderr[-3000:]
    assert "etcd has lost quorum: 0/3 members healthy, 2 needed" in proc.stderr
    assert "fix: bring back enough control planes" in proc.stderr
    data = status_json(pk, expect=EXIT_QUORUM)
    assert data["control_plane"]["quorum"]["level"] == "error"
    doctor = pk("doctor")
    assert doctor.returncode == EXIT_QUORUM, doctor.stderr[-3000:]
    assert "quorum:" in doctor.stdout
    pk.lab.start("node-2")
    pk.lab.start("node-3")
    wait_quorum_ok(pk)  # a majority back: etcd commits again, nothing else needed


def test_upgrade_takes_one_control_plane_at_a_time_apply_on_the_first(pk: Pikube) -> None:
    pk.ok("upgrade", "--to", "1.31", "--yes")
    versions = {n: v["status"]["nodeInfo"]["kubeletVersion"][:5] for n, v in pk.nodes().items()}
    assert versions == dict.fromkeys(NODES, "v1.31")
    events = [e for e in pk.events("upgrade") if e.get("pikube_event") == "runner"]

    def hosts_of(task: str) -> list[str]:  # events name a role's task "role : task"
        return [e["host"] for e in events if e.get("task", "").endswith(task) and e.get("changed")]

    assert hosts_of("Apply the upgrade to the control plane components") == ["node-1"]
    assert hosts_of("Upgrade the node's kubelet configuration") == ["node-2", "node-3", "node-4"]
    # serial: 1 - every task of a control plane ends before the next one's first task.
    plane = [e for e in events if e.get("play") == "Upgrade the control planes one at a time"]
    order = [e["host"] for e in plane]
    firsts = [order.index(n) for n in CONTROL_PLANES]
    lasts = [len(order) - 1 - order[::-1].index(n) for n in CONTROL_PLANES]
    assert lasts[0] < firsts[1] and lasts[1] < firsts[2], order
    wait_quorum_ok(pk)


def test_restore_brings_all_three_members_back_and_keep_rotates_the_local_copies(
    pk: Pikube,
) -> None:
    """Issue #16 on three control planes: three backups with --keep 2 leave the newest two
    (and a file pikube did not write); object B created after the backup is gone after
    `restore`, A is there, etcd has its three members again (each restored with its own name
    and peer URL), quorum is ok and every node is Ready."""
    folder = pk.state_dir / "backups"
    folder.mkdir(mode=0o700, exist_ok=True)
    mine = folder / "notes.txt"
    mine.write_text("not a backup")
    assert pk.kubectl("create", "configmap", "ha-before", "--from-literal=a=1").returncode == 0
    for _ in range(3):
        started = time.monotonic()
        taken = pk.ok("backup", "--keep", "2")
        print(f"backup: {time.monotonic() - started:.0f} s; {taken.stderr.strip()[-300:]}")
        time.sleep(1)  # names carry the second they were taken
    archives = sorted(folder.glob("*.tar.gz"))
    assert len(archives) == 2 and mine.exists()
    assert all(Path(f"{a}.sha256").exists() for a in archives)
    assert pk.kubectl("create", "configmap", "ha-after", "--from-literal=b=2").returncode == 0
    started = time.monotonic()
    pk.ok("restore", str(archives[-1]), "--yes")
    print(f"restore: {time.monotonic() - started:.0f} s")  # for the record, not asserted
    assert pk.kubectl("get", "configmap", "ha-before").returncode == 0
    gone = pk.kubectl("get", "configmap", "ha-after")
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    assert etcd_member_names(pk) == set(CONTROL_PLANES)
    wait_quorum_ok(pk)
    pk.wait_all_ready(NODES)


def test_the_drill_reset_then_up_takes_the_vip_down_and_builds_again_behind_it(
    pk: Pikube,
) -> None:
    drill(pk)
