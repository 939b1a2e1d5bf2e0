"""Benchmark `pikube up` (MicroK8s) on lab nodes: fresh, no-op re-run, pikube's ansible.cfg
against stock Ansible settings, and how the no-op re-run grows from 3 to 10 nodes.

The MicroK8s twin of bench/up_bench.py (same figures, same JSON keys), with the lab's snap
and MicroK8s stand-ins. Needs root and the lab (tests/lab). One lab at a time; it is torn
down at the end, also on errors. Timings are wall-clock seconds of the real CLI / runner.

Run from the repository root:
    .venv/bin/python -m bench.up_microk8s_bench [--small 3] [--big 10] [--name pkl6-bench]
        [--subnet 10.77.6.0/24]
Prints one JSON object on stdout; progress on stderr.

Measured on the shared 2-CPU build machine (load ~9), `--small 3 --big 0`: fresh up 190.7 s,
no-op re-run 92.3 s (runner 94.9 s, changed 0), stock Ansible settings 128.7 s (ratio 1.36).
`--small 3 --big 10` (load 3.4 at the start, 13-15 at the end): 3 nodes fresh 130.2 s, no-op
88.2 s, stock/pikube 1.15x; 10 nodes fresh 257.4 s, no-op 165.7 s (1.88x the 3-node no-op).
See bench/results-2cpu-shared.txt.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.up_bench import STOCK_CFG, pikube_up, say
from pikube.config import load_cluster
from pikube.errors import PikubeError
from pikube.inventory import render_inventory_files
from pikube.runner import run_playbook
from tests.lab.core import Lab

PLAYBOOK = "site-microk8s.yml"


def runner_up(cluster_file: Path, config: Path | None) -> tuple[float, int]:
    """The MicroK8s site playbook through the runner, with a chosen ansible.cfg."""
    cluster = load_cluster(cluster_file)
    start = time.perf_counter()
    try:
        result = run_playbook(
            PLAYBOOK,
            inventory_files=render_inventory_files(cluster),
            state_dir=Path(str(cluster.state_dir)),
            command="bench",
            config_file=config,
        )
    except PikubeError as err:
        raise SystemExit(f"run failed: {err.render()}") from err
    return time.perf_counter() - start, result.changed_total


def with_lab(name: str, subnet: str, nodes: int, work: Path) -> tuple[Lab, Path]:
    lab = Lab(name, subnet)
    lab.down()
    lab.up(nodes, distribution="microk8s", pi=1)
    return lab, lab.write_cluster(work / f"cluster-{nodes}.yaml", "microk8s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=3)
    parser.add_argument("--big", type=int, default=10)
    parser.add_argument("--name", default="pkl6-bench")
    parser.add_argument("--subnet", default="10.77.6.0/24")
    args = parser.parse_args()
    figures: dict[str, Any] = {"nodes_small": args.small, "nodes_big": args.big}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stock = work / "stock-ansible.cfg"
        stock.write_text(STOCK_CFG)
        lab, cluster = with_lab(args.name, args.subnet, args.small, work)
        try:
            say(f"fresh up on {args.small} nodes")
            figures["fresh_up_s"] = round(pikube_up(cluster), 1)
            say("no-op re-run")
            figures["noop_s"] = round(pikube_up(cluster), 1)
            seconds, changed = runner_up(cluster, None)
            figures["noop_pikube_cfg_s"] = round(seconds, 1)
            figures["noop_pikube_cfg_changed"] = changed
            say("no-op re-run with stock Ansible settings")
            seconds, changed = runner_up(cluster, stock)
            figures["noop_stock_cfg_s"] = round(seconds, 1)
            figures["noop_stock_cfg_changed"] = changed
            figures["stock_over_pikube_ratio"] = round(
                figures["noop_stock_cfg_s"] / figures["noop_pikube_cfg_s"], 2
            )
        finally:
            lab.down()
        if args.big:
            lab, cluster = with_lab(args.name, args.subnet, args.big, work)
            try:
                say(f"fresh up on {args.big} nodes")
                figures["fresh_up_big_s"] = round(pikube_up(cluster), 1)
                say(f"no-op re-run on {args.big} nodes")
                figures["noop_big_s"] = round(pikube_up(cluster), 1)
            finally:
                lab.down()
            figures["noop_growth_ratio"] = round(figures["noop_big_s"] / figures["noop_s"], 2)
    json.dump(figures, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
