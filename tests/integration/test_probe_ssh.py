"""Probes over real SSH (a throwaway sshd on 127.0.0.1): facts, and no blind host-key trust."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pikube.probe.boot import wait_for_ssh
from pikube.probe.facts import gather_facts
from pikube.probe.ssh import ProbeError, SshConnections, SshTarget
from tests.factories import make_key_pair
from tests.ssh_agent import make_protected_key, ssh_agent_holding

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path(SSHD).exists(), reason="needs root and openssh-server"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sshd(work: Path, port: int, path: str = "") -> subprocess.Popen[bytes]:
    """sshd on 127.0.0.1:``port`` with ``work``'s host key and authorized_keys; ``path``: the
    sessions' PATH (sshd_config SetEnv), to put a stand-in command first."""
    config = work / f"sshd_config.{port}"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work}/ssh_host_ed25519_key\n"
        f"PidFile {work}/sshd.{port}.pid\n"
        f"AuthorizedKeysFile {work}/authorized_keys\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\n" + (f"SetEnv PATH={path}\n" if path else "")
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    return subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)


def wait_listening(port: int) -> None:
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)


def pin(work: Path, port: int) -> Path:
    """A known_hosts with the throwaway sshd's real host key for 127.0.0.1:``port``."""
    public = Path(f"{work}/ssh_host_ed25519_key.pub").read_text().split()
    known_hosts = work / f"known_hosts.{port}"
    known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    return known_hosts


