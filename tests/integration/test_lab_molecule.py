"""The molecule scenario template works against lab nodes: create, converge, idempotence,
verify, destroy, offline (no Galaxy) and with host key checking on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab import Lab
from tests.lab.fixtures import lab_halves, lab_name, skip_unless_lab_possible

pytestmark = pytest.mark.lab

EXAMPLE = Path(__file__).resolve().parent.parent / "lab/molecule/example/pikube_lab_example"


def test_molecule_test_passes_for_the_example_role() -> None:
    skip_unless_lab_possible()
    molecule = Path(sys.executable).parent / "molecule"
    if not molecule.exists() and shutil.which("molecule") is None:
        pytest.skip("molecule is not installed (pip install molecule)")
    _, subnet = lab_halves()
    name = f"{lab_name()}-mol"
    env = dict(
        os.environ,
        PIKUBE_LAB_NAME=name,
        PIKUBE_LAB_SUBNET=str(subnet),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        ANSIBLE_FORCE_COLOR="0",
        PY_COLORS="0",
    )
    try:
        result = subprocess.run(
            [str(molecule) if molecule.exists() else "molecule", "test"],
            cwd=EXAMPLE,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
        assert "idempotence: Executed: Successful" in output
        assert "verify: Executed: Successful" in output
    finally:
        assert Lab(name, subnet).down() == []
