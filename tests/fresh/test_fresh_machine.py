"""The README's two commands on a fresh machine: a clean Debian chroot and a fresh clone.

Slow tier (the default tier itself runs inside, and a first ``./try`` installs everything):
``tests/fresh/machine.py fresh`` builds (or reuses) a debootstrap'd bookworm with only the base
system and python3, clones this repository's committed HEAD into it, and runs ``./try``,
``./try`` again, ``./try down``, ``lab leftovers`` and ``./test`` there, timed (the timings are
printed, never asserted). The lab inside gets its own name and the second half of the test
subnet (the session lab's half stays free).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.fixtures import lab_halves, lab_name, skip_unless_lab_possible

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    skip_unless_lab_possible()
    logs = tmp_path_factory.mktemp("fresh-logs")
    env = {
        **os.environ,
        "PIKUBE_LAB_NAME": f"{lab_name()}-fresh"[:32],
        "PIKUBE_LAB_SUBNET": str(lab_halves()[1]),
    }
    env.pop("PIKUBE_SLOW", None)  # ./test inside runs the default tier
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fresh.machine", "fresh", "--suite", "bookworm",
         "--logs", str(logs)],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    sys.stderr.write(proc.stderr)
    result = json.loads(proc.stdout)
    for step in result["steps"]:
        print(f"fresh machine: {step['name']}: exit {step['exit']} in {step['seconds']} s")
    return {step["name"]: step for step in result["steps"]}


def log(step: dict[str, object]) -> str:
    return Path(str(step["log"])).read_text(errors="replace")


def test_try_on_a_fresh_machine_ends_with_three_ready_nodes(
    fresh_run: dict[str, dict[str, object]],
) -> None:
    step = fresh_run["try"]
    out = log(step)
    assert step["exit"] == 0, out[-4000:]
    assert "[1/5] packages (apt): installed" in out  # a fresh machine lacks them
    ready = [line for line in out.splitlines() if line.startswith("node-") and "Ready" in line]
    assert len(ready) == 3, out[-4000:]
    assert "kubectl --kubeconfig " in out and "./try down" in out


def test_try_again_reuses_what_the_first_run_installed_and_started(
    fresh_run: dict[str, dict[str, object]],
) -> None:
    step = fresh_run["retry"]
    out = log(step)
    assert step["exit"] == 0, out[-4000:]
    for reused in (
        "packages (apt): all installed",
        "pikube (virtualenv): up to date",
        "lab (3 nodes): reusing the running lab",
        "cluster (pikube up): already up, every node Ready",
    ):
        assert reused in out, out[-4000:]


def test_try_down_leaves_nothing_behind(fresh_run: dict[str, dict[str, object]]) -> None:
    assert fresh_run["down"]["exit"] == 0, log(fresh_run["down"])[-4000:]
    leftovers = fresh_run["leftovers"]
    assert leftovers["exit"] == 0 and log(leftovers).strip() == "", log(leftovers)


def test_test_on_a_fresh_machine_passes_the_default_tier(
    fresh_run: dict[str, dict[str, object]],
) -> None:
    step = fresh_run["test"]
    out = log(step)
    assert step["exit"] == 0, out[-6000:]
    assert " passed" in out and "[1/3] packages (apt): installed" in out
