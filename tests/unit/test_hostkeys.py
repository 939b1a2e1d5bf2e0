"""Host keys pikube creates for its nodes (one store for cards and VMs), pinned in known_hosts."""

from __future__ import annotations

import base64
import hashlib
import multiprocessing
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pikube.errors import ConfigError
from pikube.hostkeys import (
    HostKeyConflict,
    KnownHost,
    ensure_host_keys,
    host_key_dir,
    node_known_hosts,
    pin_known_hosts,
)


def _key(key_type: str, tag: str) -> str:
    """A well-formed known_hosts key of ``key_type`` (a blob naming its type), unique per tag:
    pikube refuses malformed lines, so other lines of a user's file must be real-looking."""
    name = key_type.encode()
    body = hashlib.sha256(tag.encode()).digest()
    blob = len(name).to_bytes(4, "big") + name + len(body).to_bytes(4, "big") + body
    return f"{key_type} {base64.b64encode(blob).decode()}"


def ssh_keygen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh-keygen", *args], capture_output=True, text=True)


def test_created_host_keys_are_openssh_key_pairs_sshd_can_load(tmp_path: Path) -> None:
    keys = ensure_host_keys(tmp_path, "cp")
    assert [k.type for k in keys] == ["ed25519", "ecdsa"]
    folder = host_key_dir(tmp_path, "cp")
    assert folder == tmp_path / "hostkeys" / "cp"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for key in keys:
        assert key.path == folder / f"ssh_host_{key.type}_key"
        assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
        # OpenSSH derives the same public key from the private file: a valid key pair.
        derived = ssh_keygen("-y", "-f", str(key.path))
        assert derived.returncode == 0, derived.stderr
        assert " ".join(derived.stdout.split()[:2]) == key.known_hosts_key
        assert key.public.endswith(" root@cp")
    assert keys[0].known_hosts_key.startswith("ssh-ed25519 ")
    assert keys[1].known_hosts_key.startswith("ecdsa-sha2-nistp256 ")


def test_existing_host_keys_are_reused_and_never_shown(tmp_path: Path) -> None:
    first = ensure_host_keys(tmp_path, "cp")
    second = ensure_host_keys(tmp_path, "cp")
    assert [k.public for k in second] == [k.public for k in first]  # re-flash keeps them
    assert [k.private for k in second] == [k.private for k in first]
    for key in first:
        assert "PRIVATE" not in repr(key) and "PRIVATE" in key.private


def test_a_private_key_without_its_public_half_is_replaced_by_a_whole_pair(
    tmp_path: Path,
) -> None:
    first = ensure_host_keys(tmp_path, "cp")
    Path(f"{first[0].path}.pub").unlink()
    second = ensure_host_keys(tmp_path, "cp")
    assert second[0].public != first[0].public
    derived = ssh_keygen("-y", "-f", str(second[0].path)).stdout.split()[:2]
    assert " ".join(derived) == second[0].known_hosts_key


