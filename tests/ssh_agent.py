"""A passphrase-protected key held by a real ssh-agent, as most users' keys are."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PASSPHRASE = "correct horse battery staple"


def make_protected_key(directory: Path, name: str = "id_protected") -> Path:
    """An ed25519 key pair whose private key is encrypted with ``PASSPHRASE``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / name
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-C", "pikube-agent-test"]
    subprocess.run([*argv, "-f", str(key)], check=True)
    return key


@contextmanager
def ssh_agent_holding(key: Path, work: Path) -> Iterator[str]:
    """A running ``ssh-agent -a SOCK`` with ``key`` added (its passphrase given through
    SSH_ASKPASS, as a desktop session does); yields the socket for SSH_AUTH_SOCK."""
    sock = work / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(200):
            if sock.exists():
                with socket.socket(socket.AF_UNIX) as probe:
                    if probe.connect_ex(str(sock)) == 0:
                        break
            time.sleep(0.025)
        askpass = work / "askpass"
        askpass.write_text(f"#!/bin/sh\necho '{PASSPHRASE}'\n")
        askpass.chmod(0o700)
        env = {
            **os.environ,
            "SSH_AUTH_SOCK": str(sock),
            "SSH_ASKPASS": str(askpass),
            "SSH_ASKPASS_REQUIRE": "force",
        }
        subprocess.run(
            ["ssh-add", str(key)],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
            timeout=30,
        )
        yield str(sock)
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        sock.unlink(missing_ok=True)
