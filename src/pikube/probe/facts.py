"""The facts pikube reads from a node in one SSH round trip, and their parsing."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from pikube.distribution import all_tunnel_modules
from pikube.probe.ssh import ProbeError, SshConnections, SshTarget, run_command

# POSIX sh: runs on Ubuntu, Raspberry Pi OS and Debian with coreutils, iproute2 and systemd.
FACTS_SCRIPT = r"""
set -u
kv() { printf '%s=%s\n' "$1" "$2"; }
kv time "$(date +%s.%N)"
kv hostname "$(hostname)"
kv machine_id "$(cat /etc/machine-id 2>/dev/null)"
if [ -r /etc/os-release ]; then . /etc/os-release; fi
kv os "${PRETTY_NAME:-unknown}"
kv os_id "${ID:-}"
kv os_version "${VERSION_ID:-}"
kv kernel "$(uname -r)"
kv arch "$(uname -m)"
kv cpus "$(nproc 2>/dev/null || echo 0)"
kv mem_kb "$(awk '/^MemTotal:/{print $2}' /proc/meminfo)"
kv swap_active "$(awk 'NR>1{n++} END{print n+0}' /proc/swaps)"
kv swap_fstab "$(awk '$1 !~ /^#/ && $3 == "swap" {n++} END{print n+0}' /etc/fstab 2>/dev/null)"
swap_units="dphys-swapfile.service zramswap.service systemd-zram-setup@zram0.service"
kv swap_services "$(for u in $swap_units; do
  [ "$(systemctl is-enabled "$u" 2>/dev/null)" = enabled ] && printf '%s ' "$u"; done)"
if [ -r /proc/cgroups ] && awk '$1 == "memory"' /proc/cgroups | grep -q .; then
  kv memory_cgroup "$(awk '$1 == "memory" {print $4}' /proc/cgroups)"
elif grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
  kv memory_cgroup 1
else
  kv memory_cgroup 0
fi
model=""
for f in /proc/device-tree/model /sys/firmware/devicetree/base/model; do
  if [ -r "$f" ]; then model="$(tr -d '\000' < "$f")"; break; fi
done
kv device_model "$model"
cmdline_file=""
for f in /boot/firmware/cmdline.txt /boot/cmdline.txt; do
  if [ -f "$f" ]; then cmdline_file="$f"; break; fi
done
kv cmdline_file "$cmdline_file"
kv cmdline_txt "$( [ -n "$cmdline_file" ] && head -n1 "$cmdline_file")"
builtin="/lib/modules/$(uname -r)/modules.builtin"
for module in @TUNNEL_MODULES@; do
  if modinfo -n "$module" >/dev/null 2>&1 || grep -qF "/$module.ko" "$builtin" 2>/dev/null; then
    kv "$module" 1
  else
    kv "$module" 0
  fi
done
kv ntp_synced "$(timedatectl show -p NTPSynchronized --value 2>/dev/null)"
kv disk_free_kb "$(df -Pk / | awk 'NR == 2 {print $4}')"
kv listeners "$(ss -Hltnp 2>/dev/null | awk '{print $4 "|" $6}' | tr '\n' ' ')"
kv kubeadm_initialised "$( [ -e /etc/kubernetes/admin.conf ] && echo 1 || echo 0)"
kv kubelet_joined "$( [ -e /etc/kubernetes/kubelet.conf ] && echo 1 || echo 0)"
kv microk8s "$(snap list microk8s 2>/dev/null | awk 'NR == 2 {print $2 " " $4}')"
"""
# Every pod network's tunnel modules (doctor picks the cluster's own from the answers).
FACTS_SCRIPT = FACTS_SCRIPT.replace("@TUNNEL_MODULES@", " ".join(all_tunnel_modules()))


@dataclass
class NodeFacts:
    name: str
    address: str
    reachable: bool
    error: str = ""
    fix: str = ""
    values: dict[str, str] = field(default_factory=dict)
    clock_offset: float | None = None  # node clock minus admin clock, seconds
    clock_uncertainty: float = 0.0  # +- seconds: half the command's time to its first output

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    def integer(self, key: str) -> int:
        try:
            return int(self.values.get(key, "") or 0)
        except ValueError:
            return 0

    @property
    def memory_mb(self) -> int:
        return self.integer("mem_kb") // 1024

    @property
    def listeners(self) -> dict[int, str]:
        """Listening TCP port -> process description (as far as ss could tell)."""
        ports: dict[int, str] = {}
        for entry in self.get("listeners").split():
            address, _, process = entry.partition("|")
            port = address.rsplit(":", 1)[-1]
            if port.isdigit():
                ports.setdefault(int(port), process)
        return ports


def parse_facts(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            values[key] = value.strip()
    return values


def gather_facts(
    name: str, target: SshTarget, connections: SshConnections | None = None
) -> NodeFacts:
    """Probe one node. Never raises for node problems: they become ``reachable=False``."""
    command = f"sh -c {shlex.quote('sudo -n sh -s 2>/dev/null || sh -s')}"
    try:
        if connections is None:
            result = run_command(target, command, stdin=FACTS_SCRIPT)
        else:
            result = connections.run(target, command, stdin=FACTS_SCRIPT)
    except ProbeError as err:
        return NodeFacts(name, target.host, False, err.reason, err.fix)
    values = parse_facts(result.stdout)
    facts = NodeFacts(name, target.host, True, values=values)
    facts.clock_offset, facts.clock_uncertainty = clock_offset(
        values.get("time", ""), result.started, result.first_output
    )
    return facts


def clock_offset(node_time: str, started: float, first_output: float) -> tuple[float | None, float]:
    """The node's clock minus ours, and how uncertain that is.

    The script prints the node's time first; it was read between the command's start (the
    SSH connection and login already done, so a slow handshake does not count) and its
    first output. The midpoint is the estimate, half that interval the uncertainty.
    """
    try:
        value = float(node_time)
    except ValueError:
        return None, 0.0
    return value - (started + first_output) / 2, max(first_output - started, 0.0) / 2
