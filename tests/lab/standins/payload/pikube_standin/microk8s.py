"""MicroK8s stand-in CLI (and the snap hooks behind `snap install/remove/refresh microk8s`).

Contract: https://microk8s.io/docs/command-reference , https://microk8s.io/docs/clustering ,
https://microk8s.io/docs/install-raspberry-pi (memory cgroup), and the wrappers in
https://github.com/canonical/microk8s/tree/master/scripts/wrappers
(add_token.py, join.py, status.py).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import common
from .common import path

NOT_RUNNING = "microk8s is not running. Use microk8s inspect for a deeper inspection."
LOCKED = "This MicroK8s deployment is acting as a node in a cluster.\nPlease use the master node."
UNITS = ("snap.microk8s.daemon-kubelite", "snap.microk8s.daemon-cluster-agent")
ADDONS = {  # name: (description, default enabled)
    "dns": ("(core) CoreDNS", True),
    "ha-cluster": ("(core) Configure high availability on the current node", True),
    "helm": ("(core) Helm - the package manager for Kubernetes", True),
    "helm3": ("(core) Helm 3 - the package manager for Kubernetes", True),
    "cert-manager": ("(core) Cloud native certificate management", False),
    "dashboard": ("(core) The Kubernetes dashboard", False),
    "hostpath-storage": ("(core) Storage class; allocates storage from host directory", False),
    "ingress": ("(core) Ingress controller for external access", False),
    "metallb": ("(core) Loadbalancer for your Kubernetes cluster", False),
    "metrics-server": ("(core) K8s Metrics Server for API access to service metrics", False),
    "observability": (
        "(core) A lightweight observability stack for logs, traces and metrics",
        False,
    ),
    "rbac": ("(core) Role-Based Access Control for authorisation", False),
    "registry": ("(core) Private image registry exposed on localhost:32000", False),
    "storage": ("(core) Alias to hostpath-storage add-on, deprecated", False),
}


# --------------------------------------------------------------------------- paths + state
def snap() -> Path:
    return path("/snap/microk8s/current")


def data() -> Path:
    return path("/var/snap/microk8s/current")


def api_port() -> int:
    return int(common.env("PIKUBE_STANDIN_MICROK8S_API_PORT", "16443"))


def agent_port() -> int:
    return int(common.env("PIKUBE_STANDIN_MICROK8S_AGENT_PORT", "25000"))


def bind_address() -> str:
    return common.env("PIKUBE_STANDIN_BIND_ADDRESS", "0.0.0.0")  # noqa: S104 - MicroK8s listens on all


def local_host() -> str:
    b = bind_address()
    return "127.0.0.1" if b == "0.0.0.0" else b  # noqa: S104


def version() -> str:
    v = snap() / "VERSION"
    return v.read_text().strip() if v.exists() else "v" + common.installed_version("microk8s")


def revision() -> str:
    cur = path("/snap/microk8s/current")
    return os.readlink(cur) if cur.is_symlink() else "x1"


def join_info() -> dict[str, Any] | None:
    p = data() / "credentials/join.json"
    return json.loads(p.read_text()) if p.exists() else None


def is_worker() -> bool:
    return (data() / "var/lock/clustered.lock").exists()


# Where a node's device-tree model is read, as pikube's node prep does (lab Pi personality:
# /sys/firmware/devicetree/base/model, with a copy in /etc/pikube-lab/device-tree-model).
PI_MODEL_FILES = (
    "/proc/device-tree/model",
    "/sys/firmware/devicetree/base/model",
    "/etc/pikube-lab/device-tree-model",
)


def is_raspberry_pi() -> bool:
    for name in PI_MODEL_FILES:
        with contextlib.suppress(OSError):
            return "Raspberry Pi" in path(name).read_text(errors="replace")
    return False


def memory_cgroup_problem() -> str | None:
    """MicroK8s on a Pi needs cgroup_enable=memory cgroup_memory=1 on the kernel command line.

    Only Raspberry Pi kernels disable the memory cgroup by default; other nodes (whose
    /run/pikube-lab/cmdline is the host's /proc/cmdline) are not affected.
    """
    cmdline = path("/run/pikube-lab/cmdline")
    if not cmdline.exists() or not is_raspberry_pi():
        return None
    words = cmdline.read_text().split()
    if "cgroup_enable=memory" in words and "cgroup_memory=1" in words:
        return None
    return "The memory cgroup is not enabled."


def cert_check() -> str:
    """First 12 hex digits of the SHA-256 of the cluster agent's DER certificate (add_token.py)."""
    der = ssl.PEM_cert_to_DER_cert((data() / "certs/server.crt").read_text())
    return hashlib.sha256(der).hexdigest()[:12]


def admin_kubeconfig(server: str | None = None) -> str:
    ca = (data() / "certs/ca.crt").read_bytes()
    ji = join_info()
    if ji:
        ca = ji["ca"].encode()
    server = server or (f"https://{ji['api']}" if ji else f"https://{local_host()}:{api_port()}")
    return common.kubeconfig(
        server,
        ca,
        "admin",
        cert_pem=(data() / "certs/admin.crt").read_bytes(),
        key_pem=(data() / "certs/admin.key").read_bytes(),
        cluster="microk8s-cluster",
    )


def api_client() -> common.Client:
    return common.Client.from_kubeconfig(data() / "credentials/client.config", timeout=5)


def api_ready() -> bool:
    try:
        return bool(api_client().get("/readyz") == "ok")
    except (OSError, common.ApiError, KeyError, ValueError):
        return False


# --------------------------------------------------------------------------- hooks
def generate_pki(node: str, ip: str) -> None:
    from . import pki

    certs = data() / "certs"
    ca, ca_key = pki.make_ca("10.152.183.1")
    pki.write_pair(certs, "ca", ca, ca_key)
    sans = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        node,
        "127.0.0.1",
        "10.152.183.1",
        ip,
    ]
    crt, key = pki.issue(ca, ca_key, "127.0.0.1", sans=sans, server=True, client=False)
    pki.write_pair(certs, "server", crt, key)
    crt, key = pki.issue(ca, ca_key, "admin", orgs=["system:masters"])
    pki.write_pair(certs, "admin", crt, key)
    crt, key = pki.issue(ca, ca_key, f"system:node:{node}", orgs=["system:nodes"])
    pki.write_pair(certs, "kubelet", crt, key)


