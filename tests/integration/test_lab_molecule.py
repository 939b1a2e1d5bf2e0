"""Molecule scenarios run against lab nodes: create, converge, idempotence, verify, destroy,
offline (no Galaxy) and with host key checking on.

- the lab's scenario template, through its example role (tests/lab/molecule);
- roles/pikube_microk8s/molecule/default: the MicroK8s role on two lab nodes with the snap and
  MicroK8s stand-ins (install, join the worker with a fresh token, addons, kubeconfig), whose
  verify.yml reads the cluster back and whose idempotence step proves a re-run changes nothing;
- every other role's scenario, found on disk (``roles/*/molecule/*/molecule.yml``), so a new
  role's scenario runs without touching this file: the cheapest one in the default tier, all
  of them in the slow tier (PIKUBE_SLOW=1).
"""

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

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "tests/lab/molecule/example/pikube_lab_example"
MICROK8S = REPO / "roles/pikube_microk8s"


def molecule_test(role_dir: Path, name: str, scenario: str = "default") -> str:
    """`molecule test -s scenario` in ``role_dir`` on a lab named ``name``; returns its output."""
    skip_unless_lab_possible()
    molecule = Path(sys.executable).parent / "molecule"
    if not molecule.exists() and shutil.which("molecule") is None:
        pytest.skip("molecule is not installed (pip install molecule)")
    _, subnet = lab_halves()
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
            [str(molecule) if molecule.exists() else "molecule", "test", "-s", scenario],
            cwd=role_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-6000:]
        assert "idempotence: Executed: Successful" in output
        assert "verify: Executed: Successful" in output
        return output
    finally:
        assert Lab(name, subnet).down() == []


def test_molecule_test_passes_for_the_example_role() -> None:
    molecule_test(EXAMPLE, f"{lab_name()}-mol")


def test_molecule_test_passes_for_pikube_microk8s() -> None:
    output = molecule_test(MICROK8S, f"{lab_name()}-molmk")
    # converge really built the cluster (not skipped): the snap went in and the worker joined,
    # and the join token never reached the output (no_log).
    assert "TASK [pikube_microk8s : Install the microk8s snap]" in output
    assert "changed: [node-2]" in output.split("TASK [pikube_microk8s : Join the cluster]")[1]
    assert "microk8s join " not in output


# Scenarios with a test of their own above (it checks more than molecule's verdict).
DEDICATED = {"pikube_microk8s/default"}
# The default tier runs the cheapest role scenario, measured in a fresh-clone CI run on the
# 2-core machine: pikube_microk8s 62 s (its own test below), node_prep 134 s (one Pi node,
# one reboot); every other one first converges the roles before it (containerd 196 s).
DEFAULT_TIER = "pikube_microk8s/default"


def scenario_keys() -> list[str]:
    """Every role's molecule scenario as ``role/scenario``, but those tested on their own."""
    found = (
        f"{path.parents[2].name}/{path.parent.name}"
        for path in (REPO / "roles").glob("*/molecule/*/molecule.yml")
    )
    return sorted(key for key in found if key not in DEDICATED)


def scenario_lab_name(key: str) -> str:
    """A lab name for one scenario: the test lab's name plus the role (lab names: 2-32 chars)."""
    role, scenario = key.split("/")
    slug = role.removeprefix("pikube_") + ("" if scenario == "default" else f"-{scenario}")
    return f"{lab_name()}-{slug.replace('_', '-')}"[:32].rstrip("-")


def test_the_default_tier_runs_a_role_scenario() -> None:
    assert DEFAULT_TIER in DEDICATED
    assert (REPO / "roles" / DEFAULT_TIER.replace("/", "/molecule/") / "molecule.yml").is_file()


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(key, id=key, marks=() if key == DEFAULT_TIER else (pytest.mark.slow,))
        for key in scenario_keys()
    ],
)
def test_molecule_test_passes_for_role_scenario(key: str) -> None:
    role, scenario = key.split("/")
    output = molecule_test(REPO / "roles" / role, scenario_lab_name(key), scenario)
    # converge applied the role under test: prepare.yml only runs the roles before it.
    assert f"TASK [{role} : " in output
