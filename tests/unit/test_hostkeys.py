"""Host keys pikube creates for its nodes, and pinning them in known_hosts."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from pikube.hostkeys import HostKeyConflict, KnownHost, ensure_host_key, pin_known_hosts


def test_created_host_key_is_an_openssh_ed25519_key_sshd_can_load(tmp_path: Path) -> None:
    private = tmp_path / "host_keys" / "cp" / "ssh_host_ed25519_key"
    public, created = ensure_host_key(private, "root@cp")
    assert created
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    # ssh-keygen derives the same public key from the private file: a valid key pair.
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(private)], check=True, capture_output=True, text=True
    ).stdout.split()
    assert " ".join(derived[:2]) == public
    assert public.startswith("ssh-ed25519 ")
    assert Path(f"{private}.pub").read_text().split()[:2] == public.split()


def test_existing_host_key_is_kept(tmp_path: Path) -> None:
    private = tmp_path / "ssh_host_ed25519_key"
    first, _ = ensure_host_key(private, "root@cp")
    second, created = ensure_host_key(private, "root@cp")
    assert (second, created) == (first, False)


def test_pinning_adds_each_host_once_and_keeps_other_lines(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("other.lan ssh-ed25519 AAAAother\n")
    key_cp, _ = ensure_host_key(tmp_path / "cp", "root@cp")
    key_w1, _ = ensure_host_key(tmp_path / "w1", "root@w1")
    hosts = [KnownHost(("cp", "10.9.0.10"), key_cp), KnownHost(("w1", "10.9.0.11"), key_w1)]
    assert pin_known_hosts(known_hosts, hosts) == hosts
    assert pin_known_hosts(known_hosts, hosts) == []
    lines = known_hosts.read_text().splitlines()
    assert lines == [
        "other.lan ssh-ed25519 AAAAother",
        f"cp,10.9.0.10 {key_cp}",
        f"w1,10.9.0.11 {key_w1}",
    ]
    # OpenSSH itself finds the pinned key for the address.
    found = subprocess.run(
        ["ssh-keygen", "-F", "10.9.0.11", "-f", str(known_hosts)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert key_w1 in found


def test_a_different_key_already_pinned_for_the_address_is_a_conflict(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    real_pi, _ = ensure_host_key(tmp_path / "real", "root@real")
    vm, _ = ensure_host_key(tmp_path / "vm", "root@vm")
    pin_known_hosts(known_hosts, [KnownHost(("10.9.0.10",), real_pi)])
    before = known_hosts.read_text()
    with pytest.raises(HostKeyConflict) as err:
        pin_known_hosts(known_hosts, [KnownHost(("cp", "10.9.0.10"), vm)])
    assert known_hosts.read_text() == before
    assert "ssh-keygen -R 10.9.0.10" in (err.value.fix or "")