def write_standalone_config() -> None:
    node, ip = common.node_name(), common.default_ip()
    generate_pki(node, ip)
    certs = data() / "certs"
    args = [
        f"--secure-port={api_port()}",
        f"--advertise-address={ip}",
        f"--bind-address={bind_address()}",
        f"--tls-cert-file={certs / 'server.crt'}",
        f"--tls-private-key-file={certs / 'server.key'}",
        f"--client-ca-file={certs / 'ca.crt'}",
        f"--standin-signing-key-file={certs / 'ca.key'}",
        f"--standin-state-file={data() / 'var/kubernetes/backend/state.json'}",
        f"--standin-version={version()}",
        "--standin-flavour=microk8s",
        "--authorization-mode=RBAC,Node",
    ]
    common.write_file(data() / "args/kube-apiserver", "\n".join(args) + "\n")
    common.write_file(data() / "args/kubelet", f"--hostname-override={node}\n--node-ip={ip}\n")
    common.write_file(data() / "credentials/client.config", admin_kubeconfig(), 0o600)
    common.write_file(data() / "credentials/cluster-tokens.txt", "", 0o600)
    (data() / "var/lock").mkdir(parents=True, exist_ok=True)
    (data() / "var/kubernetes/backend").mkdir(parents=True, exist_ok=True)


def create_group() -> None:
    if common.root() == Path("/"):
        subprocess.run(
            ["groupadd", "--system", "--force", "microk8s"], check=False, capture_output=True
        )
        return
    grp = path("/etc/group")
    text = grp.read_text() if grp.exists() else ""
    if not any(line.startswith("microk8s:") for line in text.splitlines()):
        common.write_file(grp, text + "microk8s:x:999:\n")


def write_units() -> None:
    if common.service_mode() != "systemd":
        return
    for unit, mod in (
        ("snap.microk8s.daemon-kubelite", "microk8s_daemon"),
        ("snap.microk8s.daemon-cluster-agent", "microk8s_agent"),
    ):
        name = unit.removeprefix("snap.microk8s.")
        common.write_file(
            path(f"/etc/systemd/system/{unit}.service"),
            f"""[Unit]
Description=Service for snap application microk8s.{name}
After=network-online.target

[Service]
Environment=PYTHONPATH=/snap/microk8s/current/lib
Environment=SNAP=/snap/microk8s/current
Environment=SNAP_DATA=/var/snap/microk8s/current
EnvironmentFile=-/etc/default/pikube-standin
ExecStart=/usr/bin/python3 -m pikube_standin.{mod}
Restart=always
RestartSec=3

[Install]
WantedBy=multi-user.target
""",
        )
    subprocess.run(["systemctl", "daemon-reload"], check=False, capture_output=True)


