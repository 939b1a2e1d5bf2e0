"""cloud-init first-boot configuration for one node: NoCloud seed files and SSH host keys."""

from __future__ import annotations

from pikube.cloudinit.hostkeys import HostKey, ensure_host_keys, update_known_hosts
from pikube.cloudinit.render import SEED_FILES, new_instance_id, read_public_key, render_seed

__all__ = [
    "SEED_FILES",
    "HostKey",
    "ensure_host_keys",
    "new_instance_id",
    "read_public_key",
    "render_seed",
    "update_known_hosts",
]
