"""Benchmark: lab rootfs (cached), start-up of N nodes, memory per node, teardown.

Run as root from the repository root: .venv/bin/python -m bench.lab_bench [NODES ...]
(default 3 10). Lab name/subnet: PIKUBE_LAB_NAME (pikube-bench) / PIKUBE_LAB_SUBNET
(10.77.220.0/24). A cold rootfs build is measured when the cache for the current recipe is
empty (delete /var/cache/pikube-lab/rootfs-* to force one).
"""

from __future__ import annotations

import os
import sys
import time

from tests.lab import Lab


def main(sizes: list[int]) -> None:
    name = os.environ.get("PIKUBE_LAB_NAME", "pikube-bench")
    subnet = os.environ.get("PIKUBE_LAB_SUBNET", "10.77.220.0/24")
    print(
        f"{'nodes':>5} {'rootfs s':>8} {'boot s':>7} {'up s':>6} {'down s':>7} "
        f"{'PSS MB/node':>11} {'cgroup MB/node':>14}"
    )
    for size in sizes:
        lab = Lab(name, subnet)
        lab.down()
        try:
            timings = lab.up(size, pi=1, log=lambda msg: None)
            pss = [lab.memory(n.name)["pss_bytes"] for n in lab.nodes()]
            cgroup = [lab.memory(n.name)["cgroup_bytes"] for n in lab.nodes()]
        finally:
            start = time.monotonic()
            left = lab.down()
            down = time.monotonic() - start
        if left:
            print(f"left behind: {left}", file=sys.stderr)
        print(
            f"{size:>5} {timings['rootfs_build']:>8.1f} {timings['boot']:>7.1f} "
            f"{timings['total']:>6.1f} {down:>7.1f} {sum(pss) / len(pss) / 2**20:>11.1f} "
            f"{sum(cgroup) / len(cgroup) / 2**20:>14.1f}"
        )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [3, 10])
