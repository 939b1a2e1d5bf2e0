"""snap + MicroK8s stand-ins keep the snap CLI and MicroK8s clustering contract."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from _standins import requires_standin_prereqs, testing

pytestmark = requires_standin_prereqs
FakeNode = testing.FakeNode
JOIN_RE = re.compile(r"^microk8s join (\S+):(\d+)/([0-9a-f]{32})/([0-9a-f]{12})$")


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from standins import prepare

    www = tmp_path_factory.mktemp("www")
    prepare(www, "127.0.0.1")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(www)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


class Lab:
    def __init__(self, base: Path, store: str) -> None:
        self.base, self.store, self.nodes = base, store, []  # type: ignore[var-annotated]

    def node(self, name: str, ip: str, *, cmdline: str | None = None) -> FakeNode:
        n = FakeNode(
            self.base,
            name,
            ip,
            port=0,
            extra_env={
                "PIKUBE_LAB_HTTP": self.store,
                "PIKUBE_STANDIN_MICROK8S_API_PORT": str(testing.free_port(ip)),
                "PIKUBE_STANDIN_MICROK8S_AGENT_PORT": str(testing.free_port(ip)),
            },
        )
        if cmdline is not None:
            (n.root / "run/pikube-lab").mkdir(parents=True, exist_ok=True)
            (n.root / "run/pikube-lab/cmdline").write_text(cmdline + "\n")
            (n.root / "etc/pikube-lab").mkdir(parents=True, exist_ok=True)
            (n.root / "etc/pikube-lab/device-tree-model").write_text(
                "Raspberry Pi 4 Model B Rev 1.4\0"
            )
        self.nodes.append(n)
        return n

    def installed(self, name: str, ip: str, channel: str = "1.31/stable") -> FakeNode:
        n = self.node(name, ip)
        r = n.run("snap", "install", "microk8s", "--classic", f"--channel={channel}")
        assert r.returncode == 0, r.stdout + r.stderr
        ready = n.run("microk8s", "status", "--wait-ready", "--timeout", "60")
        assert ready.returncode == 0, ready.stdout + ready.stderr
        return n


@pytest.fixture()
def lab(tmp_path: Path, store: str) -> Iterator[Lab]:
    lb = Lab(tmp_path, store)
    yield lb
    for n in lb.nodes:
        n.cleanup()


def mk(n: FakeNode, *args: str) -> subprocess.CompletedProcess[str]:
    return n.run("microk8s", *args)


def add_node(n: FakeNode, *args: str) -> re.Match[str]:
    r = mk(n, "add-node", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "From the node you wish to join to this cluster, run the following:"
    m = JOIN_RE.match(lines[1])
    assert m, lines[1]
    assert f"{lines[1]} --worker" in r.stdout
    assert (
        "Use the '--worker' flag to join a node as a worker not running the control plane, eg:"
        in r.stdout
    )
    return m


# --------------------------------------------------------------------------- snap
def test_snap_install_requires_classic_and_a_known_channel(lab: Lab) -> None:
    n = lab.node("s1", "127.0.7.1")
    r = n.run("snap", "install", "microk8s", "--channel=1.31/stable")
    assert r.returncode == 1 and "repeat the command including --classic" in r.stderr
    r = n.run("snap", "install", "microk8s", "--classic", "--channel=1.99/stable")
    assert r.returncode == 1 and 'snap "microk8s" is not available on 1.99/stable' in r.stderr
    assert not (n.root / "snap/microk8s").exists()


def test_snap_install_fails_without_network(lab: Lab) -> None:
    n = lab.node("s2", "127.0.7.2")
    n.env["PIKUBE_LAB_HTTP"] = f"http://127.0.0.1:{testing.free_port('127.0.0.1')}"
    r = n.run("snap", "install", "microk8s", "--classic", "--channel=1.31/stable")
    assert r.returncode == 1 and 'error: cannot install "microk8s"' in r.stderr


def test_snap_install_list_hold_refresh_remove(lab: Lab) -> None:
    n = lab.installed("s3", "127.0.7.3", channel="1.30/stable")
    assert "microk8s:x:" in (n.root / "etc/group").read_text()
    assert (n.root / "snap/bin/microk8s").exists()
    listing = n.run("snap", "list").stdout.splitlines()
    assert listing[0].split() == ["Name", "Version", "Rev", "Tracking", "Publisher", "Notes"]
    assert listing[1].split()[:4] == ["microk8s", "v1.30.14", "7394", "1.30/stable"]
    again = n.run("snap", "install", "microk8s", "--classic", "--channel=1.30/stable")
    assert again.returncode == 0 and "already installed" in again.stderr
    held = n.run("snap", "refresh", "--hold", "microk8s")
    assert held.stdout.strip() == 'General refreshes of "microk8s" held indefinitely'
    assert "held" in n.run("snap", "list", "microk8s").stdout.splitlines()[1]
    up = n.run("snap", "refresh", "microk8s", "--channel=1.31/stable")
    assert up.returncode == 0 and "microk8s (1.31/stable) v1.31.13" in up.stdout, up.stderr
    assert mk(n, "status", "--wait-ready", "--timeout", "60").returncode == 0
    assert testing.wait_until(lambda: "v1.31.13" in mk(n, "kubectl", "get", "node", "s3").stdout)
    assert "1.31/stable" in n.run("snap", "info", "microk8s").stdout
    rm = n.run("snap", "remove", "--purge", "microk8s")
    assert rm.returncode == 0 and rm.stdout.strip() == "microk8s removed"
    assert not (n.root / "snap/microk8s").exists() and not (n.root / "var/snap/microk8s").exists()
    assert n.run("snap", "list", "microk8s").returncode == 1


# --------------------------------------------------------------------------- microk8s
def test_status_config_and_real_kubectl(lab: Lab, tmp_path: Path) -> None:
    n = lab.installed("c1", "127.0.7.10")
    st = mk(n, "status")
    assert st.stdout.startswith("microk8s is running\n") and "  enabled:\n    dns" in st.stdout
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(mk(n, "config").stdout)
    r = n.kubectl("get", "nodes", "-o", "json", kubeconfig=cfg)
    assert r.returncode == 0, r.stderr
    assert [x["metadata"]["name"] for x in json.loads(r.stdout)["items"]] == ["c1"]
    waited = n.kubectl(
        "wait", "--for=condition=Ready", "node", "--all", "--timeout=60s", kubeconfig=cfg
    )
    assert waited.returncode == 0, waited.stderr
    assert "calico-node" in mk(n, "kubectl", "get", "ds", "-A").stdout


def test_enable_and_disable_addon(lab: Lab) -> None:
    n = lab.installed("c2", "127.0.7.11")
    r = mk(n, "enable", "metrics-server")
    assert r.returncode == 0 and "metrics-server is enabled" in r.stdout
    assert mk(n, "status", "-a", "metrics-server").stdout.strip() == "enabled"
    assert "addon-metrics-server" in mk(n, "kubectl", "get", "deploy", "-n", "kube-system").stdout
    assert mk(n, "disable", "metrics-server").returncode == 0
    assert mk(n, "status", "-a", "metrics-server").stdout.strip() == "disabled"
    assert mk(n, "enable", "no-such-addon").returncode == 1


def test_add_node_tokens_are_single_use(lab: Lab) -> None:
    cp = lab.installed("c3", "127.0.7.20")
    w1 = lab.installed("w1", "127.0.7.21")
    w2 = lab.installed("w2", "127.0.7.22")
    m = add_node(cp)
    conn = m.group(0).split()[2]
    ok = mk(w1, "join", conn, "--worker")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith(f"Contacting cluster at {m.group(1)}\n")
    assert "The node has joined the cluster" in ok.stdout
    reused = mk(w2, "join", conn, "--worker")
    assert reused.returncode == 6 and "Connection failed. Invalid token (500)." in reused.stdout
    wrong = mk(w2, "join", f"{m.group(1)}:{m.group(2)}/{'0' * 32}/{m.group(4)}", "--worker")
    assert wrong.returncode == 6 and "Invalid token (500)" in wrong.stdout
    nodes = mk(cp, "kubectl", "get", "nodes", "-o", "json")
    items = {x["metadata"]["name"]: x for x in json.loads(nodes.stdout)["items"]}
    assert set(items) == {"c3", "w1"}
    assert (
        items["w1"]["metadata"]["labels"]["node.kubernetes.io/microk8s-worker"] == "microk8s-worker"
    )
    locked = mk(w1, "status")
    assert locked.returncode == 1 and "acting as a node in a cluster" in locked.stdout


def test_add_node_token_with_ttl_expires(lab: Lab) -> None:
    cp = lab.installed("c4", "127.0.7.30")
    w = lab.installed("w3", "127.0.7.31")
    m = add_node(cp, "--token-ttl", "1")
    tokens = cp.root / "var/snap/microk8s/current/credentials/cluster-tokens.txt"
    expiry = int(tokens.read_text().strip().split("|")[1])
    import time

    assert testing.wait_until(lambda: time.time() > expiry + 1, attempts=50)
    r = mk(w, "join", m.group(0).split()[2], "--worker")
    assert r.returncode == 6 and "Connection failed. Invalid token (500)." in r.stdout


def test_join_rejects_wrong_cluster_fingerprint(lab: Lab) -> None:
    cp = lab.installed("c5", "127.0.7.40")
    w = lab.installed("w4", "127.0.7.41")
    m = add_node(cp)
    r = mk(w, "join", f"{m.group(1)}:{m.group(2)}/{m.group(3)}/{'f' * 12}", "--worker")
    assert r.returncode == 4
    assert f"Joining cluster failed. Could not verify the identity of {m.group(1)}." in r.stdout
    # the token was not spent on a server we did not trust
    assert mk(w, "join", m.group(0).split()[2], "--worker").returncode == 0


def test_control_plane_join_leave_and_remove_node(lab: Lab) -> None:
    cp = lab.installed("c6", "127.0.7.50")
    other = lab.installed("c7", "127.0.7.51")
    m = add_node(cp)
    r = mk(other, "join", m.group(0).split()[2])
    assert r.returncode == 0 and "Successfully joined the cluster." in r.stdout, r.stdout + r.stderr
    status = mk(cp, "status").stdout
    assert "high-availability: no" in status  # MicroK8s needs three control-plane nodes for HA
    assert "datastore master nodes: 127.0.7.50:19001 127.0.7.51:19001" in status
    # a joined control-plane node's kubectl reaches the cluster
    assert "c6" in mk(other, "kubectl", "get", "nodes").stdout
    refused = mk(cp, "remove-node", "c7")
    assert refused.returncode == 1 and "microk8s leave" in refused.stdout
    assert mk(other, "leave").returncode == 0
    assert mk(other, "status", "--wait-ready", "--timeout", "60").returncode == 0
    assert mk(cp, "remove-node", "c7", "--force").returncode == 0
    assert "c7" not in mk(cp, "kubectl", "get", "nodes").stdout
    missing = mk(cp, "remove-node", "nope")
    assert missing.returncode == 1 and "Node nope does not exist in Kubernetes." in missing.stdout


def test_missing_memory_cgroup_on_a_pi_keeps_microk8s_down(lab: Lab) -> None:
    pi = lab.node(
        "pi1", "127.0.7.60", cmdline="console=serial0,115200 root=LABEL=writable rootwait fixrtc"
    )
    assert (
        pi.run("snap", "install", "microk8s", "--classic", "--channel=1.31/stable").returncode == 0
    )
    r = mk(pi, "status", "--wait-ready", "--timeout", "5")
    assert r.returncode == 1
    assert (
        r.stdout.strip() == "microk8s is not running. Use microk8s inspect for a deeper inspection."
    )
    assert "The memory cgroup is not enabled." in mk(pi, "inspect").stdout
    log = (pi.root / "var/log/pikube-standin/snap.microk8s.daemon-kubelite.log").read_text()
    assert "Following Cgroup subsystem not mounted: [memory]" in log
    # after the boot flags are added and the node "reboots", MicroK8s comes up
    (pi.root / "run/pikube-lab/cmdline").write_text(
        "console=serial0,115200 root=LABEL=writable rootwait fixrtc cgroup_enable=memory "
        "cgroup_memory=1\n"
    )
    pi.service("start", "snap.microk8s.daemon-kubelite")
    assert mk(pi, "status", "--wait-ready", "--timeout", "60").returncode == 0
