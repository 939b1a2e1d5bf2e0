"""`pikube up` on lab nodes under a pseudo-terminal: the live board follows a real build.

Slow tier: a whole (2-node) kubeadm cluster comes up while the test watches the board that
`up` draws on its terminal. The cheap terminal test (tests/cli/test_run_output.py) proves the
board against unreachable nodes; this one proves it through every play of a real run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.clusterlab import LAB_TASK_TIMEOUT, cluster_lab, pikube_bin
from tests.terminal import ANSI, board_rows, run_in_terminal

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_up_draws_the_board_through_a_whole_build(tmp_path: Path) -> None:
    with cluster_lab("brd", 2, "kubeadm", pi=1) as lab:
        cluster = lab.write_cluster(tmp_path / "cluster.yaml", "kubeadm")
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("TERM", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
        }
        env.update(TERM="xterm-256color", ANSIBLE_TASK_TIMEOUT=str(LAB_TASK_TIMEOUT))
        screen, stdout, code = run_in_terminal(
            [pikube_bin(), "up", "--skip-doctor", "--json", "--cluster", str(cluster)],
            cwd=tmp_path,
            env=env,
            timeout=2400,
        )
        plain = ANSI.sub("", screen)
        assert code == 0, plain[-4000:]
        document = json.loads(stdout)
        assert document["ok"] is True and document["failures"] == []
        assert document["kubeconfig"] and Path(document["kubeconfig"]).is_file()
        names = {spec.name for spec in lab.nodes()}
        rows = board_rows(screen)
        assert set(rows) == names, plain[-4000:]
        events_file = Path(document["run_dir"]) / "events.jsonl"
        events = [json.loads(line) for line in events_file.read_text().splitlines()]
        plays = [e["play"] for e in events if e.get("pikube_event") == "play_start"]
        # Phases seen on the board: more than one play went by in the frames drawn.
        seen = {cells[2] for line in plain.splitlines() if (cells := _cells(line))}
        assert len(seen & set(plays)) >= 2, seen
        for name, cells in rows.items():
            ok, changed, failed, unreachable = (int(c) for c in cells[4:8])
            counts = document["hosts"][name]
            # The last frame shows Ansible's final counts: the same as --json and the table.
            assert (ok, changed, failed, unreachable) == (
                counts["ok"],
                counts["changed"],
                counts["failed"],
                counts["unreachable"],
            )
            assert changed > 0 and failed == 0 and cells[1] == "done"


def _cells(line: str) -> list[str]:
    if not line.startswith("│ ") or line.startswith("│ -"):
        return []
    return [c.strip() for c in line.strip().strip("│").split("│")]
