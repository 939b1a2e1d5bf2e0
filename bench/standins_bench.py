"""Timings of the lab stand-ins (not a test): prepare(), kubeadm init/join, MicroK8s install/join.

Run as root on a Debian host with python3-yaml and python3-cryptography:
    .venv/bin/python bench/standins_bench.py
Prints one JSON object with seconds per step.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "lab"))

from standins import prepare, testing


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def timed(results: dict[str, float], name: str, fn):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn()
    results[name] = round(time.perf_counter() - t, 3)
    return out


def main() -> None:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="standins-bench-") as tmp:
        base = Path(tmp)
        timed(results, "prepare_first_or_cached", lambda: prepare(base / "www", "127.0.0.1"))
        timed(results, "prepare_cached", lambda: prepare(base / "www2", "127.0.0.1"))
        cp = testing.FakeNode(base, "cp", "127.0.9.1", port=testing.free_port("127.0.9.1"))
        w = testing.FakeNode(base, "w", "127.0.9.2", port=0)
        try:
            cfg = base / "init.yaml"
            cfg.write_text(testing.init_config(cp))
            timed(results, "kubeadm_init_ecdsa", lambda: cp.kubeadm("init", "--config", str(cfg)))
            join = timed(
                results,
                "kubeadm_token_create",
                lambda: cp.kubeadm("token", "create", "--print-join-command").stdout.split(),
            )
            timed(results, "kubeadm_join", lambda: w.kubeadm(*join[1:]))
            timed(
                results,
                "kubectl_apply_flannel",
                lambda: cp.kubectl("apply", "-f", str(testing.FIXTURES / "kube-flannel.yml")),
            )
            timed(
                results,
                "kubectl_wait_nodes_ready",
                lambda: cp.kubectl(
                    "wait", "--for=condition=Ready", "node", "--all", "--timeout=60s"
                ),
            )
        finally:
            w.cleanup()
            cp.cleanup()
        srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(base / "www")))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        env = {"PIKUBE_LAB_HTTP": f"http://127.0.0.1:{srv.server_address[1]}"}
        nodes = []
        try:
            for name, ip in (("m1", "127.0.9.11"), ("m2", "127.0.9.12")):
                n = testing.FakeNode(
                    base,
                    name,
                    ip,
                    port=0,
                    extra_env={
                        **env,
                        "PIKUBE_STANDIN_MICROK8S_API_PORT": str(testing.free_port(ip)),
                        "PIKUBE_STANDIN_MICROK8S_AGENT_PORT": str(testing.free_port(ip)),
                    },
                )
                nodes.append(n)
                timed(
                    results,
                    f"snap_install_microk8s_{name}",
                    lambda n=n: n.run(
                        "snap", "install", "microk8s", "--classic", "--channel=1.31/stable"
                    ),
                )
                timed(
                    results,
                    f"microk8s_status_wait_ready_{name}",
                    lambda n=n: n.run("microk8s", "status", "--wait-ready", "--timeout", "60"),
                )
            line = nodes[0].run("microk8s", "add-node", "--format", "short").stdout.split()
            timed(
                results,
                "microk8s_join_worker",
                lambda: nodes[1].run("microk8s", *line[1:], "--worker"),
            )
        finally:
            for n in nodes:
                n.cleanup()
            srv.shutdown()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
