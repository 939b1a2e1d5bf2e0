"""MicroK8s `apiserver-proxy` stand-in: a worker's local door to every control plane.

Contract (canonical/microk8s branch 1.31, same on 1.30): the snap's `daemon-apiserver-proxy`
runs microk8s-resources/wrappers/run-apiserver-proxy-with-args, which exits 0 unless the node
is a worker (var/lock/clustered.lock) with args/traefik and args/apiserver-proxy, renders
args/traefik/traefik.yaml from traefik-template.yaml and runs `cluster-agent apiserver-proxy`
with the arguments of args/apiserver-proxy (default-args: `--traefik-config
${SNAP_DATA}/args/traefik/traefik.yaml --kubeconfig ${SNAP_DATA}/credentials/kubelet.config
--refresh-interval 30s`). canonical/microk8s-cluster-agent pkg/proxy: it listens on the
entry point of traefik.yaml (`:16443`), passes every TCP connection (TLS untouched) to one of
the servers of the file provider (args/traefik/provider.yaml, watched for changes), and every
refresh interval reads the Endpoints `default/kubernetes` (each API server's address, port
`https`, else 16443) through the kubelet's kubeconfig; a list that changed and is not empty
is written to provider.yaml. `join --worker` writes the first list: the control plane it
contacted (join.py update_apiserver_proxy). The worker's kubelet talks to 127.0.0.1:16443
(utils.sh create_worker_kubeconfigs), so it keeps its API when one control plane dies.

A server that refuses or does not answer a connection within DIAL_TIMEOUT_S is skipped for
the next one; the last server that answered is tried first.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import socket
import sys
import threading
import time
from pathlib import Path

from . import common
from .microk8s import api_port, bind_address, data, is_worker, snap

# A dead control plane's address (no ARP answer) fails a connect after about 3 s: give up
# sooner and try the next one, well inside a client's 5 s request timeout.
DIAL_TIMEOUT_S = 2.0
PROVIDER_TEMPLATE = """tcp:
  routers:
    Router-1:
      rule: "HostSNI(`*`)"
      service: "kube-apiserver"
      tls:
        passthrough: true
  services:
    kube-apiserver:
      loadBalancer:
        servers:
# APISERVERS
#      - address: "10.130.0.2:16443"
#      - address: "10.130.0.3:16443"
#      - address: "10.130.0.4:16443"
"""
TRAEFIK_TEMPLATE = """entryPoints:
  apiserver:
    address: ":16443"
providers:
  file:
    filename: ${SNAP_DATA}/args/traefik/provider.yaml
    watch: true
