"""Benchmark: `pikube status` on a lab, wall time per run, and one SSH login's cost.

Run as root from the repository root: .venv/bin/python -m bench.status_bench [RUNS]
(default 10). Starts a 3-node lab (PIKUBE_LAB_NAME pikube-bench / PIKUBE_LAB_SUBNET
10.77.220.0/24), times RUNS `pikube status` calls, and times one `ssh ... true` login with
OpenSSH's default key exchange (what Ansible and the probes use) and with curve25519 alone,
which shows how much of a probe is the post-quantum key exchange (sntrup761x25519).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.lab import Lab
from tests.lab.fixtures import bin_path


def timed(argv: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, capture_output=True, check=False)
    return time.monotonic() - start


def describe(label: str, values: list[float]) -> str:
    return (
        f"{label:<34} median {statistics.median(values):5.2f} s  "
        f"min {min(values):5.2f}  max {max(values):5.2f}  (n={len(values)})"
    )


def main(runs: int) -> None:
    lab = Lab(
        os.environ.get("PIKUBE_LAB_NAME", "pikube-bench"),
        os.environ.get("PIKUBE_LAB_SUBNET", "10.77.220.0/24"),
    )
    lab.down()
    try:
        lab.up(3, pi=1, log=lambda msg: None)
        with tempfile.TemporaryDirectory() as folder:
            cluster = lab.write_cluster(Path(folder) / "cluster.yaml")
            status = [bin_path("pikube"), "--cluster", str(cluster), "status"]
            walls = [timed(status) for _ in range(runs)]
        ssh = lab.ssh_argv("node-2", ["true"])
        default = [timed(ssh) for _ in range(runs)]
        curve_only = [ssh[0], "-o", "KexAlgorithms=curve25519-sha256", *ssh[1:]]
        curve = [timed(curve_only) for _ in range(runs)]
    finally:
        left = lab.down()
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(describe("pikube status (3 nodes)", walls))
    print(describe("ssh login, default key exchange", default))
    print(describe("ssh login, curve25519 only", curve))
    if left:
        print(f"left behind: {left}", file=sys.stderr)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