def test_pinning_adds_each_key_once_and_keeps_other_lines(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    other = next(h.key for h in node_known_hosts("o", "10.9.0.9", ensure_host_keys(tmp_path, "o")))
    hashed = "|1|c2FsdHNhbHRzYWx0c2FsdHNhbHQ=|aGFzaGhhc2hoYXNoaGFzaGhhc2g="
    mine = ["# mine", f"other.lan {other}", f"{hashed} {other}"]
    known_hosts.write_text("\n".join(mine) + "\n")
    cp = node_known_hosts("cp", "10.9.0.10", ensure_host_keys(tmp_path, "cp"))
    w1 = node_known_hosts("w1", "10.9.0.11", ensure_host_keys(tmp_path, "w1"))
    assert pin_known_hosts(known_hosts, [*cp, *w1]) == [*cp, *w1]
    assert pin_known_hosts(known_hosts, [*cp, *w1]) == []
    lines = known_hosts.read_text().splitlines()
    assert lines == [
        *mine,
        *(f"{','.join(h.names)} {h.key}" for h in [*cp, *w1]),
    ]
    # OpenSSH itself finds both pinned keys for the address and the name.
    for name in ("10.9.0.11", "w1"):
        found = ssh_keygen("-F", name, "-f", str(known_hosts)).stdout
        assert all(host.key in found for host in w1)


def test_a_different_key_already_pinned_for_the_address_is_a_conflict(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    real_pi = ensure_host_keys(tmp_path / "real", "cp")[0].known_hosts_key
    pin_known_hosts(known_hosts, [KnownHost(("10.9.0.10",), real_pi)])
    before = known_hosts.read_text()
    vm = node_known_hosts("cp", "10.9.0.10", ensure_host_keys(tmp_path / "vm", "cp"))
    with pytest.raises(HostKeyConflict) as err:
        pin_known_hosts(known_hosts, vm)
    assert known_hosts.read_text() == before
    assert "ssh-keygen -R 10.9.0.10" in (err.value.fix or "")


def test_replacing_drops_stale_keys_of_the_node_only(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        f"pi-w1,192.168.1.102 {_key('ssh-ed25519', 'old')}\n"
        f"[192.168.1.102]:2222 {_key('ssh-rsa', 'old')}\n"
        f"otherhost {_key('ssh-ed25519', 'keep')}\n"
    )
    pins = node_known_hosts("pi-w1", "192.168.1.102", ensure_host_keys(tmp_path, "pi-w1"))
    assert pin_known_hosts(known_hosts, pins, replace=True) == pins
    assert pin_known_hosts(known_hosts, pins, replace=True) == []  # idempotent
    lines = known_hosts.read_text().splitlines()
    assert lines == [f"otherhost {_key('ssh-ed25519', 'keep')}", *(host.line() for host in pins)]
    found = ssh_keygen("-F", "192.168.1.102", "-f", str(known_hosts))
    assert found.returncode == 0 and pins[0].key in found.stdout


def _create_after(barrier: Any, state_dir: str, out: Any) -> None:
    barrier.wait()  # every process looks for the keys at the same moment
    keys = ensure_host_keys(Path(state_dir), "new-node")
    out.put([key.known_hosts_key for key in keys])


def test_simultaneous_first_flashes_of_a_node_agree_on_one_set_of_keys(tmp_path: Path) -> None:
    """Two flashes of a new node at once: one creates the keys, the other reads them, so
    each card and known_hosts carry the keys that stay in the store."""
    context = multiprocessing.get_context("fork")
    count = 4
    barrier = context.Barrier(count)
    out = context.Queue()
    procs = [
        context.Process(target=_create_after, args=(barrier, str(tmp_path), out))
        for _ in range(count)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join()
        assert proc.exitcode == 0
    stored = [key.known_hosts_key for key in ensure_host_keys(tmp_path, "new-node")]
    assert results == [stored] * count
    for key in ensure_host_keys(tmp_path, "new-node"):  # each pair still matches
        derived = ssh_keygen("-y", "-f", str(key.path))
        assert " ".join(derived.stdout.split()[:2]) == key.known_hosts_key


def _pin_after(barrier: Any, path: str, index: int) -> None:
    barrier.wait()
    host = KnownHost((f"node-{index}", f"10.0.0.{index}"), _key("ssh-ed25519", str(index)))
    for _ in range(20):  # each flash pins its node again (replace=True), as re-flashes do
        pin_known_hosts(Path(path), [host], replace=True)


def test_flashes_pinning_different_nodes_at_once_keep_every_line(tmp_path: Path) -> None:
    """known_hosts is read, changed and replaced under a lock: no flash drops another's."""
    context = multiprocessing.get_context("fork")
    count = 6
    barrier = context.Barrier(count)
    path = tmp_path / "known_hosts"
    procs = [context.Process(target=_pin_after, args=(barrier, str(path), i)) for i in range(count)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
        assert proc.exitcode == 0
    assert sorted(path.read_text().splitlines()) == sorted(
        f"node-{i},10.0.0.{i} {_key('ssh-ed25519', str(i))}" for i in range(count)
    )


def test_pinning_into_a_malformed_known_hosts_is_a_located_error_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """Pinning reads known_hosts through the same checked, bounded reader as every command:
    a line OpenSSH would misread is refused with its line number, and the file is kept."""
    known_hosts = tmp_path / "known_hosts"
    before = f"otherhost {_key('ssh-ed25519', 'keep')}\notherhost ssh-ed25519 not-base64!\n"
    known_hosts.write_text(before)
    pins = node_known_hosts("pi-w1", "10.9.0.11", ensure_host_keys(tmp_path, "pi-w1"))
    with pytest.raises(ConfigError) as caught:
        pin_known_hosts(known_hosts, pins, replace=True)
    assert caught.value.problems[0].line == 2
    assert known_hosts.read_text() == before
