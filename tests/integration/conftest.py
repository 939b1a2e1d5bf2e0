"""Integration tests run against the lab (tests/lab); its fixtures live in lab.fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.fixtures import lab, lab_cluster, lab_inventory, make_lab

__all__ = ["lab", "lab_cluster", "lab_inventory", "make_lab"]