"""
ARGS = """--traefik-config ${SNAP_DATA}/args/traefik/traefik.yaml
--kubeconfig ${SNAP_DATA}/credentials/kubelet.config
--refresh-interval 30s
"""
DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")


def write_default_args() -> None:
    """snap/hooks/install copies default-args/ to ${SNAP_DATA}/args/; the stand-in's API port
    (PIKUBE_STANDIN_MICROK8S_API_PORT in host tests) stands where upstream has 16443."""
    args = data() / "args"
    common.write_file(args / "apiserver-proxy", ARGS)
    common.write_file(
        args / "traefik/traefik-template.yaml",
        TRAEFIK_TEMPLATE.replace(":16443", f":{api_port()}"),
    )
    common.write_file(args / "traefik/provider-template.yaml", PROVIDER_TEMPLATE)


def listen_address(config: Path | None = None) -> tuple[str, int]:
    """The traefik configuration's entry point (default: traefik-template.yaml): `:PORT` is
    every address of the node (the stand-in's bind address: 0.0.0.0 on a lab node, the fake
    node's own address in host tests)."""
    import yaml

    config = config or data() / "args/traefik/traefik-template.yaml"
    doc = yaml.safe_load(config.read_text())
    host, _, port = str(doc["entryPoints"]["apiserver"]["address"]).rpartition(":")
    return host or bind_address(), int(port)


def local_server() -> str:
    """Where the worker's kubeconfigs point (utils.sh create_worker_kubeconfigs: the entry
    point's host, else 127.0.0.1; in host tests, where fake nodes share the host's loopback,
    the fake node's own address)."""
    host, port = listen_address()
    if host in ("0.0.0.0", ""):  # noqa: S104 - a wildcard, not a bind
        host = "127.0.0.1"
    return f"{host}:{port}"


def write_servers(addresses: list[str]) -> None:
    """provider.yaml from provider-template.yaml with ``addresses`` as the servers."""
    import yaml

    template = data() / "args/traefik/provider-template.yaml"
    doc = yaml.safe_load(template.read_text() if template.exists() else PROVIDER_TEMPLATE)
    lb = doc["tcp"]["services"]["kube-apiserver"]["loadBalancer"]
    lb["servers"] = [{"address": a} for a in addresses]
    common.write_file(data() / "args/traefik/provider.yaml", yaml.safe_dump(doc))


def read_servers() -> list[str]:
    import yaml

    try:
        doc = yaml.safe_load((data() / "args/traefik/provider.yaml").read_text())
        servers = doc["tcp"]["services"]["kube-apiserver"]["loadBalancer"]["servers"] or []
        return [str(s["address"]) for s in servers]
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return []


def seconds(text: str) -> float:
    m = DURATION.match(text.strip())
    if not m:
        raise SystemExit(f"invalid duration {text!r}")
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def kubernetes_endpoints(kubeconfig: Path) -> list[str]:
    """pkg/proxy getKubernetesEndpoints: the API servers' addresses, sorted."""
    client = common.Client.from_kubeconfig(kubeconfig, timeout=10)
    ep = client.get("/api/v1/namespaces/default/endpoints/kubernetes")
    found = []
    for subset in ep.get("subsets") or []:
        ports = subset.get("ports") or []
        port = next((p["port"] for p in ports if p.get("name") == "https"), 16443)
        found += [f"{a['ip']}:{port}" for a in subset.get("addresses") or []]
    return sorted(found)


class Proxy:
    def __init__(self) -> None:
        self.first = ""  # the server that answered last

    def dial(self) -> socket.socket | None:
        servers = read_servers()  # the file provider watches provider.yaml: read it each time
        servers.sort(key=lambda s: s != self.first)
        for server in servers:
            host, _, port = server.rpartition(":")
            try:
                upstream = socket.create_connection((host, int(port)), timeout=DIAL_TIMEOUT_S)
            except (OSError, ValueError):
                continue
            upstream.settimeout(None)
            self.first = server
            return upstream
        return None

    def serve(self, client: socket.socket) -> None:
        upstream = self.dial()
        if upstream is None:
            client.close()
            return
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    def refresh(self, kubeconfig: Path, every: float) -> None:
        while every > 0:
            time.sleep(every)
            try:
                found = kubernetes_endpoints(kubeconfig)
            except (OSError, ValueError, KeyError, TypeError, common.ApiError) as e:
                common.log(f"failed to retrieve kubernetes endpoints: {e}")
                continue
            if not found:
                common.log("warning: empty list of endpoints, skipping update")
            elif found != sorted(read_servers()):
                common.log(f"updating endpoints: {' '.join(found)}")
                write_servers(found)


def pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        src.close()


def parse_args() -> argparse.Namespace:
    text = (data() / "args/apiserver-proxy").read_text()
    text = text.replace("${SNAP_DATA}", str(data())).replace("${SNAP}", str(snap()))
    ap = argparse.ArgumentParser(prog="cluster-agent apiserver-proxy (pikube stand-in)")
    ap.add_argument("--traefik-config", required=True)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--refresh-interval", default="30s")
    return ap.parse_args(shlex.split(text))


def main() -> int:
    # run-apiserver-proxy-with-args
    if not is_worker():
        print("Not a worker node, exiting", flush=True)
        return 0
    args_dir = data() / "args"
    if not (args_dir / "traefik").exists() or not (args_dir / "apiserver-proxy").exists():
        return 0
    template = (args_dir / "traefik/traefik-template.yaml").read_text()
    rendered = template.replace("${SNAP}", str(snap())).replace("${SNAP_DATA}", str(data()))
    common.write_file(args_dir / "traefik/traefik.yaml", rendered)
    a = parse_args()
    if not read_servers():
        common.log("fatal error: no known control plane nodes are left")
        return 1
    common.start_watchdog()
    proxy = Proxy()
    every = seconds(a.refresh_interval)
    threading.Thread(target=proxy.refresh, args=(Path(a.kubeconfig), every), daemon=True).start()
    host, port = listen_address(Path(a.traefik_config))
    srv = socket.create_server((host, port), reuse_port=False)
    common.log(f"apiserver-proxy stand-in listening on {host}:{port}")
    while True:
        client, _addr = srv.accept()
        threading.Thread(target=proxy.serve, args=(client,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
