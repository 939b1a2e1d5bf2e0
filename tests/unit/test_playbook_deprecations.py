"""What Ansible or Python would print as deprecated while pikube's playbooks and roles run.

Conditionals (`when`, `that`, `changed_when`, ...) are compiled by Jinja, whose string literals
decode backslash escapes: `'\\.'` or `'\\d'` in a regex there is an invalid escape, a
DeprecationWarning printed in the middle of a run (and a syntax error once Python drops it).
Facts read as top-level variables (`ansible_distribution`) print ansible-core 2.20's
INJECT_FACTS_AS_VARS deprecation on every task that uses them (an error from 2.24 on); they
are read from `ansible_facts` instead."""

from __future__ import annotations

import re
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


# Ansible's special and connection variables: the `ansible_*` names that are not facts
# (https://docs.ansible.com/ansible/latest/reference_appendices/special_variables.html).
NOT_FACTS = {
    "ansible_check_mode",
    "ansible_diff_mode",
    "ansible_failed_result",  # set in a rescue block
    "ansible_failed_task",
    "ansible_facts",
    "ansible_forks",
    "ansible_limit",
    "ansible_loop",
    "ansible_managed",
    "ansible_play_batch",
    "ansible_play_hosts",
    "ansible_play_hosts_all",
    "ansible_play_name",
    "ansible_run_tags",
    "ansible_skip_tags",
    "ansible_verbosity",
    "ansible_version",
    "ansible_host",
    "ansible_port",
    "ansible_user",
    "ansible_connection",
    "ansible_python_interpreter",
}


def shipped_files() -> list[Path]:
    files = sorted(data_path("playbooks").rglob("*.yml"))
    for pattern in ("*.yml", "*.j2"):
        files += sorted(p for p in data_path("roles").rglob(pattern) if "molecule" not in p.parts)
    return files


def test_facts_are_read_from_ansible_facts_not_as_top_level_variables() -> None:
    used = {
        (path.relative_to(data_path("roles").parent).as_posix(), name)
        for path in shipped_files()
        for name in re.findall(r"\bansible_[a-z0-9_]+", path.read_text())
    }
    assert any(name == "ansible_facts" for _, name in used)
    injected = sorted((path, name) for path, name in used if name not in NOT_FACTS)
    assert not injected, f"use ansible_facts['<name>'] instead: {injected}"
