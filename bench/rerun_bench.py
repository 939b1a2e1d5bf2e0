"""Benchmark #18's targets in one run, side by side: this checkout against a baseline tree
(main before the speed work), and pikube's ansible.cfg against stock Ansible settings.

Rows: no-op `up` on 3 nodes (kubeadm and MicroK8s), no-op `up` on 10 nodes against 3,
`add-node` of one worker to a converged 10-node cluster against a fresh 1-node worker join,
fresh `up` (kubeadm), `reset` then `up` against a fresh `up`, `pikube status` on 10 nodes.
Each row runs both trees on the same lab, one after the other, so the machine's load hits
both alike: the ratios within one run are what counts, not the absolute seconds.

Needs root and the lab (tests/lab); one lab at a time, torn down at the end, also on errors.
The baseline is a plain tree of the commit (``git archive``), run with this venv's
Python and ansible-core through PYTHONPATH, so both trees use the same interpreter.

Run from the repository root:
    .venv/bin/python -m bench.rerun_bench --baseline b06525f [--name pk6pf]
        [--subnet 10.77.75.0/24] [--parts noop,microk8s,big,join,fresh]
Prints one JSON object on stdout at the end, and every figure on stderr as it is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import yaml

from tests.lab.core import Lab

REPO = Path(__file__).resolve().parent.parent
# Stock Ansible settings: everything at its default but where pikube's own modules live
# (without it the roles do not load at all, which is not a setting but a path).
STOCK_CFG = "[defaults]\nlibrary = {library}\n"
# Runs the site playbook through a tree's runner with a chosen ansible.cfg (argv: cluster
# file, config file or ""); prints the changed count.
RUNNER_SNIPPET = """
import sys
from pathlib import Path
from pikube.config import load_cluster
from pikube.distribution import SITE_PLAYBOOK
from pikube.inventory import render_inventory_files
from pikube.runner import run_playbook
cluster = load_cluster(Path(sys.argv[1]))
result = run_playbook(SITE_PLAYBOOK, inventory_files=render_inventory_files(cluster),
    state_dir=Path(str(cluster.state_dir)), command="bench",
    config_file=Path(sys.argv[2]) if sys.argv[2] else None)
print(result.changed_total)
"""

figures: dict[str, Any] = {}
profiles: dict[str, str] = {}  # row -> bench.profile_run's report of the run it timed
deadline = float("inf")  # time.time() after which no new command starts (--stop-after)


def say(message: str) -> None:
    print(f"bench {time.strftime('%H:%M:%S')}: {message}", file=sys.stderr, flush=True)


def record(key: str, value: Any) -> None:
    figures[key] = value
    say(f"{key} = {value}")


def tree_env(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src)}


def timed(argv: list[str], env: dict[str, str], what: str) -> tuple[float, str]:
    if time.time() > deadline:
        raise SystemExit(f"--stop-after reached before {what}; the figures so far are below")
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = round(time.perf_counter() - start, 1)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return elapsed, proc.stdout


def pikube(src: Path, *args: str) -> float:
    argv = [sys.executable, "-m", "pikube", *args]
    return timed(argv, tree_env(src), f"pikube {' '.join(args)} ({src})")[0]


def up(src: Path, cluster: Path) -> float:
    return pikube(src, "up", "--skip-doctor", "-c", str(cluster))


def runner_up(
    src: Path, cluster: Path, config: Path | None, extra_env: dict[str, str] | None = None
) -> tuple[float, int]:
    argv = [sys.executable, "-c", RUNNER_SNIPPET, str(cluster), str(config or "")]
    env = {**tree_env(src), **(extra_env or {})}
    seconds, out = timed(argv, env, f"runner ({src}, {config})")
    return seconds, int(out.split()[-1])


def mitogen_env(mitogen: Path) -> dict[str, str]:
    """Mitogen's linear strategy from an unpacked mitogen wheel (not a pikube dependency)."""
    return {
        "ANSIBLE_STRATEGY_PLUGINS": str(mitogen / "ansible_mitogen" / "plugins" / "strategy"),
        "ANSIBLE_STRATEGY": "mitogen_linear",
        "PYTHONPATH": f"{REPO / 'src'}:{mitogen}",
    }


