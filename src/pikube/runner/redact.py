"""Last line of defence against secrets in output: join tokens, certificate and private keys.

The playbooks mark secret tasks ``no_log`` and the callback never emits task arguments; this
filter additionally masks anything shaped like a secret in text pikube passes on or stores.
Keep the patterns in sync with ``playbooks/callback_plugins/pikube_events.py``.
"""

from __future__ import annotations

import re
from typing import Any

BOOTSTRAP_TOKEN = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
CERTIFICATE_KEY = re.compile(r"(?i)(certificate[-_ ]key[\"'=: ]+)[0-9a-f]{64}")
# MicroK8s join strings: `microk8s join IP:25000/<32 hex token>/<fingerprint>`.
MICROK8S_TOKEN = re.compile(r"(:\d+/)[0-9a-f]{32}\b")
PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL
)


def redact(text: str) -> str:
    text = BOOTSTRAP_TOKEN.sub("<redacted>", text)
    text = MICROK8S_TOKEN.sub(r"\1<redacted>", text)
    text = PRIVATE_KEY.sub("<redacted>", text)
    return CERTIFICATE_KEY.sub(r"\1<redacted>", text)


def redact_event(value: Any) -> Any:
    """``value`` (a parsed event) with :func:`redact` applied to every string in it."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): redact_event(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_event(v) for v in value]
    return value
