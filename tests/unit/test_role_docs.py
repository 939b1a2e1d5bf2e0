"""Each role's README is generated from its meta/argument_specs.yml (tools/role_docs.py), and
the specs document the defaults the role really has (defaults/main.yml)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tools.role_docs import ROLES, main, render_readme, role_dirs, stale_readmes


def test_every_role_readme_is_what_the_generator_writes_from_its_specs() -> None:
    roles = role_dirs()
    assert {p.name for p in roles} == {p.name for p in ROLES.iterdir() if p.is_dir()}
    stale = stale_readmes(roles)
    assert not stale, f"out of date (run `python -m tools.role_docs`): {stale}"


@pytest.mark.parametrize("role_dir", role_dirs(), ids=lambda p: p.name)
def test_argument_specs_defaults_are_the_role_defaults(role_dir: Path) -> None:
    """Ansible applies defaults/main.yml, never the specs' `default`; the specs (and so the
    READMEs) must show that very value. A required option has no default to show."""
    specs = yaml.safe_load((role_dir / "meta" / "argument_specs.yml").read_text())
    defaults = yaml.safe_load((role_dir / "defaults" / "main.yml").read_text()) or {}
    for name, spec in specs["argument_specs"]["main"]["options"].items():
        if spec.get("required"):
            assert "default" not in spec, f"{name} is required and has a default"
        else:
            assert name in defaults, f"{name} has no default in defaults/main.yml"
            assert spec.get("default") == defaults[name], f"{name}: specs and defaults differ"


def write_role(root: Path, specs: dict[str, object]) -> Path:
    role = root / "demo_role"
    (role / "meta").mkdir(parents=True)
    (role / "meta" / "argument_specs.yml").write_text(yaml.safe_dump({"argument_specs": specs}))
    info = {
        "description": "A demo role",
        "min_ansible_version": "2.19",
        "platforms": [{"name": "Debian", "versions": ["bookworm"]}],
    }
    (role / "meta" / "main.yml").write_text(yaml.safe_dump({"galaxy_info": info}))
    return role


def test_readme_shows_type_default_choices_and_description_of_each_option(
    tmp_path: Path,
) -> None:
    role = write_role(
        tmp_path,
        {
            "main": {
                "short_description": "Do the demo",
                "options": {
                    "demo_role_mode": {
                        "type": "str",
                        "default": "{{ pikube_mode | default('a') }}",
                        "choices": ["a", "b"],
                        "description": ["Which mode;", "b is faster."],
                    },
                    "demo_role_hosts": {
                        "type": "list",
                        "elements": "str",
                        "required": True,
                        "description": "Hosts.",
                    },
                    "demo_role_limits": {
                        "type": "dict",
                        "default": {"cpu": 2},
                        "description": "Limits.",
                        "options": {"cpu": {"type": "int", "default": 2, "description": "CPUs."}},
                    },
                },
            },
            "reset": {"short_description": "Undo the demo", "options": {}},
        },
    )
    readme = render_readme(role)
    assert readme.startswith("# demo_role\n")
    assert "A demo role." in readme
    assert (
        "| `demo_role_mode` | str | `{{ pikube_mode \\| default('a') }}` "
        "| Which mode; b is faster. Choices: `a`, `b`. |"
    ) in readme
    assert "| `demo_role_hosts` | list of str | required | Hosts. |" in readme
    assert '| `demo_role_limits` | dict | `{"cpu": 2}` | Limits. |' in readme
    assert "| `demo_role_limits.cpu` | int | `2` | CPUs. |" in readme
    assert "### `reset`\n\nUndo the demo" in readme
    assert "    name: pikube.cluster.demo_role\n    tasks_from: reset.yml" in readme


def test_check_names_a_stale_readme_and_a_rewrite_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roles = tmp_path / "roles"
    shutil.copytree(ROLES / "pikube_verify", roles / "pikube_verify")
    assert main(["--check", "--roles", str(roles)]) == 0
    specs = roles / "pikube_verify" / "meta" / "argument_specs.yml"
    specs.write_text(specs.read_text().replace("type: int", "type: float", 1))
    assert main(["--check", "--roles", str(roles)]) == 1
    assert "pikube_verify/README.md" in capsys.readouterr().err
    assert main(["--roles", str(roles)]) == 0
    assert main(["--check", "--roles", str(roles)]) == 0
    assert "| float |" in (roles / "pikube_verify" / "README.md").read_text()
