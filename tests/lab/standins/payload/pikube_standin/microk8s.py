"""MicroK8s stand-in CLI (and the snap hooks behind `snap install/remove/refresh microk8s`).

Contract: https://microk8s.io/docs/command-reference , https://microk8s.io/docs/clustering ,
https://microk8s.io/docs/install-raspberry-pi (memory cgroup), and canonical/microk8s branch
1.31 (9029c514, same on 1.30): microk8s-resources/wrappers/*.wrapper, actions/common/utils.sh,
scripts/wrappers/{add_token,join,leave,remove_node,status}.py, snap/hooks/install.
tests/lab/standins/README.md lists which behaviour comes from which file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import common
from . import microk8s_dqlite as dqlite
from .common import path

NOT_RUNNING = "microk8s is not running. Use microk8s inspect for a deeper inspection."
# What a joined worker (var/lock/clustered.lock) answers. The shell wrappers print to stdout
# and exit 0 for status, config and kubectl, exit 1 for add-node and remove-node; Python
# commands (enable, disable) go through common/utils.py is_cluster_locked() and exit 1.
ACTING = "This MicroK8s deployment is acting as a node in a cluster."
LOCKED = f"{ACTING}\nPlease use the master node."  # is_cluster_locked(), exit 1
WORKER_STATUS = f"{ACTING}\nPlease use the control plane node."  # status wrapper, exit 0
WORKER_KUBECTL = f"{ACTING} Please use the microk8s kubectl on the master."  # exit 0
WORKER_CONFIG = f"{ACTING} Please use the microk8s config on the master."  # exit 0
WORKER_ADD_NODE = f"{ACTING} Please use the microk8s add-node on the master."  # exit 1
WORKER_REMOVE_NODE = f"{ACTING} Please use microk8s leave."  # exit 1
NOT_CLUSTERED = "This MicroK8s deployment is not acting as a node in a cluster."  # leave, exit 1
# snap/hooks/install: "Low memory guard. Enable by default when system RAM is less than 512MB"
# (MemTotal <= 524288 kB). Then kubelite does not start the control plane, status and start
# print LOW_MEMORY and exit 1, and only `join --worker` is allowed (utils.sh, join.py).
LOW_MEMORY_GUARD_KB = 524288
LOW_MEMORY = """
This node does not have enough RAM to host the Kubernetes control plane services
and join the database quorum. You may consider joining this node as a worker
node to a cluster.

If you would still like to start the control plane services, start MicroK8s with:

    microk8s start --disable-low-memory-guard
