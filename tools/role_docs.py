"""Write each role's README.md from its meta/argument_specs.yml (and meta/main.yml).

The argument specs are the roles' documented API: every variable with its type, default,
choices and description, per entry point. The READMEs are generated from them, never edited
by hand; tests/unit/test_role_docs.py fails when a README differs from what this produces.

    python -m tools.role_docs           # rewrite roles/*/README.md
    python -m tools.role_docs --check   # exit 1 naming the READMEs that are out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
ROLES = REPO / "roles"
COLLECTION = "pikube.cluster"  # namespace.name of galaxy.yml
GENERATED = (
    "<!-- Generated from meta/argument_specs.yml by `python -m tools.role_docs`; "
    "edit the specs, not this file. -->"
)


def _paragraphs(text: str | list[str] | None) -> list[str]:
    if text is None:
        return []
    paragraphs = [text] if isinstance(text, str) else text
    return [" ".join(str(p).split()) for p in paragraphs]


def _cell(text: str) -> str:
    """Text safe inside one Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(value: Any) -> str:
    """A value as inline code: strings as written, everything else as compact JSON."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return f"`{_cell(text)}`" if text != "" else '`""`'


def _type(spec: dict[str, Any]) -> str:
    kind = str(spec.get("type", "str"))
    return f"{kind} of {spec['elements']}" if "elements" in spec else kind


def _default(spec: dict[str, Any]) -> str:
    if spec.get("required"):
        return "required"
    return _code(spec.get("default"))


def _options_table(options: dict[str, dict[str, Any]], prefix: str = "") -> list[str]:
    rows = []
    for name, spec in options.items():
        description = " ".join(_paragraphs(spec.get("description")))
        if "choices" in spec:
            description += " Choices: " + ", ".join(_code(c) for c in spec["choices"]) + "."
        rows.append(
            f"| `{prefix}{name}` | {_cell(_type(spec))} | {_default(spec)} | {_cell(description)} |"
        )
        if "options" in spec:  # suboptions of a dict (or a list of dicts)
            rows.extend(_options_table(spec["options"], prefix=f"{prefix}{name}."))
    return rows


def _entry_point(role: str, name: str, entry: dict[str, Any]) -> list[str]:
    lines = [f"### `{name}`", ""]
    if entry.get("short_description"):
        lines += [" ".join(str(entry["short_description"]).split()), ""]
    for paragraph in _paragraphs(entry.get("description")):
        lines += [paragraph, ""]
    tasks_from = "" if name == "main" else f"\n    tasks_from: {name}.yml"
    lines += [
        "```yaml",
        "- name: Apply the role",
        "  ansible.builtin.import_role:",
        f"    name: {COLLECTION}.{role}{tasks_from}",
        "```",
        "",
    ]
    options = entry.get("options") or {}
    if not options:
        return [*lines, "No variables.", ""]
    return [
        *lines,
        "| Variable | Type | Default | Description |",
        "| --- | --- | --- | --- |",
        *_options_table(options),
        "",
    ]


def render_readme(role_dir: Path) -> str:
    """The README.md of one role, from its meta/argument_specs.yml and meta/main.yml."""
    role = role_dir.name
    specs = yaml.safe_load((role_dir / "meta" / "argument_specs.yml").read_text())
    info = yaml.safe_load((role_dir / "meta" / "main.yml").read_text())["galaxy_info"]
    platforms = "; ".join(
        f"{p['name']} {', '.join(str(v) for v in p.get('versions', []))}".strip()
        for p in info.get("platforms", [])
    )
    lines = [
        f"# {role}",
        "",
        GENERATED,
        "",
        f"{info['description']}.",
        "",
        f"Part of the Ansible collection `{COLLECTION}` (ansible-core "
        f"{info['min_ansible_version']} or later; {platforms}). Use it from your own playbook "
        "as shown in [docs/ansible.md](../../docs/ansible.md): the inventory and group_vars "
        "that `pikube inventory -o DIR` writes set every `pikube_*` variable the defaults "
        "below read. Defaults are those of `defaults/main.yml`; set any variable in your "
        "inventory or play to override it.",
        "",
        "## Entry points",
        "",
    ]
    for name, entry in specs["argument_specs"].items():
        lines += _entry_point(role, name, entry)
    return "\n".join(lines).rstrip("\n") + "\n"


def role_dirs(root: Path = ROLES) -> list[Path]:
    return sorted(p for p in root.iterdir() if (p / "meta" / "argument_specs.yml").is_file())


def stale_readmes(roles: Iterable[Path]) -> list[Path]:
    """The README.md files that differ from what render_readme() produces (or are missing)."""
    stale = []
    for role_dir in roles:
        readme = role_dir / "README.md"
        if not readme.is_file() or readme.read_text() != render_readme(role_dir):
            stale.append(readme)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.role_docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report out-of-date READMEs")
    parser.add_argument("--roles", type=Path, default=ROLES, help="roles folder (default: roles/)")
    args = parser.parse_args(argv)
    roles = role_dirs(args.roles)
    if args.check:
        stale = stale_readmes(roles)
        for readme in stale:
            print(f"out of date: {readme}", file=sys.stderr)
        if stale:
            print("fix: python -m tools.role_docs", file=sys.stderr)
        return 1 if stale else 0
    for role_dir in roles:
        (role_dir / "README.md").write_text(render_readme(role_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
