"""Every validation rule of cluster.yaml: the problem, its YAML line, and a fix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from pikube.config import load_cluster
from pikube.errors import EXIT_CONFIG, ConfigError, Problem
from tests.factories import DELETE, base_cluster, edited, line_of, write_cluster


def problems_for(tmp_path: Path, data: dict[str, Any] | str) -> tuple[list[Problem], str]:
    path = write_cluster(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_cluster(path)
    assert caught.value.exit_code == EXIT_CONFIG
    return caught.value.problems, path.read_text()


def only(problems: list[Problem], path: str) -> Problem:
    matching = [p for p in problems if p.path == path]
    assert len(matching) == 1, f"expected one problem at {path}, got {problems}"
    return matching[0]


@pytest.fixture
def valid(ssh_key: Path) -> dict[str, Any]:
    return base_cluster(ssh_key)


def test_valid_cluster_loads_with_resolved_paths(tmp_path: Path, valid: dict[str, Any]) -> None:
    cluster = load_cluster(write_cluster(tmp_path, valid))
    assert cluster.control_plane.name == "pi-cp1"
    assert [n.name for n in cluster.workers] == ["pi-w1", "pi-w2", "pi-w3"]
    assert cluster.state_dir == tmp_path / ".pikube"
    assert cluster.ssh.known_hosts == tmp_path / ".pikube" / "known_hosts"


def test_relative_key_paths_resolve_against_the_cluster_file(
    tmp_path: Path, valid: dict[str, Any], ssh_key: Path
) -> None:
    (tmp_path / "keys").mkdir()
    for suffix in ("", ".pub"):
        target = tmp_path / "keys" / f"k{suffix}"
        target.write_bytes(Path(f"{ssh_key}{suffix}").read_bytes())
        target.chmod(0o600)
    data = edited(valid, **{"ssh.private_key": "keys/k", "ssh.public_key": "keys/k.pub"})
    cluster = load_cluster(write_cluster(tmp_path, data))
    assert cluster.ssh.private_key == tmp_path / "keys" / "k"


def test_unknown_top_level_key_suggests_the_right_one(
    tmp_path: Path, valid: dict[str, Any]
) -> None:
    data = dict(valid, distrbution="kubeadm")
    problems, text = problems_for(tmp_path, data)
    problem = only(problems, "distrbution")
    assert "unknown key" in problem.message
    assert "did you mean 'distribution'" in problem.fix
    assert problem.line == line_of(text, "distrbution:")


def test_unknown_node_key_suggests_the_right_one(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"nodes.2.rol": "worker"})
    problems, text = problems_for(tmp_path, data)
    problem = only(problems, "nodes[2].rol")
    assert problem.message == "unknown key 'rol' in nodes[2]"
    assert "did you mean 'role'" in problem.fix
    assert problem.line == line_of(text, "rol: worker")


def test_unknown_key_without_a_close_match_lists_the_known_keys(
    tmp_path: Path, valid: dict[str, Any]
) -> None:
    data = edited(valid, **{"nodes.2.colour": "red"})
    problem = only(problems_for(tmp_path, data)[0], "nodes[2].colour")
    assert problem.fix == "known: name, ip, role, model, mac"


def test_unknown_nested_key_is_located(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"network.gatway": "192.168.1.1"})
    problem = only(problems_for(tmp_path, data)[0], "network.gatway")
    assert "did you mean 'gateway'" in problem.fix


@pytest.mark.parametrize("name", ["Pi_CP1", "-pi", "pi-", "a" * 64, "pi.cp1", "pi cp"])
def test_invalid_rfc1123_hostname(tmp_path: Path, valid: dict[str, Any], name: str) -> None:
    data = edited(valid, **{"nodes.1.name": name})
    problems, _text = problems_for(tmp_path, data)
    problem = only(problems, "nodes[1].name")
    assert "RFC 1123" in problem.message
    assert "lowercase" in problem.fix


def test_duplicate_node_names(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"nodes.3.name": "pi-w1"})
    problems, text = problems_for(tmp_path, data)
    problem = only(problems, "nodes[3].name")
    assert "used twice" in problem.message and "nodes[1]" in problem.message
    assert problem.line == line_of(text, "name: pi-w1", occurrence=2)


def test_duplicate_ips(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"nodes.2.ip": "192.168.1.102"})
    problems, text = problems_for(tmp_path, data)
    problem = only(problems, "nodes[2].ip")
    assert "used twice" in problem.message
    assert problem.line == line_of(text, "ip: 192.168.1.102", occurrence=2)


def test_ip_outside_subnet(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"nodes.1.ip": "192.168.2.50"})
    problem = only(problems_for(tmp_path, data)[0], "nodes[1].ip")
    assert "outside the subnet 192.168.1.0/24" in problem.message


def test_ip_equal_to_gateway(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"nodes.1.ip": "192.168.1.1"})
    problem = only(problems_for(tmp_path, data)[0], "nodes[1].ip")
    assert "gateway" in problem.message


def test_ip_is_broadcast_address(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"nodes.1.ip": "192.168.1.255"})
    problem = only(problems_for(tmp_path, data)[0], "nodes[1].ip")
    assert "broadcast" in problem.message


def test_gateway_outside_subnet(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"network.gateway": "10.0.0.1"})
    problem = only(problems_for(tmp_path, data)[0], "network.gateway")
    assert "outside the subnet" in problem.message


def test_pod_and_service_cidrs_overlap(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"kubernetes.service_cidr": "10.244.128.0/20"})
    problems, text = problems_for(tmp_path, data)
    problem = only(problems, "kubernetes.service_cidr")
    assert "overlaps the pod CIDR" in problem.message
    assert problem.line == line_of(text, "service_cidr:")


def test_pod_cidr_overlaps_node_subnet(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"kubernetes.pod_cidr": "192.168.0.0/16"})
    problem = only(problems_for(tmp_path, data)[0], "kubernetes.pod_cidr")
    assert "overlaps the node subnet" in problem.message


def test_default_cidr_overlapping_subnet_points_at_the_subnet(
    tmp_path: Path, valid: dict[str, Any]
) -> None:
    data = edited(
        valid,
        **{
            "kubernetes.pod_cidr": DELETE,
            "network.subnet": "10.244.0.0/24",
            "network.gateway": "10.244.0.1",
            "network.dns": ["10.244.0.1"],
        },
    )
    for i, node in enumerate(data["nodes"]):
        node["ip"] = f"10.244.0.{10 + i}"
    problems, _ = problems_for(tmp_path, data)
    problem = only(problems, "network.subnet")
    assert "pod cidr 10.244.0.0/16" in problem.message
    assert "kubernetes.pod_cidr" in problem.fix


def test_host_bits_in_cidr(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"network.subnet": "192.168.1.5/24"})
    problem = only(problems_for(tmp_path, data)[0], "network.subnet")
    assert "CIDR" in problem.fix


def test_no_control_plane(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"nodes.0.role": "worker"})
    problem = only(problems_for(tmp_path, data)[0], "nodes")
    assert "control-plane" in problem.message


def test_two_control_planes_without_a_vip(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"nodes.2.role": "control-plane"})
    problems = problems_for(tmp_path, data)[0]
    assert "an even count" in only(problems, "nodes").message
    assert "need network.vip" in only(problems, "network").message


@pytest.mark.parametrize("model", ["pi3b-plus", "pi3b", "pi4-1gb"])
def test_control_plane_below_kubeadm_memory_minimum(
    tmp_path: Path, valid: dict[str, Any], model: str
) -> None:
    data = edited(valid, **{"nodes.0.model": model})
    problems, text = problems_for(tmp_path, data)
    problem = only(problems, "nodes[0].model")
    assert "1700 MiB" in problem.message and "1024 MiB" in problem.message
    assert problem.line == line_of(text, f"model: {model}")


def test_small_pi_is_fine_as_a_worker(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"nodes.3.model": "pi3b-plus"})
    assert load_cluster(write_cluster(tmp_path, data)).nodes[3].model == "pi3b-plus"


def test_unknown_pi_model_suggests(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"nodes.1.model": "pi4-2g"})
    problem = only(problems_for(tmp_path, data)[0], "nodes[1].model")
    assert "did you mean 'pi4-2gb'" in problem.fix


@pytest.mark.parametrize("version", ["1.31.x", "v1.31", "2.0", "131", "1.27"])
def test_malformed_or_unsupported_kubernetes_version(
    tmp_path: Path, valid: dict[str, Any], version: str
) -> None:
    data = edited(valid, **{"kubernetes.version": version})
    problem = only(problems_for(tmp_path, data)[0], "kubernetes.version")
    assert "version" in problem.fix or "1.28" in problem.fix


def test_unquoted_version_float_is_rejected_with_quoting_hint(
    tmp_path: Path, valid: dict[str, Any]
) -> None:
    text = yaml.safe_dump(valid, sort_keys=False).replace("version: '1.31'", "version: 1.30")
    problem = only(problems_for(tmp_path, text)[0], "kubernetes.version")
    assert "quote" in problem.fix


@pytest.mark.parametrize("channel", ["1.31", "1.31/stabel", "latest-edge", "1.31/stable/x"])
def test_malformed_microk8s_channel(tmp_path: Path, ssh_key: Path, channel: str) -> None:
    data = edited(base_cluster(ssh_key, distribution="microk8s"), **{"kubernetes.channel": channel})
    problem = only(problems_for(tmp_path, data)[0], "kubernetes.channel")
    assert "TRACK/RISK" in problem.fix


def test_microk8s_channels_accepted(tmp_path: Path, ssh_key: Path) -> None:
    for channel in ("1.31/stable", "latest/edge", "1.30-eksd/candidate"):
        data = edited(
            base_cluster(ssh_key, distribution="microk8s"), **{"kubernetes.channel": channel}
        )
        assert load_cluster(write_cluster(tmp_path, data)).microk8s_channel == channel


@pytest.mark.parametrize("channel", ["1.31-strict/stable", "1.30-strict/candidate"])
def test_strict_microk8s_channel_is_refused_with_the_classic_track(
    tmp_path: Path, ssh_key: Path, channel: str
) -> None:
    """pikube installs MicroK8s with --classic: a strict track is refused at validation,
    naming the classic channel of the same version (it used to pass validation and then end
    `pikube upgrade` in a "report it" error)."""
    data = edited(base_cluster(ssh_key, distribution="microk8s"), **{"kubernetes.channel": channel})
    problem = only(problems_for(tmp_path, data)[0], "kubernetes.channel")
    assert "strictly confined" in problem.message
    track, risk = channel.replace("-strict", "").split("/")
    assert f"channel: {track}/{risk}" in problem.fix


def test_settings_of_the_other_distribution_are_rejected(tmp_path: Path, ssh_key: Path) -> None:
    data = edited(base_cluster(ssh_key, distribution="microk8s"), **{"kubernetes.cni": "calico"})
    problem = only(problems_for(tmp_path, data)[0], "kubernetes.cni")
    assert "applies to kubeadm only" in problem.message


def test_missing_key_files(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(
        valid,
        **{
            "ssh.private_key": str(tmp_path / "nokey"),
            "ssh.public_key": str(tmp_path / "nokey.pub"),
        },
    )
    problems, _ = problems_for(tmp_path, data)
    assert "does not exist" in only(problems, "ssh.private_key").message
    assert "ssh-keygen" in only(problems, "ssh.public_key").fix


def test_private_key_with_loose_permissions(
    tmp_path: Path, valid: dict[str, Any], ssh_key: Path
) -> None:
    loose = tmp_path / "loose"
    loose.write_bytes(ssh_key.read_bytes())
    os.chmod(loose, 0o644)
    data = edited(valid, **{"ssh.private_key": str(loose)})
    problem = only(problems_for(tmp_path, data)[0], "ssh.private_key")
    assert "0644" in problem.message
    assert problem.fix == f"run: chmod 600 {loose}"


def test_public_key_that_is_not_a_public_key(
    tmp_path: Path, valid: dict[str, Any], ssh_key: Path
) -> None:
    data = edited(valid, **{"ssh.public_key": str(ssh_key)})  # the private key by mistake
    problem = only(problems_for(tmp_path, data)[0], "ssh.public_key")
    assert "not an OpenSSH public key" in problem.message


def test_unknown_image_suggests(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, image="ubuntu-24.04-server-arm")
    problem = only(problems_for(tmp_path, data)[0], "image")
    assert "did you mean 'ubuntu-24.04-server-arm64'" in problem.fix


def test_missing_required_section(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, network=DELETE)
    problem = only(problems_for(tmp_path, data)[0], "network")
    assert "required key 'network' is missing" in problem.message


def test_bad_ip_value(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"nodes.1.ip": "192.168.1.300"})
    problems, text = problems_for(tmp_path, data)
    problem = only(problems, "nodes[1].ip")
    assert "192.168.1.300" in problem.message
    assert problem.line == line_of(text, "192.168.1.300")


def test_all_problems_are_reported_together(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(
        valid,
        **{
            "nodes.1.name": "Bad_Name",
            "nodes.2.ip": "192.168.1.101",
            "nodes.3.ip": "10.9.9.9",
            "kubernetes.version": "one",
            "network.gatewy": "x",
        },
    )
    problems, _ = problems_for(tmp_path, data)
    paths = {p.path for p in problems}
    assert {
        "nodes[1].name",
        "nodes[2].ip",
        "nodes[3].ip",
        "kubernetes.version",
        "network.gatewy",
    } <= paths


def test_malformed_yaml_reports_the_line(tmp_path: Path) -> None:
    text = "name: homelab\nnodes:\n  - name: a\n   ip: [1.2.3.4\n"
    problems, _ = problems_for(tmp_path, text)
    assert len(problems) == 1
    assert problems[0].message.startswith("not valid YAML")
    assert problems[0].line in (3, 4, 5)


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    problems, _ = problems_for(tmp_path, "- a\n- b\n")
    assert "must be a YAML mapping" in problems[0].message


def test_duplicate_yaml_keys_are_reported(tmp_path: Path, valid: dict[str, Any]) -> None:
    text = yaml.safe_dump(valid, sort_keys=False) + "name: other\n"
    problems, text = problems_for(tmp_path, text)
    problem = only(problems, "name")
    assert "appears twice" in problem.message
    assert problem.line == len(text.splitlines())


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_cluster(tmp_path / "absent.yaml")
    assert "pikube init" in caught.value.problems[0].fix


def test_rendered_error_has_location_and_fix(tmp_path: Path, valid: dict[str, Any]) -> None:
    path = write_cluster(tmp_path, edited(valid, **{"nodes.1.ip": "192.168.1.1"}))
    with pytest.raises(ConfigError) as caught:
        load_cluster(path)
    text = caught.value.render()
    assert f"{path}:" in text and "(nodes[1].ip)" in text and "fix:" in text
