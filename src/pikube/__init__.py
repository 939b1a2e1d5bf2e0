"""pikube: turn a stack of Raspberry Pis into a Kubernetes cluster, and reset it again."""

from __future__ import annotations

__version__ = "0.1.0"
