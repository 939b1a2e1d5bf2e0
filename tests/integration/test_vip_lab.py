"""The pikube_vip role on three lab control planes: the real keepalived and haproxy (Debian's
packages, installed by the role through the lab's apt proxy) keep a virtual IP answering while
nodes fail.

Slow tier, all of it (PIKUBE_SLOW=1): one lab, the role's first run and the failover (173 s
measured on the 2-core CI machine under a load average of 10-14), the re-run and the check-mode
run. `pikube up` of an HA cluster, with its failover, is in the default tier
(test_up_kubeadm_ha.py).

Each node runs the lab's Kubernetes API emulator as its "API server" on :6443
(tests/lab/standins/vip.py, shared with the role's molecule scenario), so haproxy's TLS
/healthz checks and keepalived's health script meet a real TLS server. The failover gaps are
measured and printed (``-s`` shows them); nothing asserts on time.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab import Lab
from tests.lab.fixtures import (
    lab_halves,
    lab_name,
    pikube_inventory,
    run_playbook,
    skip_unless_lab_possible,
)
from tests.lab.standins import vip as vip_standin

pytestmark = [pytest.mark.lab, pytest.mark.slow]

VIP_PORT = 8443

VIP_PLAY = """---
- name: The control-plane VIP
  hosts: control_plane
  become: true
  gather_facts: true
  roles:
    - role: pikube_vip
"""


def recap(output: str) -> dict[str, dict[str, int]]:
    """Per-host counts from ansible-playbook's PLAY RECAP."""
    counts: dict[str, dict[str, int]] = {}
    for line in output.split("PLAY RECAP")[-1].splitlines()[1:]:
        if ":" not in line:
            continue
        host, _, rest = line.partition(":")
        counts[host.strip()] = {
            k: int(v) for k, v in (pair.split("=") for pair in rest.split()) if v.isdigit()
        }
    return counts


def vip_answers(vip: str, ca: Path, timeout: float = 1.0) -> bool:
    """GET https://VIP:8443/healthz through haproxy: TLS verified against the stand-ins' CA."""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with (
            socket.create_connection((vip, VIP_PORT), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=vip) as tls,
        ):
            tls.sendall(
                f"GET /healthz HTTP/1.1\r\nHost: {vip}\r\nConnection: close\r\n\r\n".encode()
            )
            reply = b""
            while chunk := tls.recv(4096):
                reply += chunk
    except (OSError, ssl.SSLError):
        return False
    return reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"ok")


def holders(lab: Lab, vip: str) -> list[str]:
    """The nodes that have the VIP on an interface (at most one, when VRRP works)."""
    found = []
    for spec in lab.nodes():
        if spec.name in lab_stopped(lab):
            continue
        out = lab.exec(spec.name, ["ip", "-4", "-o", "addr", "show"]).stdout
        if f" {vip}/32 " in out:
            found.append(spec.name)
    return found


def lab_stopped(lab: Lab) -> set[str]:
    return set(lab.status().get("stopped", []))


def measure_gap(vip: str, ca: Path, limit: float = 90.0) -> tuple[float, int]:
    """Seconds from now until the VIP answers again (polled every 0.1 s), and failed polls."""
    start = time.monotonic()
    failures = 0
    while time.monotonic() - start < limit:
        if vip_answers(vip, ca, timeout=0.5):
            return time.monotonic() - start, failures
        failures += 1
        time.sleep(0.1)
    pytest.fail(f"the VIP {vip} did not answer again within {limit:.0f} s")


