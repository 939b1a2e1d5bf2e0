"""Render one node's cloud-init NoCloud seed (user-data, network-config, meta-data)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from pikube.config.model import Cluster, Node
from pikube.errors import PikubeError
from pikube.hostkeys import HostKey
from pikube.image.catalog import OsFamily, image_family
from pikube.templating import render

SEED_FILES = ("user-data", "network-config", "meta-data")
INTERFACE = "eth0"


def new_instance_id(node: str) -> str:
    """Unique per flash: cloud-init treats a changed id as a new instance and runs again."""
    return f"pikube-{node}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def read_public_key(cluster: Cluster) -> str:
    path = Path(cluster.ssh.public_key)
    try:
        text = path.read_text().strip()
    except OSError as err:
        raise PikubeError(
            f"cannot read the SSH public key {path}: {err.strerror}",
            where="cluster.yaml ssh.public_key",
            fix="create one with `ssh-keygen -t ed25519` or point ssh.public_key at yours",
        ) from None
    if not text.startswith(("ssh-", "ecdsa-", "sk-")) or "PRIVATE KEY" in text:
        raise PikubeError(
            f"{path} is not an SSH public key",
            where="cluster.yaml ssh.public_key",
            fix="use the .pub file, e.g. ~/.ssh/id_ed25519.pub",
        )
    return text.splitlines()[0]


def render_seed(
    cluster: Cluster,
    node: Node,
    *,
    host_keys: list[HostKey],
    public_key: str,
    instance_id: str,
    family: OsFamily | None = None,
) -> dict[str, str]:
    """The three NoCloud files for ``node`` as text, by file name, for the OS ``family`` of
    the image they go on (default: that of the cluster's ``image``)."""
    family = family or image_family(cluster.image)
    network = cluster.network
    fqdn = f"{node.name}.{network.domain}" if network.domain else None
    context = {
        "cluster_name": cluster.name,
        "node": node,
        "fqdn": fqdn,
        "user": cluster.ssh.user,
        "public_key": public_key,
        "host_keys": host_keys,
        "timezone": cluster.timezone,
        "apt_proxy": cluster.apt_proxy,
        "instance_id": instance_id,
        "interface": INTERFACE,
        "address": f"{node.ip}/{network.subnet.prefixlen}",
        "gateway": str(network.gateway),
        "dns": [str(d) for d in network.dns],
        "domain": network.domain,
        "family": family,
    }
    return {
        "user-data": render("cloudinit/user-data.j2", **context),
        "network-config": render("cloudinit/network-config.j2", **context),
        "meta-data": render("cloudinit/meta-data.j2", **context),
    }
