"""kubelet stand-in: registers its Node and posts a Ready heartbeat.

Contract: https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/ ,
node heartbeats https://kubernetes.io/docs/concepts/architecture/nodes/#heartbeats ,
kubeadm's drop-in
https://kubernetes.io/docs/setup/production-environment/tools/kubeadm/kubelet-integration/ .
Without its config / kubeconfig it exits 1 with the real kubelet's message, and
systemd (Restart=always) keeps restarting it: the crash loop kubeadm's docs describe.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import common
from .common import ApiError, Client, path


def klog(level: str, msg: str) -> None:
    t = dt.datetime.now()
    print(
        f"{level}{t:%m%d %H:%M:%S.%f} {os.getpid():>7} kubelet.go] {msg}",
        file=sys.stderr,
        flush=True,
    )


def fail(msg: str) -> int:
    klog("E", f'"command failed" err="{msg}"')
    return 1


def env_file(p: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = " ".join(shlex.split(v))
    return out


def dropin_argv() -> list[str]:
    """What systemd passes through kubeadm's 10-kubeadm.conf drop-in (used in spawn mode)."""
    envs = {
        **env_file(path("/var/lib/kubelet/kubeadm-flags.env")),
        **env_file(path("/etc/default/kubelet")),
    }
    args = [
        "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
        "--kubeconfig=/etc/kubernetes/kubelet.conf",
        "--config=/var/lib/kubelet/config.yaml",
    ]
    for k in ("KUBELET_KUBEADM_ARGS", "KUBELET_EXTRA_ARGS"):
        args += shlex.split(envs.get(k, ""))
    return args


def node_object(name: str, ip: str, version: str, cri: str) -> dict[str, Any]:
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(
        platform.machine(), platform.machine()
    )
    os_image = "Linux"
    rel = path("/etc/os-release")
    if rel.exists():
        for line in rel.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_image = line.split("=", 1)[1].strip('"')
    runtime = "containerd://unknown"
    try:
        r = subprocess.run(
            ["containerd", "--version"], capture_output=True, text=True, timeout=5, check=False
        )
        parts = r.stdout.split()
        if len(parts) >= 3:
            runtime = "containerd://" + parts[2].lstrip("v")
    except (OSError, subprocess.SubprocessError):
        pass
    mem_ki = "0"
    try:
        for line in common.proc("meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_ki = line.split()[1]
    except OSError:
        pass
    mid = path("/etc/machine-id")
    capacity = {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{mem_ki}Ki",
        "pods": "110",
        "ephemeral-storage": "10Gi",
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "beta.kubernetes.io/arch": arch,
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
            },
            "annotations": {
                "kubeadm.alpha.kubernetes.io/cri-socket": cri,
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "machineID": mid.read_text().strip() if mid.exists() else "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": platform.release(),
                "osImage": os_image,
                "containerRuntimeVersion": runtime,
                "kubeletVersion": f"v{version.lstrip('v')}",
                "kubeProxyVersion": f"v{version.lstrip('v')}",
                "operatingSystem": "linux",
                "architecture": arch,
            },
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        },
    }


def conditions() -> list[dict[str, str]]:
    t = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    for typ, reason, msg in (
        ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ):
        out.append(
            {
                "type": typ,
                "status": "False",
                "reason": reason,
                "message": msg,
                "lastHeartbeatTime": t,
                "lastTransitionTime": t,
            }
        )
    out.append(
        {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": t,
            "lastTransitionTime": t,
        }
    )
    return out


def kubelet_ports() -> tuple[str, int, str, int]:
    """(bind, 10250, healthz bind, 10248): kubelet API on all addresses, healthz on localhost."""
    bind = common.env("PIKUBE_STANDIN_BIND_ADDRESS", "0.0.0.0")  # noqa: S104 - kubelet's default
    healthz = "127.0.0.1" if bind == "0.0.0.0" else bind  # noqa: S104
    return (
        bind,
        int(common.env("PIKUBE_STANDIN_KUBELET_PORT", "10250")),
        healthz,
        int(common.env("PIKUBE_STANDIN_KUBELET_HEALTHZ_PORT", "10248")),
    )


