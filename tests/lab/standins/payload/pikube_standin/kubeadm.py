"""kubeadm stand-in: init, join, token, reset, upgrade, version, config validate.

Contract (messages, files, exit codes) from
https://kubernetes.io/docs/reference/setup-tools/kubeadm/ and the implementation
details page https://kubernetes.io/docs/reference/setup-tools/kubeadm/implementation-details/.
See ../../README.md for the list of rules and the deliberate deviations.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import string
import sys
import time
from pathlib import Path
from typing import Any

from . import common, copycerts, stacked_etcd
from .common import ApiError, Client, path
from .etcd import EtcdError
from .kubeadm_config import ConfigError, kubelet_extra_args, load_documents

TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
STACK_HINT = "To see the stack trace of this error execute with --v=5 or higher"
DEFAULT_CRI = "unix:///var/run/containerd/containerd.sock"
ETCD_IMAGE_TAG = "3.5.15-0"  # kubeadm 1.31's etcd image (constants.go SupportedEtcdVersion)


class Fail(Exception):
    """A kubeadm error: message printed to stderr, exit status 1."""


# --------------------------------------------------------------------------- helpers
def version() -> str:
    return common.installed_version("kubeadm")


def minor(v: str) -> int:
    return int(v.lstrip("v").split(".")[1])


def parse_go_duration(s: str) -> float:
    if s in ("0", "0s"):
        return 0.0
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", s):
        total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    if not re.fullmatch(r"(\d+(?:\.\d+)?(h|ms|m|s))+", s):
        raise Fail(f'invalid argument "{s}" for "--ttl" flag: time: invalid duration "{s}"')
    return total


def go_duration(seconds: float) -> str:
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m}m{sec}s" if h else (f"{m}m{sec}s" if m else f"{sec}s")


def generate_token() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return (
        "".join(secrets.choice(alphabet) for _ in range(6))
        + "."
        + "".join(secrets.choice(alphabet) for _ in range(16))
    )


def out(msg: str = "") -> None:
    print(msg, flush=True)


def admin_client(kubeconfig: str | None = None) -> Client:
    p = Path(kubeconfig) if kubeconfig else path("/etc/kubernetes/admin.conf")
    if not p.exists():
        raise Fail(f"failed to load admin kubeconfig: open {p}: no such file or directory")
    return Client.from_kubeconfig(p)


# --------------------------------------------------------------------------- preflight
def read_swaps() -> list[str]:
    try:
        lines = common.proc("swaps").read_text().splitlines()
    except OSError:
        return []
    return [ln for ln in lines[1:] if ln.strip()]


def preflight(
    checks: list[tuple[str, str | None]], ignored: set[str], *, warnings: list[str] | None = None
) -> None:
    """checks: (name, error message or None). Mirrors kubeadm's preflight output."""
    out("[preflight] Running pre-flight checks")
    errors = []
    for name, err in checks:
        if err is None:
            continue
        if "all" in ignored or name.lower() in ignored:
            common.log(f"\t[WARNING {name}]: {err}")
        else:
            errors.append(f"\t[ERROR {name}]: {err}")
    for w in warnings or []:
        common.log(w)
    if errors:
        raise Fail(
            "error execution phase preflight: [preflight] Some fatal errors occurred:\n"
            + "\n".join(errors)
            + "\n[preflight] If you know what you are doing, you can make a check non-fatal with "
            "`--ignore-preflight-errors=...`"
        )


def node_checks(cri_socket: str, fail_swap_on: bool) -> list[tuple[str, str | None]]:
    kport = int(common.env("PIKUBE_STANDIN_KUBELET_PORT", "10250"))
    kbind = common.env("PIKUBE_STANDIN_BIND_ADDRESS", "0.0.0.0")  # noqa: S104
    checks: list[tuple[str, str | None]] = [
        (f"Port-{kport}", None if port_free(kbind, kport) else f"Port {kport} is in use")
    ]
    sock = cri_socket.removeprefix("unix://")
    p = path(sock)
    err = None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(p))
    except OSError as e:
        err = (
            f'container runtime is not running: output: time="{dt.datetime.now().isoformat()}" '
            "level=fatal "
            'msg="validate service connection: validate CRI v1 runtime API for endpoint '
            f'\\"{cri_socket}\\": '
            'rpc error: code = Unavailable desc = connection error: desc = \\"transport: Error '
            "while dialing: "
            f'dial unix {sock}: connect: {e.strerror or e}\\""\n, error: exit status 1'
        )
    checks.append(("CRI", err))
    for f in ("net/bridge/bridge-nf-call-iptables", "net/ipv4/ip_forward"):
        fp = common.proc("sys/" + f)
        name = "FileContent--proc-sys-" + f.replace("/", "-")
        display = "/proc/sys/" + f
        if not fp.exists():
            # bridge-nf-call-iptables exists only once br_netfilter is loaded; see README
            checks.append(
                (
                    name,
                    f"{display} does not exist"
                    if "ip_forward" in f
                    or common.env("PIKUBE_STANDIN_REQUIRE_BRIDGE_NF", "0") == "1"
                    else None,
                )
            )
            continue
        checks.append(
            (
                name,
                None if fp.read_text().strip() == "1" else f"{display} contents are not set to 1",
            )
        )
    if fail_swap_on and read_swaps():
        checks.append(("Swap", "running with swap on is not supported. Please disable swap"))
    return checks


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def ignored_set(flag: str | None, cfg_list: list[str] | None = None) -> set[str]:
    vals = [v.strip().lower() for v in (flag or "").split(",") if v.strip()]
    vals += [str(v).lower() for v in cfg_list or []]
    return set(vals)


# --------------------------------------------------------------------------- config
def klog_warning(msg: str, where: str = "common.go:101") -> None:
    now = time.time()
    stamp = time.strftime("%m%d %H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1e6):06d}"
    common.log(f"W{stamp} {os.getpid():7d} {where}] {msg}")


def load_config(file: str | None, command: str) -> dict[str, dict[str, Any]]:
    """Read --config for `command` (init, join, validate): kubeadm's decoding rules."""
    if not file:
        return {}
    p = Path(file)
    try:
        text = p.read_text()
    except OSError as e:
        raise Fail(f"unable to read config from {file!r} : open {file}: {e.strerror}") from e
    try:
        docs = load_documents(text, minor(version()), command, klog_warning)
    except ConfigError as e:
        raise Fail(str(e)) from e
    for d in docs.values():
        if d["apiVersion"] == "kubeadm.k8s.io/v1beta3" and minor(version()) >= 31:
            common.log(
                f"W{time.strftime('%m%d %H:%M:%S')} {os.getpid()} common.go:101] your "
                "configuration "
                f'file uses a deprecated API spec: "kubeadm.k8s.io/v1beta3" (kind: "{d["kind"]}"). '
                "Please use 'kubeadm config migrate --old-config old.yaml --new-config new.yaml', "
                "which will write the new, similar spec using a newer API version."
            )
    return docs


def check_k8s_version(requested: str | None) -> str:
    mine = "v" + version()
    if not requested or requested.startswith(("stable", "latest")):
        return mine
    req = requested if requested.startswith("v") else "v" + requested
    if not re.fullmatch(r"v\d+\.\d+\.\d+", req):
        raise Fail(f'couldn\'t parse Kubernetes version "{requested}"')
    if minor(req) > minor(mine):
        raise Fail(
            "this version of kubeadm only supports deploying clusters with the control plane "
            "version "
            f"<= {mine}. Current version: {req}"
        )
    if minor(req) < minor(mine) - 1:
        raise Fail(
            "this version of kubeadm only supports deploying clusters with the control plane "
            "version "
            f">= v1.{minor(mine) - 1}.0. Current version: {req}"
        )
    return req


# --------------------------------------------------------------------------- init
def control_plane_timeout() -> float:
    return float(common.env("PIKUBE_STANDIN_CONTROL_PLANE_TIMEOUT", "60"))


def etcd_port_checks(adv: str) -> list[tuple[str, str | None]]:
    """kubeadm's Port-2379 / Port-2380 preflight checks (stacked etcd)."""
    return [
        (f"Port-{p}", None if port_free(adv, p) else f"Port {p} is in use")
        for p in (stacked_etcd.client_port(), stacked_etcd.peer_port())
    ]


def create_etcd_mirror_pod(client: Client, node: str, adv: str) -> None:
    """The kubelet's mirror Pod of the etcd static Pod; kubeadm reads its annotation."""
    body = stacked_etcd.mirror_pod(node, adv, ETCD_IMAGE_TAG)
    try:
        client.post("/api/v1/namespaces/kube-system/pods", body)
    except ApiError as e:
        if e.status != 409:
            raise


def write_manifests(
    adv: str,
    port: int,
    bind: str,
    k8s_version: str,
    pki: Path,
    require_cni: bool,
    etcd_command: list[str],
) -> None:
    import yaml

    man = path("/etc/kubernetes/manifests")
    cmd = [
        "kube-apiserver",
        f"--advertise-address={adv}",
        "--allow-privileged=true",
        "--authorization-mode=Node,RBAC",
        f"--client-ca-file={pki}/ca.crt",
        "--enable-admission-plugins=NodeRestriction",
        "--enable-bootstrap-token-auth=true",
        f"--secure-port={port}",
        f"--bind-address={bind}",
        f"--tls-cert-file={pki}/apiserver.crt",
        f"--tls-private-key-file={pki}/apiserver.key",
        f"--service-account-key-file={pki}/sa.pub",
        f"--standin-signing-key-file={pki}/ca.key",
        *stacked_etcd.apiserver_flags(pki, adv),
        f"--standin-version={k8s_version}",
        f"--standin-require-cni={'true' if require_cni else 'false'}",
    ]
    for comp, command in (
        ("kube-apiserver", cmd),
        (
            "kube-controller-manager",
            ["kube-controller-manager", f"--cluster-signing-cert-file={pki}/ca.crt"],
        ),
        ("kube-scheduler", ["kube-scheduler"]),
        ("etcd", etcd_command),
    ):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": comp,
                "namespace": "kube-system",
                "labels": {"component": comp, "tier": "control-plane"},
            },
            "spec": {
                "hostNetwork": True,
                "containers": [
                    {
                        "name": comp,
                        "image": f"registry.k8s.io/{comp}:"
                        + (ETCD_IMAGE_TAG if comp == "etcd" else k8s_version),
                        "command": command,
                    }
                ],
            },
        }
        common.write_file(man / f"{comp}.yaml", yaml.safe_dump(pod, sort_keys=False), 0o600)


