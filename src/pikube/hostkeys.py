"""SSH host keys that pikube creates for its nodes, and pinning them in known_hosts.

pikube never trusts a host key on first use. It creates each node's host keys on the admin
machine, hands the private halves to the node through a trusted channel (the SD card's
cloud-init seed, or Vagrant's own connection to a rehearsal VM), and writes the public
halves into the cluster's known_hosts before the first SSH connection. Ansible then runs
with ``StrictHostKeyChecking=yes``.

One store for every way a node comes to life: ``STATE_DIR/hostkeys/NODE/ssh_host_{ed25519,
ecdsa}_key[.pub]`` (folder 0700, private keys 0600, OpenSSH format as sshd and cloud-init
expect them). Keys are reused when a card is re-flashed or a VM re-created, so a node keeps
one identity and its known_hosts entry stays valid. Private keys are never printed or logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pikube.config.known_hosts import read_known_hosts
from pikube.errors import PikubeError
from pikube.invoker import hand_over

KEY_TYPES = ("ed25519", "ecdsa")  # cloud-init's ssh_keys names; ecdsa for older clients


class HostKeyConflict(PikubeError):
    """known_hosts already pins a different key for a host pikube is about to pin."""


@dataclass(frozen=True)
class HostKey:
    """One of a node's host keys, as files in the store and as text."""

    type: str  # ed25519 | ecdsa
    path: Path  # the private half; the public half is next to it with ``.pub``
    private: str
    public: str  # "ssh-ed25519 AAAA... root@node"

    def __repr__(self) -> str:  # never show the private key
        return f"HostKey(type={self.type!r}, public={self.public!r})"

    @property
    def known_hosts_key(self) -> str:
        """``KEYTYPE BASE64`` (the public key without its comment)."""
        return " ".join(self.public.split()[:2])


@dataclass(frozen=True)
class KnownHost:
    """One pinned key: the names it is valid for (hostname, address) and the key."""

    names: tuple[str, ...]
    key: str  # "ssh-ed25519 AAAA..." (type and base64 blob, no comment)

    def line(self) -> str:
        return f"{','.join(self.names)} {self.key}"


def host_key_dir(state_dir: Path, node: str) -> Path:
    return state_dir / "hostkeys" / node


def write_atomic(path: Path, data: bytes, mode: int) -> None:
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


KEYGEN_ARGS = {"ed25519": ["-t", "ed25519"], "ecdsa": ["-t", "ecdsa", "-b", "256"]}


def _generate(key_type: str) -> tuple[bytes, str]:
    """A new key pair: the private key in OpenSSH format and ``TYPE BASE64``.

    Made by OpenSSH's own ssh-keygen (installed with the SSH client pikube needs anyway),
    as sshd and cloud-init make host keys on a first boot. In-process key generation loaded
    OpenSSL's bindings into pikube: +10 MiB for the rest of a `pikube flash` (measured).
    """
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise PikubeError(
            "ssh-keygen is missing: pikube needs it to create the nodes' SSH host keys",
            fix="install the OpenSSH client (apt-get install openssh-client)",
        )
    with tempfile.TemporaryDirectory(prefix="pikube-hostkey-") as folder:
        path = Path(folder) / "key"
        proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [keygen, "-q", *KEYGEN_ARGS[key_type], "-N", "", "-C", "", "-f", str(path)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if proc.returncode != 0:
            raise PikubeError(
                f"ssh-keygen could not create an {key_type} host key: {proc.stderr.strip()}",
                fix="check that ssh-keygen works: ssh-keygen -t ed25519 -f /tmp/test-key",
            )
        public = " ".join(path.with_suffix(".pub").read_text().split()[:2])
        return path.read_bytes(), public


@contextlib.contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock (flock) on ``lock_file``, created if needed and kept: a lock
    file that is never removed cannot be replaced under a process waiting for it."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        hand_over(lock_file)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure_host_keys(state_dir: Path, node: str) -> list[HostKey]:
    """The node's host keys (ed25519, ecdsa), creating the missing ones in the store.

    Checking, creating and reading happen under a lock on the node's folder, so two
    flashes of a new node at once agree on one set of keys (the second reads what the
    first created), and no one reads half of a pair being written.
    """
    folder = host_key_dir(state_dir, node)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    keys = []
    with locked(folder / ".lock"):
        for key_type in KEY_TYPES:
            private = folder / f"ssh_host_{key_type}_key"
            public = folder / f"ssh_host_{key_type}_key.pub"
            if not (private.is_file() and public.is_file()):
                private_bytes, public_text = _generate(key_type)
                # The public half first: a private key without it would be regenerated.
                write_atomic(public, f"{public_text} root@{node}\n".encode("ascii"), 0o644)
                write_atomic(private, private_bytes, 0o600)
            os.chmod(private, 0o600)
            hand_over(public)
            hand_over(private)
            keys.append(HostKey(key_type, private, private.read_text(), public.read_text().strip()))
    return keys


def node_known_hosts(name: str, ip: str, keys: Iterable[HostKey]) -> list[KnownHost]:
    """The known_hosts entries for a node: each key valid for its name and address."""
    return [KnownHost((name, ip), key.known_hosts_key) for key in keys]


def _entry_names(line: str) -> set[str]:
    """The host names of a plain known_hosts line (``[host]:port`` reduced to host)."""
    fields = line.split()
    if len(fields) < 3 or fields[0].startswith(("#", "@", "|")):
        return set()
    return {name.strip("[]").split("]:")[0] for name in fields[0].split(",")}


def _entry_key(line: str) -> str:
    fields = line.split()
    return f"{fields[1]} {fields[2]}"


def pin_known_hosts(
    path: Path, hosts: Iterable[KnownHost], *, replace: bool = False
) -> list[KnownHost]:
    """Add each host's key to ``path`` unless it is there already; return the added ones.

    A different key already pinned for one of the names is, by default, a conflict (a real
    Pi, or another machine, answering on that address): refuse rather than silently replace
    it. ``replace=True`` is for a node pikube has just given these keys (a freshly flashed
    card): any other key pinned for its names is stale and is removed. Lines pikube does
    not understand (comments, markers, hashed names) are kept as they are.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Read, change and replace under a lock: two flashes at once must not drop each
    # other's lines.
    with locked(path.with_name(f".{path.name}.lock")):
        return _pin(path, list(hosts), replace=replace)


def _pin(path: Path, hosts: list[KnownHost], *, replace: bool) -> list[KnownHost]:
    old = read_known_hosts(path)
    lines = list(old)

    def ours(host: KnownHost) -> set[str]:  # every key being pinned for this machine
        return {h.key for h in hosts if set(h.names) & set(host.names)}

    if replace:
        for host in hosts:
            lines = [
                line
                for line in lines
                if not (_entry_names(line) & set(host.names) and _entry_key(line) not in ours(host))
            ]
    added: list[KnownHost] = []
    for host in hosts:
        keys = {_entry_key(line) for line in lines if _entry_names(line) & set(host.names)}
        if keys - ours(host):
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
            lines.append(host.line())
    if lines != old:
        write_atomic(path, "".join(f"{line}\n" for line in lines).encode("utf-8"), 0o644)
        hand_over(path)
    return added
