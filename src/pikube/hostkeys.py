"""SSH host keys that pikube creates for its nodes, and pinning them in known_hosts.

pikube never trusts a host key on first use. It creates each node's ed25519 host key on
the admin machine, hands the private half to the node through a trusted channel (the SD
card's first-boot config, or Vagrant's own connection to a rehearsal VM), and writes the
public half into the cluster's known_hosts before the first SSH connection. Ansible then
runs with ``StrictHostKeyChecking=yes``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pikube.errors import PikubeError

KEY_TYPE = "ssh-ed25519"


class HostKeyConflict(PikubeError):
    """known_hosts already pins a different key for a host pikube is about to pin."""


@dataclass(frozen=True)
class KnownHost:
    """One pinned key: the names it is valid for (hostname, address) and the key."""

    names: tuple[str, ...]
    key: str  # "ssh-ed25519 AAAA..." (type and base64 blob, no comment)

    def line(self) -> str:
        return f"{','.join(self.names)} {self.key}"


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def public_key(private_path: Path) -> str:
    """``ssh-ed25519 AAAA...`` of an existing host key (read from its ``.pub`` file)."""
    fields = Path(f"{private_path}.pub").read_text(encoding="ascii").split()
    return " ".join(fields[:2])


def ensure_host_key(private_path: Path, comment: str) -> tuple[str, bool]:
    """Create an ed25519 host key pair at ``private_path`` (+ ``.pub``) unless it exists.

    Returns the public key (``ssh-ed25519 AAAA...``) and whether it was created now. The
    private key is written with mode 0600 in OpenSSH format, as sshd expects it.
    """
    pub_path = Path(f"{private_path}.pub")
    if private_path.is_file() and pub_path.is_file():
        return public_key(private_path), False
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )
    _write_atomic(private_path, private, 0o600)
    _write_atomic(pub_path, f"{public} {comment}\n".encode("ascii"), 0o644)
    return public, True


def _parse(line: str) -> tuple[set[str], str] | None:
    """Names and key of a plain known_hosts line; None for comments, markers, hashed names."""
    fields = line.split()
    if len(fields) < 3 or fields[0].startswith(("#", "@", "|")):
        return None
    return set(fields[0].split(",")), f"{fields[1]} {fields[2]}"


def pin_known_hosts(path: Path, hosts: Iterable[KnownHost]) -> list[KnownHost]:
    """Add each host's key to ``path`` unless it is there already; return the added ones.

    A different key already pinned for one of the names is a conflict (a real Pi, or an
    older VM, answering on that address): refuse rather than silently replace it.
    """
    existing = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    pinned: list[tuple[set[str], str]] = [p for p in map(_parse, existing) if p is not None]
    added = []
    for host in hosts:
        keys = {key for names, key in pinned if names & set(host.names)}
        if keys - {host.key}:
            raise HostKeyConflict(
                f"known_hosts already pins another key for {' / '.join(host.names)}",
                where=str(path),
                fix=(
                    "rehearse with a cluster file of its own (its own state_dir), or, if "
                    f"that machine is gone, remove the old key: ssh-keygen -R {host.names[-1]} "
                    f"-f {path}"
                ),
            )
        if host.key not in keys:
            added.append(host)
            pinned.append((set(host.names), host.key))
    if added:
        text = "".join(f"{line}\n" for line in existing)
        text += "".join(f"{host.line()}\n" for host in added)
        _write_atomic(path, text.encode("utf-8"), 0o644)
    return added
