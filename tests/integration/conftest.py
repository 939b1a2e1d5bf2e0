"""Integration tests run against the lab (tests/lab); its fixtures live in tests/lab/fixtures.py."""

from __future__ import annotations

from tests.lab.fixtures import lab, lab_cluster, lab_inventory, make_lab

__all__ = ["lab", "lab_cluster", "lab_inventory", "make_lab"]
