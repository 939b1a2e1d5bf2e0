"""Contract-faithful stand-ins for Kubernetes (kubeadm, kubelet, API) and snap/MicroK8s.

Test-only code: see README.md in this directory for the contracts and their sources.
Entry points for the lab harness:
    prepare(www, bridge_ip)  build signed apt repos + snap payloads into the web root (cached)
    node_files()             {absolute path: (content, mode)} to bake into every node rootfs
    rootfs_packages()        Debian packages the stand-ins need in the node rootfs
    build_repo(www)          just the apt repositories
    personality_node_files(personality, http_url)   node_files() for a Raspberry Pi OS node
                             (no snap; the raspi apt source with a stand-in snapd instead)
"""

from __future__ import annotations

from pathlib import Path

from .build import node_files
from .build import prepare as _prepare_kubernetes
from .raspi import build_raspi_repo, personality_node_files
from .repo import build_repo


def prepare(www: Path, bridge_ip: str) -> None:
    """The Kubernetes repositories and snaps (cached), then the raspi repository (small)."""
    _prepare_kubernetes(www, bridge_ip)
    build_raspi_repo(www)


def rootfs_packages() -> tuple[str, ...]:
    """Debian packages the stand-ins' Python needs on every node (the MicroK8s payload cannot
    declare dependencies the way the kubeadm/kubelet .debs do)."""
    # debootstrap does not resolve virtual packages: python3-cryptography depends on the
    # python3-cffi-backend-api-* virtuals that python3-cffi-backend provides, so name it.
    # etcd-server / etcd-client: kubeadm's stacked etcd member and etcdctl (the rootfs masks
    # Debian's own etcd.service; see rootfs.MASKED_UNITS).
    return (
        "etcd-client",
        "etcd-server",
        "python3-cffi-backend",
        "python3-cryptography",
        "python3-yaml",
    )


__all__ = [
    "build_repo",
    "node_files",
    "personality_node_files",
    "prepare",
    "rootfs_packages",
]
