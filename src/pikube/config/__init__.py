"""The cluster model and its loading."""

from __future__ import annotations

from pikube.config.load import load_cluster, parse_cluster
from pikube.config.model import Cluster, Node

__all__ = ["Cluster", "Node", "load_cluster", "parse_cluster"]
