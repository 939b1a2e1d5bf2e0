"""Last line of defence against secrets in output: join tokens, certificate and private keys.

The playbooks mark secret tasks ``no_log`` and the callback never emits task arguments; this
filter additionally masks anything shaped like a secret in text pikube passes on or stores.
The shapes live once, in ``playbooks/callback_plugins/secret_patterns.json``, which the
``pikube_events`` callback reads too.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from pikube.resources import data_path

MASK = "<redacted>"


@functools.cache
def secret_patterns() -> tuple[re.Pattern[str], ...]:
    """The secret shapes, in the order they are applied."""
    path = data_path("playbooks", "callback_plugins", "secret_patterns.json")
    entries = json.loads(path.read_text(encoding="utf-8"))["patterns"]
    return tuple(
        re.compile(entry["regex"], re.DOTALL if entry.get("dotall") else 0) for entry in entries
    )


def redact(text: str) -> str:
    """``text`` with every secret-shaped part masked (a pattern's group is kept)."""
    for pattern in secret_patterns():
        text = pattern.sub(rf"\1{MASK}" if pattern.groups else MASK, text)
    return text


def redact_event(value: Any) -> Any:
    """``value`` (a parsed event) with :func:`redact` applied to every string in it."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): redact_event(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_event(v) for v in value]
    return value
