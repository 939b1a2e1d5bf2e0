"""``pikube vagrant``: plan on stdout, keys and inventory written, errors with exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pikube.cli.main import cli
from pikube.hostkeys import KnownHost, ensure_host_keys, pin_known_hosts
from tests.factories import make_key_pair, write_cluster

CLUSTER = """
name: rehearsal
distribution: kubeadm
network: {subnet: 192.168.56.0/24, gateway: 192.168.56.1, dns: [192.168.56.1]}
ssh: {user: pi, public_key: id_test.pub, private_key: id_test}
nodes:
  - {name: cp, ip: 192.168.56.10, role: control-plane, model: pi4-2gb}
  - {name: w1, ip: 192.168.56.11, role: worker, model: pi3b-plus}
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def cluster_file(tmp_path: Path) -> Path:
    key = make_key_pair(tmp_path, "id_test")
    return write_cluster(tmp_path, CLUSTER.replace("id_test", str(key)))


def test_prints_the_plan_as_json_and_prepares_keys_and_inventory(cluster_file: Path) -> None:
    result = invoke("vagrant", "--cluster", str(cluster_file))
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)  # stdout is the plan only
    assert [m["name"] for m in plan["machines"]] == ["cp", "w1"]
    state = cluster_file.parent / ".pikube"
    for name in ("cp", "w1"):
        for key_type in ("ed25519", "ecdsa"):
            assert (state / "hostkeys" / name / f"ssh_host_{key_type}_key").is_file()
        assert f"created SSH host keys for {name}" in result.stderr
    inventory = state / "vagrant" / "inventory"
    assert {p.relative_to(inventory).as_posix() for p in inventory.rglob("*.yml")} == {
        "hosts.yml",
        "group_vars/cluster.yml",
        "group_vars/all.yml",
    }
    assert len((state / "known_hosts").read_text().splitlines()) == 4  # 2 nodes x 2 key types


def test_second_run_keeps_keys_and_is_quiet(cluster_file: Path) -> None:
    first = invoke("vagrant", "--cluster", str(cluster_file))
    key = cluster_file.parent / ".pikube" / "hostkeys" / "cp" / "ssh_host_ed25519_key"
    before = key.read_bytes()
    second = invoke("vagrant", "--cluster", str(cluster_file))
    assert (first.exit_code, second.exit_code) == (0, 0)
    assert key.read_bytes() == before
    assert second.stderr == ""
    assert json.loads(second.stdout) == json.loads(first.stdout)


def test_plan_only_writes_nothing(cluster_file: Path) -> None:
    result = invoke("vagrant", "--plan-only", "--cluster", str(cluster_file))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["cluster"] == "rehearsal"
    assert not (cluster_file.parent / ".pikube").exists()


def test_invalid_cluster_file_exits_3_with_line_and_fix(cluster_file: Path) -> None:
    cluster_file.write_text(CLUSTER.replace("192.168.56.11", "192.168.56.300"))
    result = invoke("vagrant", "--cluster", str(cluster_file))
    assert result.exit_code == 3
    assert result.stdout == ""
    assert "nodes[1].ip" in result.stderr
    assert "fix:" in result.stderr
    assert "Traceback" not in result.stderr


def test_another_key_pinned_for_a_node_address_exits_1_and_names_the_fix(
    cluster_file: Path,
) -> None:
    state = cluster_file.parent / ".pikube"
    real_pi = ensure_host_keys(cluster_file.parent / "real-pi", "cp")[0].known_hosts_key
    pin_known_hosts(state / "known_hosts", [KnownHost(("192.168.56.10",), real_pi)])
    result = invoke("vagrant", "--cluster", str(cluster_file))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "already pins another key for cp / 192.168.56.10" in result.stderr
    assert "ssh-keygen -R 192.168.56.10" in result.stderr