def kubelet_config(
    user_cfg: dict[str, Any] | None, dns_domain: str, service_subnet: str
) -> dict[str, Any]:
    import ipaddress

    net = ipaddress.ip_network(service_subnet.split(",")[0], strict=False)
    cfg: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "systemd",
        "clusterDNS": [str(net.network_address + 10)],
        "clusterDomain": dns_domain,
        "containerRuntimeEndpoint": "",
        "rotateCertificates": True,
        "staticPodPath": "/etc/kubernetes/manifests",
    }
    for k, v in (user_cfg or {}).items():
        if k not in ("apiVersion", "kind"):
            cfg[k] = v
    return cfg


def write_kubelet_files(kcfg: dict[str, Any], cri: str, extra: dict[str, str], node: str) -> None:
    import yaml

    common.write_file(
        path("/var/lib/kubelet/config.yaml"), yaml.safe_dump(kcfg, sort_keys=False), 0o644
    )
    args = [
        f"--container-runtime-endpoint={cri}",
        "--pod-infra-container-image=registry.k8s.io/pause:3.10",
    ]
    if node != socket.gethostname().lower():
        args.append(f"--hostname-override={node}")
    args += [f"--{k}={v}" for k, v in extra.items()]
    common.write_file(
        path("/var/lib/kubelet/kubeadm-flags.env"), f'KUBELET_KUBEADM_ARGS="{" ".join(args)}"\n'
    )


