"""In the lab: `pikube up --wait-boot` waits for a node that is powered off when it starts,
shows it coming up, then goes on with the run. Powers node-3 of the session lab off and on
again (about 8 s in all)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.lab import Lab
from tests.lab.fixtures import bin_path

pytestmark = pytest.mark.lab


def test_up_wait_boot_waits_for_a_node_powered_on_during_the_wait(
    lab: Lab, lab_cluster: Path
) -> None:
    lab.stop("node-3")
    stderr: list[str] = []
    try:
        argv = [bin_path("pikube"), "--cluster", str(lab_cluster), "up", "--wait-boot=300"]
        # --check and a tag no task has: the run after the wait is short and changes nothing.
        argv += ["--skip-doctor", "--check", "--tags", "pikube-test-no-such-tag"]
        with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) as proc:
            assert proc.stderr is not None
            for line in proc.stderr:
                stderr.append(line)
                if line.startswith("node-3: "):  # still down: power it on now
                    lab.start("node-3")
            code = proc.wait(timeout=900)
    finally:
        lab.start("node-3")  # no-op when already up: leave the session lab as found
    text = "".join(stderr)
    assert code == 0, text
    assert "waiting up to 300 s for 3 node(s) to answer on SSH" in text
    for node in ("node-1", "node-2", "node-3"):
        assert f"{node} up after " in text, text
    first_wait = text.index("node-3: ")
    assert text.index("node-3 up after ") > first_wait
    assert "PLAY" in text[text.index("node-3 up after ") :]  # then the run went on
