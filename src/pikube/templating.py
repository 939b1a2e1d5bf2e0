"""The one Jinja2 environment for pikube's templates (``templates/``).

Values pikube writes into its templates are data, never templates: pikube's own Jinja2
environment renders them as text (it never evaluates a value it substitutes), and the
inventory marks every string that could be a template ``!unsafe`` (``to_ansible_yaml``), so
Ansible never evaluates one either, whatever it holds. The only strings Ansible may evaluate
are pikube's own expressions, typed ``AnsibleTemplate`` where they are written.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jinja2

from pikube.resources import data_path


def to_yaml(value: Any) -> str:
    """A YAML flow value for any JSON-able value (JSON is valid YAML), quoted safely."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


class AnsibleTemplate(str):
    """A Jinja2 expression written by pikube for Ansible to evaluate (never a user's value)."""

    __slots__ = ()


def to_ansible_yaml(value: Any) -> str:
    """A YAML flow value for Ansible in which no string (key or value) can be evaluated.

    Ansible evaluates any string read from an inventory that holds a Jinja2 opener (``{{``,
    ``{%``, ``{#``), so a value like ``{{ lookup('pipe', CMD) }}`` would run CMD on the
    admin machine. Every string holding a ``{`` is tagged ``!unsafe``: Ansible then uses it
    as written, also where a role default refers to it (``"{{ pikube_apt_proxy }}"``).
    Strings without a ``{`` cannot be templates and stay untagged, because Ansible resolves
    the type of a tagged scalar as if it were unquoted (``!unsafe "1.30"`` is the float 1.3).
    ``AnsibleTemplate`` values, pikube's own expressions, stay evaluable.
    """
    if isinstance(value, AnsibleTemplate):
        return to_yaml(str(value))
    if isinstance(value, str):
        return ("!unsafe " if "{" in value else "") + to_yaml(value)
    if isinstance(value, dict):
        items = sorted((str(k), v) for k, v in value.items())
        return (
            "{" + ", ".join(f"{to_ansible_yaml(k)}: {to_ansible_yaml(v)}" for k, v in items) + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ", ".join(to_ansible_yaml(item) for item in value) + "]"
    return to_yaml(value)


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_path("templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - renders YAML and config files, never HTML
    )
    env.filters["to_yaml"] = to_yaml
    env.filters["to_ansible_yaml"] = to_ansible_yaml
    return env


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` with ``context``."""
    return environment().get_template(template).render(**context)