def cmd_init(a: argparse.Namespace) -> int:
    import yaml

    from . import pki

    if a.phase_args:
        if a.phase_args == ["phase", "upload-certs"]:
            return cmd_init_phase_upload_certs(a)
        raise Fail(f'unknown command "{" ".join(a.phase_args)}" for "kubeadm init"')
    docs = load_config(a.config, "init")
    initc = docs.get("InitConfiguration", {})
    certificate_key = certificate_key_of(a.certificate_key or initc.get("certificateKey"))
    clusterc = docs.get("ClusterConfiguration", {})
    nodereg = initc.get("nodeRegistration", {}) or {}
    endpoint = initc.get("localAPIEndpoint", {}) or {}
    k8s_version = check_k8s_version(a.kubernetes_version or clusterc.get("kubernetesVersion"))
    out(f"[init] Using Kubernetes version: {k8s_version}")
    adv = a.apiserver_advertise_address or endpoint.get("advertiseAddress") or common.default_ip()
    port = int(a.apiserver_bind_port or endpoint.get("bindPort") or common.apiserver_port())
    bind = common.env("PIKUBE_STANDIN_BIND_ADDRESS", "0.0.0.0")  # noqa: S104
    node = (a.node_name or nodereg.get("name") or common.node_name()).lower()
    cri = a.cri_socket or nodereg.get("criSocket") or DEFAULT_CRI
    net = clusterc.get("networking", {}) or {}
    service_subnet = a.service_cidr or net.get("serviceSubnet") or "10.96.0.0/12"
    dns_domain = a.service_dns_domain or net.get("dnsDomain") or "cluster.local"
    user_kubelet = docs.get("KubeletConfiguration")
    fail_swap_on = (user_kubelet or {}).get("failSwapOn", True) is not False
    ignored = ignored_set(a.ignore_preflight_errors, nodereg.get("ignorePreflightErrors"))
    if str(clusterc.get("encryptionAlgorithm", "")).startswith("ECDSA"):
        os.environ["PIKUBE_STANDIN_KEY_ALGO"] = "ecdsa"
    skip = set(initc.get("skipPhases") or []) | set(filter(None, (a.skip_phases or "").split(",")))

    man = path("/etc/kubernetes/manifests")
    checks: list[tuple[str, str | None]] = [
        (f"Port-{port}", None if port_free(bind, port) else f"Port {port} is in use"),
        *etcd_port_checks(adv),
    ]
    for comp in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"):
        f = man / f"{comp}.yaml"
        checks.append(
            (
                f"FileAvailable--etc-kubernetes-manifests-{comp}.yaml",
                f"/etc/kubernetes/manifests/{comp}.yaml already exists" if f.exists() else None,
            )
        )
    etcd_dir = path("/var/lib/etcd")
    checks.append(
        (
            "DirAvailable--var-lib-etcd",
            "/var/lib/etcd is not empty" if etcd_dir.exists() and any(etcd_dir.iterdir()) else None,
        )
    )
    checks += node_checks(cri, fail_swap_on)
    preflight(checks, ignored)
    out("[preflight] Pulling images required for setting up a Kubernetes cluster")

    # ---- certs
    pkidir = path(clusterc.get("certificatesDir") or "/etc/kubernetes/pki")
    out(
        "[certs] Using certificateDir folder "
        f'"{clusterc.get("certificatesDir") or "/etc/kubernetes/pki"}"'
    )
    if (pkidir / "ca.crt").exists() and (pkidir / "ca.key").exists():
        out("[certs] Using existing ca certificate authority")
        ca_crt, ca_key = (pkidir / "ca.crt").read_bytes(), (pkidir / "ca.key").read_bytes()
    else:
        out('[certs] Generating "ca" certificate and key')
        ca_crt, ca_key = pki.make_ca("kubernetes")
        pki.write_pair(pkidir, "ca", ca_crt, ca_key)
    import ipaddress

    svc_ip = str(
        ipaddress.ip_network(service_subnet.split(",")[0], strict=False).network_address + 1
    )
    cpe = clusterc.get("controlPlaneEndpoint") or ""
    cpe_host = cpe.rsplit(":", 1)[0] if cpe else ""
    dns = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{dns_domain}",
        node,
    ]
    ips = [svc_ip, adv]
    extra_sans = list((clusterc.get("apiServer", {}) or {}).get("certSANs") or [])
    extra_sans += [s for s in (a.apiserver_cert_extra_sans or "").split(",") if s]
    sans = dns + ips + ([cpe_host] if cpe_host else []) + extra_sans
    out('[certs] Generating "apiserver" certificate and key')
    out(
        "[certs] apiserver serving cert is signed for DNS names "
        f"[{' '.join(s for s in sans if not _is_ip(s))}]"
        f" and IPs [{' '.join(s for s in sans if _is_ip(s))}]"
    )
    crt, key = pki.issue(ca_crt, ca_key, "kube-apiserver", sans=sans, server=True, client=False)
    pki.write_pair(pkidir, "apiserver", crt, key)
    out('[certs] Generating "apiserver-kubelet-client" certificate and key')
    crt, key = pki.issue(
        ca_crt, ca_key, "kube-apiserver-kubelet-client", orgs=["kubeadm:cluster-admins"]
    )
    pki.write_pair(pkidir, "apiserver-kubelet-client", crt, key)
    out('[certs] Generating "sa" key and public key')
    sa = pki.new_key()
    from cryptography.hazmat.primitives import serialization

    common.write_file(pkidir / "sa.key", pki.key_pem(sa), 0o600)
    common.write_file(
        pkidir / "sa.pub",
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )

    stacked_etcd.write_certs(pkidir, node, adv)

    # ---- kubeconfigs
    server = f"https://{cpe or f'{adv}:{port}'}"
    out('[kubeconfig] Using kubeconfig folder "/etc/kubernetes"')
    for fname, cn, orgs in (
        ("admin.conf", "kubernetes-admin", ["kubeadm:cluster-admins"]),
        ("super-admin.conf", "kubernetes-super-admin", ["system:masters"]),
        ("kubelet.conf", f"system:node:{node}", ["system:nodes"]),
        ("controller-manager.conf", "system:kube-controller-manager", []),
        ("scheduler.conf", "system:kube-scheduler", []),
    ):
        out(f'[kubeconfig] Writing "{fname}" kubeconfig file')
        crt, key = pki.issue(ca_crt, ca_key, cn, orgs=orgs)
        user = cn
        common.write_file(
            path(f"/etc/kubernetes/{fname}"),
            common.kubeconfig(server, ca_crt, user, cert_pem=crt, key_pem=key),
            0o600,
        )

    # ---- control plane + kubelet
    out('[etcd] Creating static Pod manifest for local etcd in "/etc/kubernetes/manifests"')
    out('[control-plane] Using manifest folder "/etc/kubernetes/manifests"')
    for comp in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        out(f'[control-plane] Creating static Pod manifest for "{comp}"')
    etcd_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_manifests(
        adv,
        port,
        bind,
        k8s_version,
        pkidir,
        common.env("PIKUBE_STANDIN_REQUIRE_CNI", "1") == "1",
        stacked_etcd.command(pkidir, node, adv, f"{node}={stacked_etcd.peer_url(adv)}", "new"),
    )
    kcfg = kubelet_config(user_kubelet, dns_domain, service_subnet)
    out(
        "[kubelet-start] Writing kubelet environment file with flags to file "
        '"/var/lib/kubelet/kubeadm-flags.env"'
    )
    out('[kubelet-start] Writing kubelet configuration to file "/var/lib/kubelet/config.yaml"')
    write_kubelet_files(kcfg, cri, kubelet_extra_args(nodereg), node)
    out("[kubelet-start] Starting the kubelet")
    try:
        stacked_etcd.start_and_wait(pkidir, adv, control_plane_timeout())
    except EtcdError as e:
        raise Fail(f"error execution phase wait-control-plane: {e.message}") from None
    common.service_start("pikube-standin-apiserver")
    common.service_start("kubelet")
    out(
        "[wait-control-plane] Waiting for the kubelet to boot up the control plane as static Pods "
        "from directory "
        '"/etc/kubernetes/manifests"'
    )
    t0 = time.monotonic()
    client = Client.from_kubeconfig(path("/etc/kubernetes/admin.conf"), timeout=5)
    if not common.wait_for(
        lambda: client.get("/readyz") == "ok",
        float(common.env("PIKUBE_STANDIN_CONTROL_PLANE_TIMEOUT", "60")),
    ):
        raise Fail(
            "error execution phase wait-control-plane: couldn't initialize a Kubernetes cluster\n"
            "\tUnfortunately, an error has occurred:\n\t\tcontext deadline exceeded\n"
        )
    out(f"[api-check] The API server is healthy after {time.monotonic() - t0:.6f}s")

    # ---- upload config
    out(
        '[upload-config] Storing the configuration used in ConfigMap "kubeadm-config" in the '
        '"kube-system" Namespace'
    )
    cluster_doc = {
        "apiVersion": "kubeadm.k8s.io/v1beta4"
        if minor(version()) >= 31
        else "kubeadm.k8s.io/v1beta3",
        "kind": "ClusterConfiguration",
        **{k: v for k, v in clusterc.items() if k not in ("apiVersion", "kind")},
    }
    cluster_doc["kubernetesVersion"] = k8s_version
    cluster_doc.setdefault("networking", {}).setdefault("serviceSubnet", service_subnet)
    cluster_doc["networking"].setdefault("dnsDomain", dns_domain)
    if a.pod_network_cidr:
        cluster_doc["networking"]["podSubnet"] = a.pod_network_cidr
    cluster_doc["controlPlaneEndpoint"] = cpe  # "" when unset, as kubeadm stores it
    client.post(
        "/api/v1/namespaces/kube-system/configmaps",
        {
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": {"ClusterConfiguration": yaml.safe_dump(cluster_doc, sort_keys=False)},
        },
    )
    out(
        '[kubelet] Creating a ConfigMap "kubelet-config" in namespace kube-system with the '
        "configuration for the "
        "kubelets in the cluster"
    )
    client.post(
        "/api/v1/namespaces/kube-system/configmaps",
        {
            "metadata": {"name": "kubelet-config", "namespace": "kube-system"},
            "data": {"kubelet": yaml.safe_dump(kcfg, sort_keys=False)},
        },
    )

    # ---- upload certs (copycerts), before mark-control-plane as in kubeadm's phase order
    if a.upload_certs:
        certificate_key = upload_certs(
            client, pkidir, certificate_key, print_key=not a.skip_certificate_key_print
        )
    else:
        out("[upload-certs] Skipping phase. Please see --upload-certs")

    # ---- mark control plane (needs the kubelet to have registered the node)
    if "mark-control-plane" not in skip:
        out(
            f"[mark-control-plane] Marking the node {node} as control-plane by adding the labels: "
            "[node-role.kubernetes.io/control-plane "
            "node.kubernetes.io/exclude-from-external-load-balancers]"
        )
        taints = nodereg.get("taints")
        if taints is None:
            taints = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
        out(
            f"[mark-control-plane] Marking the node {node} as control-plane by adding the taints "
            f"[{' '.join(t['key'] + ':' + t.get('effect', '') for t in taints)}]"
        )
        if not common.wait_for(
            lambda: client.get(f"/api/v1/nodes/{node}") is not None,
            float(common.env("PIKUBE_STANDIN_CONTROL_PLANE_TIMEOUT", "60")),
            0.5,
        ):
            raise Fail(
                f"error execution phase mark-control-plane: timed out waiting for the condition: "
                f'nodes "{node}" not found (is the kubelet running? see "journalctl -xeu kubelet")'
            )
        label_control_plane(client, node, taints)
        create_etcd_mirror_pod(client, node, adv)

    # ---- bootstrap tokens + cluster-info
    if "bootstrap-token" not in skip:
        tokens = initc.get("bootstrapTokens") or [{}]
        out("[bootstrap-token] Using token: <value withheld>")
        for t in tokens:
            create_token(
                client,
                t.get("token") or a.token or generate_token(),
                parse_go_duration(str(t.get("ttl", a.token_ttl or "24h0m0s"))),
                t.get("description", ""),
                t.get("usages") or ["signing", "authentication"],
                t.get("groups") or ["system:bootstrappers:kubeadm:default-node-token"],
            )
        out("[bootstrap-token] Configuring bootstrap tokens, cluster-info ConfigMap, RBAC Roles")
        client.post(
            "/api/v1/namespaces/kube-public/configmaps",
            {
                "metadata": {"name": "cluster-info", "namespace": "kube-public"},
                "data": {
                    "kubeconfig": yaml.safe_dump(
                        {
                            "apiVersion": "v1",
                            "kind": "Config",
                            "clusters": [
                                {
                                    "name": "",
                                    "cluster": {
                                        "certificate-authority-data": common.b64(ca_crt),
                                        "server": server,
                                    },
                                }
                            ],
                            "contexts": None,
                            "current-context": "",
                            "preferences": {},
                            "users": None,
                        }
                    )
                },
            },
        )
        for name, role in (
            ("kubeadm:kubelet-bootstrap", "system:node-bootstrapper"),
            (
                "kubeadm:node-autoapprove-bootstrap",
                "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            ),
        ):
            client.post(
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                {
                    "metadata": {"name": name},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": role,
                    },
                    "subjects": [
                        {
                            "kind": "Group",
                            "name": "system:bootstrappers:kubeadm:default-node-token",
                            "apiGroup": "rbac.authorization.k8s.io",
                        }
                    ],
                },
            )

    # ---- addons
    if "addon/coredns" not in skip and "addon" not in skip:
        client.post(
            "/apis/apps/v1/namespaces/kube-system/deployments",
            {
                "metadata": {
                    "name": "coredns",
                    "namespace": "kube-system",
                    "labels": {"k8s-app": "kube-dns"},
                },
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    "template": {
                        "metadata": {"labels": {"k8s-app": "kube-dns"}},
                        "spec": {
                            "containers": [
                                {
                                    "name": "coredns",
                                    "image": "registry.k8s.io/coredns/coredns:v1.11.3",
                                }
                            ]
                        },
                    },
                },
            },
        )
        client.post(
            "/api/v1/namespaces/kube-system/services",
            {
                "metadata": {
                    "name": "kube-dns",
                    "namespace": "kube-system",
                    "labels": {
                        "k8s-app": "kube-dns",
                        "kubernetes.io/cluster-service": "true",
                        "kubernetes.io/name": "CoreDNS",
                    },
                },
                "spec": {
                    "clusterIP": str(
                        ipaddress.ip_network(
                            service_subnet.split(",")[0], strict=False
                        ).network_address
                        + 10
                    ),
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP"},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    ],
                },
            },
        )
        out("[addons] Applied essential addon: CoreDNS")
    if "addon/kube-proxy" not in skip and "addon" not in skip:
        client.post(
            "/apis/apps/v1/namespaces/kube-system/daemonsets",
            {
                "metadata": {
                    "name": "kube-proxy",
                    "namespace": "kube-system",
                    "labels": {"k8s-app": "kube-proxy"},
                },
                "spec": {
                    "selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
                    "template": {
                        "metadata": {"labels": {"k8s-app": "kube-proxy"}},
                        "spec": {
                            "nodeSelector": {"kubernetes.io/os": "linux"},
                            "containers": [
                                {
                                    "name": "kube-proxy",
                                    "image": f"registry.k8s.io/kube-proxy:{k8s_version}",
                                }
                            ],
                        },
                    },
                },
            },
        )
        out("[addons] Applied essential addon: kube-proxy")
    ca_hash = pki.spki_sha256(ca_crt)
    out("\nYour Kubernetes control-plane has initialized successfully!\n")
    out("To start using your cluster, you need to run the following as a regular user:\n")
    out(
        "  mkdir -p $HOME/.kube\n  sudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config\n"
        "  sudo chown $(id -u):$(id -g) $HOME/.kube/config\n"
    )
    out(
        "Alternatively, if you are the root user, you can run:\n\n  export "
        "KUBECONFIG=/etc/kubernetes/admin.conf\n"
    )
    out(
        'You should now deploy a pod network to the cluster.\nRun "kubectl apply -f '
        '[podnetwork].yaml" with one '
        "of the options listed at:\n  "
        "https://kubernetes.io/docs/concepts/cluster-administration/addons/\n"
    )
    if a.upload_certs:
        out(
            "You can now join any number of control-plane nodes running the following command "
            "on each as root:\n"
        )
        out(
            f"  kubeadm join {cpe or f'{adv}:{port}'} --token <value withheld> \\\n"
            f"\t--discovery-token-ca-cert-hash {ca_hash} \\\n"
            "\t--control-plane --certificate-key "
            f"{'<value withheld>' if a.skip_certificate_key_print else certificate_key}\n"
        )
        out(
            "Please note that the certificate-key gives access to cluster sensitive data, keep "
            "it secret!\nAs a safeguard, uploaded-certs will be deleted in two hours; If "
            'necessary, you can use\n"kubeadm init phase upload-certs --upload-certs" to '
            "reload certs afterward.\n"
        )
    out("Then you can join any number of worker nodes by running the following on each as root:\n")
    out(
        f"kubeadm join {cpe or f'{adv}:{port}'} --token <value withheld> \\\n"
        f"\t--discovery-token-ca-cert-hash {ca_hash} "
    )
    return 0


