"""Contract-faithful stand-ins for Kubernetes (kubeadm, kubelet, API) and snap/MicroK8s.

Test-only code: see README.md in this directory for the contracts and their sources.
"""

from __future__ import annotations

from .repo import build_repo

__all__ = ["build_repo"]
