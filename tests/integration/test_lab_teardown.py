"""The lab leaves nothing behind: after `down`, after a crash, after Ctrl-C; and it scales.

Each test uses a throwaway lab (``make_lab``) in the second half of the session subnet.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.lab import Lab
from tests.signals import interruptible

pytestmark = pytest.mark.lab

LAB_CLI = Path(__file__).resolve().parent.parent / "lab" / "lab"


def host_traces(lab: Lab) -> list[str]:
    """What the host's own tools show of the lab (independent of Lab.leftovers())."""
    marks = (lab.name, lab.bridge)
    traces = []
    for argv in (
        ["ip", "netns", "list"],
        ["ip", "-d", "link", "show"],
        ["findmnt", "-rn"],
        ["ps", "-eo", "pid,args"],
    ):
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        traces += [
            f"{argv[0]} {argv[1]}: {line}"
            for line in out.splitlines()
            if any(m in line for m in marks) and "pytest" not in line
        ]
    for depth in ("", "*/", "*/*/", "*/*/*/"):
        traces += [f"cgroup {p}" for p in glob.glob(f"/sys/fs/cgroup/{depth}pikube-lab/{lab.name}")]
    if lab.state_dir.exists():
        traces.append(f"state dir {lab.state_dir}")
    return traces


def test_down_removes_netns_links_mounts_processes_and_state(
    make_lab: Callable[[str], Lab],
) -> None:
    lab = make_lab("down")
    lab.up(2)
    assert host_traces(lab), "the probe must see a running lab, or it proves nothing"
    assert lab.down() == []
    assert host_traces(lab) == []


def test_down_cleans_up_after_a_crash_without_state(make_lab: Callable[[str], Lab]) -> None:
    """Everything is found by name: even with state.json gone, down removes it all."""
    lab = make_lab("crash")
    lab.up(1)
    (lab.state_dir / "state.json").unlink()
    assert Lab(lab.name, lab.subnet).down() == []
    assert host_traces(lab) == []


def test_ctrl_c_during_up_leaves_nothing_behind(make_lab: Callable[[str], Lab]) -> None:
    lab = make_lab("intr")
    env = dict(os.environ, PIKUBE_LAB_NAME=lab.name, PIKUBE_LAB_SUBNET=str(lab.subnet))
    proc = subprocess.Popen(
        [sys.executable, str(LAB_CLI), "up", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    supervisor = lab.state_dir / "run" / "node-1.supervisor.pid"
    deadline = time.monotonic() + 120
    while not supervisor.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "lab up ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert host_traces(lab) == [], err


def test_down_is_idempotent(make_lab: Callable[[str], Lab]) -> None:
    lab = make_lab("idem")
    assert lab.down() == []
    assert lab.down() == []


def test_cli_up_writes_a_cluster_file_and_down_cleans(
    make_lab: Callable[[str], Lab],
    tmp_path: Path,
) -> None:
    lab = make_lab("cli")
    env = dict(os.environ, PIKUBE_LAB_NAME=lab.name, PIKUBE_LAB_SUBNET=str(lab.subnet))
    out = tmp_path / "cluster.yaml"
    up = subprocess.run(
        [
            sys.executable,
            str(LAB_CLI),
            "up",
            "1",
            "--distribution",
            "microk8s",
            "--cluster-out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["cluster_file"] == str(out)
    assert "distribution: microk8s" in out.read_text()
    status = subprocess.run(
        [sys.executable, str(LAB_CLI), "status"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(status.stdout)["nodes"][0]["state"] == "running"
    down = subprocess.run(
        [sys.executable, str(LAB_CLI), "down"], env=env, capture_output=True, text=True, check=False
    )
    assert down.returncode == 0, down.stderr
    assert host_traces(lab) == []


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PIKUBE_SLOW") != "1", reason="slow tier: PIKUBE_SLOW=1")
def test_ten_nodes_start_and_all_run(make_lab: Callable[[str], Lab]) -> None:
    lab = make_lab("ten")
    timings = lab.up(10)
    print(f"10 nodes: {timings}", file=sys.stderr)
    states = {n.name: lab.system_state(n.name) for n in lab.nodes()}
    assert list(states.values()) == ["running"] * 10, states
    assert lab.down() == []