def certificate_key_of(key: str | None, field: str = "certificateKey") -> str:
    """The certificate key given (flag or config), checked as kubeadm validates it, or ""."""
    if not key:
        return ""
    try:
        copycerts.validate_certificate_key(str(key), field)
    except copycerts.CertError as e:
        raise Fail(str(e)) from None
    return str(key)


def upload_certs(client: Client, pkidir: Path, key: str, *, print_key: bool = True) -> str:
    """Phase upload-certs: a new key unless one was given, a bootstrap token with a TTL of
    two hours owning Secret kubeadm-certs; returns the key (kubeadm prints it unless
    --skip-certificate-key-print, phases/init/uploadcerts.go)."""
    key = key or copycerts.create_certificate_key()
    token = generate_token()
    create_token(
        client,
        token,
        float(common.env("PIKUBE_STANDIN_CERT_TOKEN_TTL", str(copycerts.CERT_TOKEN_TTL))),
        "Proxy for managing TTL for the kubeadm-certs secret",
        [],
        [],
    )
    out(
        f'[upload-certs] Storing the certificates in Secret "{copycerts.SECRET}" in the '
        '"kube-system" Namespace'
    )
    copycerts.upload_certs(client, pkidir, key, token)
    if print_key:
        out(f"[upload-certs] Using certificate key:\n{key}")
    return key


def cmd_init_phase_upload_certs(a: argparse.Namespace) -> int:
    """`kubeadm init phase upload-certs --upload-certs [--certificate-key K]` on a control plane:
    uploads the shared certificates again under a (new) key; prints the key."""
    docs = load_config(a.config, "init")
    initc = docs.get("InitConfiguration", {})
    clusterc = docs.get("ClusterConfiguration", {})
    key = certificate_key_of(a.certificate_key or initc.get("certificateKey"))
    if not a.upload_certs:
        out("[upload-certs] Skipping phase. Please see --upload-certs")
        return 0
    client = admin_client()
    pkidir = path(clusterc.get("certificatesDir") or "/etc/kubernetes/pki")
    upload_certs(client, pkidir, key, print_key=not a.skip_certificate_key_print)
    return 0


def cmd_certs(a: argparse.Namespace) -> int:
    """`kubeadm certs certificate-key`: print a new certificate key."""
    if a.certs_cmd == "certificate-key":
        print(copycerts.create_certificate_key())
        return 0
    raise Fail(f'unknown command "{a.certs_cmd}" for "kubeadm certs"')


