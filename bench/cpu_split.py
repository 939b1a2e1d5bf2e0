"""Benchmark: where a no-op `pikube up` spends CPU, the admin machine's side against the nodes'.

In the lab the "Pis" run their modules on the admin machine's own cores, so a wall time on 10
nodes mixes both. This separates them: the CPU of pikube's own process tree (pikube,
ansible-playbook, its per-host workers, ssh) from getrusage of its children, against all other
CPU the machine spent meanwhile (/proc/stat), which is the nodes' (sshd, the modules, kubectl).
On Pis only the first stays on the admin machine.

Run as root from the repository root, on a quiet machine:
    .venv/bin/python -m bench.cpu_split [NODES] [SMALL]
(default 10 and 3). Starts one lab of NODES kubeadm nodes (PIKUBE_LAB_NAME pikube-cpu /
PIKUBE_LAB_SUBNET 10.77.221.0/24), brings it up, then times two no-op runs each of the whole
cluster and of a cluster file listing only its first SMALL nodes. Prints a line per run: wall
time, the admin machine's CPU seconds, the rest.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tests.lab import Lab
from tests.lab.fixtures import bin_path
from tests.lab.standins import build_repo


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent (every state but idle and iowait)."""
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(word) for word in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def timed_up(cluster: Path) -> tuple[float, float, float]:
    """One `pikube up`: wall seconds, its process tree's CPU seconds, everybody else's."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, machine = time.perf_counter(), busy_cpu_s()
    argv = [bin_path("pikube"), "up", "--skip-doctor", "--cluster", str(cluster)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall, machine = time.perf_counter() - start, busy_cpu_s() - machine
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"pikube up failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, own, machine - own


def main(nodes: int, small: int) -> None:
    lab = Lab(
        os.environ.get("PIKUBE_LAB_NAME", "pikube-cpu"),
        os.environ.get("PIKUBE_LAB_SUBNET", "10.77.221.0/24"),
    )
    lab.down()
    try:
        lab.up(nodes, distribution="kubeadm", pi=1, log=lambda msg: None)
        if not any(lab.www_dir.glob("core:/stable:/v*/deb/Release.key")):
            build_repo(lab.www_dir)
        with tempfile.TemporaryDirectory() as folder:
            full = lab.write_cluster(Path(folder) / "cluster.yaml", "kubeadm")
            data = yaml.safe_load(full.read_text())
            data["nodes"] = data["nodes"][:small]
            part = Path(folder) / "first.yaml"
            part.write_text(yaml.safe_dump(data, sort_keys=False))
            print("run                 wall s   admin machine CPU s   other CPU s", flush=True)
            rows = [("fresh up", nodes, full)]
            rows += [
                ("no-op up", n, c) for _ in range(2) for n, c in ((nodes, full), (small, part))
            ]
            for what, count, cluster in rows:
                wall, own, other = timed_up(cluster)
                print(f"{what}, {count:2d} nodes  {wall:6.1f}   {own:19.1f}   {other:11.1f}")
    finally:
        left = lab.down()
    if left:
        print(f"left behind: {left}", file=sys.stderr)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    main(*(args + [10, 3][len(args) :]))
