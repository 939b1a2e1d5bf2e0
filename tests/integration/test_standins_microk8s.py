"""snap + MicroK8s stand-ins keep the snap CLI and MicroK8s clustering contract."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
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

    def node(
        self, name: str, ip: str, *, cmdline: str | None = None, mem_kb: int | None = None
    ) -> FakeNode:
        n = FakeNode(
            self.base,
            name,
            ip,
            port=0,
            extra_env={
                "PIKUBE_LAB_HTTP": self.store,
                "PIKUBE_STANDIN_MICROK8S_API_PORT": str(testing.free_port(ip)),
                "PIKUBE_STANDIN_MICROK8S_AGENT_PORT": str(testing.free_port(ip)),
                # the datastore (etcd in dqlite's place): dqlite's peer port, kine's client port
                "PIKUBE_STANDIN_MICROK8S_DQLITE_PORT": str(testing.free_port(ip)),
                "PIKUBE_STANDIN_MICROK8S_KINE_PORT": str(testing.free_port(ip)),
            },
        )
        if mem_kb is not None:  # the board's /proc/meminfo (a Pi Zero 2 W has 512 MB)
            meminfo = (n.proc / "meminfo").read_text().splitlines()
            (n.proc / "meminfo").write_text(
                "".join(
                    (f"MemTotal:       {mem_kb} kB" if x.startswith("MemTotal:") else x) + "\n"
                    for x in meminfo
                )
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

    def installed(
        self, name: str, ip: str, channel: str = "1.31/stable", mem_kb: int | None = None
    ) -> FakeNode:
        n = self.node(name, ip, mem_kb=mem_kb)
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


def dqlite_address(n: FakeNode) -> str:
    """The node's datastore address as `microk8s status` lists it (dqlite's IP:PORT)."""
    return f"{n.ip}:{n.env['PIKUBE_STANDIN_MICROK8S_DQLITE_PORT']}"


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
    # addons/metrics-server/metrics-server.yaml: Deployment kube-system/metrics-server
    listed = mk(n, "kubectl", "get", "deploy", "-n", "kube-system", "-o", "name").stdout.split()
    assert "deployment.apps/metrics-server" in listed
    assert mk(n, "disable", "metrics-server").returncode == 0
    assert mk(n, "status", "-a", "metrics-server").stdout.strip() == "disabled"
    assert mk(n, "enable", "no-such-addon").returncode == 1


def test_the_addons_pikube_maps_its_words_to_enable_as_upstreams_do(lab: Lab) -> None:
    """metallb takes FIRST-LAST ranges or CIDR blocks, comma-separated, and without one asks on
    stdin and fails when nothing comes (canonical/microk8s-core-addons addons/metallb/enable);
    ingress, hostpath-storage and metrics-server take no argument."""
    n = lab.installed("c16", "127.0.7.83")
    asked = n.run("microk8s", "enable", "metallb", input="")  # nothing on stdin
    assert asked.returncode == 1 and "You have to input an IP Range value" in asked.stdout
    bad = mk(n, "enable", "metallb:10.0.0.240-banana")
    assert bad.returncode == 1
    assert "Your input value (10.0.0.240-banana) is not a valid IP Range" in bad.stdout
    assert mk(n, "status", "-a", "metallb").stdout.strip() == "disabled"
    good = mk(n, "enable", "metallb:10.0.0.240-10.0.0.250,10.0.1.0/28")
    assert good.returncode == 0, good.stdout
    for addon in ("ingress", "hostpath-storage", "metrics-server"):
        assert mk(n, "enable", addon).returncode == 0
    for addon in ("metallb", "ingress", "hostpath-storage", "metrics-server"):
        assert mk(n, "status", "-a", addon).stdout.strip() == "enabled"
    # the workloads upstream's manifests deploy (canonical/microk8s-core-addons 1.31)
    workloads = mk(n, "kubectl", "get", "deployments,daemonsets", "-A", "-o", "json")
    found = {
        (i["metadata"]["namespace"], i["kind"], i["metadata"]["name"])
        for i in json.loads(workloads.stdout)["items"]
    }
    assert {
        ("metallb-system", "DaemonSet", "speaker"),
        ("metallb-system", "Deployment", "controller"),
        ("ingress", "DaemonSet", "nginx-ingress-microk8s-controller"),
        ("kube-system", "Deployment", "hostpath-provisioner"),
        ("kube-system", "Deployment", "metrics-server"),
    } <= found, found
    for addon in ("metallb", "ingress", "hostpath-storage", "metrics-server"):
        assert mk(n, "disable", addon).returncode == 0
    left = mk(n, "kubectl", "get", "deployments,daemonsets", "-A", "-o", "name").stdout
    assert "speaker" not in left and "hostpath-provisioner" not in left, left


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
    assert f"datastore master nodes: {dqlite_address(cp)} {dqlite_address(other)}" in status
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


# Upstream files below are canonical/microk8s at tag v1.31 / branch 1.31 (9029c514), the
# same text on 1.30 (59abcc22); tests/lab/standins/README.md lists them.
def joined_worker(lab: Lab, cp_ip: str, w_ip: str) -> tuple[FakeNode, FakeNode]:
    cp = lab.installed(f"cp{cp_ip.rsplit('.', 1)[1]}", cp_ip)
    w = lab.installed(f"w{w_ip.rsplit('.', 1)[1]}", w_ip)
    joined = mk(w, "join", add_node(cp).group(0).split()[2], "--worker")
    assert joined.returncode == 0, joined.stdout + joined.stderr
    return cp, w


def test_worker_wrappers_print_on_stdout_and_status_config_kubectl_exit_0(lab: Lab) -> None:
    """microk8s-{status,config,kubectl}.wrapper exit 0 on a worker, add-node/remove-node 1."""
    _cp, w = joined_worker(lab, "127.0.7.70", "127.0.7.71")
    acting = "This MicroK8s deployment is acting as a node in a cluster."
    expected = {
        ("status",): (0, f"{acting}\nPlease use the control plane node.\n"),
        ("config",): (0, f"{acting} Please use the microk8s config on the master.\n"),
        ("kubectl", "get", "nodes"): (
            0,
            f"{acting} Please use the microk8s kubectl on the master.\n",
        ),
        ("add-node",): (1, f"{acting} Please use the microk8s add-node on the master.\n"),
        ("remove-node", "x"): (1, f"{acting} Please use microk8s leave.\n"),
        ("enable", "dns"): (1, f"{acting}\nPlease use the master node.\n"),  # is_cluster_locked
    }
    for args, (rc, out) in expected.items():
        r = mk(w, *args)
        assert (r.returncode, r.stdout, r.stderr) == (rc, out, ""), args


def test_status_is_ready_only_with_service_kubernetes_and_a_schedulable_ready_node(
    lab: Lab,
) -> None:
    """common/utils.py is_cluster_ready(): `service/kubernetes` and " Ready " in get nodes."""
    n = lab.installed("c8", "127.0.7.72")
    assert mk(n, "kubectl", "cordon", "c8").returncode == 0  # now Ready,SchedulingDisabled
    r = mk(n, "status", "--wait-ready", "--timeout", "3")
    assert r.returncode == 1
    assert r.stdout == "microk8s is not running. Use microk8s inspect for a deeper inspection.\n"
    assert mk(n, "kubectl", "uncordon", "c8").returncode == 0
    assert mk(n, "status", "--wait-ready", "--timeout", "30").returncode == 0
    assert mk(n, "kubectl", "delete", "service", "kubernetes").returncode == 0
    assert mk(n, "status").returncode == 1


def test_status_yaml_has_high_availability_and_addon_repository_and_version(lab: Lab) -> None:
    """status.py print_yaml()."""
    import yaml

    n = lab.installed("c9", "127.0.7.73")
    doc = yaml.safe_load(mk(n, "status", "--format", "yaml").stdout)
    assert doc["microk8s"] == {"running": True}
    assert doc["high-availability"]["enabled"] is True  # ha-cluster is enabled by default
    assert doc["high-availability"]["nodes"] == [{"address": dqlite_address(n), "role": "voter"}]
    dns = next(a for a in doc["addons"] if a["name"] == "dns")
    assert dns == {
        "name": "dns",
        "repository": "core",
        "description": "CoreDNS",
        "version": "1.9.0",
        "status": "enabled",
    }


def test_add_node_offers_yaml_format(lab: Lab) -> None:
    """add_token.py: --format choices include yaml (get_output_dict dumped with yaml.dump)."""
    import yaml

    n = lab.installed("c10", "127.0.7.74")
    r = mk(n, "add-node", "--format", "yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = yaml.safe_load(r.stdout)
    token, check = doc["token"].split("/")
    assert re.fullmatch(r"[0-9a-f]{32}", token) and re.fullmatch(r"[0-9a-f]{12}", check)
    assert JOIN_RE.match(f"microk8s join {doc['urls'][0]}")


def test_remove_node_force_of_an_unknown_node_fails(lab: Lab) -> None:
    """remove_node.py: a node `kubectl get no` does not know fails, with or without --force."""
    n = lab.installed("c11", "127.0.7.75")
    r = mk(n, "remove-node", "nope", "--force")
    assert r.returncode == 1
    assert (
        r.stdout
        == "Node nope does not exist in Kubernetes.\nAttempting to remove nope from dqlite.\n"
    )


def test_remove_node_of_a_datastore_member_needs_force_even_when_down(lab: Lab) -> None:
    """remove_node.py: a dqlite member is refused without --force, Ready or not."""
    cp = lab.installed("c12", "127.0.7.76")
    other = lab.installed("c13", "127.0.7.77")
    assert mk(other, "join", add_node(cp).group(0).split()[2]).returncode == 0
    other.service("stop", "snap.microk8s.daemon-kubelite")
    assert testing.wait_until(
        lambda: (
            '"status":"Unknown"'
            in mk(
                cp, "kubectl", "get", "node", "c13", "-o", "jsonpath={.status.conditions}"
            ).stdout.replace(" ", "")
        )
    )
    refused = mk(cp, "remove-node", "c13")
    assert refused.returncode == 1 and "is registered with dqlite" in refused.stdout
    assert mk(cp, "remove-node", "c13", "--force").returncode == 0
    assert dqlite_address(other) not in mk(cp, "status").stdout


def test_leave_needs_the_join_locks(lab: Lab) -> None:
    """microk8s-leave.wrapper: no-cert-reissue and (clustered.lock or args/k8s-dqlite)."""
    standalone = lab.installed("c14", "127.0.7.78")
    r = mk(standalone, "leave")
    assert (r.returncode, r.stdout) == (
        1,
        "This MicroK8s deployment is not acting as a node in a cluster.\n",
    )
    _cp, w = joined_worker(lab, "127.0.7.79", "127.0.7.80")
    locks = w.root / "var/snap/microk8s/current/var/lock"
    assert {"clustered.lock", "no-k8s-dqlite", "no-cert-reissue"} <= {
        p.name for p in locks.iterdir()
    }
    assert mk(w, "leave").returncode == 0
    assert not (locks / "clustered.lock").exists() and not (locks / "no-cert-reissue").exists()
    assert mk(w, "status", "--wait-ready", "--timeout", "60").returncode == 0


def test_a_512_mb_board_gets_the_low_memory_guard(lab: Lab) -> None:
    """snap/hooks/install: MemTotal <= 524288 kB -> var/lock/low-memory-guard.lock; then
    status and start exit 1 (utils.sh exit_if_low_memory_guard), kubelite does not run
    (run-kubelite-with-args) and only `join --worker` is accepted (join.py)."""
    cp = lab.installed("c15", "127.0.7.81", mem_kb=944_000)  # a 1 GB board: no guard
    assert not (cp.root / "var/snap/microk8s/current/var/lock/low-memory-guard.lock").exists()
    zero = lab.node("z1", "127.0.7.82", mem_kb=442_000)  # a Pi Zero 2 W's MemTotal
    assert (
        zero.run("snap", "install", "microk8s", "--classic", "--channel=1.31/stable").returncode
        == 0
    )
    assert (zero.root / "var/snap/microk8s/current/var/lock/low-memory-guard.lock").exists()
    for args in (("status", "--wait-ready", "--timeout", "5"), ("start",)):
        r = mk(zero, *args)
        assert r.returncode == 1, args
        assert "This node does not have enough RAM to host the Kubernetes control plane" in r.stdout
    m = add_node(cp)
    conn = m.group(0).split()[2]
    refused = mk(zero, "join", conn)
    assert refused.returncode == 1 and f"microk8s join {conn} --worker" in refused.stdout
    joined = mk(zero, "join", conn, "--worker")  # the token was not spent by the refusal
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert mk(zero, "status").returncode == 0  # "acting as a node in a cluster"
    waited = mk(cp, "kubectl", "wait", "--for=condition=Ready", "node/z1", "--timeout=60s")
    assert waited.returncode == 0, waited.stdout + waited.stderr


# --------------------------------------------------------------------------- high availability
def full_join(cp: FakeNode, node: FakeNode) -> None:
    r = mk(node, "join", add_node(cp).group(0).split()[2])
    assert r.returncode == 0 and "Successfully joined the cluster." in r.stdout, r.stdout + r.stderr


def test_three_full_members_form_high_availability_and_share_the_api(
    lab: Lab, tmp_path: Path
) -> None:
    """join.py join_dqlite_master_node (no --worker): each full member joins the datastore and
    serves the cluster's API; status.py: high-availability yes with three voters, listed as
    datastore master nodes (pretty) and as voters (--format yaml) on every member."""
    import yaml

    cp = lab.installed("h1", "127.0.7.90")
    second = lab.installed("h2", "127.0.7.91")
    third = lab.installed("h3", "127.0.7.92")
    full_join(cp, second)
    status = mk(second, "status").stdout
    assert "high-availability: no" in status
    assert f"datastore master nodes: {dqlite_address(cp)} {dqlite_address(second)}" in status
    full_join(second, third)  # any full member runs a cluster agent and adds nodes
    members = [dqlite_address(n) for n in (cp, second, third)]
    for node in (cp, second, third):
        status = mk(node, "status").stdout
        assert "high-availability: yes" in status, status
        assert f"datastore master nodes: {' '.join(members)}" in status
        assert "datastore standby nodes: none" in status
        doc = yaml.safe_load(mk(node, "status", "--format", "yaml").stdout)
        assert doc["high-availability"]["nodes"] == [
            {"address": m, "role": "voter"} for m in members
        ]
    # one API state: written through one member, read through another, every node in it
    made = mk(second, "kubectl", "create", "configmap", "shared", "--from-literal=k=v")
    assert made.returncode == 0, made.stderr
    got = mk(third, "kubectl", "get", "configmap", "shared", "-o", "jsonpath={.data.k}")
    assert got.stdout == "v", got.stderr
    nodes = mk(third, "kubectl", "get", "nodes", "-o", "jsonpath={.items[*].metadata.name}")
    assert sorted(nodes.stdout.split()) == ["h1", "h2", "h3"]
    # the first member gone, the other two keep the quorum and answer
    for unit in ("snap.microk8s.daemon-cluster-agent", "snap.microk8s.daemon-kubelite"):
        cp.service("stop", unit)
    cp.service("stop", "snap.microk8s.daemon-k8s-dqlite")
    still = mk(third, "kubectl", "get", "configmap", "shared", "-o", "jsonpath={.data.k}")
    assert still.stdout == "v", still.stderr


def test_a_worker_join_stays_out_of_the_datastore(lab: Lab) -> None:
    """join.py join_dqlite_worker_node: a --worker node is no dqlite member, so two control
    planes and a worker are no HA cluster."""
    cp = lab.installed("h4", "127.0.7.93")
    second = lab.installed("h5", "127.0.7.94")
    worker = lab.installed("h6", "127.0.7.95")
    full_join(cp, second)
    joined = mk(worker, "join", add_node(cp).group(0).split()[2], "--worker")
    assert joined.returncode == 0, joined.stdout + joined.stderr
    for member in (cp, second):  # every full member reads the same datastore
        status = mk(member, "status").stdout
        assert "high-availability: no" in status
        assert f"datastore master nodes: {dqlite_address(cp)} {dqlite_address(second)}" in status
        assert dqlite_address(worker) not in status
    assert mk(worker, "status").stdout.startswith(
        "This MicroK8s deployment is acting as a node in a cluster."
    )


def worker_ready(cp: FakeNode, name: str) -> bool | None:
    """The worker's Ready condition as the control plane reports it (None: no answer)."""
    proc = mk(cp, "kubectl", "get", "node", name, "-o", "json")
    if proc.returncode != 0:
        return None
    conditions = json.loads(proc.stdout)["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_worker_ready(cp: FakeNode, name: str, want: bool, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while worker_ready(cp, name) is not want:
        assert time.monotonic() < deadline, f"{name} never turned Ready={want}"
        time.sleep(1)


def test_a_worker_reaches_the_api_through_its_apiserver_proxy(lab: Lab) -> None:
    """join.py update_apiserver_proxy + utils.sh create_worker_kubeconfigs: the worker's kubelet
    talks to its own apiserver-proxy (run-apiserver-proxy-with-args), which forwards to the
    control planes of args/traefik/provider.yaml (the contacted one first); the API servers
    list themselves in Endpoints default/kubernetes, where the proxy refreshes that list."""
    import yaml

    cp, w = joined_worker(lab, "127.0.7.96", "127.0.7.97")
    snap_data = w.root / "var/snap/microk8s/current"
    provider = yaml.safe_load((snap_data / "args/traefik/provider.yaml").read_text())
    servers = provider["tcp"]["services"]["kube-apiserver"]["loadBalancer"]["servers"]
    assert servers == [{"address": f"{cp.ip}:{cp.env['PIKUBE_STANDIN_MICROK8S_API_PORT']}"}]
    assert "--refresh-interval 30s" in (snap_data / "args/apiserver-proxy").read_text()
    kubelet = yaml.safe_load((snap_data / "credentials/kubelet.config").read_text())
    # a real worker: https://127.0.0.1:16443; fake nodes share the host's loopback
    local = f"https://{w.ip}:{w.env['PIKUBE_STANDIN_MICROK8S_API_PORT']}"
    assert kubelet["clusters"][0]["cluster"]["server"] == local
    endpoints = json.loads(mk(cp, "kubectl", "get", "endpoints", "kubernetes", "-o", "json").stdout)
    assert [a["ip"] for a in endpoints["subsets"][0]["addresses"]] == [cp.ip]
    wait_worker_ready(cp, "w97", True)
    w.service("stop", "snap.microk8s.daemon-apiserver-proxy")
    wait_worker_ready(cp, "w97", False)  # its kubelet has no other way to the API
    w.service("start", "snap.microk8s.daemon-apiserver-proxy")
    wait_worker_ready(cp, "w97", True)


def test_refresh_certs_puts_the_template_ips_into_the_server_certificate(lab: Lab) -> None:
    """csr.conf.template + refresh_certs.py --cert server.crt: an IP.N line added to the
    template (a load balancer's address) is in the API server's certificate after a refresh."""
    from standins.payload.pikube_standin import pki

    n = lab.installed("h7", "127.0.7.96")
    certs = n.root / "var/snap/microk8s/current/certs"
    template = certs / "csr.conf.template"
    assert "10.77.9.99" not in pki.sans_of((certs / "server.crt").read_bytes())
    template.write_text(template.read_text().replace("#MOREIPS", "IP.3 = 10.77.9.99\n#MOREIPS"))
    r = mk(n, "refresh-certs", "--cert", "server.crt")
    assert r.returncode == 0, r.stdout + r.stderr
    sans = pki.sans_of((certs / "server.crt").read_bytes())
    assert {"10.77.9.99", "127.0.0.1", "10.152.183.1", n.ip, "kubernetes"} <= set(sans)
    assert mk(n, "status", "--wait-ready", "--timeout", "60").returncode == 0


# --------------------------------------------------------------------------- dbctl
def test_dbctl_backup_writes_kines_key_files_and_restore_puts_them_back(
    lab: Lab, tmp_path: Path
) -> None:
    """scripts/wrappers/dbctl.py + k8s-dqlite pkg/migrator: `dbctl backup -o NAME` packs NAME/
    with i.key/i.data per key into NAME.tar.gz; `dbctl restore NAME.tar.gz` creates or puts
    every key of NAME/ (keys the backup lacks stay); an archive whose directory has another
    name restores nothing, as upstream."""
    import tarfile

    n = lab.installed("c17", "127.0.7.97")
    assert mk(n, "kubectl", "create", "configmap", "a", "--from-literal=k=before").returncode == 0
    archive = tmp_path / "snap1.tar.gz"
    out = mk(n, "dbctl", "backup", "-o", str(tmp_path / "snap1"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == ["Backing up the datastore", f"The backup is: {archive}"]
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        keys = {
            tar.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.name.endswith(".key")
        }
    count = len(keys)
    assert count > 10 and set(names) == {"snap1"} | {
        f"snap1/{i}.{ext}" for i in range(count) for ext in ("key", "data")
    }
    assert "/registry/configmaps/default/a" in keys
    assert not any(k.startswith("/pikube-standin/") for k in keys)

    assert mk(n, "kubectl", "delete", "configmap", "a").returncode == 0
    assert mk(n, "kubectl", "create", "configmap", "b").returncode == 0
    renamed = tmp_path / "other.tar.gz"
    renamed.write_bytes(archive.read_bytes())
    nothing = mk(n, "dbctl", "restore", str(renamed))
    assert nothing.returncode == 0 and "entries=0" in nothing.stderr
    assert mk(n, "kubectl", "get", "configmap", "a").returncode != 0

    restored = mk(n, "dbctl", "restore", str(archive))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert restored.stdout.startswith(f"Restoring from {archive}\n")
    assert f"entries={count}" in restored.stderr
    got = mk(n, "kubectl", "get", "configmap", "a", "-o", "jsonpath={.data.k}")
    assert got.stdout == "before", got.stderr
    assert mk(n, "kubectl", "get", "configmap", "b").returncode == 0  # not in the backup: kept


def test_dbctl_needs_the_datastore(lab: Lab, tmp_path: Path) -> None:
    """dbctl.py: without kine (the datastore down) it exits 10 with upstream's line."""
    n = lab.installed("c18", "127.0.7.98")
    n.service("stop", "snap.microk8s.daemon-k8s-dqlite")
    r = mk(n, "dbctl", "backup", "-o", str(tmp_path / "x"))
    assert r.returncode == 10
    assert r.stdout.strip() == (
        "Please ensure the kubernetes apiserver is running and HA is enabled."
    )
    assert not (tmp_path / "x.tar.gz").exists()