def serve_kubelet_ports(name: str) -> None:
    """Listen like the kubelet: HTTPS :10250 (self-signed serving cert in /var/lib/kubelet/pki,
    anonymous requests get 401) and http://localhost:10248/healthz. Raises OSError when taken."""
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from . import pki

    bind, port, hbind, hport = kubelet_ports()
    crt, key = path("/var/lib/kubelet/pki/kubelet.crt"), path("/var/lib/kubelet/pki/kubelet.key")
    if not crt.exists():
        c, k = pki.make_ca(f"{name}-ca@{int(time.time())}")
        pki.write_pair(crt.parent, "kubelet", c, k)

    class Api(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            ok = self.server.server_address[1] == hport and self.path.startswith("/healthz")
            body = b"ok" if ok else b"Unauthorized"
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    api = ThreadingHTTPServer((bind, port), Api)
    health = ThreadingHTTPServer((hbind, hport), Api)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(crt), str(key))
    api.socket = ctx.wrap_socket(api.socket, server_side=True, do_handshake_on_connect=False)
    for srv in (api, health):
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()


# The static Pods kubeadm's stand-in writes manifests for, and the units that run them.
STATIC_POD_UNITS = {
    "etcd.yaml": "pikube-standin-etcd",
    "kube-apiserver.yaml": "pikube-standin-apiserver",
}
STOPPED_STATIC_PODS = "/var/lib/kubelet/pikube-standin-stopped-static-pods"


