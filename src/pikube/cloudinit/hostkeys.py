"""Per-node SSH host keys, generated before flashing, and the known_hosts file pikube uses.

Keys live in ``STATE_DIR/hostkeys/NODE/ssh_host_{ed25519,ecdsa}_key[.pub]`` (folder 0700,
private keys 0600) and are reused when a node is re-flashed, so its known_hosts entry stays
valid. They are generated with ``ssh-keygen`` (OpenSSH's own format, which cloud-init
writes to /etc/ssh unchanged). Private keys are never printed or logged.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pikube.errors import PikubeError

KEY_TYPES = ("ed25519", "ecdsa")  # cloud-init's ssh_keys names; ecdsa for older clients


@dataclass(frozen=True)
class HostKey:
    type: str  # ed25519 | ecdsa
    private: str
    public: str  # "ssh-ed25519 AAAA... comment"

    def __repr__(self) -> str:  # never show the private key
        return f"HostKey(type={self.type!r}, public={self.public!r})"

    @property
    def known_hosts_key(self) -> str:
        """``KEYTYPE BASE64`` (the public key without its comment)."""
        return " ".join(self.public.split()[:2])


def keygen_argv(key_type: str, path: Path, comment: str) -> list[str]:
    argv = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", comment, "-f", str(path)]
    if key_type == "ecdsa":
        argv[4:4] = ["-b", "256"]
    return argv


def host_key_dir(state_dir: Path, node: str) -> Path:
    return state_dir / "hostkeys" / node


def ensure_host_keys(state_dir: Path, node: str) -> list[HostKey]:
    """Load the node's host keys, generating the missing ones (0600, in a 0700 folder)."""
    folder = host_key_dir(state_dir, node)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    keys = []
    for key_type in KEY_TYPES:
        private = folder / f"ssh_host_{key_type}_key"
        public = folder / f"ssh_host_{key_type}_key.pub"
        if not (private.is_file() and public.is_file()):
            _generate(key_type, private, comment=f"root@{node}")
        os.chmod(private, 0o600)
        keys.append(HostKey(key_type, private.read_text(), public.read_text().strip()))
    return keys


def _generate(key_type: str, private: Path, *, comment: str) -> None:
    # Generate in a private temporary folder, then move both files into place together.
    with tempfile.TemporaryDirectory(dir=private.parent) as tmp:
        target = Path(tmp) / private.name
        try:
            subprocess.run(  # noqa: S603 - argv list from keygen_argv
                keygen_argv(key_type, target, comment), check=True, capture_output=True, text=True
            )
        except FileNotFoundError:
            raise PikubeError(
                "ssh-keygen is not installed",
                fix="install OpenSSH's client tools (Debian/Ubuntu: apt install openssh-client)",
            ) from None
        except subprocess.CalledProcessError as err:
            raise PikubeError(
                f"ssh-keygen failed to create a {key_type} host key: {err.stderr.strip()}",
                where=str(private),
            ) from None
        os.chmod(target, 0o600)
        os.replace(target.with_name(target.name + ".pub"), private.with_name(private.name + ".pub"))
        os.replace(target, private)


def known_hosts_lines(name: str, ip: str, keys: list[HostKey]) -> list[str]:
    return [f"{name},{ip} {key.known_hosts_key}" for key in keys]


def update_known_hosts(path: Path, name: str, ip: str, keys: list[HostKey]) -> None:
    """Replace the node's entries (by name or address) with ``NAME,IP KEYTYPE KEY`` lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text().splitlines() if path.is_file() else []
    kept = []
    for line in old:
        hosts = line.split()[0].split(",") if line.strip() and not line.startswith("#") else []
        hosts = [h.strip("[]").split("]:")[0] for h in hosts]
        if name in hosts or ip in hosts:
            continue
        kept.append(line)
    text = "\n".join([*kept, *known_hosts_lines(name, ip, keys)]) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
