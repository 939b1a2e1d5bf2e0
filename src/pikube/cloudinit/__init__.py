"""cloud-init first-boot configuration for one node: the NoCloud seed files.

The node's SSH host keys, which the seed carries, come from :mod:`pikube.hostkeys`.
"""

from __future__ import annotations

from pikube.cloudinit.render import SEED_FILES, new_instance_id, read_public_key, render_seed

__all__ = [
    "SEED_FILES",
    "new_instance_id",
    "read_public_key",
    "render_seed",
]