def _is_ip(s: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- tokens
def create_token(
    client: Client, token: str, ttl: float, description: str, usages: list[str], groups: list[str]
) -> None:
    m = TOKEN_RE.match(token)
    if not m:
        raise Fail(
            f'the bootstrap token "{token}" was not of the form '
            f'"^([a-z0-9]{{6}})\\.([a-z0-9]{{16}})$"'
        )
    data = {
        "token-id": m.group(1),
        "token-secret": m.group(2),
        "auth-extra-groups": ",".join(groups),
    }
    if description:
        data["description"] = description
    for u in usages:
        data[f"usage-bootstrap-{u}"] = "true"
    if ttl > 0:
        exp = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl)
        data["expiration"] = exp.strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "metadata": {"name": f"bootstrap-token-{m.group(1)}", "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    try:
        client.post("/api/v1/namespaces/kube-system/secrets", body)
    except ApiError as e:
        if e.status == 409:
            raise Fail(f'a token with id "{m.group(1)}" already exists') from e
        raise


def join_endpoint(client: Client) -> str:
    import yaml

    try:
        cm = client.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
        cpe = yaml.safe_load(cm["data"]["ClusterConfiguration"]).get("controlPlaneEndpoint")
        if cpe:
            return str(cpe)
    except (ApiError, KeyError):
        pass
    return client.server.removeprefix("https://")


def cmd_token(a: argparse.Namespace) -> int:
    from . import pki

    if a.token_cmd == "generate":
        out(generate_token())
        return 0
    client = admin_client(a.kubeconfig)
    if a.token_cmd == "create":
        token = a.token or generate_token()
        create_token(
            client,
            token,
            parse_go_duration(a.ttl),
            a.description or "",
            a.usages.split(","),
            a.groups.split(","),
        )
        if a.print_join_command:
            kc = common.load_kubeconfig(
                Path(a.kubeconfig) if a.kubeconfig else path("/etc/kubernetes/admin.conf")
            )
            out(
                f"kubeadm join {join_endpoint(client)} --token {token} "
                f"--discovery-token-ca-cert-hash {pki.spki_sha256(kc['ca'])} "
            )
        else:
            out(token)
        return 0
    if a.token_cmd == "list":
        items = client.get("/api/v1/namespaces/kube-system/secrets")["items"]
        rows = []
        for s in items:
            if s.get("type") != "bootstrap.kubernetes.io/token":
                continue
            d = {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
            exp = d.get("expiration")
            ttl = "<forever>"
            if exp:
                left = dt.datetime.fromisoformat(exp.replace("Z", "+00:00")) - dt.datetime.now(
                    dt.UTC
                )
                ttl = go_duration(max(left.total_seconds(), 0)).split("m")[0] + (
                    "m" if "m" in ttl else ""
                )
                ttl = _human_ttl(left.total_seconds())
            usages = ",".join(
                sorted(
                    k.removeprefix("usage-bootstrap-")
                    for k, v in d.items()
                    if k.startswith("usage-bootstrap-") and v == "true"
                )
            )
            # The real `token list` prints whole tokens; the stand-in masks the secret (README).
            rows.append(
                (
                    f"{d['token-id']}.{'*' * 16}",
                    ttl,
                    exp or "<never>",
                    usages,
                    d.get("description", "<none>"),
                    d.get("auth-extra-groups", ""),
                )
            )
        if a.output == "json":
            out(
                json.dumps(
                    [
                        {
                            "token": r[0],
                            "ttl": r[1],
                            "expires": r[2],
                            "usages": r[3].split(","),
                            "description": r[4],
                            "groups": r[5].split(","),
                        }
                        for r in rows
                    ],
                    indent=2,
                )
            )
            return 0
        header = ("TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA GROUPS")
        widths = [max(len(str(x[i])) for x in [header, *rows]) for i in range(6)]
        for r in [header, *rows]:
            out("   ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)).rstrip())
        return 0
    if a.token_cmd == "delete":
        for t in a.tokens:
            tid = t.split(".")[0]
            try:
                client.delete(f"/api/v1/namespaces/kube-system/secrets/bootstrap-token-{tid}")
            except ApiError as e:
                raise Fail(
                    f'failed to delete bootstrap token with id "{tid}": secrets '
                    f'"bootstrap-token-{tid}" not found'
                ) from e
            out(f'bootstrap token "{tid}" deleted')
        return 0
    raise Fail("unknown token command")


def _human_ttl(seconds: float) -> str:
    s = max(int(seconds), 0)
    if s >= 3600:
        return f"{s // 3600}h"
    if s >= 60:
        return f"{s // 60}m"
    return f"{s}s"


# --------------------------------------------------------------------------- join
def verify_jws(content: str, detached: str, secret: str) -> bool:
    def b64u(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    try:
        header, empty, sig = detached.split(".")
    except ValueError:
        return False
    if empty:
        return False
    expect = hmac.new(
        secret.encode(), f"{header}.{b64u(content.encode())}".encode(), hashlib.sha256
    ).digest()
    return hmac.compare_digest(b64u(expect), sig)


def discover(endpoint: str, token: str, pins: list[str], unsafe: bool, timeout: float) -> bytes:
    """Token discovery as in kubeadm's discovery/token: returns the pinned cluster CA (PEM)."""
    import yaml

    from . import pki

    m = TOKEN_RE.match(token)
    if not m:
        raise Fail(
            f'the bootstrap token "{token}" was not of the form '
            f'"^([a-z0-9]{{6}})\\.([a-z0-9]{{16}})$"'
        )
    tid, tsecret = m.group(1), m.group(2)
    for pin in pins:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", pin):
            raise Fail(
                f'invalid hash "{pin}", expected a "sha256" hash (64 hex characters) in the format '
                '"sha256:<hex>"'
            )
    out(f'[discovery] Trying to connect to API Server "{endpoint}"')
    anon = Client(f"https://{endpoint}", insecure=True, timeout=5)
    deadline = time.monotonic() + timeout
    last_err = ""
    while True:
        try:
            cm = anon.get("/api/v1/namespaces/kube-public/configmaps/cluster-info?timeout=10s")
            kubeconfig = cm["data"]["kubeconfig"]
            sig = cm["data"].get(f"jws-kubeconfig-{tid}")
            if sig is None:
                last_err = (
                    "could not find a JWS signature in the cluster-info ConfigMap for token ID "
                    f'"{tid}"'
                )
            elif not verify_jws(kubeconfig, sig, tsecret):
                last_err = (
                    "failed to verify JWS signature of received cluster info object, can't trust "
                    "this "
                    "API Server"
                )
            else:
                break
        except ApiError as e:
            last_err = f"failed to request the cluster-info ConfigMap: {e}"
        except OSError as e:
            reason = getattr(e, "reason", e)
            last_err = (
                "failed to request the cluster-info ConfigMap: Get "
                f'"https://{endpoint}/api/v1/namespaces/'
                f'kube-public/configmaps/cluster-info?timeout=10s": dial tcp {endpoint}: {reason}'
            )
        if time.monotonic() >= deadline:
            raise Fail(
                "error execution phase preflight: couldn't validate the identity of the API "
                "Server: "
                f"{last_err}"
            )
        common.log(f"[discovery] Retrying due to error: {last_err}")
        time.sleep(1)
    doc = yaml.safe_load(kubeconfig)
    ca = base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"])
    if not unsafe:
        actual = pki.spki_sha256(ca)
        if actual not in pins:
            raise Fail(
                "error execution phase preflight: couldn't validate the identity of the API "
                "Server: "
                "cluster CA found in cluster-info ConfigMap is not trusted: none of the public "
                "keys "
                f'"{actual}" are pinned'
            )
    out(
        "[discovery] Cluster info signature and contents are valid and TLS certificate validates "
        "against "
        f'pinned roots, will use API Server "{endpoint}"'
    )
    return ca


def cmd_join(a: argparse.Namespace) -> int:
    import yaml

    from . import pki

    docs = load_config(a.config, "join")
    joinc = docs.get("JoinConfiguration", {})
    if a.config and not joinc:
        raise Fail("no JoinConfiguration kind was found in the YAML file")
    nodereg = joinc.get("nodeRegistration", {}) or {}
    bt = (joinc.get("discovery", {}) or {}).get("bootstrapToken", {}) or {}
    endpoint = a.endpoint or bt.get("apiServerEndpoint")
    token = (
        a.token
        or a.discovery_token
        or bt.get("token")
        or (joinc.get("discovery", {}) or {}).get("tlsBootstrapToken")
    )
    pins = a.discovery_token_ca_cert_hash or list(bt.get("caCertHashes") or [])
    unsafe = a.discovery_token_unsafe_skip_ca_verification or bool(
        bt.get("unsafeSkipCAVerification")
    )
    control_plane = joinc.get("controlPlane")
    is_control_plane = bool(a.control_plane or control_plane)
    certificate_key = certificate_key_of(
        a.certificate_key or (control_plane or {}).get("certificateKey"),
        "controlPlane.certificateKey",
    )
    if not endpoint or not token:
        raise Fail('discovery: Invalid value: "": bootstrapToken or file must be set')
    if not pins and not unsafe:
        raise Fail(
            'discovery.bootstrapToken: Invalid value: "": using token-based discovery without '
            "caCertHashes can be unsafe. Set unsafeSkipCAVerification as true in your kubeadm "
            "config file "
            "or pass --discovery-token-unsafe-skip-ca-verification flag to continue"
        )
    node = (a.node_name or nodereg.get("name") or common.node_name()).lower()
    cri = a.cri_socket or nodereg.get("criSocket") or DEFAULT_CRI
    ignored = ignored_set(a.ignore_preflight_errors, nodereg.get("ignorePreflightErrors"))
    checks: list[tuple[str, str | None]] = []
    if is_control_plane:
        cp_adv, cp_port = join_control_plane_endpoint(a, joinc)
        checks.append(
            (f"Port-{cp_port}", None if port_free(cp_adv, cp_port) else f"Port {cp_port} is in use")
        )
        checks += etcd_port_checks(cp_adv)
        etcd_dir = path("/var/lib/etcd")
        checks.append(
            (
                "DirAvailable--var-lib-etcd",
                "/var/lib/etcd is not empty"
                if etcd_dir.exists() and any(etcd_dir.iterdir())
                else None,
            )
        )
    for f in ("/etc/kubernetes/manifests",):
        d = path(f)
        checks.append(
            (
                "DirAvailable--etc-kubernetes-manifests",
                f"{f} is not empty" if d.exists() and any(d.iterdir()) else None,
            )
        )
    # A control plane may bring the shared certificates itself (copied by hand): kubeadm
    # checks ca.crt's absence on workers only (preflight RunJoinNodeChecks).
    for f in (
        "/etc/kubernetes/kubelet.conf",
        "/etc/kubernetes/bootstrap-kubelet.conf",
        *(() if is_control_plane else ("/etc/kubernetes/pki/ca.crt",)),
    ):
        name = "FileAvailable-" + f.replace("/", "-")
        checks.append((name, f"{f} already exists" if path(f).exists() else None))
    checks += node_checks(cri, True)
    preflight(checks, ignored)
    timeout = float(common.env("PIKUBE_STANDIN_DISCOVERY_TIMEOUT", "60"))
    ca = discover(endpoint, token, pins, unsafe, timeout)
    server = f"https://{endpoint}"
    boot = Client(server, ca_pem=ca, token=token)
    out("[preflight] Reading configuration from the cluster...")
    try:
        cm = boot.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
        kcm = boot.get("/api/v1/namespaces/kube-system/configmaps/kubelet-config")
    except ApiError as e:
        raise Fail(
            f"error execution phase preflight: unable to fetch the kubeadm-config ConfigMap: {e}"
        ) from e
    cluster = yaml.safe_load(cm["data"]["ClusterConfiguration"])
    kcfg = yaml.safe_load(kcm["data"]["kubelet"])
    if is_control_plane:
        join_control_plane_prepare(a, joinc, nodereg, cluster, boot, certificate_key, node)
    fail_swap_on = kcfg.get("failSwapOn", True) is not False
    if not fail_swap_on:
        pass
    try:
        existing = boot.get(f"/api/v1/nodes/{node}")
    except ApiError as e:
        if e.status != 404:
            raise
        existing = None
    if existing is not None:
        ready = next(
            (
                c.get("status")
                for c in existing.get("status", {}).get("conditions", [])
                if c.get("type") == "Ready"
            ),
            "Unknown",
        )
        if ready == "True":
            raise Fail(
                f'error execution phase kubelet-start: a Node with name "{node}" and status '
                '"Ready" already '
                "exists in the cluster. You must delete the existing Node or change the name of "
                "this new "
                "joining Node"
            )
    if not is_control_plane:
        common.write_file(path("/etc/kubernetes/pki/ca.crt"), ca, 0o644)
    common.write_file(
        path("/etc/kubernetes/bootstrap-kubelet.conf"),
        common.kubeconfig(server, ca, "tls-bootstrap-token-user", token=token),
        0o600,
    )
    out('[kubelet-start] Writing kubelet configuration to file "/var/lib/kubelet/config.yaml"')
    out(
        "[kubelet-start] Writing kubelet environment file with flags to file "
        '"/var/lib/kubelet/kubeadm-flags.env"'
    )
    write_kubelet_files(kcfg, cri, kubelet_extra_args(nodereg), node)
    out("[kubelet-start] Starting the kubelet")
    out("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap")
    # The TLS bootstrap (CSR signed by the cluster CA) the kubelet does with bootstrap-kubelet.conf.
    csr, key = pki.make_csr(f"system:node:{node}", ["system:nodes"])
    name = f"node-csr-{secrets.token_hex(8)}"
    try:
        res = boot.post(
            "/apis/certificates.k8s.io/v1/certificatesigningrequests",
            {
                "metadata": {"name": name},
                "spec": {
                    "request": base64.b64encode(csr).decode(),
                    "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                    "usages": ["digital signature", "client auth"],
                },
            },
        )
    except ApiError as e:
        raise Fail(
            f"error execution phase kubelet-start: the kubelet TLS bootstrap failed: {e}"
        ) from e
    cert = base64.b64decode(res["status"]["certificate"])
    common.write_file(
        path("/etc/kubernetes/kubelet.conf"),
        common.kubeconfig(server, ca, f"system:node:{node}", cert_pem=cert, key_pem=key),
        0o600,
    )
    path("/etc/kubernetes/bootstrap-kubelet.conf").unlink(missing_ok=True)
    common.service_start("kubelet")
    nodeclient = Client(server, ca_pem=ca, cert_pem=cert, key_pem=key)
    if not common.wait_for(
        lambda: nodeclient.get(f"/api/v1/nodes/{node}") is not None,
        float(common.env("PIKUBE_STANDIN_CONTROL_PLANE_TIMEOUT", "60")),
        0.5,
    ):
        raise Fail(
            "error execution phase kubelet-start: timed out waiting for the condition: the "
            "kubelet did not "
            'register the node (see "journalctl -xeu kubelet")'
        )
    if is_control_plane:
        join_control_plane_etcd(a, joinc, cluster, node)
        mark_control_plane(node, nodereg)
        out(
            "\nThis node has joined the cluster and a new control plane instance was created:\n\n"
            "* Certificate signing request was sent to apiserver and approval was received.\n"
            "* The Kubelet was informed of the new secure connection details.\n"
            "* Control plane label and taint were applied to the new node.\n"
            "* The Kubernetes control plane instances scaled up.\n"
        )
        return 0
    out(
        "\nThis node has joined the cluster:\n* Certificate signing request was sent to apiserver "
        "and a response "
        "was received.\n* The Kubelet was informed of the new secure connection details.\n\nRun "
        "'kubectl get nodes' "
        "on the control-plane to see this node join the cluster.\n"
    )
    return 0


def join_control_plane_endpoint(a: argparse.Namespace, joinc: dict[str, Any]) -> tuple[str, int]:
    """This control plane's API advertise address and bind port (JoinConfiguration
    controlPlane.localAPIEndpoint, or the flags)."""
    endpoint = (joinc.get("controlPlane") or {}).get("localAPIEndpoint") or {}
    adv = a.apiserver_advertise_address or endpoint.get("advertiseAddress") or common.default_ip()
    port = int(a.apiserver_bind_port or endpoint.get("bindPort") or common.apiserver_port())
    return str(adv), port


def join_control_plane_etcd(
    a: argparse.Namespace, joinc: dict[str, Any], cluster: dict[str, Any], node: str
) -> None:
    """Phase control-plane-join/etcd: add this node's member to the stacked etcd cluster
    (``member add``, then start it with --initial-cluster-state=existing), then this node's
    API server on it."""
    pkidir = path(str(cluster.get("certificatesDir") or "/etc/kubernetes/pki"))
    adv, port = join_control_plane_endpoint(a, joinc)
    bind = common.env("PIKUBE_STANDIN_BIND_ADDRESS", "0.0.0.0")  # noqa: S104
    out('[control-plane] Using manifest folder "/etc/kubernetes/manifests"')
    client = admin_client()
    try:
        endpoints = stacked_etcd.cluster_endpoints(client)
        out(f"[etcd] Announced new etcd member joining to the existing etcd cluster: {endpoints}")
        initial = stacked_etcd.add_member(pkidir, endpoints, node, adv)
        out('[etcd] Creating static Pod manifest for "etcd"')
        path("/var/lib/etcd").mkdir(parents=True, exist_ok=True, mode=0o700)
        write_manifests(
            adv,
            port,
            bind,
            str(cluster.get("kubernetesVersion") or "v" + version()),
            pkidir,
            common.env("PIKUBE_STANDIN_REQUIRE_CNI", "1") == "1",
            stacked_etcd.command(pkidir, node, adv, initial, "existing"),
        )
        out("[etcd] Waiting for the new etcd member to join the cluster.")
        stacked_etcd.start_and_wait(pkidir, adv, control_plane_timeout())
    except (EtcdError, ApiError) as e:
        raise Fail(f"error execution phase control-plane-join/etcd: {e}") from None
    common.service_start("pikube-standin-apiserver")
    local = Client(
        f"https://{adv}:{port}", ca_pem=(pkidir / "ca.crt").read_bytes(), insecure=True, timeout=5
    )
    if not common.wait_for(lambda: local.get("/readyz") == "ok", control_plane_timeout()):
        raise Fail(
            "error execution phase wait-control-plane: the API server on this node did not "
            "become ready"
        )
    create_etcd_mirror_pod(client, node, adv)


def join_control_plane_prepare(
    a: argparse.Namespace,
    joinc: dict[str, Any],
    nodereg: dict[str, Any],
    cluster: dict[str, Any],
    boot: Client,
    certificate_key: str,
    node: str,
) -> None:
    """kubeadm join's control-plane preflight and phase control-plane-prepare: a stable
    controlPlaneEndpoint, the shared certificates (downloaded with the certificate key, or
    already on disk), then this node's own serving certificate and kubeconfigs.

    Its etcd member and API server start in control-plane-join (join_control_plane_etcd)."""
    from . import pki

    cpe = str(cluster.get("controlPlaneEndpoint") or "")
    if not cpe:
        raise Fail(
            "error execution phase preflight: \nOne or more conditions for hosting a new control "
            "plane instance is not satisfied.\n\nunable to add a new control plane instance to "
            "a cluster that doesn't have a stable controlPlaneEndpoint address\n\nPlease ensure "
            "that:\n* The cluster has a stable controlPlaneEndpoint address.\n* The certificates "
            "that must be shared among control plane instances are provided.\n"
        )
    out("[preflight] Running pre-flight checks before initializing the new control plane instance")
    pkidir = path(str(cluster.get("certificatesDir") or "/etc/kubernetes/pki"))
    if certificate_key:
        out(
            f'[download-certs] Downloading the certificates in Secret "{copycerts.SECRET}" in '
            'the "kube-system" Namespace'
        )
        try:
            copycerts.download_certs(boot, pkidir, certificate_key)
        except copycerts.CertError as e:
            raise Fail(
                "error execution phase control-plane-prepare/download-certs: error downloading "
                f"certs: {e}"
            ) from None
    for shared in ("ca.crt", "ca.key", "sa.key", "sa.pub"):
        if not (pkidir / shared).exists():
            raise Fail(
                "error execution phase control-plane-prepare/certs: failure loading "
                f"{'certificate authority' if shared.startswith('ca') else 'key'}: couldn't "
                f"load the file {pkidir / shared}: open {pkidir / shared}: no such file or "
                "directory"
            )
    ca_crt, ca_key = (pkidir / "ca.crt").read_bytes(), (pkidir / "ca.key").read_bytes()
    adv, _port = join_control_plane_endpoint(a, joinc)
    sans = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", node, adv]
    sans.append(cpe.rsplit(":", 1)[0])
    out('[certs] Generating "apiserver" certificate and key')
    crt, key = pki.issue(ca_crt, ca_key, "kube-apiserver", sans=sans, server=True, client=False)
    pki.write_pair(pkidir, "apiserver", crt, key)
    if not (pkidir / "etcd/ca.crt").exists() or not (pkidir / "etcd/ca.key").exists():
        raise Fail(
            "error execution phase control-plane-prepare/certs: failure loading etcd/ca "
            f"certificate authority: couldn't load the file {pkidir / 'etcd/ca.crt'}: no such "
            "file or directory"
        )
    stacked_etcd.write_certs(pkidir, node, adv)
    out('[certs] Valid certificates and keys now exist in "/etc/kubernetes/pki"')
    out('[certs] Using the existing "sa" key')
    for fname, cn, orgs in (
        ("admin.conf", "kubernetes-admin", ["kubeadm:cluster-admins"]),
        ("controller-manager.conf", "system:kube-controller-manager", []),
        ("scheduler.conf", "system:kube-scheduler", []),
    ):
        out(f'[kubeconfig] Writing "{fname}" kubeconfig file')
        crt, key = pki.issue(ca_crt, ca_key, cn, orgs=orgs)
        common.write_file(
            path(f"/etc/kubernetes/{fname}"),
            common.kubeconfig(f"https://{cpe}", ca_crt, cn, cert_pem=crt, key_pem=key),
            0o600,
        )
    del nodereg


def label_control_plane(client: Any, node: str, taints: Any) -> None:
    """What kubeadm's mark-control-plane phase sets on the node (init and control-plane join)."""
    client.patch(
        f"/api/v1/nodes/{node}",
        {
            "metadata": {
                "labels": {
                    "node-role.kubernetes.io/control-plane": "",
                    "node.kubernetes.io/exclude-from-external-load-balancers": "",
                }
            },
            "spec": {"taints": taints},
        },
    )


def mark_control_plane(node: str, nodereg: dict[str, Any]) -> None:
    """Phase control-plane-join/mark-control-plane, with the admin.conf just written."""
    taints = nodereg.get("taints")
    if taints is None:
        taints = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    out(
        f"[mark-control-plane] Marking the node {node} as control-plane by adding the labels: "
        "[node-role.kubernetes.io/control-plane "
        "node.kubernetes.io/exclude-from-external-load-balancers]"
    )
    client = admin_client()
    label_control_plane(client, node, taints)


# --------------------------------------------------------------------------- reset
def cmd_reset(a: argparse.Namespace) -> int:
    if not a.force:
        out(
            "W: [reset] WARNING: Changes made to this host by 'kubeadm init' or 'kubeadm join' "
            "will be reverted."
        )
        sys.stdout.write("[reset] Are you sure you want to proceed? [y/N]: ")
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise Fail("won't proceed; the user didn't answer (Y|y) in order to continue")
    out("[preflight] Running pre-flight checks")
    flags = stacked_etcd.manifest_flags()
    if flags:  # a control plane: leave the etcd cluster first, while it still has quorum
        pkidir = path("/etc/kubernetes/pki")
        endpoints: list[str] = []
        with contextlib.suppress(ApiError, OSError, KeyError, ValueError):
            endpoints = stacked_etcd.cluster_endpoints(
                Client.from_kubeconfig(path("/etc/kubernetes/admin.conf"), timeout=10)
            )
        warning = stacked_etcd.remove_member(pkidir, flags, endpoints)
        if warning:
            out(warning)
        else:
            out("[reset] Removed this node's member from the etcd cluster")
    out("[reset] Stopping the kubelet service")
    common.service_stop("kubelet")
    for unit in ("pikube-standin-apiserver", stacked_etcd.UNIT):
        common.service_stop(unit)
        if common.service_mode() == "systemd":
            import subprocess

            subprocess.run(["systemctl", "disable", unit], check=False, capture_output=True)
    etcd = path("/var/lib/etcd")
    if etcd.exists():
        common.rmtree_contents(etcd)
        out("[reset] Deleted contents of the etcd data directory: /var/lib/etcd")
    out('[reset] Unmounting mounted directories in "/var/lib/kubelet"')
    dirs = ["/etc/kubernetes/manifests", "/var/lib/kubelet", "/etc/kubernetes/pki"]
    out(f"[reset] Deleting contents of directories: [{' '.join(dirs)}]")
    for d in dirs:
        common.rmtree_contents(path(d))
    files = [
        "/etc/kubernetes/admin.conf",
        "/etc/kubernetes/super-admin.conf",
        "/etc/kubernetes/kubelet.conf",
        "/etc/kubernetes/bootstrap-kubelet.conf",
        "/etc/kubernetes/controller-manager.conf",
        "/etc/kubernetes/scheduler.conf",
    ]
    out(f"[reset] Deleting files: [{' '.join(files)}]")
    for f in files:
        path(f).unlink(missing_ok=True)
    out(
        "\nThe reset process does not clean CNI configuration. To do so, you must remove "
        "/etc/cni/net.d\n\n"
        "The reset process does not reset or clean up iptables rules or IPVS tables.\n"
        'If you wish to reset iptables, you must do so manually by using the "iptables" '
        "command.\n\n"
        "The reset process does not clean your kubeconfig files and you must remove them "
        "manually.\n"
        "Please, check the contents of the $HOME/.kube/config file."
    )
    return 0


# --------------------------------------------------------------------------- upgrade
def cluster_version(client: Client) -> tuple[str, dict[str, Any]]:
    import yaml

    cm = client.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
    doc = yaml.safe_load(cm["data"]["ClusterConfiguration"])
    return str(doc["kubernetesVersion"]), doc


def restart_local_apiserver(target: str) -> None:
    """Upgrade this node's kube-apiserver static Pod to ``target`` and wait for it (this node's
    own endpoint: behind a load-balanced controlPlaneEndpoint another server may answer)."""
    man = path("/etc/kubernetes/manifests/kube-apiserver.yaml")
    text = man.read_text()
    if f"--standin-version={target}\n" in text and common.service_active(
        "pikube-standin-apiserver"
    ):
        out("[upgrade/staticpods] Current and new manifests of kube-apiserver are equal, skipping")
        return
    man.write_text(re.sub(r"--standin-version=v[\d.]+", f"--standin-version={target}", text))
    common.service_start("pikube-standin-apiserver")
    flags = dict(f[2:].split("=", 1) for f in re.findall(r"--[a-z-]+=\S+", text) if "=" in f)
    host = flags.get("advertise-address", "127.0.0.1")
    if flags.get("bind-address") not in (None, "0.0.0.0"):  # noqa: S104
        host = flags["bind-address"]
    local = Client(f"https://{host}:{flags.get('secure-port', '6443')}", insecure=True, timeout=5)

    def upgraded() -> bool:
        try:
            return bool(local.get("/version")["gitVersion"] == target)
        except (ApiError, OSError, KeyError, TypeError):
            return False

    if not common.wait_for(upgraded, 60):
        raise Fail(
            "[upgrade/apply] FATAL: couldn't upgrade control plane. the API server did not come "
            "back"
        )


def cmd_upgrade(a: argparse.Namespace) -> int:
    import yaml

    mine = "v" + version()
    if a.upgrade_cmd == "node":
        kc = path("/etc/kubernetes/admin.conf")
        if not kc.exists():
            kc = path("/etc/kubernetes/kubelet.conf")
        if not kc.exists():
            raise Fail(
                "error execution phase preflight: unable to fetch the kubeadm-config ConfigMap: "
                "failed to load admin kubeconfig: open /etc/kubernetes/kubelet.conf: no such file "
                "or directory"
            )
        client = Client.from_kubeconfig(kc)
        out("[upgrade] Reading configuration from the cluster...")
        kcm = client.get("/api/v1/namespaces/kube-system/configmaps/kubelet-config")
        if path("/etc/kubernetes/manifests/kube-apiserver.yaml").exists():
            target = cluster_version(client)[0]
            out(
                "[upgrade] Upgrading your Static Pod-hosted control plane instance to version "
                f'"{target}"...'
            )
            restart_local_apiserver(target)
            out('[upgrade/staticpods] Component "kube-apiserver" upgraded successfully!')
        else:
            out("[upgrade] Skipping phase. Not a control plane node.")
        common.write_file(path("/var/lib/kubelet/config.yaml"), kcm["data"]["kubelet"])
        out(
            "[upgrade] Backing up kubelet config file to "
            "/etc/kubernetes/tmp/kubeadm-kubelet-config.yaml"
        )
        out('[kubelet-start] Writing kubelet configuration to file "/var/lib/kubelet/config.yaml"')
        out("[upgrade] The configuration for this node was successfully updated!")
        out(
            "[upgrade] Now you should go ahead and upgrade the kubelet package using your package "
            "manager."
        )
        return 0
    client = admin_client(None)
    current, doc = cluster_version(client)
    out("[preflight] Running pre-flight checks.")
    out("[upgrade/config] Reading configuration from the cluster...")
    if a.upgrade_cmd == "plan":
        out("[upgrade] Running cluster health checks")
        out("[upgrade] Fetching available versions to upgrade to")
        out(f"[upgrade/versions] Cluster version: {current}")
        out(f"[upgrade/versions] kubeadm version: {mine}")
        if minor(mine) == minor(current) + 1 or (minor(mine) == minor(current) and mine != current):
            nodes = client.get("/api/v1/nodes")["items"]
            out(f"[upgrade/versions] Target version: {mine}")
            out(f"[upgrade/versions] Latest version in the v1.{minor(current)} series: {current}\n")
            out(
                "Components that must be upgraded manually after you have upgraded the control "
                "plane with "
                "'kubeadm upgrade apply':"
            )
            out(f"{'COMPONENT':<11} {'NODE':<20} {'CURRENT':<10} TARGET")
            for n in nodes:
                kv = n.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")
                out(f"{'kubelet':<11} {n['metadata']['name']:<20} {kv:<10} {mine}")
            out("\nUpgrade to the latest stable version:\n")
            out(f"{'COMPONENT':<25} {'NODE':<20} {'CURRENT':<10} TARGET")
            cps = [
                n["metadata"]["name"]
                for n in nodes
                if "node-role.kubernetes.io/control-plane" in n["metadata"].get("labels", {})
            ]
            for comp in (
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kube-proxy",
                "CoreDNS",
                "etcd",
            ):
                for cp in cps or ["-"]:
                    out(f"{comp:<25} {cp:<20} {current:<10} {mine}")
            out("\nYou can now apply the upgrade by executing the following command:\n")
            out(f"\tkubeadm upgrade apply {mine}\n")
        else:
            out("[upgrade/versions] Target version: " + current)
            out("\nAwesome, you're up-to-date! Enjoy!")
        return 0
    # apply
    target = a.version if a.version.startswith("v") else "v" + a.version
    if not re.fullmatch(r"v\d+\.\d+\.\d+", target):
        raise Fail(f'[upgrade/version] FATAL: couldn\'t parse version "{a.version}"')
    out(f'[upgrade/version] You have chosen to change the cluster version to "{target}"')
    out(f"[upgrade/versions] Cluster version: {current}")
    out(f"[upgrade/versions] kubeadm version: {mine}")
    errs = []
    if minor(target) > minor(mine) or (
        minor(target) == minor(mine)
        and tuple(map(int, target[1:].split("."))) > tuple(map(int, mine[1:].split(".")))
    ):
        errs.append(
            f'Specified version to upgrade to "{target}" is higher than the kubeadm version '
            f'"{mine}". '
            "Upgrade kubeadm first using the tool you used to install kubeadm"
        )
    if minor(target) > minor(current) + 1:
        errs.append(
            f'Specified version to upgrade to "{target}" is too high; kubeadm can upgrade only 1 '
            "minor "
            "version at a time"
        )
    if minor(target) < minor(current):
        errs.append(
            f'Specified version to upgrade to "{target}" is an unsupported version and can\'t be '
            "used for "
            "upgrade; kubeadm does not support downgrading to a previous minor release"
        )
    if minor(target) < minor(mine):
        errs.append(
            f'Specified version to upgrade to "{target}" is at least one minor release lower than '
            "the "
            f"kubeadm minor release ({minor(target)} < {minor(mine)}). Such an upgrade is not "
            "supported"
        )
    if errs:
        raise Fail(
            "[upgrade/version] FATAL: the --version argument is invalid due to these fatal "
            "errors:\n\n"
            + "\n".join(f"\t- {e}" for e in errs)
            + "\n\nCan be bypassed if you pass the --force flag"
        )
    if not a.yes:
        sys.stdout.write("[upgrade] Are you sure you want to proceed? [y/N]: ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise Fail("won't proceed; the user didn't answer (Y|y) in order to continue")
    out(
        f'[upgrade/apply] Upgrading your Static Pod-hosted control plane to version "{target}" '
        "(timeout: 5m0s)..."
    )
    restart_local_apiserver(target)
    doc["kubernetesVersion"] = target
    client.patch(
        "/api/v1/namespaces/kube-system/configmaps/kubeadm-config",
        {"data": {"ClusterConfiguration": yaml.safe_dump(doc, sort_keys=False)}},
    )
    out('[upgrade/staticpods] Component "kube-apiserver" upgraded successfully!')
    out(f'\n[upgrade/successful] SUCCESS! Your cluster was upgraded to "{target}". Enjoy!\n')
    out(
        "[upgrade/kubelet] Now that your control plane is upgraded, please proceed with upgrading "
        "your kubelets if "
        "you haven't already done so."
    )
    return 0


# --------------------------------------------------------------------------- version / config
def cmd_version(a: argparse.Namespace) -> int:
    v = "v" + version()
    info = {
        "major": "1",
        "minor": str(minor(v)),
        "gitVersion": v,
        "gitCommit": "0" * 40,
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23.12",
        "compiler": "gc",
        "platform": "linux/amd64",
    }
    if a.output == "short":
        out(v)
    elif a.output == "json":
        out(json.dumps({"clientVersion": info}, indent=2))
    elif a.output == "yaml":
        import yaml

        out(yaml.safe_dump({"clientVersion": info}, sort_keys=False).rstrip())
    elif a.output:
        raise Fail(f"invalid output format: {a.output}")
    else:
        out(
            f'kubeadm version: &version.Info{{Major:"1", Minor:"{minor(v)}", GitVersion:"{v}", '
            f'GitCommit:"{info["gitCommit"]}", GitTreeState:"clean", '
            f'BuildDate:"{info["buildDate"]}", '
            f'GoVersion:"{info["goVersion"]}", Compiler:"gc", Platform:"linux/amd64"}}'
        )
    return 0


def cmd_config(a: argparse.Namespace) -> int:
    if a.config_cmd == "validate":
        if not a.config:
            raise Fail("the --config flag is mandatory")
        load_config(a.config, "validate")
        out("ok")
        return 0
    if a.config_cmd == "images":
        docs = load_config(a.config, "init")
        v = check_k8s_version(
            a.kubernetes_version or docs.get("ClusterConfiguration", {}).get("kubernetesVersion")
        )
        images = [
            f"registry.k8s.io/{c}:{v}"
            for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
        ]
        images += [
            "registry.k8s.io/coredns/coredns:v1.11.3",
            "registry.k8s.io/pause:3.10",
            "registry.k8s.io/etcd:3.5.15-0",
        ]
        for img in images:
            out(f"[config/images] Pulled {img}" if a.images_cmd == "pull" else img)
        return 0
    raise Fail(f"stand-in kubeadm: 'config {a.config_cmd}' is not modelled")


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubeadm", description="kubeadm stand-in (pikube lab)")
    p.add_argument("-v", "--v", dest="verbosity", default="0")
    sub = p.add_subparsers(dest="cmd", required=True)

    i = sub.add_parser("init")
    i.add_argument("--config")
    i.add_argument("--ignore-preflight-errors")
    i.add_argument("--skip-phases")
    i.add_argument("--apiserver-advertise-address")
    i.add_argument("--apiserver-bind-port")
    i.add_argument("--apiserver-cert-extra-sans")
    i.add_argument("--pod-network-cidr")
    i.add_argument("--service-cidr")
    i.add_argument("--service-dns-domain")
    i.add_argument("--kubernetes-version")
    i.add_argument("--node-name")
    i.add_argument("--cri-socket")
    i.add_argument("--token")
    i.add_argument("--token-ttl")
    i.add_argument("--upload-certs", action="store_true")
    i.add_argument("--certificate-key")
    i.add_argument("phase_args", nargs="*")  # `init phase upload-certs`
    i.add_argument("--skip-token-print", action="store_true")
    i.add_argument("--skip-certificate-key-print", action="store_true")
    i.set_defaults(fn=cmd_init)

    j = sub.add_parser("join")
    j.add_argument("endpoint", nargs="?")
    j.add_argument("--config")
    j.add_argument("--token")
    j.add_argument("--discovery-token")
    j.add_argument("--discovery-token-ca-cert-hash", action="append")
    j.add_argument("--discovery-token-unsafe-skip-ca-verification", action="store_true")
    j.add_argument("--node-name")
    j.add_argument("--cri-socket")
    j.add_argument("--ignore-preflight-errors")
    j.add_argument("--control-plane", action="store_true")
    j.add_argument("--certificate-key")
    j.add_argument("--apiserver-advertise-address")
    j.add_argument("--apiserver-bind-port")
    j.add_argument("--skip-phases")
    j.set_defaults(fn=cmd_join)

    t = sub.add_parser("token")
    t.add_argument("--kubeconfig")
    tsub = t.add_subparsers(dest="token_cmd", required=True)
    tc = tsub.add_parser("create")
    tc.add_argument("token", nargs="?")
    tc.add_argument("--ttl", default="24h0m0s")
    tc.add_argument("--print-join-command", action="store_true")
    tc.add_argument("--description")
    tc.add_argument("--usages", default="signing,authentication")
    tc.add_argument("--groups", default="system:bootstrappers:kubeadm:default-node-token")
    tc.add_argument("--kubeconfig", dest="kubeconfig_sub")
    tl = tsub.add_parser("list")
    tl.add_argument("-o", "--output", default="")
    tl.add_argument("--kubeconfig", dest="kubeconfig_sub")
    td = tsub.add_parser("delete")
    td.add_argument("tokens", nargs="+")
    td.add_argument("--kubeconfig", dest="kubeconfig_sub")
    tsub.add_parser("generate")
    t.set_defaults(fn=cmd_token)

    r = sub.add_parser("reset")
    r.add_argument("-f", "--force", action="store_true")
    r.add_argument("--cri-socket")
    r.add_argument("--cleanup-tmp-dir", action="store_true")
    r.add_argument("--ignore-preflight-errors")
    r.set_defaults(fn=cmd_reset)

    u = sub.add_parser("upgrade")
    usub = u.add_subparsers(dest="upgrade_cmd", required=True)
    usub.add_parser("plan").add_argument("version", nargs="?")
    ua = usub.add_parser("apply")
    ua.add_argument("version")
    ua.add_argument("-y", "--yes", action="store_true")
    ua.add_argument("-f", "--force", action="store_true")
    ua.add_argument("--certificate-renewal", default="true")
    ua.add_argument("--etcd-upgrade", default="true")
    usub.add_parser("node")
    u.set_defaults(fn=cmd_upgrade)

    v = sub.add_parser("version")
    v.add_argument("-o", "--output", default="")
    v.set_defaults(fn=cmd_version)

    ce = sub.add_parser("certs")
    ce.add_argument("certs_cmd", choices=("certificate-key",))
    ce.set_defaults(fn=cmd_certs)

    c = sub.add_parser("config")
    csub = c.add_subparsers(dest="config_cmd", required=True)
    cv = csub.add_parser("validate")
    cv.add_argument("--config")
    ci = csub.add_parser("images")
    ci.add_argument("images_cmd", choices=("list", "pull"))
    ci.add_argument("--config")
    ci.add_argument("--kubernetes-version")
    ci.add_argument("--cri-socket")
    c.set_defaults(fn=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    # klog's verbosity flag is accepted anywhere on the command line, as by kubeadm
    raw = [a for a in raw if not re.fullmatch(r"--v=\d+|-v=\d+", a)]
    args = build_parser().parse_args(raw)
    if getattr(args, "kubeconfig_sub", None):
        args.kubeconfig = args.kubeconfig_sub
    try:
        return int(args.fn(args))
    except Fail as e:
        common.log(str(e))
        common.log(STACK_HINT)
        return 1
    except ApiError as e:
        common.log(f"error: {e}")
        common.log(STACK_HINT)
        return 1
    except OSError as e:
        common.log(f"error: {e}")
        common.log(STACK_HINT)
        return 1


if __name__ == "__main__":
    sys.exit(main())