def baseline_tree(commit: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


@contextmanager
def lab_of(
    args: argparse.Namespace, nodes: int, flavour: str, work: Path, keep: int | None = None
) -> Iterator[tuple[Lab, Path]]:
    """A fresh lab of ``nodes``; its cluster file lists the first ``keep`` nodes (all)."""
    lab = Lab(args.name, args.subnet)
    lab.down()
    try:
        lab.up(nodes, distribution=flavour, pi=1)
        if flavour == "kubeadm" and not any(lab.www_dir.glob("core:/stable:/v*/deb/Release.key")):
            from tests.lab.standins import build_repo

            build_repo(lab.www_dir)
        cluster = lab.write_cluster(work / f"cluster-{flavour}-{nodes}.yaml", flavour)
        if keep is not None:
            trimmed(cluster, keep, cluster)
        yield lab, cluster
    finally:
        lab.down()


def trimmed(cluster: Path, keep: int, out: Path) -> Path:
    data = yaml.safe_load(cluster.read_text())
    data["nodes"] = data["nodes"][:keep]
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def keep_profile(row: str, cluster: Path, top: int = 12) -> None:
    """Profile the newest run under the cluster's state dir (the run just timed)."""
    from bench.profile_run import profile_events, render

    state_dir = Path(yaml.safe_load(cluster.read_text())["state_dir"])
    runs = sorted((state_dir / "runs").iterdir(), key=lambda run: run.stat().st_mtime)
    events = (runs[-1] / "events.jsonl").read_text(encoding="utf-8").splitlines()
    profiles[row] = render(profile_events(events), top)
    say(f"profile of {row}:\n{profiles[row]}")


def machine_speed() -> float:
    """Seconds one core takes for a fixed pure-Python loop, at the start and the end of the
    run: seconds from machines of different speed (or load) compare only through it."""
    code = "import time\nt = time.perf_counter()\nsum(range(30_000_000))\n"
    code += "print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return round(float(out.stdout), 2)


def ratio(a: str, b: str) -> float:
    return round(float(figures[a]) / float(figures[b]), 2)


def part_noop(args: argparse.Namespace, trees: dict[str, Path], work: Path) -> None:
    """kubeadm, 3 nodes: fresh up, no-op (both trees, both cfgs), reset then up."""
    # Stock settings per tree: each tree's roles with its own modules.
    stock = {}
    for tree, src in trees.items():
        stock[tree] = work / f"stock-ansible-{tree}.cfg"
        stock[tree].write_text(STOCK_CFG.format(library=src.parent / "plugins" / "modules"))
    # The baseline's own fresh up and reset-then-up need a lab each: only with --baseline-fresh.
    fresh_trees = trees if args.baseline_fresh else {"change": trees["change"]}
    for tree, src in fresh_trees.items():
        with lab_of(args, 3, "kubeadm", work) as (_, cluster):
            record(f"kubeadm_fresh_up_3_{tree}_s", up(src, cluster))
            keep_profile(f"kubeadm_fresh_up_3_{tree}", cluster)
            if tree == "change":
                # no-op rows of both trees on the same converged cluster, interleaved; before
                # each, an untimed run of the same tree and cfg converges what the other tree
                # wrote differently (its files, its apt settings), so the timed run is a no-op.
                for name in ("pikube_cfg", "stock_cfg"):
                    for other, other_src in trees.items():
                        if name == "stock_cfg" and other == "baseline" and not args.baseline_stock:
                            continue
                        config = stock[other] if name == "stock_cfg" else None
                        settle, _ = runner_up(other_src, cluster, config)
                        say(f"settling run of {other} ({name}): {settle} s")
                        seconds, changed = runner_up(other_src, cluster, config)
                        keep_profile(f"kubeadm_noop_3_{other}_{name}", cluster)
                        record(f"kubeadm_noop_3_{other}_{name}_s", seconds)
                        record(f"kubeadm_noop_3_{other}_{name}_changed", changed)
                noop_ratios(trees)
                if args.mitogen:
                    try:
                        seconds, changed = runner_up(src, cluster, None, mitogen_env(args.mitogen))
                        record("kubeadm_noop_3_change_mitogen_s", seconds)
                        record("kubeadm_noop_3_change_mitogen_changed", changed)
                    except SystemExit as err:
                        record("kubeadm_noop_3_change_mitogen_error", str(err)[-600:])
            if not args.reset:
                continue
            start = time.perf_counter()
            pikube(src, "reset", "--yes", "-c", str(cluster))
            up(src, cluster)
            record(f"kubeadm_reset_then_up_3_{tree}_s", round(time.perf_counter() - start, 1))
            record(
                f"kubeadm_reset_then_up_over_fresh_{tree}",
                ratio(f"kubeadm_reset_then_up_3_{tree}_s", f"kubeadm_fresh_up_3_{tree}_s"),
            )


def noop_ratios(trees: dict[str, Path]) -> None:
    for tree in trees:
        if f"kubeadm_noop_3_{tree}_stock_cfg_s" not in figures:
            continue
        record(
            f"kubeadm_noop_3_stock_over_pikube_cfg_{tree}",
            ratio(f"kubeadm_noop_3_{tree}_stock_cfg_s", f"kubeadm_noop_3_{tree}_pikube_cfg_s"),
        )
    record(
        "kubeadm_noop_3_baseline_over_change",
        ratio("kubeadm_noop_3_baseline_pikube_cfg_s", "kubeadm_noop_3_change_pikube_cfg_s"),
    )


def part_microk8s(args: argparse.Namespace, trees: dict[str, Path], work: Path) -> None:
    with lab_of(args, 3, "microk8s", work) as (_, cluster):
        record("microk8s_fresh_up_3_change_s", up(trees["change"], cluster))
        for tree, src in trees.items():
            say(f"settling run of {tree}: {up(src, cluster)} s")  # as in part_noop
            record(f"microk8s_noop_3_{tree}_s", up(src, cluster))
            keep_profile(f"microk8s_noop_3_{tree}", cluster)
    record(
        "microk8s_noop_3_baseline_over_change",
        ratio("microk8s_noop_3_baseline_s", "microk8s_noop_3_change_s"),
    )


def part_big(args: argparse.Namespace, trees: dict[str, Path], work: Path) -> None:
    """kubeadm, 10 nodes converged (+ an 11th to add), no-op, status, add-node."""
    with lab_of(args, args.big + 1, "kubeadm", work) as (_, full):
        big = trimmed(full, args.big, work / "cluster-big.yaml")
        record(f"kubeadm_fresh_up_{args.big}_change_s", up(trees["change"], big))
        for tree, src in trees.items():
            say(f"settling run of {tree}: {runner_up(src, big, None)[0]} s")  # as in part_noop
            seconds, changed = runner_up(src, big, None)
            record(f"kubeadm_noop_{args.big}_{tree}_s", seconds)
            record(f"kubeadm_noop_{args.big}_{tree}_changed", changed)
            record(f"status_{args.big}_{tree}_s", pikube(src, "status", "-c", str(big)))
        newcomer = f"node-{args.big + 1}"
        record(
            f"add_node_to_{args.big}_change_s",
            pikube(trees["change"], "add-node", newcomer, "-c", str(full)),
        )


def part_join(args: argparse.Namespace, trees: dict[str, Path], work: Path) -> None:
    """A fresh 1-node worker join: control plane alone, then add-node of one worker."""
    with lab_of(args, 2, "kubeadm", work) as (_, full):
        alone = trimmed(full, 1, work / "cluster-alone.yaml")
        up(trees["change"], alone)
        record(
            "add_node_to_1_change_s", pikube(trees["change"], "add-node", "node-2", "-c", str(full))
        )


PARTS = {"noop": part_noop, "microk8s": part_microk8s, "big": part_big, "join": part_join}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default="b06525f")
    parser.add_argument("--big", type=int, default=10)
    parser.add_argument("--name", default="pkl4-bench")
    parser.add_argument("--subnet", default="10.77.4.0/24")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--baseline-fresh", action="store_true")
    parser.add_argument("--baseline-stock", action="store_true")
    parser.add_argument("--reset", action="store_true", help="also time reset then up")
    parser.add_argument("--stop-after", type=float, help="start no command after S seconds")
    parser.add_argument("--mitogen", type=Path, help="an unpacked mitogen wheel: one more row")
    parser.add_argument("--profiles", type=Path, help="write the no-op runs' profiles there")
    args = parser.parse_args()
    if args.stop_after is not None:
        global deadline
        deadline = time.time() + args.stop_after
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trees = {
            "baseline": baseline_tree(args.baseline, work / "baseline"),
            "change": REPO / "src",
        }
        try:
            record("machine_python_loop_s", machine_speed())
            for part in args.parts.split(","):
                PARTS[part](args, trees, work)
            record("machine_python_loop_after_s", machine_speed())
        finally:
            if (
                "kubeadm_noop_3_change_pikube_cfg_s" in figures
                and f"kubeadm_noop_{args.big}_change_s" in figures
            ):
                for tree in trees:
                    record(
                        f"noop_{args.big}_over_3_{tree}",
                        ratio(
                            f"kubeadm_noop_{args.big}_{tree}_s",
                            f"kubeadm_noop_3_{tree}_pikube_cfg_s",
                        ),
                    )
            if (
                "add_node_to_1_change_s" in figures
                and f"add_node_to_{args.big}_change_s" in figures
            ):
                record(
                    "add_node_big_over_alone_change",
                    ratio(f"add_node_to_{args.big}_change_s", "add_node_to_1_change_s"),
                )
            if args.profiles:
                args.profiles.write_text(
                    "".join(f"== {row}\n{text}\n" for row, text in profiles.items())
                )
            print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