"""
# In start order: the datastore (k8s-dqlite; etcd here, see microk8s_dqlite.py), kubelite
# (the API server on it), the cluster agent, and the apiserver-proxy (it runs on workers only,
# microk8s_apiserver_proxy.py; elsewhere it exits 0 at once).
APISERVER_PROXY = "snap.microk8s.daemon-apiserver-proxy"
UNITS = (
    "snap.microk8s.daemon-k8s-dqlite",
    "snap.microk8s.daemon-kubelite",
    "snap.microk8s.daemon-cluster-agent",
    APISERVER_PROXY,
)
# name: (description, version, enabled by default), as the core addons repository lists them
# (canonical/microk8s-core-addons addons.yaml); every one lives in repository "core".
ADDONS = {
    "dns": ("CoreDNS", "1.9.0", True),
    "ha-cluster": ("Configure high availability on the current node", "0.1.0", True),
    "helm": ("Helm - the package manager for Kubernetes", "2.16.0", True),
    "helm3": ("Helm 3 - the package manager for Kubernetes", "3.8.0", True),
    "cert-manager": ("Cloud native certificate management", "1.8.0", False),
    "dashboard": ("The Kubernetes dashboard", "2.3.0", False),
    "hostpath-storage": ("Storage class; allocates storage from host directory", "1.1.0", False),
    "ingress": ("Ingress controller for external access", "1.5.1", False),
    "metallb": ("Loadbalancer for your Kubernetes cluster", "0.9.3", False),
    "metrics-server": ("K8s Metrics Server for API access to service metrics", "0.5.0", False),
    "observability": (
        "A lightweight observability stack for logs, traces and metrics",
        "0.1.0",
        False,
    ),
    "rbac": ("Role-Based Access Control for authorisation", "", False),
    "registry": ("Private image registry exposed on localhost:32000", "2.6", False),
    "storage": ("Alias to hostpath-storage add-on, deprecated", "1.1.0", False),
}
# The workloads an addon's manifest deploys, (namespace, kind, name): canonical/microk8s-core-
# addons 1.31 (c421c775; the same on 1.30) addons/metallb/metallb.yaml, ingress/ingress.yaml,
# hostpath-storage/storage.yaml, metrics-server/metrics-server.yaml (addons.yaml check_status
# names them too). Other addons get one Deployment kube-system/addon-NAME.
ADDON_WORKLOADS = {
    "metallb": (
        ("metallb-system", "DaemonSet", "speaker"),
        ("metallb-system", "Deployment", "controller"),
    ),
    "ingress": (("ingress", "DaemonSet", "nginx-ingress-microk8s-controller"),),
    "hostpath-storage": (("kube-system", "Deployment", "hostpath-provisioner"),),
    "metrics-server": (("kube-system", "Deployment", "metrics-server"),),
}


def addon_workloads(name: str) -> tuple[tuple[str, str, str], ...]:
    return ADDON_WORKLOADS.get(name, (("kube-system", "Deployment", f"addon-{name}"),))


def workload_url(namespace: str, kind: str, name: str = "") -> str:
    plural = "daemonsets" if kind == "DaemonSet" else "deployments"
    return f"/apis/apps/v1/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


def create_addon_workloads(name: str) -> None:
    client = api_client()
    for namespace, kind, workload in addon_workloads(name):
        with contextlib.suppress(common.ApiError):  # exists already
            client.post("/api/v1/namespaces", {"metadata": {"name": namespace}})
        labels = {"microk8s-addon": name, "app": workload}
        spec: dict[str, Any] = {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": workload, "image": f"standin/{name}"}]},
            },
        }
        if kind == "Deployment":
            spec["replicas"] = 1
        body = {
            "metadata": {"name": workload, "namespace": namespace, "labels": labels},
            "spec": spec,
        }
        with contextlib.suppress(common.ApiError):
            client.post(workload_url(namespace, kind), body)


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


def lock(name: str) -> Path:
    return data() / "var/lock" / name


def is_worker() -> bool:
    return lock("clustered.lock").exists()


def low_memory_guard() -> bool:
    """common/cluster/utils.py is_low_memory_guard_enabled(): the lock the install hook made."""
    return lock("low-memory-guard.lock").exists()


def mem_total_kb() -> int:
    for line in common.proc("meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


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
    """common/utils.py is_cluster_ready(): `service/kubernetes` in `kubectl get all -A` and
    " Ready " in `kubectl get nodes` (a Ready node that is not cordoned: a cordoned one shows
    `Ready,SchedulingDisabled`)."""
    try:
        client = api_client()
        if client.get("/api/v1/namespaces/default/services/kubernetes") is None:
            return False
        nodes = client.get("/api/v1/nodes") or {}
    except (OSError, common.ApiError, KeyError, ValueError):
        return False
    return any(
        not n.get("spec", {}).get("unschedulable")
        and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in n.get("status", {}).get("conditions", [])
        )
        for n in nodes.get("items", [])
    )


# --------------------------------------------------------------------------- hooks
# microk8s-resources/certs/csr.conf.template at canonical/microk8s v1.31 (9029c514), verbatim:
# the API server certificate's names. The install hook copies it to certs/; users add IP.N
# lines (a load balancer's address) and `refresh-certs --cert server.crt` issues it again.
CSR_TEMPLATE = """[ req ]
default_bits = 2048
prompt = no
default_md = sha256
req_extensions = req_ext
distinguished_name = dn

[ dn ]
C = GB
ST = Canonical
L = Canonical
O = Canonical
OU = Canonical
CN = 127.0.0.1

[ req_ext ]
subjectAltName = @alt_names

[ alt_names ]
DNS.1 = kubernetes
DNS.2 = kubernetes.default
DNS.3 = kubernetes.default.svc
DNS.4 = kubernetes.default.svc.cluster
DNS.5 = kubernetes.default.svc.cluster.local
IP.1 = 127.0.0.1
IP.2 = 10.152.183.1
#MOREIPS

