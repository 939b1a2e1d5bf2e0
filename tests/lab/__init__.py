"""The pikube lab: simulated Raspberry Pi nodes on one Linux machine (tests only).

Each node is a Debian bookworm rootfs (built once with debootstrap, cached) booted with
``systemd-nspawn --boot`` on its own overlayfs copy, inside its own network namespace that is
attached to a lab bridge on the host. See ``tests/lab/README.md``.

Import it as ``tests.lab`` (pytest: ``pythonpath = ["."]``)::

    from tests.lab import Lab
    lab = Lab("pkl1", "10.77.1.0/24")
    lab.up(3)
    ...
    lab.down()
"""

from __future__ import annotations

from .core import DEFAULT_NAME, DEFAULT_SUBNET, Lab, LabError, NodeSpec

__all__ = ["DEFAULT_NAME", "DEFAULT_SUBNET", "Lab", "LabError", "NodeSpec"]
