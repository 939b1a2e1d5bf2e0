"""Benchmark: what every `vagrant` command pays for reading the cluster through pikube.

Times `pikube vagrant` (plan, host keys, inventory), `vagrant validate --ignore-provider`
and the machine read-back the tests use, for clusters of several sizes.

Run from the repository root: .venv/bin/python -m bench.vagrant_bench [NODES ...]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.factories import large_cluster, make_key_pair, write_cluster

ROOT = Path(__file__).resolve().parents[1]
PIKUBE = Path(sys.executable).with_name("pikube")


def timed(argv: list[str], env: dict[str, str], runs: int = 3) -> float:
    """Median wall time in seconds of ``runs`` runs of ``argv``."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        key = make_key_pair(Path(tmp) / "keys")
        print(
            f"{'nodes':>6} {'pikube vagrant s':>17} {'vagrant validate s':>19} {'read-back s':>12}"
        )
        for size in sizes:
            directory = Path(tmp) / f"c{size}"
            directory.mkdir()
            cluster = write_cluster(directory, large_cluster(key, size))
            env = {
                **os.environ,
                "PIKUBE_BIN": str(PIKUBE),
                "PIKUBE_CLUSTER": str(cluster),
                "VAGRANT_HOME": str(directory / "vagrant.d"),
                "VAGRANT_DOTFILE_PATH": str(directory / "dot-vagrant"),
                "VAGRANT_CHECKPOINT_DISABLE": "1",
            }
            plan = timed([str(PIKUBE), "vagrant", "--cluster", str(cluster)], env)
            validate = timed(["vagrant", "validate", "--ignore-provider"], env)
            readback = timed(
                ["ruby", "tests/vagrant/machine_plan.rb", str(ROOT), str(directory / "data")], env
            )
            print(f"{size:>6} {plan:>17.2f} {validate:>19.2f} {readback:>12.2f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [4, 7, 25])