[ v3_ext ]
authorityKeyIdentifier=keyid,issuer:always
basicConstraints=CA:FALSE
keyUsage=keyEncipherment,dataEncipherment,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=@alt_names
"""
ALT_NAME = re.compile(r"^(DNS|IP)\.[0-9]+\s*=\s*(\S+)\s*$")


def server_sans() -> list[str]:
    """utils.sh render_csr_conf(): the template's DNS.N and IP.N values, and where #MOREIPS
    stands, the node's own addresses (get_ips)."""
    template = data() / "certs/csr.conf.template"
    text = template.read_text() if template.exists() else CSR_TEMPLATE
    names: list[str] = []
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[ alt_names ]":
            m = ALT_NAME.match(line)
            if m:
                names.append(m.group(2))
            elif line == "#MOREIPS":
                names.extend(ip for ip in all_ips() if ip not in names)
    return names


def issue_server_cert() -> None:
    """utils.sh gen_server_cert(): server.crt from csr.conf, signed by the cluster's CA."""
    from . import pki

    certs = data() / "certs"
    crt, key = pki.issue(
        (certs / "ca.crt").read_bytes(),
        (certs / "ca.key").read_bytes(),
        "127.0.0.1",
        sans=server_sans(),
        server=True,
        client=False,
    )
    pki.write_pair(certs, "server", crt, key)


def generate_pki(node: str) -> None:
    from . import pki

    certs = data() / "certs"
    if not (certs / "csr.conf.template").exists():
        common.write_file(certs / "csr.conf.template", CSR_TEMPLATE)
    ca, ca_key = pki.make_ca("10.152.183.1")
    pki.write_pair(certs, "ca", ca, ca_key)
    issue_server_cert()
    crt, key = pki.issue(ca, ca_key, "admin", orgs=["system:masters"])
    pki.write_pair(certs, "admin", crt, key)
    crt, key = pki.issue(ca, ca_key, f"system:node:{node}", orgs=["system:nodes"])
    pki.write_pair(certs, "kubelet", crt, key)


def write_standalone_config() -> None:
    node, ip = common.node_name(), common.default_ip()
    generate_pki(node)
    certs = data() / "certs"
    args = [
        f"--secure-port={api_port()}",
        f"--advertise-address={ip}",
        f"--bind-address={bind_address()}",
        f"--tls-cert-file={certs / 'server.crt'}",
        f"--tls-private-key-file={certs / 'server.key'}",
        f"--client-ca-file={certs / 'ca.crt'}",
        f"--standin-signing-key-file={certs / 'ca.key'}",
        f"--etcd-servers={dqlite.client_url()}",
        f"--standin-version={version()}",
        "--standin-flavour=microk8s",
        "--authorization-mode=RBAC,Node",
    ]
    common.write_file(data() / "args/kube-apiserver", "\n".join(args) + "\n")
    common.write_file(data() / "args/kubelet", f"--hostname-override={node}\n--node-ip={ip}\n")
    common.write_file(data() / "credentials/client.config", admin_kubeconfig(), 0o600)
    common.write_file(data() / "credentials/cluster-tokens.txt", "", 0o600)
    # every dqlite node has args/k8s-dqlite; the leave wrapper looks for it
    common.write_file(
        data() / "args/k8s-dqlite",
        f"--storage-dir={data() / 'var/kubernetes/backend'}\n"
        f"--listen=unix://{data() / 'var/kubernetes/backend/kine.sock'}:12379\n",
    )
    (data() / "var/lock").mkdir(parents=True, exist_ok=True)
    dqlite.reset()


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
        ("snap.microk8s.daemon-k8s-dqlite", "microk8s_dqlite"),
        ("snap.microk8s.daemon-kubelite", "microk8s_daemon"),
        ("snap.microk8s.daemon-cluster-agent", "microk8s_agent"),
        (APISERVER_PROXY, "microk8s_apiserver_proxy"),
    ):
        # snapd's default for a `daemon: simple` app: restart on failure only (the
        # apiserver-proxy exits 0 on a node that is not a worker, and stays down)
        restart = "on-failure" if unit == APISERVER_PROXY else "always"
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
Restart={restart}
RestartSec=3

