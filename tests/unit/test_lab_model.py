"""The lab's pure parts: resource names fit the kernel's limits, bad input is refused,
and the cluster file it writes is one pikube accepts. No root needed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pikube.config import load_cluster
from tests.factories import make_key_pair
from tests.lab import Lab, LabError
from tests.lab.core import PI_CLUSTER_MODEL

IFNAMSIZ = 15  # Linux interface names: at most 15 characters


def test_interface_names_fit_the_kernel_limit_for_long_lab_names(tmp_path: Path) -> None:
    lab = Lab("a" * 32, "10.77.0.0/24", state_root=tmp_path)
    names = [lab.bridge] + [lab.spec(i, pi=False).veth for i in (1, 99, 200)]
    assert all(len(n) <= IFNAMSIZ for n in names), names


def test_two_labs_never_share_bridge_netns_or_route_table(tmp_path: Path) -> None:
    one = Lab("pkl1", "10.77.1.0/24", state_root=tmp_path)
    two = Lab("pkl2", "10.77.2.0/24", state_root=tmp_path)
    assert one.bridge != two.bridge
    assert one.route_table != two.route_table
    assert one.spec(1, False).netns != two.spec(1, False).netns


def test_nodes_get_addresses_and_pi_macs_in_the_lab_subnet(tmp_path: Path) -> None:
    lab = Lab("pkl1", "10.77.1.0/24", state_root=tmp_path)
    spec = lab.spec(1, pi=True)
    assert (spec.name, spec.ip, spec.role) == ("node-1", "10.77.1.11", "control-plane")
    assert lab.spec(2, pi=False).role == "worker"
    assert re.fullmatch(r"dc:a6:32(:[0-9a-f]{2}){3}", spec.mac)
    assert lab.bridge_ip == "10.77.1.1"


@pytest.mark.parametrize(
    ("name", "subnet", "message"),
    [
        ("BAD_NAME", "10.77.0.0/24", "lab name"),
        ("o", "10.77.0.0/24", "lab name"),  # too short: at least two characters
        ("pkl1", "not-a-subnet", "subnet"),
        ("pkl1", "10.77.0.0/28", "too small"),
    ],
)
def test_bad_names_and_subnets_are_refused_with_a_fix(
    name: str, subnet: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(LabError, match=message):
        Lab(name, subnet, state_root=tmp_path)


def test_the_cluster_file_passes_pikube_validation(tmp_path: Path) -> None:
    lab = Lab("pkl1", "10.77.1.0/24", state_root=tmp_path)
    lab.state_dir.mkdir()
    assert make_key_pair(lab.ssh_dir) == lab.private_key
    specs = [lab.spec(i, pi=i == 1) for i in (1, 2, 3)]
    state = {
        "subnet": str(lab.subnet),
        "distribution": "kubeadm",
        "run_id": "x",
        "nodes": [s.__dict__ for s in specs],
    }
    (lab.state_dir / "state.json").write_text(json.dumps(state))
    lab.known_hosts.write_text("")
    cluster = load_cluster(lab.write_cluster(tmp_path / "cluster.yaml"))
    assert cluster.control_plane.name == "node-1"
    assert cluster.control_plane.model == PI_CLUSTER_MODEL
    assert cluster.apt_proxy == "http://10.77.1.1:3142"
    assert cluster.kubernetes.package_repo == "http://10.77.1.1:8080/core:/stable:"
    assert [n.model for n in cluster.workers] == [None, None]


def test_a_second_sigterm_during_teardown_does_not_cut_it_short(tmp_path: Path) -> None:
    """A test run killed twice (its timeout's SIGTERM, then a pkill) used to leave its lab
    up: the second signal interrupted `down` half way. Now `down` finishes, then the
    signal takes effect."""
    script = f"""
import os, signal
from pathlib import Path
from tests.lab import Lab
from tests.lab import acng
from tests.lab.fixtures import _sigterm_as_interrupt

acng.stop_ours = lambda: None  # never the apt proxy other labs on this machine may be using

class Interrupted(Lab):
    def nodes(self):  # the first thing down() looks at
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        return []
    def _mounts(self):  # a later step of down()
        print("teardown went on", flush=True)
        return []

_sigterm_as_interrupt()
lab = Interrupted("pkl-sig", "10.77.9.0/24", state_root=Path({str(tmp_path)!r}))
try:
    lab.down()
    print("down returned", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    lines = done.stdout.splitlines()
    assert lines[:1] == ["teardown went on"], done.stdout + done.stderr
    assert lines[-1:] == ["interrupted"], done.stdout + done.stderr