def hook(name: str) -> int:
    if name == "install":
        create_group()
        write_standalone_config()
        write_units()
        for u in UNITS:
            common.service_start(u)
    elif name == "remove":
        for u in UNITS:
            common.service_stop(u)
            if common.service_mode() == "systemd":
                subprocess.run(["systemctl", "disable", u], check=False, capture_output=True)
                path(f"/etc/systemd/system/{u}.service").unlink(missing_ok=True)
        if common.service_mode() == "systemd":
            subprocess.run(["systemctl", "daemon-reload"], check=False, capture_output=True)
    elif name == "pre-refresh":
        for u in UNITS:
            common.service_stop(u)
    elif name == "post-refresh":
        args = data() / "args/kube-apiserver"
        if args.exists():
            lines = [
                f"--standin-version={version()}" if ln.startswith("--standin-version=") else ln
                for ln in args.read_text().splitlines()
            ]
            args.write_text("\n".join(lines) + "\n")
        write_units()
        for u in UNITS:
            common.service_start(u)
    return 0


# --------------------------------------------------------------------------- commands
def cmd_status(a: argparse.Namespace) -> int:
    if is_worker():
        print(LOCKED)
        return 1
    deadline = time.monotonic() + (a.timeout if a.timeout > 0 else 10**9)
    ready = api_ready()
    while a.wait_ready and not ready and time.monotonic() < deadline:
        time.sleep(0.5)
        ready = api_ready()
    if not ready:
        print(NOT_RUNNING)
        return 1
    enabled = enabled_addons()
    if a.addon != "all":
        print("enabled" if a.addon in enabled else "disabled")
        return 0
    if a.format == "yaml":
        print("microk8s:\n  running: True\naddons:")
        for n in ADDONS:
            print(
                f"  - name: {n}\n    description: {ADDONS[n][0]}\n    status: "
                f"{'enabled' if n in enabled else 'disabled'}"
            )
        return 0
    members = (
        json.loads((data() / "var/kubernetes/backend/members.json").read_text())
        if (data() / "var/kubernetes/backend/members.json").exists()
        else []
    )
    print("microk8s is running")
    print(f"high-availability: {'yes' if len(members) + 1 >= 3 else 'no'}")  # HA needs three voters
    print(f"  datastore master nodes: {' '.join([f'{common.default_ip()}:19001', *members])}")
    print("  datastore standby nodes: none")
    print("addons:\n  enabled:")
    for n in ADDONS:
        if n in enabled:
            print(f"    {n:<20} # {ADDONS[n][0]}")
    print("  disabled:")
    for n in ADDONS:
        if n not in enabled:
            print(f"    {n:<20} # {ADDONS[n][0]}")
    return 0


def enabled_addons() -> list[str]:
    p = data() / "var/addons.json"
    if p.exists():
        return list(json.loads(p.read_text()))
    return [n for n, (_d, on) in ADDONS.items() if on]


def cmd_enable(a: argparse.Namespace, on: bool) -> int:
    if is_worker():
        print(LOCKED)
        return 1
    if not api_ready():
        print(NOT_RUNNING)
        return 1
    cur = enabled_addons()
    for raw in a.addons:
        name = raw.split(":", 1)[0]
        if name not in ADDONS:
            print(f"Addon {name} was not found in any repository")
            return 1
        print(f"Infer repository core for addon {name}")
        if on:
            if name in cur:
                print(f"Addon core/{name} is already enabled")
                continue
            print(f"Enabling {name}")
            with contextlib.suppress(common.ApiError):
                api_client().post(
                    "/apis/apps/v1/namespaces/kube-system/deployments",
                    {
                        "metadata": {
                            "name": f"addon-{name}",
                            "namespace": "kube-system",
                            "labels": {"microk8s-addon": name},
                        },
                        "spec": {
                            "replicas": 1,
                            "selector": {"matchLabels": {"microk8s-addon": name}},
                            "template": {
                                "metadata": {"labels": {"microk8s-addon": name}},
                                "spec": {
                                    "containers": [{"name": name, "image": f"standin/{name}"}]
                                },
                            },
                        },
                    },
                )
            cur.append(name)
            print(f"{name} is enabled" if name != "dns" else "DNS is enabled")
        else:
            if name not in cur:
                print(f"Addon core/{name} is already disabled")
                continue
            print(f"Disabling {name}")
            with contextlib.suppress(common.ApiError):
                api_client().delete(
                    f"/apis/apps/v1/namespaces/kube-system/deployments/addon-{name}"
                )
            cur.remove(name)
            print(f"{name} is disabled")
    common.write_file(data() / "var/addons.json", json.dumps(cur))
    return 0