[Install]
WantedBy=multi-user.target
""",
        )
    subprocess.run(["systemctl", "daemon-reload"], check=False, capture_output=True)


def hook(name: str) -> int:
    if name == "install":
        from . import microk8s_apiserver_proxy as apiserver_proxy

        create_group()
        write_standalone_config()
        apiserver_proxy.write_default_args()
        if mem_total_kb() <= LOW_MEMORY_GUARD_KB:  # snap/hooks/install
            lock("low-memory-guard.lock").touch()
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
    if is_worker():  # microk8s-status.wrapper
        print(WORKER_STATUS)
        return 0
    if low_memory_guard():  # microk8s-status.wrapper: exit_if_low_memory_guard
        print(LOW_MEMORY)
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
    if a.format == "yaml":  # status.py print_yaml
        print("microk8s:\n  running: True")
        print(f"high-availability:\n  enabled: {is_ha()}")
        if is_ha():
            print("  nodes:")
            for member, role in dqlite.info():
                print(f"    - address: {member}\n      role: {role}")
        print("addons:")
        for on in (True, False):
            for n, (description, addon_version, _default) in ADDONS.items():
                if (n in enabled) == on:
                    print(
                        f"  - name: {n}\n    repository: core\n    description: {description}\n"
                        f"    version: {addon_version}\n"
                        f"    status: {'enabled' if on else 'disabled'}"
                    )
        return 0
    print("microk8s is running")
    if not is_ha():
        print("high-availability: no")
    else:  # status.py print_pretty(): formed with three voters (ha_cluster_formed)
        info = dqlite.info()
        voters = [m for m, role in info if role == "voter"]
        standby = [m for m, role in info if role == "standby"]
        print(f"high-availability: {'yes' if len(voters) > 2 else 'no'}")
        print(f"  datastore master nodes: {' '.join(voters) or 'none'}")
        print(f"  datastore standby nodes: {' '.join(standby) or 'none'}")
    for title, on in (("enabled", True), ("disabled", False)):
        if title == "enabled":
            print("addons:")
        print(f"  {title}:")
        for n, (description, _version, _default) in ADDONS.items():
            if (n in enabled) == on:
                print(f"    {n:<20} # (core) {description}")
    return 0


def is_ha() -> bool:
    """MicroK8s runs dqlite (ha-cluster, enabled by default) on every control-plane node."""
    return "ha-cluster" in enabled_addons()


def enabled_addons() -> list[str]:
    p = data() / "var/addons.json"
    if p.exists():
        return list(json.loads(p.read_text()))
    return [n for n, (_d, _v, on) in ADDONS.items() if on]


# canonical/microk8s-core-addons addons/metallb/enable: the argument is one or more ranges,
# comma-separated, each FIRST-LAST or a CIDR block; without one the script prompts on stdin.
METALLB_RANGE = re.compile(r"\d+\.\d+\.\d+\.\d+-\d+\.\d+\.\d+\.\d+")
METALLB_CIDR = re.compile(r"\d+\.\d+\.\d+\.\d{1,3}/\d{1,3}")


def metallb_ranges_ok(argument: str) -> bool:
    if not argument:
        sys.stdout.write(
            "Enter each IP address range delimited by comma (e.g. "
            "'10.64.140.43-10.64.140.49,192.168.0.105-192.168.0.111'): "
        )
        sys.stdout.flush()
        argument = sys.stdin.readline().strip() if not sys.stdin.closed else ""
        if not argument:
            print(
                "You have to input an IP Range value when asked, or provide it as an argument "
                "to the enable command, eg:\n"
                "  microk8s enable metallb:10.64.140.43-10.64.140.49,192.168.0.105-192.168.0.111"
            )
            return False
    for item in argument.split(","):
        if not (METALLB_RANGE.fullmatch(item) or METALLB_CIDR.fullmatch(item)):
            print(f"Your input value ({item}) is not a valid IP Range")
            return False
    return True


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
            if name == "metallb" and not metallb_ranges_ok(raw.partition(":")[2]):
                return 1
            create_addon_workloads(name)
            cur.append(name)
            print(f"{name} is enabled" if name != "dns" else "DNS is enabled")
        else:
            if name not in cur:
                print(f"Addon core/{name} is already disabled")
                continue
            print(f"Disabling {name}")
            for namespace, kind, workload in addon_workloads(name):
                with contextlib.suppress(common.ApiError):
                    api_client().delete(workload_url(namespace, kind, workload))
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
    if is_worker():  # microk8s-add-node.wrapper
        print(WORKER_ADD_NODE)
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
    elif a.format in ("json", "yaml"):  # add_token.py get_output_dict
        info = {"token": f"{token}/{check}", "urls": [f"{ip}:{port}/{token}/{check}" for ip in ips]}
        if a.format == "json":
            print(json.dumps(info, indent=2))
        else:
            import yaml

            print(yaml.dump(info, indent=2))
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
    if join_info() or is_worker() or lock("no-cert-reissue").exists():
        print("The node is already part of a cluster. Run 'microk8s leave' first.")
        return 1
    try:
        hostport, token, *rest = a.connection.split("/")
        host, port = hostport.rsplit(":", 1)
    except ValueError:
        print("Invalid connection string. Expected <master>:<port>/<token>[/<fingerprint>]")
        return 1
    fingerprint = rest[0] if rest else None
    if low_memory_guard() and a.disable_low_memory_guard:
        lock("low-memory-guard.lock").unlink()
    if low_memory_guard() and not a.worker:  # join.py
        print(
            "\nThis node does not have enough RAM to host the Kubernetes control plane services\n"
            "and join the database quorum. You may consider joining this node as a worker "
            f"instead:\n\n    microk8s join {a.connection} --worker\n\n"
            "If you would still like to join the cluster as a control plane node, use:\n\n"
            f"    microk8s join {a.connection} --disable-low-memory-guard\n"
        )
        return 1
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
            # stand-in: the address this node's datastore member will have (a dqlite node
            # joins the cluster itself with its own address; here the agent adds it)
            "dqlite_address": dqlite.address(),
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
    if a.worker:
        join_worker(info, f"{host}:{port}")
    else:
        join_full_member(info)
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


def join_worker(info: dict[str, Any], agent: str) -> None:
    """join_dqlite_worker_node(): the cluster's CA, a kubelet certificate and its kubeconfig
    pointing at this node's apiserver-proxy (create_worker_kubeconfigs), the proxy's first
    control plane: the one contacted (update_apiserver_proxy); mark_worker_node() restarts
    kubelite and the apiserver-proxy."""
    from . import microk8s_apiserver_proxy as apiserver_proxy

    certs = data() / "certs"
    common.write_file(certs / "ca.remote.crt", info["ca"])
    common.write_file(certs / "kubelet.crt", info["kubelet_cert"])
    common.write_file(certs / "kubelet.key", info["kubelet_key"], 0o600)
    server = apiserver_proxy.local_server()
    common.write_file(
        data() / "credentials/kubelet.config",
        common.kubeconfig(
            f"https://{server}",
            info["ca"].encode(),
            f"system:node:{common.node_name()}",
            cert_pem=info["kubelet_cert"].encode(),
            key_pem=info["kubelet_key"].encode(),
            cluster="microk8s-cluster",
            # host tests: the fake node's address is in no server certificate; 127.0.0.1,
            # the address a real worker uses, is in every one (csr.conf.template)
            tls_server_name=None if server.startswith("127.0.0.1:") else "127.0.0.1",
        ),
        0o600,
    )
    ji = {"api": info["api"], "ca": info["ca"], "role": "worker", "cluster_agent": agent}
    common.write_file(data() / "credentials/join.json", json.dumps(ji), 0o600)
    lock("no-apiserver-proxy").unlink(missing_ok=True)
    apiserver_proxy.write_servers([f"{agent.rsplit(':', 1)[0]}:{info['api_port']}"])
    (data() / "var/lock").mkdir(parents=True, exist_ok=True)
    for name in ("clustered.lock", "no-k8s-dqlite", "no-cert-reissue"):  # mark_worker_node()
        lock(name).touch(mode=0o700)
    common.service_start("snap.microk8s.daemon-kubelite")
    common.service_start(APISERVER_PROXY)


def join_full_member(info: dict[str, Any]) -> None:
    """join_dqlite_master_node(): the cluster's CA and key (this node's server certificate is
    issued again from it, as the apiservice-kicker does), the admin and kubelet credentials,
    then update_dqlite(): this node becomes a datastore member and its API server serves the
    cluster's state."""
    certs = data() / "certs"
    common.write_file(certs / "ca.crt", info["ca"])
    common.write_file(certs / "ca.key", info["ca_key"], 0o600)
    common.write_file(certs / "admin.crt", info["admin_cert"])
    common.write_file(certs / "admin.key", info["admin_key"], 0o600)
    common.write_file(certs / "kubelet.crt", info["kubelet_cert"])
    common.write_file(certs / "kubelet.key", info["kubelet_key"], 0o600)
    issue_server_cert()
    common.write_file(data() / "credentials/client.config", admin_kubeconfig(), 0o600)
    dqlite.reset()
    dqlite.write_init(info["voters"], info["initial_cluster"])
    common.service_start(dqlite.UNIT)
    print("Waiting for this node to finish joining the cluster.", end=" ", flush=True)
    common.wait_for(dqlite.healthy, 60, 0.5)
    print(" ")
    (data() / "var/lock").mkdir(parents=True, exist_ok=True)
    lock("no-cert-reissue").touch(mode=0o700)  # mark_no_cert_reissue()
    common.service_start("snap.microk8s.daemon-kubelite")
    common.service_start("snap.microk8s.daemon-cluster-agent")