@pytest.fixture(scope="module")
def sshd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Host key, a client key pair and authorized_keys for throwaway sshds."""
    work = tmp_path_factory.mktemp("sshd")
    host_key = work / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    client_key = make_key_pair(work / "client")
    (work / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    return work


@pytest.fixture(scope="module")
def sshd(sshd_dir: Path) -> Iterator[tuple[int, Path, Path]]:
    """(port, client private key, known_hosts with the server's real host key)."""
    port = free_port()
    server = start_sshd(sshd_dir, port)
    try:
        wait_listening(port)
        yield port, sshd_dir / "client" / "id_ed25519", pin(sshd_dir, port)
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


@pytest.fixture
def silent() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP port on 127.0.0.1 that accepts connections and never says a word (a Pi whose
    kernel is up but whose sshd is not answering yet), and the connections it accepted."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1]), held
    finally:
        done.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def test_a_port_without_ssh_greeting_reads_as_still_booting(
    sshd: tuple[int, Path, Path],
    silent: tuple[int, list[socket.socket]],
    capfd: pytest.CaptureFixture[str],
) -> None:
    _, key, known_hosts = sshd
    target = SshTarget("127.0.0.1", "root", key, known_hosts, port=silent[0], timeout=2)
    facts = gather_facts("booting", target)
    assert not facts.reachable
    assert "booting?" in facts.error
    assert "--wait-boot" in facts.fix
    assert "Traceback" not in capfd.readouterr().err


@pytest.fixture(scope="module")
def protected_key(sshd_dir: Path) -> Path:
    """A passphrase-protected key, authorised on the throwaway sshds."""
    key = make_protected_key(sshd_dir / "protected")
    with (sshd_dir / "authorized_keys").open("a") as keys:
        keys.write(Path(f"{key}.pub").read_text())
    return key


def test_a_passphrase_key_logs_in_through_ssh_agent(
    sshd: tuple[int, Path, Path],
    protected_key: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, _, known_hosts = sshd
    with ssh_agent_holding(protected_key, tmp_path) as sock:
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        target = SshTarget("127.0.0.1", "root", protected_key, known_hosts, port=port)
        facts = gather_facts("local", target)
    assert facts.reachable, facts.error
    assert facts.get("hostname") == socket.gethostname()


def test_a_passphrase_key_without_agent_is_a_clean_login_failure(
    sshd: tuple[int, Path, Path], protected_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _, known_hosts = sshd
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    facts = gather_facts(
        "local", SshTarget("127.0.0.1", "root", protected_key, known_hosts, port=port)
    )
    assert not facts.reachable
    assert facts.error == "SSH login refused"
    assert f"ssh-add {protected_key}" in facts.fix


def test_a_passphrase_key_in_the_agent_but_not_authorised_points_at_user_and_key(
    sshd: tuple[int, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _, known_hosts = sshd
    stranger = make_protected_key(tmp_path / "stranger")  # not in authorized_keys
    with ssh_agent_holding(stranger, tmp_path) as sock:
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        target = SshTarget("127.0.0.1", "root", stranger, known_hosts, port=port)
        facts = gather_facts("local", target)
    assert facts.error == "SSH login refused"
    assert "ssh-add" not in facts.fix and "check ssh.user (root)" in facts.fix


def test_wait_boot_sees_a_node_that_comes_up_during_the_wait(
    sshd: tuple[int, Path, Path], sshd_dir: Path
) -> None:
    port, key, known_hosts = sshd
    late_port = free_port()
    late: list[subprocess.Popen[bytes]] = []
    boot = threading.Timer(2.0, lambda: late.append(start_sshd(sshd_dir, late_port)))
    targets = {
        "ready": SshTarget("127.0.0.1", "root", key, known_hosts, port=port),
        "late": SshTarget("127.0.0.1", "root", key, pin(sshd_dir, late_port), port=late_port),
    }
    boot.start()
    try:
        events = list(wait_for_ssh(targets, timeout=120, interval=0.5))
    finally:
        boot.join()
        for server in late:
            server.terminate()
            server.wait(timeout=10)
    states = {name: [e.state for e in events if e.node == name] for name in targets}
    assert states["ready"] == ["up"]
    assert states["late"][0] == "waiting" and states["late"][-1] == "up"
    waiting = next(e for e in events if e.node == "late")
    assert waiting.reason.startswith("unreachable: connection refused")


# A stand-in for cloud-init's `status` command (cloudinit/cmd/status.py prints "status: " and
# one of running, degraded running, done, error, disabled, not run): running while the flag
# file exists.
FAKE_CLOUD_INIT = """#!/bin/sh
[ "$1" = status ] || exit 2
if [ -e {flag} ]; then echo 'status: running'; else echo 'status: done'; fi
"""


def test_wait_boot_waits_for_cloud_init_to_finish_the_first_boot(
    sshd_dir: Path, tmp_path: Path
) -> None:
    """SSH answering with the pinned key is not yet booted while cloud-init runs: its later
    stages restart sshd (ssh_pwauth), so the next connection could be refused."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    flag = tmp_path / "first-boot-running"
    flag.touch()
    stand_in = bin_dir / "cloud-init"
    stand_in.write_text(FAKE_CLOUD_INIT.format(flag=flag))
    stand_in.chmod(0o755)
    port = free_port()
    server = start_sshd(sshd_dir, port, path=f"{bin_dir}:/usr/bin:/bin")
    finish = threading.Timer(3.0, flag.unlink)
    target = SshTarget(
        "127.0.0.1", "root", sshd_dir / "client" / "id_ed25519", pin(sshd_dir, port), port=port
    )
    try:
        wait_listening(port)
        finish.start()
        events = list(wait_for_ssh({"pi": target}, timeout=60, interval=0.5))
    finally:
        finish.join()
        server.terminate()
        server.wait(timeout=10)
    assert [e.state for e in events] == ["waiting", "up"]
    assert events[0].reason == "booting: first boot not finished (cloud-init is still running)"
    assert events[1].elapsed >= 2.5


def test_wait_boot_gives_up_on_a_node_that_never_answers(sshd: tuple[int, Path, Path]) -> None:
    _, key, known_hosts = sshd
    target = SshTarget("127.0.0.1", "root", key, known_hosts, port=free_port(), timeout=2)
    events = list(wait_for_ssh({"gone": target}, timeout=3, interval=0.5))
    assert [e.state for e in events] == ["waiting", "down"]
    assert events[-1].reason.startswith("unreachable: connection refused")


def test_a_run_tries_each_node_once_however_many_commands(
    sshd: tuple[int, Path, Path], silent: tuple[int, list[socket.socket]]
) -> None:
    """status runs facts and kubectl on the control plane: one failed login serves both."""
    _, key, known_hosts = sshd
    port, accepted = silent
    target = SshTarget("127.0.0.1", "root", key, known_hosts, port=port, timeout=1)
    with SshConnections() as connections:
        reasons = []
        for command in ("true", "true"):
            with pytest.raises(ProbeError) as caught:
                connections.run(target, command)
            reasons.append(caught.value.reason)
    assert len(accepted) == 1
    assert reasons[0] == reasons[1] and "booting?" in reasons[0]
