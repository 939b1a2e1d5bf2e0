"""What playbook commands print: the live board in a terminal, plain lines without one,
`--json` documents, and node names for shell completion.

The runs are real: the CLI in a subprocess (under a pseudo-terminal for the board) runs the
real site playbook against loopback addresses where no sshd answers. The validate play
passes on every node (ok counts), then each node is unreachable: every column of the board
has something to show, in about two seconds and without a lab.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pikube.errors import EXIT_CONFIG, EXIT_UNREACHABLE
from tests.factories import loopback_cluster_data, write_cluster
from tests.terminal import ANSI, board_rows, run_in_terminal

PIKUBE = [sys.executable, "-m", "pikube"]
# Environment that would make rich ignore or fake a terminal: the test decides, not the CI.
TERMINAL_ENV = ("TERM", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


@pytest.fixture
def cluster(tmp_path: Path, ssh_key: Path) -> Path:
    return write_cluster(tmp_path, loopback_cluster_data(tmp_path, ssh_key, 3))


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TERMINAL_ENV}
    env.update(extra)
    return env


def test_up_in_a_terminal_draws_a_live_board_per_node(cluster: Path) -> None:
    screen, stdout, code = run_in_terminal(
        [*PIKUBE, "up", "--skip-doctor", "--json", "--cluster", str(cluster)],
        cwd=cluster.parent,
        env=child_env(TERM="xterm-256color"),
    )
    assert code == EXIT_UNREACHABLE, screen
    plain = ANSI.sub("", screen)
    # The board: a header with every column, drawn more than once (redrawn in place: rich
    # moves the cursor up and erases the previous frame's lines).
    header = next(line for line in plain.splitlines() if "┃ HOST" in line)
    for column in ("STATE", "PHASE", "TASK", "OK", "CHANGED", "FAILED", "UNREACHABLE", "ELAPSED"):
        assert column in header
    assert plain.count("┃ HOST") >= 2 and "\x1b[1A" in screen and "\x1b[2K" in screen
    rows = board_rows(screen)
    assert set(rows) == {"pi-cp1", "pi-w1", "pi-w2"}
    for cells in rows.values():
        state, phase, task, ok, changed, failed, unreachable, elapsed = cells[1:9]
        assert phase == "Prepare the nodes"  # the second play: validate passed everywhere
        assert (state, task) == ("unreachable", "Gathering Facts")
        assert (changed, failed, unreachable) == ("0", "0", "1")
        assert int(ok) >= 1  # the validate play's checks
        assert re.fullmatch(r"\d+s|\d+m\d\ds", elapsed), elapsed
    # Plain progress lines are not printed next to the board; failures are, above it.
    assert "PLAY  Validate the inventory" not in plain
    assert "UNREACHABLE pi-w1" in plain
    # The final table and the error still follow the board.
    assert "HOST             OK      CHANGED" in plain and "pikube up --limit" in plain
    # stdout (a pipe) carried only the JSON document, no frame of the board.
    document = json.loads(stdout)
    assert document["command"] == "up" and document["exit_code"] == EXIT_UNREACHABLE


def test_up_without_a_terminal_prints_plain_lines(cluster: Path) -> None:
    proc = subprocess.run(
        [*PIKUBE, "up", "--skip-doctor", "--cluster", str(cluster)],
        cwd=cluster.parent,
        env=child_env(TERM="xterm-256color"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == EXIT_UNREACHABLE, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert "PLAY  Validate the inventory" in lines and "PLAY  Prepare the nodes" in lines
    assert "  Gathering Facts" in lines
    assert any(line.startswith("    UNREACHABLE pi-w1: ") for line in lines)
    assert "┃" not in proc.stderr and "\x1b[" not in proc.stderr  # no board, no escapes


# --- --json --------------------------------------------------------------------------------


def pikube(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIKUBE, *args],
        cwd=cwd,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


def test_json_of_a_failed_run_names_hosts_failures_fix_and_run_dir(cluster: Path) -> None:
    proc = pikube("add-node", "pi-w2", "--json", "--cluster", str(cluster), cwd=cluster.parent)
    assert proc.returncode == EXIT_UNREACHABLE, proc.stderr  # exit codes unchanged
    document = json.loads(proc.stdout)  # one document, nothing else on stdout
    assert document["schema"] == 1 and document["command"] == "add-node"
    assert document["ok"] is False and document["exit_code"] == EXIT_UNREACHABLE
    assert set(document["hosts"]) == {"pi-cp1", "pi-w2"}  # the node and the control plane
    assert document["hosts"]["pi-w2"] == {
        "ok": 0,
        "changed": 0,
        "failed": 0,
        "unreachable": 1,
        "skipped": 0,
    }
    (w2,) = [f for f in document["failures"] if f["host"] == "pi-w2"]
    assert w2["status"] == "unreachable" and w2["task"] == "Gathering Facts"
    assert "127.0.0.4 port 22: Connection refused" in w2["message"]
    # The retry is a command line that exists: add-node has no --limit.
    assert w2["fix"].endswith("then run `pikube add-node pi-w2`")
    assert document["error"]["fix"] == w2["fix"] and "--limit" not in w2["fix"]
    run_dir = Path(document["run_dir"])
    assert run_dir.is_dir() and (run_dir / "events.jsonl").is_file()
    assert document["kubeconfig"] is None  # none was fetched
    assert "HOST" in proc.stderr and "UNREACHABLE" in proc.stderr  # people still get the table


def test_json_of_a_successful_run(cluster: Path) -> None:
    # --tags prepare on reset leaves only the control plane's distribution check: it passes.
    proc = pikube(
        "reset", "--check", "--tags", "prepare", "--json", "--cluster", str(cluster),
        cwd=cluster.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["ok"] is True and document["exit_code"] == 0 and document["check"] is True
    assert document["failures"] == [] and document["error"] is None
    assert document["hosts"]["pi-cp1"]["failed"] == 0
    assert Path(document["run_dir"]).name.endswith("-reset")


def test_json_when_no_playbook_ran_leaves_stdout_empty(tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text("name: [\n")
    proc = pikube("up", "--json", cwd=tmp_path)
    assert proc.returncode == EXIT_CONFIG and proc.stdout == ""
    assert proc.stderr.startswith("Error: ")


# --- shell completion ------------------------------------------------------------------------


def complete(words: str, cwd: Path, **env: str) -> list[str]:
    """What `pikube <words><TAB>` offers in bash (click's completion protocol)."""
    parts = words.split(" ")
    proc = subprocess.run(
        PIKUBE,
        cwd=cwd,
        env=child_env(
            _PIKUBE_COMPLETE="bash_complete",
            COMP_WORDS=words,
            COMP_CWORD=str(len(parts) - 1),
            **env,
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return [line.split(",", 1)[1] for line in proc.stdout.splitlines() if line]


def test_node_names_complete_from_the_cluster_file(cluster: Path) -> None:
    here = cluster.parent
    assert complete("pikube flash pi-", here) == ["pi-cp1", "pi-w1", "pi-w2"]
    assert complete("pikube flash pi-w1 pi-", here) == ["pi-cp1", "pi-w2"]  # each once
    assert complete("pikube add-node pi-w", here) == ["pi-w1", "pi-w2"]
    assert complete("pikube remove-node pi-c", here) == ["pi-cp1"]
    assert complete("pikube up --limit pi-cp1,pi-", here) == ["pi-cp1,pi-w1", "pi-cp1,pi-w2"]
    assert complete("pikube reset --limit pi-w", here) == ["pi-w1", "pi-w2"]


def test_completion_follows_cluster_and_pikube_cluster(cluster: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert complete("pikube flash pi-", elsewhere) == []  # no ./cluster.yaml there
    assert complete(f"pikube flash --cluster {cluster} pi-w", elsewhere) == ["pi-w1", "pi-w2"]
    assert complete(f"pikube --cluster {cluster} flash pi-w", elsewhere) == ["pi-w1", "pi-w2"]
    found = complete("pikube flash pi-w", elsewhere, PIKUBE_CLUSTER=str(cluster))
    assert found == ["pi-w1", "pi-w2"]


@pytest.mark.parametrize(
    "text",
    [
        "name: [\n",  # not YAML
        "- just\n- a list\n",
        "nodes: 3\n",
        "nodes: [{name: 7}, {ip: 10.0.0.1}, [pi-x]]\n",
    ],
)
def test_a_broken_cluster_file_completes_nothing(tmp_path: Path, text: str) -> None:
    (tmp_path / "cluster.yaml").write_text(text)
    assert complete("pikube flash ", tmp_path) == []


def test_names_that_are_not_hostnames_never_reach_the_shell(tmp_path: Path) -> None:
    nodes = [{"name": "pi-ok"}, {"name": "$(touch pwned)"}, {"name": "a b"}, {"name": "UP"}]
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump({"nodes": nodes}))
    assert complete("pikube flash ", tmp_path) == ["pi-ok"]
