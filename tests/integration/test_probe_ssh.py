"""Probes over real SSH (a throwaway sshd on 127.0.0.1): facts, and no blind host-key trust."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pikube.probe.facts import gather_facts
from pikube.probe.ssh import SshTarget
from tests.factories import make_key_pair

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path(SSHD).exists(), reason="needs root and openssh-server"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, Path]]:
    """(port, client private key, known_hosts with the server's real host key)."""
    work = tmp_path_factory.mktemp("sshd")
    host_key = work / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    client_key = make_key_pair(work / "client")
    (work / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    port = free_port()
    (work / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {work}/sshd.pid\n"
        f"AuthorizedKeysFile {work}/authorized_keys\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    server = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(work / "sshd_config")], stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        public = Path(f"{host_key}.pub").read_text().split()
        known_hosts = work / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
        yield port, client_key, known_hosts
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_facts_describe_the_machine(sshd: tuple[int, Path, Path]) -> None:
    port, key, known_hosts = sshd
    facts = gather_facts("local", SshTarget("127.0.0.1", "root", key, known_hosts, port=port))
    assert facts.reachable, facts.error
    assert facts.get("hostname") == socket.gethostname()
    assert facts.get("arch") == platform.machine()
    assert facts.get("kernel") == platform.release()
    assert facts.memory_mb > 0 and facts.integer("cpus") == os.cpu_count()
    assert (
        facts.get("machine_id") == Path("/etc/machine-id").read_text().strip()
        or not Path("/etc/machine-id").exists()
    )
    assert facts.clock_offset is not None and abs(facts.clock_offset) < 5
    assert port in facts.listeners


def test_unknown_host_key_is_refused(sshd: tuple[int, Path, Path], tmp_path: Path) -> None:
    port, key, _ = sshd
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    facts = gather_facts("local", SshTarget("127.0.0.1", "root", key, empty, port=port))
    assert not facts.reachable
    assert facts.error == "host key unknown (no trust on first use)"


def test_changed_host_key_is_refused(sshd: tuple[int, Path, Path], tmp_path: Path) -> None:
    port, key, _ = sshd
    impostor = make_key_pair(tmp_path / "impostor")
    public = Path(f"{impostor}.pub").read_text().split()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    facts = gather_facts("local", SshTarget("127.0.0.1", "root", key, wrong, port=port))
    assert not facts.reachable
    assert "does not match the pinned one" in facts.error


def test_nothing_listening_is_unreachable(sshd: tuple[int, Path, Path]) -> None:
    _, key, known_hosts = sshd
    facts = gather_facts(
        "gone", SshTarget("127.0.0.1", "root", key, known_hosts, port=free_port(), timeout=2)
    )
    assert not facts.reachable and facts.error.startswith("unreachable")
