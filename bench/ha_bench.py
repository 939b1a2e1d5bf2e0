"""Benchmark a highly available kubeadm cluster on lab nodes: the time of a 4-node `pikube up`
(3 control planes behind a VIP + 1 worker), its no-op re-run, and the failover gap: how long
the real kubectl, through the fetched kubeconfig (server = the VIP), fails after the node
holding the VIP is powered off.

Needs root and the lab (tests/lab) with the kubeadm stand-ins. One lab at a time; it is torn
down at the end, also on errors. Timings are wall-clock seconds of the real CLI and kubectl.

Run from the repository root:
    .venv/bin/python -m bench.ha_bench [--name pkl4-habench] [--subnet 10.77.4.0/24]
Prints one JSON object on stdout; progress on stderr. Figures measured so far are in
bench/results-2cpu-shared.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import yaml

from bench.up_bench import pikube_up, say
from tests.lab.core import Lab

CONTROL_PLANES = ("node-1", "node-2", "node-3")


def kubectl_answers(kubeconfig: Path) -> bool:
    argv = ["kubectl", "--kubeconfig", str(kubeconfig), "--request-timeout=2s", "get", "nodes"]
    return subprocess.run(argv, capture_output=True, check=False, timeout=30).returncode == 0


def vip_holder(lab: Lab, vip: str, down: set[str]) -> str | None:
    for name in CONTROL_PLANES:
        if name not in down and f" {vip}/32 " in lab.exec(name, ["ip", "-4", "-o", "addr"]).stdout:
            return name
    return None


def failover_gap(lab: Lab, vip: str, kubeconfig: Path, down: set[str]) -> dict[str, Any]:
    """Power off the VIP's holder; seconds until kubectl answers again through the VIP."""
    holder = vip_holder(lab, vip, down)
    if holder is None or not kubectl_answers(kubeconfig):
        raise SystemExit("no node holds the VIP, or kubectl does not answer before the failover")
    lab.stop(holder)
    down.add(holder)
    start = time.perf_counter()
    failures = 0
    while not kubectl_answers(kubeconfig):
        failures += 1
        if time.perf_counter() - start > 300:
            raise SystemExit(f"kubectl did not answer within 300 s after stopping {holder}")
        time.sleep(0.2)
    return {
        "stopped": holder,
        "gap_s": round(time.perf_counter() - start, 1),
        "failed_requests": failures,
        "new_holder": vip_holder(lab, vip, down),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="pkl4-habench")
    parser.add_argument("--subnet", default="10.77.4.0/24")
    args = parser.parse_args()
    lab = Lab(args.name, args.subnet)
    lab.down()
    result: dict[str, Any] = {"nodes": 4, "control_planes": len(CONTROL_PLANES)}
    with tempfile.TemporaryDirectory(prefix="pikube-ha-bench-") as work:
        try:
            say("lab up (4 nodes)")
            lab.up(4, distribution="kubeadm", pi=0)
            if not any(lab.www_dir.glob("core:/stable:/v*/deb/Release.key")):
                from tests.lab.standins import build_repo

                build_repo(lab.www_dir)
            data = lab.cluster_data("kubeadm")
            for node in data["nodes"]:
                node["role"] = "control-plane" if node["name"] in CONTROL_PLANES else "worker"
            vip = str(IPv4Network(lab.subnet).network_address + 100)
            data["network"]["vip"] = vip
            cluster = Path(work) / "cluster.yaml"
            cluster.write_text(yaml.safe_dump(data, sort_keys=False))
            say("pikube up (fresh, 3 control planes + 1 worker)")
            result["up_fresh_s"] = round(pikube_up(cluster), 1)
            say("pikube up (no-op re-run)")
            result["up_rerun_s"] = round(pikube_up(cluster), 1)
            say("failover: power off the VIP's holder")
            kubeconfig = Path(data["state_dir"]) / "kubeconfig"
            result["failover"] = failover_gap(lab, vip, kubeconfig, set())
        finally:
            lab.down()
    result["load_average"] = round(os.getloadavg()[0], 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
