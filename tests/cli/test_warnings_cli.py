"""No deprecation warning reaches the user's terminal: the real `pikube` script in a subprocess,
with Python's warnings all switched on (PYTHONWARNINGS=default), prints none on stderr.

`up` runs ansible-playbook over SSH (ansible's ssh plugin imports cryptography's deprecated DSA
classes); `status` probes over SSH in pikube's own process. The nodes are loopback addresses
nobody answers on with a known host key, so nothing leaves the machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pikube.runner.argv import ANSIBLE_DSA_IMPORT_WARNING
from tests.factories import loopback_cluster_data, write_cluster

# Python's warning lines ("file:line: SomeDeprecationWarning: ...") and Ansible's own.
DEPRECATION = re.compile(r"\w*(Deprecation|PendingDeprecation)Warning\b|\[DEPRECATION WARNING\]")


@pytest.fixture
def loopback_cluster(tmp_path: Path, ssh_key: Path) -> Path:
    return write_cluster(tmp_path, loopback_cluster_data(tmp_path, ssh_key, 2, "pi4-4gb"))


@pytest.mark.parametrize(
    ("args", "exit_code"), [(("up", "--skip-doctor"), 6), (("status",), 6)], ids=["up", "status"]
)
def test_no_deprecation_warning_reaches_stderr(
    loopback_cluster: Path, args: tuple[str, ...], exit_code: int
) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "default", "PIKUBE_DEBUG": "0"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "pikube"), *args, "--cluster", str(loopback_cluster)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == exit_code, proc.stderr[-3000:]
    assert not DEPRECATION.findall(proc.stderr), proc.stderr[-3000:]


def test_docs_give_plain_ansible_users_the_runners_filter() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "ansible.md").read_text()
    assert f"PYTHONWARNINGS='{ANSIBLE_DSA_IMPORT_WARNING}'" in docs