def all_ips() -> list[str]:
    default = common.default_ip()
    if os.environ.get("PIKUBE_STANDIN_NODE_IP"):
        return [default]
    try:
        out = subprocess.run(
            ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return [default]
    ips = [line.split()[3].split("/")[0] for line in out.splitlines() if " lo " not in line]
    return [default] + [i for i in ips if i != default]


def cmd_add_node(a: argparse.Namespace) -> int:
    if is_worker() or join_info():
        print(LOCKED)
        return 1
    token = a.token or secrets.token_hex(16)
    if len(token) < 32:
        print("Invalid token size.  It must be 32 characters long.")
        return 1
    tokens = data() / "credentials/cluster-tokens.txt"
    line = f"{token}|{int(time.time()) + a.token_ttl}\n" if a.token_ttl != -1 else f"{token}\n"
    with open(tokens, "a") as fp:
        fp.write(line)
    check = cert_check()
    ips, port = all_ips(), agent_port()
    if a.format == "short":
        for ip in ips:
            print(f"microk8s join {ip}:{port}/{token}/{check}")
    elif a.format == "token-check":
        print(f"{token}/{check}")
    elif a.format == "token":
        print(token)
    elif a.format == "json":
        print(
            json.dumps(
                {
                    "token": f"{token}/{check}",
                    "urls": [f"{ip}:{port}/{token}/{check}" for ip in ips],
                },
                indent=2,
            )
        )
    else:
        print("From the node you wish to join to this cluster, run the following:")
        print(f"microk8s join {ips[0]}:{port}/{token}/{check}\n")
        print(
            "Use the '--worker' flag to join a node as a worker not running the control plane, eg:"
        )
        print(f"microk8s join {ips[0]}:{port}/{token}/{check} --worker\n")
        print(
            "If the node you are adding is not reachable through the default interface you can "
            "use one of the "
            "following:"
        )
        for ip in ips:
            print(f"microk8s join {ip}:{port}/{token}/{check}")
    return 0


def cmd_join(a: argparse.Namespace) -> int:
    if join_info() or is_worker():
        print("The node is already part of a cluster. Run 'microk8s leave' first.")
        return 1
    try:
        hostport, token, *rest = a.connection.split("/")
        host, port = hostport.rsplit(":", 1)
    except ValueError:
        print("Invalid connection string. Expected <master>:<port>/<token>[/<fingerprint>]")
        return 1
    fingerprint = rest[0] if rest else None
    print(f"Contacting cluster at {host}")
    ctx = ssl._create_unverified_context()  # noqa: S323 - as join.py: identity checked by fingerprint
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=30)
    try:
        conn.connect()
        if fingerprint and not a.skip_verify:
            if len(fingerprint) < 12:
                print(
                    "Joining cluster failed. Fingerprint too short. Use '--skip-verify' to skip "
                    "server "
                    "certificate check."
                )
                return 4
            der = conn.sock.getpeercert(True)  # type: ignore[union-attr]
            if not hashlib.sha256(der or b"").hexdigest().startswith(fingerprint):
                print(
                    f"Joining cluster failed. Could not verify the identity of {host}. Use "
                    "'--skip-verify' to "
                    "skip server certificate check."
                )
                return 4
        body = {
            "token": token,
            "hostname": common.node_name(),
            "port": agent_port(),
            "worker": a.worker,
            "ip": common.default_ip(),
            "can_handle_x509_auth": True,
        }
        conn.request(
            "POST",
            "/cluster/api/v2.0/join",
            json.dumps(body),
            {"Content-type": "application/json", "Accept": "application/json"},
        )
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            message = "Connection failed."
            with contextlib.suppress(ValueError):
                message = f"{message} {json.loads(raw)['error']}"
            print(f"{message} ({resp.status}).")
            return 6
        info = json.loads(raw)
    except (OSError, http.client.HTTPException) as e:
        print(f"Please ensure the master node is reachable. {e}")
        return 1
    finally:
        conn.close()
    for u in UNITS:
        common.service_stop(u)
    certs = data() / "certs"
    common.write_file(certs / "ca.remote.crt", info["ca"])
    common.write_file(certs / "kubelet.crt", info["kubelet_cert"])
    common.write_file(certs / "kubelet.key", info["kubelet_key"], 0o600)
    if not a.worker:
        common.write_file(certs / "admin.crt", info["admin_cert"])
        common.write_file(certs / "admin.key", info["admin_key"], 0o600)
    ji = {
        "api": info["api"],
        "ca": info["ca"],
        "role": "worker" if a.worker else "control-plane",
        "cluster_agent": f"{host}:{port}",
    }
    common.write_file(data() / "credentials/join.json", json.dumps(ji), 0o600)
    if a.worker:
        (data() / "var/lock").mkdir(parents=True, exist_ok=True)
        for lock in ("clustered.lock", "no-k8s-dqlite"):
            (data() / "var/lock" / lock).touch(mode=0o700)
    else:
        common.write_file(data() / "credentials/client.config", admin_kubeconfig(), 0o600)
    common.service_start("snap.microk8s.daemon-kubelite")
    if not a.worker:
        common.service_start("snap.microk8s.daemon-cluster-agent")
        print("Waiting for this node to finish joining the cluster. .. .. .. ..")
    nodeclient = common.Client(
        f"https://{info['api']}",
        ca_pem=info["ca"].encode(),
        cert_pem=info["kubelet_cert"].encode(),
        key_pem=info["kubelet_key"].encode(),
    )
    common.wait_for(
        lambda: nodeclient.get(f"/api/v1/nodes/{common.node_name()}") is not None, 60, 0.5
    )
    if a.worker:
        print(
            "The node has joined the cluster and will appear in the nodes list in a few "
            "seconds.\n\n"
            "This worker node gets automatically configured with the API server endpoints.\n"
            "If the API servers are behind a loadbalancer please set the '--refresh-interval' to "
            "'0s' in:\n"
            "    /var/snap/microk8s/current/args/apiserver-proxy\n"
            "and replace the API server endpoints with the one provided by the loadbalancer in:\n"
            "    /var/snap/microk8s/current/args/traefik/provider.yaml\n"
        )
    else:
        print("Successfully joined the cluster.")
    return 0