def cmd_leave(_a: argparse.Namespace) -> int:
    # microk8s-leave.wrapper: a node that joined has no-cert-reissue, and is a worker
    # (clustered.lock) or a dqlite member (args/k8s-dqlite)
    if not lock("no-cert-reissue").exists() or (
        not is_worker() and not (data() / "args/k8s-dqlite").exists()
    ):
        print(NOT_CLUSTERED)
        return 1
    if not is_worker():  # leave.py: take this node out of the dqlite cluster first
        with contextlib.suppress(dqlite.EtcdError):
            dqlite.remove_member(dqlite.address())
    if is_worker():  # leave.py disable_apiserver_proxy()
        lock("no-apiserver-proxy").touch(mode=0o700)
    for u in UNITS:
        common.service_stop(u)
    (data() / "credentials/join.json").unlink(missing_ok=True)
    (data() / "credentials/kubelet.config").unlink(missing_ok=True)
    for name in ("clustered.lock", "no-k8s-dqlite", "no-cert-reissue"):
        lock(name).unlink(missing_ok=True)
    (data() / "certs/ca.remote.crt").unlink(missing_ok=True)
    print("Generating new cluster certificates.")
    write_standalone_config()
    for u in UNITS:
        common.service_start(u)
    print("Waiting for node to start. ", end="", flush=True)
    common.wait_for(api_ready, 60, 0.5)
    print("")
    return 0