@pytest.fixture(scope="module")
def vip_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three lab nodes, all control planes, with stand-in API servers; the VIP not yet set up."""
    skip_unless_lab_possible()
    _, subnet = lab_halves()
    lab = Lab(f"{lab_name()}-vip", subnet)
    if lab.owner() is not None:
        pytest.fail(f"lab {lab.name} is in use by process {lab.owner()}")
    lab.down()
    work = tmp_path_factory.mktemp("vip")
    try:
        lab.up(3)
        cluster = lab.write_cluster(work / "cluster.yaml")
        hosts_file = pikube_inventory(cluster, work / "inventory")
        # Every node a control plane (the lab writes one control plane and workers, so the
        # test moves the workers itself).
        hosts = yaml.safe_load(hosts_file.read_text())
        groups = hosts["all"]["children"]["cluster"]["children"]
        groups["control_plane"]["hosts"].update(groups.pop("workers")["hosts"])
        hosts_file.write_text(yaml.safe_dump(hosts))
        group_vars = hosts_file.parent / "group_vars" / "cluster.yml"
        setup = vip_standin.prepare(lab, group_vars, work)
        playbook = work / "vip.yml"
        playbook.write_text(VIP_PLAY)
        yield {
            "lab": lab,
            "inventory": hosts_file,
            "playbook": playbook,
            "vip": setup.vip,
            "ca": setup.ca,
            "auth_pass": setup.auth_pass_file.read_text().strip(),
        }
    finally:
        lab.down()
        shutil.rmtree(work, ignore_errors=True)


def test_vip_comes_up_and_answers_through_haproxy(vip_lab: dict[str, Any]) -> None:
    lab, inventory, playbook = vip_lab["lab"], vip_lab["inventory"], vip_lab["playbook"]
    first = run_playbook(lab, inventory, str(playbook), "--diff")
    output = first.stdout + first.stderr
    assert first.returncode == 0, output[-6000:]
    assert all(c["changed"] > 0 and c["failed"] == 0 for c in recap(first.stdout).values())
    # The VRRP password never reaches the output, not even in --diff.
    assert vip_lab["auth_pass"] not in output

    # One node holds the VIP, and through it haproxy reaches a stand-in API server over TLS
    # (the certificate verified against the CA, for the VIP's address).
    assert wait_for(lambda: len(holders(lab, vip_lab["vip"])) == 1)
    assert vip_answers(vip_lab["vip"], vip_lab["ca"])
    for spec in lab.nodes():
        mode = lab.exec(spec.name, ["stat", "-c", "%a", "/etc/keepalived/keepalived.conf"])
        assert mode.stdout.strip() == "600"


def test_a_rerun_and_a_check_run_change_nothing(vip_lab: dict[str, Any]) -> None:
    lab, inventory, playbook = vip_lab["lab"], vip_lab["inventory"], vip_lab["playbook"]
    second = run_playbook(lab, inventory, str(playbook))
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert all(c["changed"] == 0 for c in recap(second.stdout).values()), second.stdout[-3000:]
    check = run_playbook(lab, inventory, str(playbook), "--check", "--diff")
    assert check.returncode == 0, (check.stdout + check.stderr)[-4000:]
    assert all(c["changed"] == 0 for c in recap(check.stdout).values()), check.stdout[-3000:]
    assert vip_lab["auth_pass"] not in check.stdout + check.stderr


def wait_for(predicate: Any, limit: float = 60.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_vip_moves_and_keeps_answering_when_its_holder_fails(vip_lab: dict[str, Any]) -> None:
    lab, vip, ca = vip_lab["lab"], vip_lab["vip"], vip_lab["ca"]
    assert wait_for(lambda: len(holders(lab, vip)) == 1), "run the role first (previous test)"
    first = holders(lab, vip)[0]
    assert vip_answers(vip, ca)

    # 1. keepalived stops on the holder (an orderly stop: it hands the VIP over at once).
    lab.exec(first, ["systemctl", "stop", "keepalived"], check=True)
    gap, failures = measure_gap(vip, ca)
    assert wait_for(lambda: len(holders(lab, vip)) == 1)
    second = holders(lab, vip)[0]
    assert second != first
    print(
        f"\nVIP failover, keepalived stopped on {first}: answered again after {gap:.2f} s "
        f"({failures} failed requests), now on {second}"
    )

    # 2. The new holder's cable is pulled (no goodbye: the others must notice the silence).
    lab.exec(first, ["systemctl", "start", "keepalived"], check=True)
    assert wait_for(lambda: holders(lab, vip) == [first])  # node-1 has the highest priority
    lab.isolate(first)
    try:
        gap, failures = measure_gap(vip, ca)
        assert wait_for(lambda: [h for h in holders(lab, vip) if h != first] != [])
        third = next(h for h in holders(lab, vip) if h != first)
        print(
            f"VIP failover, {first} unplugged: answered again after {gap:.2f} s "
            f"({failures} failed requests), now on {third}"
        )
        # Every request answers: until haproxy's checks mark the unplugged node's API server
        # down, a connection sent there is redispatched after haproxy's 5 s connect timeout.
        assert all(vip_answers(vip, ca, timeout=15) for _ in range(6))
    finally:
        lab.heal(first)
