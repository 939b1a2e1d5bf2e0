"""MicroK8s refuses 512 MB boards in validation: its low memory guard would stop them later.

Upstream: canonical/microk8s snap/hooks/install (tag v1.31) creates
var/lock/low-memory-guard.lock when MemTotal <= 524288 kB; the status wrapper then exits 1
(utils.sh exit_if_low_memory_guard), and pikube waits on `microk8s status` before the join.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pikube.config import load_cluster
from pikube.errors import EXIT_CONFIG, ConfigError
from tests.factories import base_cluster, edited, line_of, write_cluster


@pytest.mark.parametrize(("index", "model"), [(0, "pizero2w"), (2, "pi3a-plus")])
def test_microk8s_refuses_a_512_mb_board_with_the_reason(
    tmp_path: Path, ssh_key: Path, index: int, model: str
) -> None:
    data = edited(base_cluster(ssh_key, distribution="microk8s"), **{f"nodes.{index}.model": model})
    path = write_cluster(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_cluster(path)
    assert caught.value.exit_code == EXIT_CONFIG
    [problem] = [p for p in caught.value.problems if p.path == f"nodes[{index}].model"]
    assert "512 MiB of memory" in problem.message and "low memory guard" in problem.message
    assert "`microk8s status` fails" in problem.message
    assert "1 GB or more" in problem.fix and "kubeadm" in problem.fix
    assert problem.line == line_of(path.read_text(), f"model: {model}")


def test_a_512_mb_board_stays_fine_as_a_kubeadm_worker(tmp_path: Path, ssh_key: Path) -> None:
    data: dict[str, Any] = edited(base_cluster(ssh_key), **{"nodes.3.model": "pizero2w"})
    assert load_cluster(write_cluster(tmp_path, data)).nodes[3].model == "pizero2w"


def test_a_1_gb_board_is_fine_for_microk8s(tmp_path: Path, ssh_key: Path) -> None:
    data = edited(base_cluster(ssh_key, distribution="microk8s"), **{"nodes.3.model": "pi3b-plus"})
    assert load_cluster(write_cluster(tmp_path, data)).nodes[3].model == "pi3b-plus"
