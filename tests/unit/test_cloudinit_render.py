"""cloud-init seed for one node: content, schema validity, host keys and known_hosts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pikube.cloudinit import new_instance_id, read_public_key, render_seed
from pikube.config import load_cluster
from pikube.config.model import Cluster
from pikube.errors import PikubeError
from pikube.hostkeys import ensure_host_keys
from tests.factories import base_cluster, edited, write_cluster


@pytest.fixture
def cluster(tmp_path: Path, ssh_key: Path) -> Cluster:
    data = edited(
        base_cluster(ssh_key),
        **{
            "network.domain": "home.lan",
            "network.dns": ["192.168.1.1", "1.1.1.1"],
            "timezone": "Europe/Berlin",
            "apt_proxy": "http://192.168.1.10:3142",
            "nodes.1.mac": "DC:A6:32:01:02:03",
        },
    )
    return load_cluster(write_cluster(tmp_path, data))


@pytest.fixture
def raspios(tmp_path: Path, ssh_key: Path) -> Cluster:
    data = edited(base_cluster(ssh_key), image="raspios-trixie-lite-arm64")
    return load_cluster(write_cluster(tmp_path, data))


def seed(cluster: Cluster, name: str = "pi-w1") -> dict[str, str]:
    node = cluster.node(name)
    keys = ensure_host_keys(Path(str(cluster.state_dir)), name)
    return render_seed(
        cluster, node, host_keys=keys, public_key=read_public_key(cluster), instance_id="iid-1"
    )


def cloud_init_schema(path: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("cloud-init") is None:
        pytest.skip("needs cloud-init (apt install cloud-init) for its schema validator")
    return subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True
    )


def test_user_data_passes_cloud_init_schema(cluster: Cluster, tmp_path: Path) -> None:
    path = tmp_path / "user-data"
    path.write_text(seed(cluster)["user-data"])
    result = cloud_init_schema(path)
    assert result.returncode == 0, result.stdout + result.stderr
    # cloud-init 23 (bookworm) says "Valid cloud-config: FILE", 25 (trixie) "Valid schema FILE".
    assert re.match(r"Valid (cloud-config|schema)", result.stdout), result.stdout


def test_schema_validator_rejects_a_broken_user_data(tmp_path: Path) -> None:
    """The check above can fail: a wrong type is caught."""
    path = tmp_path / "user-data"
    path.write_text("#cloud-config\nssh_pwauth: [1, 2]\nusers: 5\n")
    assert cloud_init_schema(path).returncode != 0


def test_user_data_sets_hostname_user_key_and_no_password(cluster: Cluster, ssh_key: Path) -> None:
    data = yaml.safe_load(seed(cluster)["user-data"])
    assert data["hostname"] == "pi-w1" and data["fqdn"] == "pi-w1.home.lan"
    (user,) = data["users"]
    assert user["name"] == "ubuntu" and user["lock_passwd"] is True
    assert user["ssh_authorized_keys"] == [Path(f"{ssh_key}.pub").read_text().strip()]
    assert data["ssh_pwauth"] is False and "password" not in str(data["chpasswd"])
    assert data["timezone"] == "Europe/Berlin"
    assert data["apt"]["proxy"] == "http://192.168.1.10:3142"


def test_user_data_carries_the_pregenerated_host_keys(cluster: Cluster) -> None:
    data = yaml.safe_load(seed(cluster)["user-data"])
    folder = Path(str(cluster.state_dir)) / "hostkeys" / "pi-w1"
    for key_type in ("ed25519", "ecdsa"):
        private = (folder / f"ssh_host_{key_type}_key").read_text()
        assert data["ssh_keys"][f"{key_type}_private"] == private
        assert data["ssh_keys"][f"{key_type}_public"] == (
            (folder / f"ssh_host_{key_type}_key.pub").read_text().strip()
        )


def test_network_config_is_a_static_netplan_v2(cluster: Cluster) -> None:
    net = yaml.safe_load(seed(cluster)["network-config"])
    assert net["version"] == 2
    eth = net["ethernets"]["eth0"]
    assert eth["addresses"] == ["192.168.1.102/24"]
    assert eth["routes"] == [{"to": "default", "via": "192.168.1.1"}]
    assert eth["nameservers"] == {"addresses": ["192.168.1.1", "1.1.1.1"], "search": ["home.lan"]}
    assert eth["match"] == {"macaddress": "dc:a6:32:01:02:03"} and eth["set-name"] == "eth0"
    assert eth["dhcp4"] is False
    other = yaml.safe_load(seed(cluster, "pi-cp1")["network-config"])["ethernets"]["eth0"]
    assert "match" not in other  # no MAC in cluster.yaml: match by name


def test_meta_data_and_instance_ids_change_per_flash(cluster: Cluster) -> None:
    meta = yaml.safe_load(seed(cluster)["meta-data"])
    assert meta == {"instance-id": "iid-1", "local-hostname": "pi-w1"}
    first, second = new_instance_id("pi-w1"), new_instance_id("pi-w1")
    assert first != second and first.startswith("pikube-pi-w1-")


def test_missing_or_wrong_public_key_is_a_clear_error(cluster: Cluster, ssh_key: Path) -> None:
    wrong = cluster.model_copy(
        update={"ssh": cluster.ssh.model_copy(update={"public_key": ssh_key})}
    )
    with pytest.raises(PikubeError, match="is not an SSH public key"):
        read_public_key(wrong)
    missing = cluster.model_copy(
        update={"ssh": cluster.ssh.model_copy(update={"public_key": Path("/nonexistent.pub")})}
    )
    with pytest.raises(PikubeError, match="cannot read the SSH public key"):
        read_public_key(missing)


def test_raspberry_pi_os_seed_enables_sshd_as_imager_does(raspios: Cluster) -> None:
    # Pi OS ships ssh.service disabled; cloud-init's ssh module never enables it.
    data = yaml.safe_load(seed(raspios)["user-data"])
    assert ["systemctl", "enable", "--now", "ssh"] in data["runcmd"]


def test_raspberry_pi_os_seed_masks_host_key_regeneration_first(raspios: Cluster) -> None:
    # bootcmd runs in cloud-init's network stage before the ssh module writes the pinned
    # keys; the regeneration service, ordered after sysinit.target, must never run.
    data = yaml.safe_load(seed(raspios)["user-data"])
    assert data["bootcmd"] == [
        [
            "cloud-init-per",
            "instance",
            "pikube-mask-regenerate_ssh_host_keys.service",
            "systemctl",
            "mask",
            "regenerate_ssh_host_keys.service",
        ]
    ]
    assert set(data["ssh_keys"]) == {
        "ed25519_private", "ed25519_public", "ecdsa_private", "ecdsa_public",
    }  # fmt: skip


def test_raspberry_pi_os_network_config_names_networkmanager(raspios: Cluster) -> None:
    net = yaml.safe_load(seed(raspios)["network-config"])
    assert net["renderer"] == "NetworkManager" and net["version"] == 2
    assert net["ethernets"]["eth0"]["addresses"] == ["192.168.1.102/24"]


def test_raspberry_pi_os_user_data_passes_cloud_init_schema(
    raspios: Cluster, tmp_path: Path
) -> None:
    path = tmp_path / "user-data"
    path.write_text(seed(raspios)["user-data"])
    result = cloud_init_schema(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ubuntu_seed_has_no_raspberry_pi_os_workarounds(cluster: Cluster) -> None:
    data = yaml.safe_load(seed(cluster)["user-data"])
    assert "runcmd" not in data and "bootcmd" not in data
    assert "renderer" not in yaml.safe_load(seed(cluster)["network-config"])
