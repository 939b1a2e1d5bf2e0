"""pytest fixtures for the lab (imported by ``tests/integration/conftest.py``).

Environment:
- ``PIKUBE_LAB_NAME`` (default ``pikube-test``) and ``PIKUBE_LAB_SUBNET`` (default
  ``10.77.200.0/24``) name this test session's labs, so several sessions can run side by side.
  The subnet is split in two halves: the shared session lab (``lab`` fixture) takes the first,
  throwaway labs (``make_lab``: teardown and start-up tests) the second.
- ``PIKUBE_LAB_NODES`` (default 3): nodes in the session lab; the first is a Pi 4 personality.

Every lab is torn down by a finalizer, on Ctrl-C (KeyboardInterrupt) and on SIGTERM too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from ipaddress import IPv4Network
from pathlib import Path
from types import FrameType

import pytest

from .core import Lab, missing_tools

DEFAULT_TEST_NAME = "pikube-test"
DEFAULT_TEST_SUBNET = "10.77.200.0/24"


def lab_name() -> str:
    return os.environ.get("PIKUBE_LAB_NAME", DEFAULT_TEST_NAME)


def lab_halves() -> tuple[IPv4Network, IPv4Network]:
    subnet = IPv4Network(os.environ.get("PIKUBE_LAB_SUBNET", DEFAULT_TEST_SUBNET))
    first, second = subnet.subnets(prefixlen_diff=1)
    return first, second


def skip_unless_lab_possible() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, overlayfs, systemd-nspawn)")
    missing = missing_tools()
    if missing:
        pytest.skip("lab tools missing: " + ", ".join(missing))


def _refuse_if_in_use(lab: Lab) -> None:
    """Never tear down a lab another live test session is using (same name by mistake)."""
    owner = lab.owner()
    if owner is not None:
        pytest.fail(
            f"lab {lab.name} is in use by process {owner}; give this session its own "
            "PIKUBE_LAB_NAME and PIKUBE_LAB_SUBNET"
        )


def _sigterm_as_interrupt() -> None:
    """pytest turns Ctrl-C into KeyboardInterrupt (finalizers run); do the same for SIGTERM."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, handler)


def bin_path(tool: str) -> str:
    """A tool installed next to this Python (the venv's ansible, pikube)."""
    candidate = Path(sys.executable).parent / tool
    return str(candidate) if candidate.exists() else tool


def pikube_inventory(cluster_file: Path, out_dir: Path) -> Path:
    """Render the lab's inventory with the real `pikube inventory`; returns hosts.yml."""
    subprocess.run(
        [bin_path("pikube"), "inventory", "--cluster", str(cluster_file), "--output", str(out_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out_dir / "hosts.yml"


def run_ansible(
    lab: Lab, inventory: Path, *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``ansible -i INVENTORY ARGS`` with the lab's per-run SSH control path."""
    env = {
        **os.environ,
        **lab.ansible_env(),
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        **(env or {}),
    }
    return subprocess.run(
        [bin_path("ansible"), "-i", str(inventory), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_playbook(
    lab: Lab, inventory: Path, *args: str, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **lab.ansible_env(), ANSIBLE_DEPRECATION_WARNINGS="False")
    return subprocess.run(
        [bin_path("ansible-playbook"), "-i", str(inventory), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The session's shared lab: PIKUBE_LAB_NODES (3) nodes, node-1 with a Pi personality."""
    skip_unless_lab_possible()
    _sigterm_as_interrupt()
    first, _ = lab_halves()
    the_lab = Lab(lab_name(), first)
    _refuse_if_in_use(the_lab)
    the_lab.down()  # a lab left over by a crashed session of the same name
    try:
        the_lab.up(int(os.environ.get("PIKUBE_LAB_NODES", "3")), pi=1)
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture(scope="session")
def lab_cluster(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's cluster.yaml, as `lab up --cluster-out` writes it."""
    return lab.write_cluster(tmp_path_factory.mktemp("lab-cluster") / "cluster.yaml")


@pytest.fixture(scope="session")
def lab_inventory(lab_cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pikube_inventory(lab_cluster, tmp_path_factory.mktemp("lab-inventory"))


@pytest.fixture
def make_lab() -> Iterator[Callable[[str], Lab]]:
    """Factory for throwaway labs in the second half of the subnet; all torn down after."""
    skip_unless_lab_possible()
    _sigterm_as_interrupt()
    _, second = lab_halves()
    made: list[Lab] = []

    def make(suffix: str) -> Lab:
        if made:
            raise RuntimeError("make_lab: one throwaway lab per test (they share a subnet)")
        new = Lab(f"{lab_name()}-{suffix}", second)
        _refuse_if_in_use(new)
        new.down()
        made.append(new)
        return new

    try:
        yield make
    finally:
        for each in made:
            each.down()
