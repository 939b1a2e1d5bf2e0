"""Benchmark: load + validate + render the inventory for large labs (target: 250 nodes << 1 s).

Run from the repository root: .venv/bin/python -m bench.inventory_bench [NODES ...]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from pikube.config import load_cluster
from pikube.inventory import render_inventory
from tests.factories import large_cluster, make_key_pair, write_cluster


def main(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        key = make_key_pair(Path(tmp) / "keys")
        render_inventory(load_cluster(write_cluster(Path(tmp), large_cluster(key, 3))))  # warm
        print(f"{'nodes':>6} {'load+validate ms':>17} {'render ms':>10}")
        for size in sizes:
            path = write_cluster(Path(tmp), large_cluster(key, size), name=f"c{size}.yaml")
            loads, renders = [], []
            for _ in range(5):
                start = time.perf_counter()
                cluster = load_cluster(path)
                middle = time.perf_counter()
                render_inventory(cluster)
                loads.append(middle - start)
                renders.append(time.perf_counter() - middle)
            print(f"{size:>6} {min(loads) * 1000:>17.1f} {min(renders) * 1000:>10.1f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [3, 10, 50, 250, 1000])