def cmd_remove_node(a: argparse.Namespace) -> int:
    """microk8s-remove-node.wrapper + remove_node.py remove_dqlite_node()."""
    if is_worker():
        print(WORKER_REMOVE_NODE)
        return 1
    client = api_client()
    try:
        node = client.get(f"/api/v1/nodes/{a.node}")
    except common.ApiError:
        node = None
    members = [m for m, _role in dqlite.info()]
    if node is None:
        # `kubectl get no NAME` failed: the removal fails, --force only clears a dqlite
        # entry whose address is NAME (an IP)
        print(f"Node {a.node} does not exist in Kubernetes.")
        if a.force:
            print(f"Attempting to remove {a.node} from dqlite.")
            stale = [m for m in members if m.startswith(f"{a.node}:")]
            if stale:
                print("Removing node entry found in dqlite.")
                for m in stale:
                    dqlite.remove_member(m)
        return 1
    ip = next(
        (
            x["address"]
            for x in node.get("status", {}).get("addresses", [])
            if x["type"] == "InternalIP"
        ),
        None,
    )
    if ip is None:
        print(f"Node {a.node} is not part of the cluster.")
        return 1
    member = next((m for m in members if m.startswith(f"{ip}:")), None)
    if member and not a.force:  # a datastore member, Ready or not
        print(
            f"Removal failed. Node {a.node} is registered with dqlite. Please, run first "
            "'microk8s leave' on the departing node. \n"
            "If the node is not available anymore and will never attempt to join the cluster "
            "in the future use the '--force' flag \n"
            "to unregister the node while removing it."
        )
        return 1
    if member:
        dqlite.remove_member(member)
    client.delete(f"/api/v1/nodes/{a.node}")
    return 0


