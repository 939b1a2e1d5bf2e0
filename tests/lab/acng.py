"""The host's caching apt proxy (apt-cacher-ng), shared by every lab on the machine.

One apt-cacher-ng listens on 127.0.0.1:3142 only, with the Debian backends remapped to the
mirror the host uses (deb.debian.org). It is host infrastructure like a system service: labs
start it when it is not running and never stop it (other labs may be using it). Each lab
makes it reachable on its own bridge address with a small TCP forwarder (``services.py``),
so the proxy is never exposed on the host's uplink.

If the machine already runs the distribution's apt-cacher-ng on all addresses (a systemd
host where ``apt-get install apt-cacher-ng`` started it), that one is used as is.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ACNG_PORT = 3142
ACNG_LOCAL_URL = f"http://127.0.0.1:{ACNG_PORT}"
ACNG_HOME = Path(os.environ.get("PIKUBE_LAB_ACNG_HOME", "/var/lib/pikube-lab/acng"))
ACNG_CACHE = Path(os.environ.get("PIKUBE_LAB_CACHE", "/var/cache/pikube-lab")) / "acng"

ACNG_CONF = f"""\
# Written by the pikube lab (tests/lab/acng.py).
CacheDir: {ACNG_CACHE}
LogDir: {ACNG_HOME}/log
SupportDir: /usr/lib/apt-cacher-ng
Port: {ACNG_PORT}
BindAddress: 127.0.0.1
PidFile: {ACNG_HOME}/pid
Remap-debrep: file:deb_mirror*.gz /debian ; http://deb.debian.org/debian/
Remap-secdeb: security.debian.org deb.debian.org/debian-security /debian-security ; \
http://deb.debian.org/debian-security/
ExThreshold: 4
# The lab's own HTTP server (stand-in apt repository on BRIDGE:8080) is reached through the
# proxy too when a node's apt uses it for everything, as pikube's apt_proxy setting does:
# allow that port, and never cache it (its packages are rebuilt under the same names).
AllowUserPorts: 80 8080
DontCache: :8080/
"""


def listening(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _our_pid() -> int | None:
    """PID of the apt-cacher-ng this module started, if it still runs."""
    try:
        pid = int((ACNG_HOME / "pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"apt-cacher-ng" in cmdline and str(ACNG_HOME).encode() in cmdline else None


def ensure_acng() -> None:
    """Start the shared apt-cacher-ng on 127.0.0.1:3142 unless something already serves it.

    Ours is restarted when its configuration changed (a newer lab version).
    """
    conf = ACNG_HOME / "acng.conf"
    ours = _our_pid()
    if ours is not None and conf.exists() and conf.read_text() != ACNG_CONF:
        os.kill(ours, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while listening("127.0.0.1", ACNG_PORT) and time.monotonic() < deadline:
            time.sleep(0.1)
    if listening("127.0.0.1", ACNG_PORT):
        if _our_pid() is None:
            print(
                "lab: using the apt-cacher-ng already on 127.0.0.1:3142; if nodes get "
                "'403 ... prohibited port' for the lab repository, add 'AllowUserPorts: 80 8080'"
                " and 'DontCache: :8080/' to its configuration",
                file=sys.stderr,
            )
        return
    binary = shutil.which("apt-cacher-ng") or "/usr/sbin/apt-cacher-ng"
    if not Path(binary).exists():
        raise FileNotFoundError("apt-cacher-ng is not installed (apt-get install apt-cacher-ng)")
    (ACNG_HOME / "log").mkdir(parents=True, exist_ok=True)
    ACNG_CACHE.mkdir(parents=True, exist_ok=True)
    (ACNG_HOME / "acng.conf").write_text(ACNG_CONF)
    # acng daemonizes itself; its own process group keeps it out of our signal handling.
    subprocess.run(
        [binary, "-c", str(ACNG_HOME)],
        check=True,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if listening("127.0.0.1", ACNG_PORT):
            return
        time.sleep(0.1)
    raise RuntimeError(f"apt-cacher-ng did not start on 127.0.0.1:{ACNG_PORT}; see {ACNG_HOME}/log")


USER_MARKER = "uses-acng"  # in a lab's state dir while the lab exists


@contextlib.contextmanager
def users_lock() -> Iterator[None]:
    """Serialises labs registering as proxy users with the last lab stopping the proxy."""
    ACNG_HOME.mkdir(parents=True, exist_ok=True)
    with (ACNG_HOME / "users.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def stop_ours() -> None:
    """Stop the apt-cacher-ng the lab started (never one it found running)."""
    pid = _our_pid()
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _our_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        if _our_pid() is not None:
            os.kill(pid, signal.SIGKILL)
