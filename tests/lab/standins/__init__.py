"""Contract-faithful stand-ins for Kubernetes (kubeadm, kubelet, API) and snap/MicroK8s.

Test-only code: see README.md in this directory for the contracts and their sources.
Entry points for the lab harness:
    prepare(www, bridge_ip)  build signed apt repos + snap payloads into the web root (cached)
    node_files()             {absolute path: (content, mode)} to bake into every node rootfs
    build_repo(www)          just the apt repositories
"""

from __future__ import annotations

from .build import node_files, prepare
from .repo import build_repo

__all__ = ["build_repo", "node_files", "prepare"]
