"""The one Jinja2 environment for pikube's templates (``templates/``)."""

from __future__ import annotations

import functools
import json
from typing import Any

import jinja2

from pikube.resources import data_path


def to_yaml(value: Any) -> str:
    """A YAML flow value for any JSON-able value (JSON is valid YAML), quoted safely."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


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
    return env


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` with ``context``."""
    return environment().get_template(template).render(**context)
