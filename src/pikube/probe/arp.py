"""Doctor's check of ``network.lb_range``: no machine answers ARP for its addresses.

MetalLB in L2 mode (and MicroK8s' metallb) answers ARP for the addresses it gives to
LoadBalancer Services; a machine that already holds one of them (a forgotten static address,
a DHCP lease) makes that Service unreachable from half the network. Before MetalLB owns the
range, the control plane asks for every address of it on the interface that carries its own
cluster address: one ARP request per address from a raw socket (Python 3, present on every
node Ansible manages; no arping package needed), replies collected for 1.5 s. Once MetalLB
runs (namespace ``metallb-system`` exists) the replies are its own and the check is skipped.
"""

from __future__ import annotations

import shlex
from ipaddress import IPv4Address

from pikube.addons import lb_range_bounds
from pikube.config.model import Cluster
from pikube.probe.doctor import Finding
from pikube.probe.ssh import ProbeError, SshConnections

# A range larger than this is probed on its first addresses only (one request each).
MAX_PROBED = 256

ARP_PROBE = r"""
import socket, struct, subprocess, sys, time
src, targets = sys.argv[1], sys.argv[2:]
iface = next(
    line.split()[1]
    for line in subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True,
                               text=True, check=True).stdout.splitlines()
    if line.split()[3].split("/")[0] == src
).split("@")[0]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind((iface, 0))
mac = s.getsockname()[4]
for _ in range(2):
    for t in targets:
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, socket.inet_aton(src),
                          b"\0" * 6, socket.inet_aton(t))
        s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
    time.sleep(0.2)
s.settimeout(0.1)
wanted, seen = set(targets), {}
end = time.monotonic() + 1.5
while time.monotonic() < end:
    try:
        frame = s.recv(128)
    except socket.timeout:
        continue
    if frame[12:14] != b"\x08\x06" or frame[20:22] != b"\x00\x02":
        continue
    ip = socket.inet_ntoa(frame[28:32])
    if ip in wanted:
        seen[ip] = frame[22:28].hex(":")
for ip, who in sorted(seen.items()):
    print(ip, who)
"""


def probed_addresses(lb_range: str) -> list[str]:
    first, last = lb_range_bounds(lb_range)
    count = min(int(last) - int(first) + 1, MAX_PROBED)
    return [str(IPv4Address(int(first) + i)) for i in range(count)]


def lb_range_findings(
    cluster: Cluster, timeout: float, connections: SshConnections
) -> list[Finding]:
    """A blocking finding per lb_range address that answers ARP before MetalLB owns it."""
    from pikube.probe.status import ssh_target

    lb_range = cluster.network.lb_range
    if not lb_range:
        return []
    node = cluster.control_plane
    target = ssh_target(cluster, node, timeout)
    kubectl = shlex.join(["sudo", "-n", *cluster.flavour.kubectl])
    try:
        owned = connections.run(target, f"{kubectl} get namespace metallb-system -o name")
        if owned.exit_status == 0:
            return []
        argv = ["sudo", "-n", "python3", "-c", ARP_PROBE, str(node.ip), *probed_addresses(lb_range)]
        probe = connections.run(target, shlex.join(argv))
    except ProbeError:
        return []  # the reachable check reports the node
    if probe.exit_status != 0:
        return [
            Finding(
                node.name,
                "lb_range_arp",
                "could not probe network.lb_range with ARP: "
                + (probe.stderr.strip().splitlines() or ["no output"])[-1],
                "give the SSH user passwordless sudo (pikube up needs it too) and python3",
                False,
            )
        ]
    return [
        Finding(
            node.name,
            "lb_range_arp",
            f"{ip} of network.lb_range answers ARP (from {mac}): a machine already uses it, so "
            "MetalLB cannot announce it",
            "choose lb_range addresses nothing uses (outside the DHCP pool), or free that "
            "address on the machine with that MAC",
            True,
        )
        for ip, mac in (line.split() for line in probe.stdout.splitlines() if line.strip())
    ]
