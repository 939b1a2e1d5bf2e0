"""The rehearsal VM's first boot (vagrant/prepare-node.sh) on a real Debian root filesystem.

`vagrant up` cannot run here, so the script runs as Vagrant would run it (root, via
`sudo -E -H`, the host key uploaded into the Vagrant user's home) in an overlay copy of a
debootstrap'd Debian, in a private mount and PID namespace. Then the node's real sshd
serves loopback and the real ssh client logs in the way Ansible will: as the cluster's
user, with the cluster's key, checking the host key pikube pinned in known_hosts.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pikube.hostkeys import (
    KnownHost,
    ensure_host_keys,
    host_key_dir,
    node_known_hosts,
    pin_known_hosts,
)
from tests.factories import make_key_pair

ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT / "tests" / "vagrant" / "first_boot_in_rootfs.sh"
CACHE = Path(os.environ.get("PIKUBE_TEST_CACHE", "/var/cache/pikube-tests"))
MIRROR = os.environ.get("PIKUBE_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
NODE_IP = "192.168.56.101"  # the node's cluster address: known_hosts pins it

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, chroot)"),
    pytest.mark.skipif(shutil.which("debootstrap") is None, reason="needs debootstrap"),
]


@pytest.fixture(scope="session")
def rootfs() -> Path:
    """A Debian bookworm with openssh-server, sudo and systemd; built once and cached."""
    target = CACHE / "vagrant-first-boot-bookworm"
    if not (target / "usr" / "sbin" / "sshd").is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        building = CACHE / f".vagrant-first-boot-bookworm.{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        try:
            subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=openssh-server,sudo,systemd",
                    "bookworm",
                    str(building),
                    MIRROR,
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            shutil.rmtree(target, ignore_errors=True)
            building.rename(target)
        except subprocess.CalledProcessError as err:
            pytest.fail(f"debootstrap from {MIRROR} failed:\n{err.stdout[-2000:]}{err.stderr}")
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Node:
    """The namespace running the first boot and then the node's sshd on loopback."""

    def __init__(self, rootfs: Path, work: Path, user: str, key: Path, host_keys: Path) -> None:
        self.work = work
        self.out = work / "out"
        self.port = free_port()
        authorized_key = Path(f"{key}.pub").read_text().strip()
        argv = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "bash", str(HELPER)]
        argv += [str(rootfs), str(work), str(host_keys), user, authorized_key, str(self.port)]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def wait_ready(self) -> None:
        while not (self.out / "ready").exists():
            if self.process.poll() is not None:
                stdout, stderr = self.process.communicate()
                raise AssertionError(f"first boot failed:\n{stdout}\n{stderr}")
            time.sleep(0.1)

    def stop(self) -> None:
        (self.work / "done").touch()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def node(rootfs: Path, tmp_path: Path) -> Iterator[tuple[Node, Path, Path]]:
    key = make_key_pair(tmp_path / "admin", "id_test")
    state = tmp_path / "state"
    keys = ensure_host_keys(state, "pi-cp1")
    known_hosts = state / "known_hosts"
    pin_known_hosts(known_hosts, node_known_hosts("pi-cp1", NODE_IP, keys))
    running = Node(rootfs, tmp_path / "node", "ubuntu", key, host_key_dir(state, "pi-cp1"))
    try:
        running.wait_ready()
        yield running, key, known_hosts
    finally:
        running.stop()


def ssh(node: Node, key: Path, known_hosts: Path, command: str) -> subprocess.CompletedProcess[str]:
    """Log in as Ansible does: the node's address names the pinned key, checking on."""
    options = {
        "IdentitiesOnly": "yes",
        "BatchMode": "yes",
        "UserKnownHostsFile": str(known_hosts),
        "StrictHostKeyChecking": "yes",
        "HostKeyAlias": NODE_IP,
        "ConnectTimeout": "10",
    }
    argv = ["ssh", "-F", "/dev/null", "-p", str(node.port), "-i", str(key)]
    for name, value in options.items():
        argv += ["-o", f"{name}={value}"]
    return subprocess.run([*argv, "ubuntu@127.0.0.1", command], capture_output=True, text=True)


def test_cluster_user_logs_in_with_pinned_host_key_and_has_sudo(
    node: tuple[Node, Path, Path],
) -> None:
    running, key, known_hosts = node
    result = ssh(running, key, known_hosts, "id -un; sudo -n id -u")
    assert result.returncode == 0, result.stderr + (running.out / "sshd.log").read_text()
    assert result.stdout.split() == ["ubuntu", "0"]


def test_a_different_pinned_key_is_refused(node: tuple[Node, Path, Path], tmp_path: Path) -> None:
    running, key, _ = node
    wrong = tmp_path / "wrong_known_hosts"
    others = ensure_host_keys(tmp_path / "other", "other")
    pin_known_hosts(wrong, [KnownHost((NODE_IP,), key.known_hosts_key) for key in others])
    result = ssh(running, key, wrong, "true")
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_first_boot_is_idempotent_and_leaves_safe_modes(node: tuple[Node, Path, Path]) -> None:
    running, _, _ = node
    out = running.out
    assert (out / "first.sha256").read_text() == (out / "second.sha256").read_text()
    modes = {
        path: (mode, owner)
        for path, mode, owner in (line.split() for line in (out / "modes").read_text().splitlines())
    }
    assert modes == {
        "/etc/ssh/ssh_host_ed25519_key": ("600", "root"),
        "/etc/ssh/ssh_host_ecdsa_key": ("600", "root"),
        "/home/ubuntu/.ssh": ("700", "ubuntu"),
        "/home/ubuntu/.ssh/authorized_keys": ("600", "ubuntu"),
        "/etc/sudoers.d/90-pikube-ubuntu": ("440", "root"),
    }
    # The uploaded private keys do not stay in the Vagrant user's home.
    assert (out / "upload").read_text().strip() == "removed"


def test_first_boot_turns_swap_off_for_good(node: tuple[Node, Path, Path]) -> None:
    running, _, _ = node
    assert (running.out / "swapoff-calls").read_text().splitlines() == ["swapoff -a"] * 2
    swap_lines = [
        line for line in (running.out / "fstab").read_text().splitlines() if "swap" in line
    ]
    assert swap_lines == ["# /swap.img none swap sw 0 0  # disabled by pikube"]
