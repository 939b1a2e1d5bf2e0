"""`pikube up` on Raspberry Pi OS, from the cards `pikube flash` writes: once per flavour.

Each test starts a fresh 2-node lab whose nodes both have the Raspberry Pi OS personality
(tests/lab/raspios/README.md: sshd disabled, no snapd, raspberrypi-sys-mods' host-key
regeneration enabled), gives every node the seed `pikube flash` writes for the cluster's
`image: raspios-trixie-lite-arm64` and boots it through real cloud-init (NetworkManager
rendering netplan; tests/integration/firstboot.py), then runs `pikube up --wait-boot`, which
logs in only with the host keys pikube pinned at flash time, prepares the nodes and builds the
cluster: every node Ready through the real kubectl. MicroK8s also needs snapd, which Pi OS
does not ship (the stand-in snapd comes from the lab's imitation of archive.raspberrypi.com).
Slow tier: each takes several minutes (cloud-init installed per node, a full `up`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.factories import make_key_pair
from tests.image_support import BuiltImage
from tests.integration.clusterlab import Pikube, cluster_lab
from tests.integration.firstboot import flash_seed, install_cloud_init, reboot, write_seed

pytestmark = [pytest.mark.lab, pytest.mark.slow]

NODES = ("node-1", "node-2")
USER = "pi"  # Raspberry Pi OS has no default user: cloud-init creates the cluster's


def flash_and_boot(lab: Any, flavour: str, work: Path, image: BuiltImage) -> Path:
    """The cluster file, then every node booted from the seed `pikube flash` wrote for it."""
    key = make_key_pair(work / "admin", "id_ed25519")
    data = lab.cluster_data(flavour)
    data.update(
        image="raspios-trixie-lite-arm64",
        ssh={
            "user": USER,
            "public_key": f"{key}.pub",
            "private_key": str(key),
            "known_hosts": str(work / "known_hosts"),
        },
    )
    cluster = work / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(data, sort_keys=False))
    for node in NODES:
        seed = flash_seed(cluster, image, work, node)
        install_cloud_init(lab, node)
        write_seed(lab, node, seed)
        reboot(lab, node)
    return cluster


@pytest.mark.parametrize("flavour", ["kubeadm", "microk8s"])
def test_up_on_raspberry_pi_os_from_flashed_cards(
    flavour: str, tmp_path: Path, pi_image: BuiltImage
) -> None:
    with cluster_lab(f"pios-{flavour[:4]}", 2, flavour, pi=2, pi_os="raspios") as lab:
        cluster = flash_and_boot(lab, flavour, tmp_path, pi_image)
        pk = Pikube(lab, cluster, flavour)
        proc = pk("up", "--wait-boot=300")
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert pk.ready_nodes() == set(NODES)
        for node in NODES:
            # The keys pikube pinned are the ones the node still has (no regeneration).
            masked = lab.exec(node, ["systemctl", "is-enabled", "regenerate_ssh_host_keys"])
            assert masked.stdout.strip() == "masked"
            if flavour == "microk8s":  # snapd came from apt, as on a real Pi OS card
                status = lab.exec(node, ["dpkg-query", "-W", "-f", "${Status}", "snapd"])
                assert status.stdout == "install ok installed", status
