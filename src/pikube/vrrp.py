"""The VRRP password keepalived's peers share, one per cluster, kept in the state dir.

keepalived's ``auth_pass`` keeps at most 8 characters (longer ones are cut, with a warning),
so the password is 8 letters or digits drawn with ``secrets`` (47 bits: VRRP's simple
password authentication only keeps a misconfigured or stray router on the LAN out of the
group; it is no protection against someone who can read LAN traffic, where it goes in clear).

It lives next to the host keys, as they do: ``STATE_DIR/vrrp-auth-pass``, mode 0600,
written atomically under a lock, created once and then reused (every control plane must
agree on it). It is never printed; the pikube_vip role reads it with a no_log task.
"""

from __future__ import annotations

import os
import re
import secrets
import string
from pathlib import Path

from pikube.errors import PikubeError
from pikube.hostkeys import locked, write_atomic
from pikube.invoker import hand_over

AUTH_PASS_FILE = "vrrp-auth-pass"  # noqa: S105 - the file name, not a password
AUTH_PASS_LENGTH = 8  # keepalived's limit for auth_pass (vrrp_parser.c: VRRP_AUTH_LEN)
AUTH_PASS_CHARS = string.ascii_letters + string.digits
AUTH_PASS_RE = re.compile(rf"[A-Za-z0-9]{{{AUTH_PASS_LENGTH}}}")


def auth_pass_path(state_dir: Path) -> Path:
    return state_dir / AUTH_PASS_FILE


def ensure_auth_pass(state_dir: Path) -> Path:
    """The cluster's VRRP password file, created (0600) if missing; returns its path.

    A file that exists but does not hold a valid password is an error, never overwritten:
    the control planes already running keepalived use what it held.
    """
    path = auth_pass_path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with locked(state_dir / f".{AUTH_PASS_FILE}.lock"):
        if not path.exists():
            password = "".join(secrets.choice(AUTH_PASS_CHARS) for _ in range(AUTH_PASS_LENGTH))
            write_atomic(path, password.encode("ascii") + b"\n", 0o600)
        elif not AUTH_PASS_RE.fullmatch(path.read_text(errors="replace").strip()):
            raise PikubeError(
                f"{path} does not hold a VRRP password (8 letters or digits)",
                fix=f"delete {path}; pikube writes a new one and the next `pikube up` "
                "gives it to every control plane",
            )
        os.chmod(path, 0o600)
        hand_over(path)
    return path