def cmd_leave(_a: argparse.Namespace) -> int:
    if not join_info():
        print("This node is not part of a cluster.")
        return 1
    for u in UNITS:
        common.service_stop(u)
    (data() / "credentials/join.json").unlink(missing_ok=True)
    for lock in ("clustered.lock", "no-k8s-dqlite"):
        (data() / "var/lock" / lock).unlink(missing_ok=True)
    (data() / "certs/ca.remote.crt").unlink(missing_ok=True)
    shutil.rmtree(data() / "var/kubernetes/backend", ignore_errors=True)
    print("Generating new cluster certificates.")
    write_standalone_config()
    for u in UNITS:
        common.service_start(u)
    print("Waiting for node to start. ", end="", flush=True)
    common.wait_for(api_ready, 60, 0.5)
    print("")
    return 0


def cmd_remove_node(a: argparse.Namespace) -> int:
    if is_worker() or join_info():
        print(LOCKED)
        return 1
    client = api_client()
    try:
        node = client.get(f"/api/v1/nodes/{a.node}")
    except common.ApiError:
        node = None
    members_file = data() / "var/kubernetes/backend/members.json"
    members = json.loads(members_file.read_text()) if members_file.exists() else []
    ip = None
    if node:
        ip = next(
            (
                x["address"]
                for x in node.get("status", {}).get("addresses", [])
                if x["type"] == "InternalIP"
            ),
            None,
        )
    member = next((m for m in members if ip and m.startswith(f"{ip}:")), None)
    if node is None and not a.force:
        print(f"Node {a.node} does not exist in Kubernetes.")
        return 1
    if member and not a.force:
        ready = next(
            (
                c["status"]
                for c in node.get("status", {}).get("conditions", [])  # type: ignore[union-attr]
                if c["type"] == "Ready"
            ),
            "Unknown",
        )
        if ready == "True":
            print(
                f"Removal failed. Node {a.node} is registered with dqlite. Please, run first "
                "'microk8s leave' "
                "on the departing node. \nIf the node is not available anymore and will never "
                "attempt to join "
                "the cluster in the future use the '--force' flag \nto unregister the node while "
                "removing it."
            )
            return 1
    if node is not None:
        client.delete(f"/api/v1/nodes/{a.node}")
    if member:
        members.remove(member)
        common.write_file(members_file, json.dumps(members))
    return 0