class StaticPods:
    """The kubelet's static Pods follow their manifests in staticPodPath.

    Upstream (pkg/kubelet/config/file.go, file_linux.go): the kubelet watches the folder
    (inotify, and a re-list every fileCheckFrequency, 20 s); a manifest that leaves it removes
    its Pod (the containers are killed), one that comes back creates it again. kubeadm's
    documented etcd restore relies on this (move the manifests out, restore, move them back).
    Stand-in: the Pods are the units kubeadm's stand-in starts itself (`init`, `join`,
    `upgrade`), so the kubelet does not start them in the first place (deviation); it stops a
    unit whose manifest it saw and that left the folder, remembers that it did (in
    /var/lib/kubelet, so a kubelet restart keeps it), and starts exactly those units again
    when their manifest is back. The new Pod runs the command of the manifest then in place,
    as upstream; the API server stand-in reads its state from etcd when it starts.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: set[str] = set()
        self.record = path(STOPPED_STATIC_PODS)

    def stopped(self) -> set[str]:
        return set(self.record.read_text().split()) if self.record.exists() else set()

    def sync(self) -> None:
        stopped = self.stopped()
        before = set(stopped)
        for manifest, unit in STATIC_POD_UNITS.items():
            if (self.folder / manifest).exists():
                self.seen.add(manifest)
                if unit in stopped:
                    klog("I", f'"Starting static pod" manifest="{manifest}" unit="{unit}"')
                    common.service_start(unit, restart=False)
                    stopped.discard(unit)
            elif manifest in self.seen:
                self.seen.discard(manifest)
                if common.service_active(unit):
                    klog("I", f'"Killing static pod, its manifest is gone" manifest="{manifest}"')
                    common.service_stop(unit)
                    stopped.add(unit)
        if stopped != before:
            self.record.parent.mkdir(parents=True, exist_ok=True)
            self.record.write_text("".join(f"{u}\n" for u in sorted(stopped)))


def heartbeat_loop(
    client: Client,
    name: str,
    ip: str,
    version: str,
    cri: str,
    labels: dict[str, str] | None = None,
    static_pods: StaticPods | None = None,
) -> None:
    """Register the Node, then post its status every PIKUBE_STANDIN_HEARTBEAT s until SIGTERM;
    meanwhile keep the static Pods in step with their manifests (every second)."""
    interval = float(common.env("PIKUBE_STANDIN_HEARTBEAT", "5"))
    stop = False

    def on_term(_sig: int, _frm: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    v = version.lstrip("v")
    klog("I", f'"Starting kubelet" version="v{v}" node="{name}"')
    registered = False
    while not stop:
        try:
            if not registered:
                body = node_object(name, ip, version, cri)
                body["metadata"]["labels"].update(labels or {})
                try:
                    client.post("/api/v1/nodes", body)
                    klog("I", f'"Successfully registered node" node="{name}"')
                except ApiError as e:
                    if e.status != 409:
                        raise
                    klog("I", f'"Node was previously registered" node="{name}"')
                registered = True
            st = node_object(name, ip, version, cri)["status"]
            st["conditions"] = conditions()
            client.request(
                "PATCH",
                f"/api/v1/nodes/{name}/status",
                {"status": st},
                "application/strategic-merge-patch+json",
            )
        except ApiError as e:
            klog(
                "E",
                f'"Error updating node status, will retry" err="error getting node \\"{name}\\": '
                f'{e}"',
            )
        except OSError as e:
            klog("E", f'"Unable to register node with API server" err="{e}" node="{name}"')
        deadline = time.monotonic() + interval
        while not stop and time.monotonic() < deadline:
            if static_pods is not None:
                try:
                    static_pods.sync()
                except (OSError, subprocess.SubprocessError) as e:
                    klog("E", f'"Static pod sync failed, will retry" err="{e}"')
            time.sleep(1.0 if static_pods is not None else 0.2)
    klog("I", '"Shutting down kubelet"')


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args and common.service_mode() == "spawn":
        args = dropin_argv()
    ap = argparse.ArgumentParser(prog="kubelet")
    ap.add_argument("--config")
    ap.add_argument("--kubeconfig")
    ap.add_argument("--bootstrap-kubeconfig")
    ap.add_argument("--container-runtime-endpoint", default="")
    ap.add_argument("--hostname-override")
    ap.add_argument("--node-ip")
    ap.add_argument("--version", action="store_true")
    a, _unknown = ap.parse_known_args(args)
    version = common.installed_version("kubelet")
    if a.version:
        print(f"Kubernetes v{version}")
        return 0
    import yaml

    if not a.config:
        return fail(
            "failed to validate kubelet flags: the container runtime endpoint address was not "
            "specified "
            "or empty, use --container-runtime-endpoint to set"
        )
    cfg_path = path(a.config)
    if not cfg_path.exists():
        return fail(
            f"failed to load kubelet config file, path: {a.config}, error: failed to load Kubelet "
            "config "
            f'file {a.config}, error failed to read kubelet config file "{a.config}", error: open '
            f"{a.config}: no such file or directory"
        )
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    if cfg.get("failSwapOn", True) is not False:
        try:
            swaps = [ln for ln in common.proc("swaps").read_text().splitlines()[1:] if ln.strip()]
        except OSError:
            swaps = []
        if swaps:
            return fail(
                "failed to run Kubelet: running with swap on is not supported, please disable "
                "swap or set "
                "--fail-swap-on flag to false"
            )
    kc = path(a.kubeconfig) if a.kubeconfig else None
    if kc is None or not kc.exists():
        boot = a.bootstrap_kubeconfig or "/etc/kubernetes/bootstrap-kubelet.conf"
        return fail(
            f"failed to run Kubelet: unable to load bootstrap kubeconfig: stat {boot}: no such "
            "file or "
            "directory"
        )
    name = (a.hostname_override or common.node_name()).lower()
    ip = a.node_ip or common.default_ip()
    cri = (
        a.container_runtime_endpoint
        or cfg.get("containerRuntimeEndpoint")
        or "unix:///var/run/containerd/containerd.sock"
    )
    client = Client.from_kubeconfig(kc, timeout=5)
    common.start_watchdog()
    try:
        serve_kubelet_ports(name)
    except OSError as e:
        bind, port, _h, _hp = kubelet_ports()
        return fail(f"failed to run Kubelet: failed to listen on {bind}:{port}: {e.strerror or e}")
    pods = StaticPods(path(cfg["staticPodPath"])) if cfg.get("staticPodPath") else None
    heartbeat_loop(client, name, ip, version, cri, static_pods=pods)
    return 0


if __name__ == "__main__":
    sys.exit(main())
