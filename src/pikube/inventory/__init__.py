"""Pure rendering: cluster model -> inventory dicts -> YAML text at the edge."""

from __future__ import annotations

from pikube.inventory.render import (
    group_vars,
    host_vars,
    render_inventory,
    render_inventory_files,
    ssh_login,
    write_files,
)

__all__ = [
    "group_vars",
    "host_vars",
    "render_inventory",
    "render_inventory_files",
    "ssh_login",
    "write_files",
]
