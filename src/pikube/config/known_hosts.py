"""Checking the cluster's known_hosts file (``ssh.known_hosts``) before anything reads it.

The file is input pikube did not write alone (a user may point ``ssh.known_hosts`` at their
own, or edit it), and SSH clients take it badly when it is malformed: a line paramiko
cannot parse aborted ``status`` with a traceback. ``check_known_hosts`` is the one check
every command runs (through ``load_cluster``) before it uses the file: each line is either
blank, a comment, or ``[@marker] hostnames keytype base64-key [comment]`` as sshd(8)
describes it, and the key blob names the same key type as the line. A bad line is a
located ``ConfigError`` (file, line, what, fix; exit 3).
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import unicodedata
from pathlib import Path

from pikube.config.inputs import read_input_file
from pikube.errors import ConfigError, Problem

# One line is at most ~1 KiB (an RSA-8192 key); 8 MiB holds thousands of hosts, far more
# than a cluster's or a person's known_hosts, and bounds what a wrong path makes us read.
MAX_KNOWN_HOSTS_BYTES = 8 * 1024 * 1024

MARKERS = ("@cert-authority", "@revoked")
KEY_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._+-]{0,63}")
# A host pattern: names, addresses, [host]:port, wildcards and negation; or a hashed name.
HOST_PATTERN_RE = re.compile(r"!?(\[[A-Za-z0-9.:*?_%-]+\]:\d{1,5}|[A-Za-z0-9.:*?_%-]+)")
HASHED_RE = re.compile(r"\|1\|[A-Za-z0-9+/]+=*\|[A-Za-z0-9+/]+=*")

FIX = (
    "correct or delete this line (each line is `HOSTS KEYTYPE BASE64KEY`), or remove the "
    "host's entries with `ssh-keygen -R HOST -f {path}`"
)


def _key_type_in_blob(blob: bytes) -> str | None:
    """The key type an SSH public key blob starts with (RFC 4253 string), or None."""
    if len(blob) < 4:
        return None
    (length,) = struct.unpack(">I", blob[:4])
    if length == 0 or length > 64 or len(blob) < 4 + length:
        return None
    try:
        return blob[4 : 4 + length].decode("ascii")
    except UnicodeDecodeError:
        return None


def line_problem(line: str) -> str | None:
    """What is wrong with one known_hosts line, or None when it is well formed."""
    bad = next((c for c in line if unicodedata.category(c) == "Cc" and c != "\t"), None)
    if bad is not None:
        return f"the line holds the control character {bad!r}"
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    if fields[0].startswith("@"):
        if fields[0] not in MARKERS:
            return f"unknown marker {fields[0]!r} (known: {', '.join(MARKERS)})"
        fields = fields[1:]
    if len(fields) < 3:
        return "a host entry needs host names, a key type and a key"
    hosts, key_type, key = fields[:3]
    if not HASHED_RE.fullmatch(hosts) and not all(
        HOST_PATTERN_RE.fullmatch(host) for host in hosts.split(",")
    ):
        return f"{hosts[:60]!r} is not a list of host names"
    if not KEY_TYPE_RE.fullmatch(key_type):
        return f"{key_type[:60]!r} is not an SSH key type"
    try:
        blob = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return f"the key of type {key_type} is not valid base64"
    named = _key_type_in_blob(blob)
    if named != key_type:
        says = f" (its blob says {named})" if named else ""
        return f"the key does not decode to a {key_type} key{says}"
    return None


def check_known_hosts(path: Path) -> None:
    """Raise ``ConfigError`` naming every malformed line of ``path``; a missing file is fine
    (pikube creates it when it pins the first host key)."""
    read_known_hosts(path)


def read_known_hosts(path: Path) -> list[str]:
    """The lines of ``path`` ([] when there is none yet), read bounded and checked line by
    line: the one reader of a known_hosts file, for the check every command runs and for
    pinning new keys into it."""
    try:
        path.lstat()
    except FileNotFoundError:
        return []
    text = read_input_file(
        path, what="known_hosts file", limit=MAX_KNOWN_HOSTS_BYTES, missing_fix="check the path"
    )
    lines = text.split("\n")  # OpenSSH's line ends
    problems = [
        Problem("", message, FIX.format(path=path), line=number, file=str(path))
        for number, line in enumerate(lines, start=1)
        if (message := line_problem(line))
    ]
    if problems:
        raise ConfigError(problems, file=str(path))
    return lines[:-1] if lines and lines[-1] == "" else lines
