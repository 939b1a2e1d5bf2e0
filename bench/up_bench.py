"""Benchmark `pikube up` on lab nodes, for either flavour: fresh, no-op re-run, pikube's
ansible.cfg against stock Ansible settings, and how the no-op re-run grows from 3 to 10 nodes.

Needs root and the lab (tests/lab) with its stand-ins (kubeadm: the pkgs.k8s.io-shaped
repository; MicroK8s: the snap stand-in). One lab at a time; it is torn down at the end,
also on errors. Timings are wall-clock seconds of the real CLI / runner.

Run from the repository root:
    .venv/bin/python -m bench.up_bench [--flavour kubeadm|microk8s] [--small 3] [--big 10]
        [--name pkl4-bench] [--subnet 10.77.4.0/24]
Prints one JSON object on stdout; progress on stderr. Figures measured so far are in
bench/results-2cpu-shared.txt.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pikube.config import load_cluster
from pikube.distribution import DISTRIBUTIONS, SITE_PLAYBOOK
from pikube.errors import PikubeError
from pikube.inventory import render_inventory_files
from pikube.runner import run_playbook
from tests.lab.core import Lab

STOCK_CFG = "[defaults]\n# stock Ansible settings: everything at its default\n"


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def pikube_up(cluster: Path) -> float:
    argv = [str(Path(sys.executable).parent / "pikube"), "up", "--skip-doctor", "-c", str(cluster)]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pikube up failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return elapsed


def runner_up(cluster_file: Path, config: Path | None) -> tuple[float, int]:
    """The site playbook through the runner, with a chosen ansible.cfg."""
    cluster = load_cluster(cluster_file)
    start = time.perf_counter()
    try:
        result = run_playbook(
            SITE_PLAYBOOK,
            inventory_files=render_inventory_files(cluster),
            state_dir=Path(str(cluster.state_dir)),
            command="bench",
            config_file=config,
        )
    except PikubeError as err:
        raise SystemExit(f"run failed: {err.render()}") from err
    return time.perf_counter() - start, result.changed_total


def with_lab(name: str, subnet: str, nodes: int, work: Path, flavour: str) -> tuple[Lab, Path]:
    lab = Lab(name, subnet)
    lab.down()
    lab.up(nodes, distribution=flavour, pi=1)
    if flavour == "kubeadm" and not any(lab.www_dir.glob("core:/stable:/v*/deb/Release.key")):
        from tests.lab.standins import build_repo

        build_repo(lab.www_dir)
    return lab, lab.write_cluster(work / f"cluster-{nodes}.yaml", flavour)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flavour", choices=sorted(DISTRIBUTIONS), default="kubeadm")
    parser.add_argument("--small", type=int, default=3)
    parser.add_argument("--big", type=int, default=10)
    parser.add_argument("--name", default="pkl4-bench")
    parser.add_argument("--subnet", default="10.77.4.0/24")
    args = parser.parse_args()
    figures: dict[str, Any] = {
        "flavour": args.flavour,
        "nodes_small": args.small,
        "nodes_big": args.big,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stock = work / "stock-ansible.cfg"
        stock.write_text(STOCK_CFG)
        lab, cluster = with_lab(args.name, args.subnet, args.small, work, args.flavour)
        try:
            say(f"fresh up on {args.small} nodes")
            figures["fresh_up_s"] = round(pikube_up(cluster), 1)
            say("no-op re-run")
            figures["noop_s"] = round(pikube_up(cluster), 1)
            seconds, changed = runner_up(cluster, None)
            figures["noop_pikube_cfg_s"], figures["noop_pikube_cfg_changed"] = (
                round(seconds, 1),
                changed,
            )
            say("no-op re-run with stock Ansible settings")
            seconds, changed = runner_up(cluster, stock)
            figures["noop_stock_cfg_s"], figures["noop_stock_cfg_changed"] = (
                round(seconds, 1),
                changed,
            )
            figures["stock_over_pikube_ratio"] = round(
                figures["noop_stock_cfg_s"] / figures["noop_pikube_cfg_s"], 2
            )
        finally:
            lab.down()
        if args.big:
            lab, cluster = with_lab(args.name, args.subnet, args.big, work, args.flavour)
            try:
                say(f"fresh up on {args.big} nodes")
                figures["fresh_up_big_s"] = round(pikube_up(cluster), 1)
                say(f"no-op re-run on {args.big} nodes")
                figures["noop_big_s"] = round(pikube_up(cluster), 1)
            finally:
                lab.down()
            figures["noop_growth_ratio"] = round(figures["noop_big_s"] / figures["noop_s"], 2)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