def cmd_refresh_certs(a: argparse.Namespace) -> int:
    """microk8s-refresh-certs.wrapper + refresh_certs.py: only `--cert server.crt` is modelled
    (the server certificate issued again from the rendered template, then kubelite and the
    cluster agent restarted, as reproduce_server_cert() does)."""
    if is_worker():
        print(
            "This MicroK8s deployment is acting as a node in a cluster. Please use the microk8s "
            "refresh-certs command on the master\nand then return to this node to perform a "
            "microk8s leave and re-join."
        )
        return 0
    if a.cert is None:
        print("Please use the '--cert' flag to select the certificate you need refreshed.")
        return 3
    if a.cert != "server.crt":
        print(f"pikube stand-in: refresh-certs --cert {a.cert} is not modelled.")
        return 1
    print(f"Taking a backup of the current certificates under {data()}/certs-backup/")
    backup = data() / "certs-backup/certs"
    backup.mkdir(parents=True, exist_ok=True)
    for name in ("server.crt", "server.key"):
        shutil.copy2(data() / "certs" / name, backup / name)
    print("Creating new certificates")
    issue_server_cert()
    for u in UNITS:
        if common.service_active(u):
            common.service_start(u)
    return 0


def cmd_config(a: argparse.Namespace) -> int:
    if is_worker():  # microk8s-config.wrapper
        print(WORKER_CONFIG)
        return 0
    server = f"https://127.0.0.1:{api_port()}" if a.use_loopback else None
    if server is None and not join_info():
        server = f"https://{common.default_ip()}:{api_port()}"
    print(admin_kubeconfig(server), end="")
    return 0


def kubectl_binary() -> str:
    return os.environ.get("PIKUBE_STANDIN_KUBECTL") or str(snap() / "kubectl")


def cmd_kubectl(args: list[str]) -> int:
    if is_worker():  # microk8s-kubectl.wrapper
        print(WORKER_KUBECTL)
        return 0
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


def cmd_start_stop(start: bool, disable_low_memory_guard: bool = False) -> int:
    if start and not is_worker():  # microk8s-start.wrapper
        if disable_low_memory_guard:
            lock("low-memory-guard.lock").unlink(missing_ok=True)
        if low_memory_guard():
            print(LOW_MEMORY)
            return 1
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
        "--format",
        default="pretty",
        choices=("pretty", "short", "token", "token-check", "json", "yaml"),
    )
    j = sub.add_parser("join")
    j.add_argument("connection")
    j.add_argument("--worker", action="store_true")
    j.add_argument("--skip-verify", action="store_true")
    j.add_argument("--disable-low-memory-guard", action="store_true")
    sub.add_parser("leave")
    rn = sub.add_parser("remove-node")
    rn.add_argument("node")
    rn.add_argument("--force", action="store_true")
    rc = sub.add_parser("refresh-certs")
    rc.add_argument("-e", "--cert", choices=("ca.crt", "server.crt", "front-proxy-client.crt"))
    c = sub.add_parser("config")
    c.add_argument("-l", "--use-loopback", action="store_true")
    for name in ("enable", "disable"):
        e = sub.add_parser(name)
        e.add_argument("addons", nargs="+")
    sub.add_parser("inspect")
    sub.add_parser("start").add_argument("--disable-low-memory-guard", action="store_true")
    sub.add_parser("stop")
    sub.add_parser("version")
    sub.add_parser("dbctl", add_help=False).add_argument("args", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("kubectl", "microk8s.kubectl"):
        return cmd_kubectl(args[1:])
    # dbctl parses its own options (its --debug comes before the command)
    if args and args[0] == "dbctl":
        a = argparse.Namespace(hook=None, cmd="dbctl", args=args[1:])
    else:
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
        "refresh-certs": cmd_refresh_certs,
        "inspect": cmd_inspect,
    }
    if a.cmd in table:
        return int(table[a.cmd](a))
    if a.cmd in ("enable", "disable"):
        return cmd_enable(a, a.cmd == "enable")
    if a.cmd == "dbctl":
        from . import microk8s_dbctl

        return microk8s_dbctl.main(a.args, is_worker(), LOCKED)
    if a.cmd == "start":
        return cmd_start_stop(True, a.disable_low_memory_guard)
    if a.cmd == "stop":
        return cmd_start_stop(False)
    if a.cmd == "version":
        print(f"MicroK8s {version()} revision {revision()}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
