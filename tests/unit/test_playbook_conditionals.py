"""Conditionals (`when`, `that`, `changed_when`, ...) are compiled by Jinja, whose string
literals decode backslash escapes: `'\\.'` or `'\\d'` in a regex there is an invalid escape, a
DeprecationWarning printed in the middle of a run (and a syntax error once Python drops it).
Every conditional of every playbook and role must lex without any warning."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pytest
import yaml

from pikube.resources import data_path

CONDITIONAL_KEYS = {"when", "that", "changed_when", "failed_when", "until"}


def task_files() -> list[Path]:
    files = sorted(data_path("playbooks").rglob("*.yml"))
    for part in ("tasks", "handlers"):
        files += sorted(data_path("roles").glob(f"*/{part}/*.yml"))
    return files


def conditionals(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in CONDITIONAL_KEYS:
                values = value if isinstance(value, list) else [value]
                yield from (v for v in values if isinstance(v, str))
            else:
                yield from conditionals(value)
    elif isinstance(node, list):
        for item in node:
            yield from conditionals(item)


def test_the_check_finds_conditionals() -> None:
    found = [c for path in task_files() for c in conditionals(yaml.safe_load(path.read_text()))]
    assert len(found) > 50
    assert any("is match(" in c for c in found)


@pytest.mark.parametrize("path", task_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_conditionals_lex_without_warnings(path: Path) -> None:
    env = jinja2.Environment(autoescape=False)  # noqa: S701 - parsed, never rendered as HTML
    for expression in conditionals(yaml.safe_load(path.read_text())):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                env.parse("{{ (" + expression + ") }}")
            except (DeprecationWarning, SyntaxWarning) as warning:
                pytest.fail(f"{path}: {expression!r}: {warning}")
