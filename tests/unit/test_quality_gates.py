"""The project's static checks, run as tests so one command proves everything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), cwd=REPO, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}
    )


def test_python_passes_ruff() -> None:
    result = run_tool(str(BIN / "ruff"), "check", "src", "plugins", "tests", "bench", "tools")
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_passes_mypy_strict() -> None:
    result = run_tool(str(BIN / "mypy"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_yaml_passes_yamllint() -> None:
    result = run_tool(str(BIN / "yamllint"), "--strict", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not (REPO / "playbooks").is_dir(), reason="no playbooks")
def test_ansible_passes_ansible_lint_production_profile() -> None:
    result = run_tool(
        str(BIN / "ansible-lint"),
        "--offline",
        "--profile",
        "production",
        "playbooks",
        "roles",
        "galaxy.yml",
        "meta/runtime.yml",
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


SHELL_SCRIPTS = ("try", "test", ".ci/run", ".ci/setup.sh")


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="needs shellcheck")
def test_root_scripts_pass_shellcheck() -> None:
    # -x follows `. .ci/setup.sh`, so a function the scripts call is checked where it is used.
    result = run_tool("shellcheck", "-x", *SHELL_SCRIPTS)
    assert result.returncode == 0, result.stdout + result.stderr