def cmd_config(a: argparse.Namespace) -> int:
    if is_worker():
        print(LOCKED)
        return 1
    server = f"https://127.0.0.1:{api_port()}" if a.use_loopback else None
    if server is None and not join_info():
        server = f"https://{common.default_ip()}:{api_port()}"
    print(admin_kubeconfig(server), end="")
    return 0


def kubectl_binary() -> str:
    return os.environ.get("PIKUBE_STANDIN_KUBECTL") or str(snap() / "kubectl")


def cmd_kubectl(args: list[str]) -> int:
    if is_worker():
        print(LOCKED.replace("master node", "microk8s kubectl on the master"), file=sys.stderr)
        return 1
    argv = [kubectl_binary(), f"--kubeconfig={data() / 'credentials/client.config'}", *args]
    return subprocess.run(argv, check=False).returncode


def cmd_inspect(_a: argparse.Namespace) -> int:
    print("Inspecting system")
    print("Inspecting Certificates")
    print("Inspecting services")
    for u in UNITS:
        state = "running" if common.service_active(u) else "not running"
        print(f"  Service {u} is {state}")
    problem = memory_cgroup_problem()
    if problem:
        print(
            f"WARNING:  {problem}\nThe cluster may not be functioning properly. Please ensure "
            "cgroups are "
            "enabled \nSee for example: https://microk8s.io/docs/install-alternatives#heading--arm "
        )
    return 0


def cmd_start_stop(start: bool) -> int:
    for u in UNITS:
        if start:
            common.service_start(u, restart=False)
        else:
            common.service_stop(u)
    if not start:
        print("Stopped.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="microk8s")
    p.add_argument("--hook")
    sub = p.add_subparsers(dest="cmd")
    s = sub.add_parser("status")
    s.add_argument("-w", "--wait-ready", action="store_true")
    s.add_argument("-t", "--timeout", type=int, default=0)
    s.add_argument("-a", "--addon", default="all")
    s.add_argument("--format", default="pretty", choices=("pretty", "short", "yaml"))
    an = sub.add_parser("add-node")
    an.add_argument("-l", "--token-ttl", type=int, default=-1)
    an.add_argument("-t", "--token")
    an.add_argument(
        "--format", default="pretty", choices=("pretty", "short", "token", "token-check", "json")
    )
    j = sub.add_parser("join")
    j.add_argument("connection")
    j.add_argument("--worker", action="store_true")
    j.add_argument("--skip-verify", action="store_true")
    sub.add_parser("leave")
    rn = sub.add_parser("remove-node")
    rn.add_argument("node")
    rn.add_argument("--force", action="store_true")
    c = sub.add_parser("config")
    c.add_argument("-l", "--use-loopback", action="store_true")
    for name in ("enable", "disable"):
        e = sub.add_parser(name)
        e.add_argument("addons", nargs="+")
    sub.add_parser("inspect")
    sub.add_parser("start")
    sub.add_parser("stop")
    sub.add_parser("version")
    return p


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("kubectl", "microk8s.kubectl"):
        return cmd_kubectl(args[1:])
    a = build_parser().parse_args(args)
    if a.hook:
        return hook(a.hook)
    if a.cmd is None:
        build_parser().print_help()
        return 0
    if os.geteuid() != 0 and a.cmd not in ("version",):
        print(
            "Insufficient permissions to access MicroK8s.\nYou can either try again with sudo or "
            "add the user "
            "to the 'microk8s' group:\n\n    sudo usermod -a -G microk8s $USER\n    sudo chown -R "
            "$USER ~/.kube\n"
        )
        return 1
    if not snap().exists():
        print("microk8s: command not found (the snap is not installed)", file=sys.stderr)
        return 127
    table = {
        "status": cmd_status,
        "add-node": cmd_add_node,
        "join": cmd_join,
        "leave": cmd_leave,
        "remove-node": cmd_remove_node,
        "config": cmd_config,
        "inspect": cmd_inspect,
    }
    if a.cmd in table:
        return int(table[a.cmd](a))
    if a.cmd in ("enable", "disable"):
        return cmd_enable(a, a.cmd == "enable")
    if a.cmd in ("start", "stop"):
        return cmd_start_stop(a.cmd == "start")
    if a.cmd == "version":
        print(f"MicroK8s {version()} revision {revision()}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
