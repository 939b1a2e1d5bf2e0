"""Each role documents its variables twice by design: defaults/main.yml (what Ansible uses)
and meta/argument_specs.yml (what is validated and documented, README included). They must
say the same: every default in both, with the same value."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from pikube.resources import data_path

ROLES = sorted(p.parent.parent.name for p in data_path("roles").glob("*/meta/argument_specs.yml"))


def spec_defaults(role: str) -> dict[str, Any]:
    """Every option with a default, over all entry points (one value per name)."""
    specs = yaml.safe_load(data_path("roles", role, "meta", "argument_specs.yml").read_text())
    found: dict[str, Any] = {}
    for entry, spec in specs["argument_specs"].items():
        for name, option in (spec.get("options") or {}).items():
            if "default" not in option:
                continue
            assert found.get(name, option["default"]) == option["default"], (
                f"{role}: entry point {entry} gives {name} another default"
            )
            found[name] = option["default"]
    return found


def test_every_role_is_checked() -> None:
    roles = sorted(p.name for p in data_path("roles").iterdir() if (p / "tasks").is_dir())
    assert roles == ROLES


@pytest.mark.parametrize("role", ROLES)
def test_argument_spec_defaults_are_the_role_defaults(role: str) -> None:
    path = data_path("roles", role, "defaults", "main.yml")
    defaults = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    specs = spec_defaults(role)
    assert sorted(specs) == sorted(defaults), f"{role}: the same variables in both files"
    different = {n: (defaults[n], specs[n]) for n in defaults if defaults[n] != specs[n]}
    assert not different, f"{role}: defaults/main.yml vs argument_specs.yml: {different}"
