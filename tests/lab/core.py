"""The lab: N simulated nodes on one Linux host, created and destroyed by name.

Resources of a lab named NAME (all derived from NAME, so ``down`` can find them after a crash
even without the state file):

- state dir ``/var/lib/pikube-lab/NAME/`` (state.json, ssh keys, known_hosts, www/, node
  overlays, logs, pid files, the per-run SSH control-path dir);
- bridge ``pkl-HASH`` on the host holding the subnet's first address (HASH: 6 hex of NAME);
- per node: network namespace ``NAME-node-I``, veth ``pkl-HASH-I`` (host side) / ``eth0``
  (node side), overlayfs at ``STATE/nodes/node-I/merged``, a supervisor process running
  ``systemd-nspawn --boot`` (machine ``NAME-node-I``), cgroups ``pikube-lab/NAME/node-I``;
- one services process (HTTP on BRIDGE:8080, apt proxy forwarder on BRIDGE:3142).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from tests.fixtures.piimage import UBUNTU_CMDLINE, UBUNTU_CONFIG

from . import acng, rootfs

DEFAULT_NAME = "pikube-lab"
DEFAULT_SUBNET = "10.77.0.0/24"
STATE_ROOT = Path(os.environ.get("PIKUBE_LAB_STATE", "/var/lib/pikube-lab"))
LOG_ROOT = Path(os.environ.get("PIKUBE_LAB_LOGS", "/var/log/pikube-lab"))
HERE = Path(__file__).resolve().parent
HTTP_PORT = 8080
FIRST_NODE_OFFSET = 10  # node-1 gets .11
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
REQUIRED_TOOLS = ("debootstrap", "systemd-nspawn", "ip", "nsenter", "ssh", "ssh-keygen", "chroot")

PI_MODEL_STRING = "Raspberry Pi 4 Model B Rev 1.4"
PI_CLUSTER_MODEL = "pi4-2gb"
# The Pi personality's boot files: Ubuntu 24.04's for the Pi (system-boot), as on the test images.
PI_CMDLINE = UBUNTU_CMDLINE
PI_CONFIG_TXT = UBUNTU_CONFIG
# Where the node sees its device-tree model. /proc/device-tree cannot be created in a
# container; the real path /sys/firmware/devicetree/base/model (what /proc/device-tree links
# to on a Pi) is provided by a bind mount over a tmpfs on /sys/firmware.
DEVICE_TREE_MODEL_PATH = "/sys/firmware/devicetree/base/model"
LAB_ENV_PATH = "/etc/pikube-lab/lab.env"
# Operating-system personalities of Pi nodes: Ubuntu's Pi server image (the default) or
# Raspberry Pi OS Lite, whose upstream files are in raspios/ (provenance in its README.md).
PI_OSES = ("ubuntu", "raspios")
RASPIOS_FILES = HERE / "raspios"
RASPIOS_IMAGE = "raspios-trixie-lite-arm64"  # the catalog id lab cluster files name


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says what and how to fix it."""


@dataclass
class NodeSpec:
    name: str
    index: int
    ip: str
    mac: str
    pi: bool
    netns: str
    veth: str
    machine: str
    os: str = "ubuntu"  # a PI_OSES personality (non-Pi nodes: ubuntu)

    @property
    def role(self) -> str:
        return "control-plane" if self.index == 1 else "worker"


def _run(argv: Sequence[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, text=True, capture_output=True, **kw)


def _quiet(argv: Sequence[str]) -> bool:
    return _run(argv, check=False).returncode == 0


def _ensure_sbin_on_path() -> None:
    """Root tools live in /usr/sbin and /sbin, which some shells leave off PATH."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    extra = [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin") if d not in parts]
    if extra:
        os.environ["PATH"] = os.pathsep.join([*parts, *extra])


def missing_tools() -> list[str]:
    _ensure_sbin_on_path()
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


@contextlib.contextmanager
def _signals_held(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold SIGNUMS during the block, then deliver the first one that came (if any).

    Handlers, not a signal mask: a mask would be inherited by the commands the block runs.
    Only the main thread may set handlers; elsewhere the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in signums}

    def hold(signum: int, frame: object) -> None:
        held.append(signum)

    for signum in signums:
        signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if held:
            signal.raise_signal(held[0])


def _pid_alive(pid: int) -> bool:
    """True while the process runs; reaps it (and says False) if it is our exited child."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


class Lab:
    """One lab, identified by its name; every method is safe to call from any process."""

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        subnet: str | IPv4Network = DEFAULT_SUBNET,
        state_root: Path = STATE_ROOT,
    ) -> None:
        if not NAME_RE.match(name):
            raise LabError(
                f"lab name {name!r} is invalid: use 2-32 lowercase letters, digits and '-'"
            )
        self.name = name
        try:
            self.subnet = IPv4Network(subnet)
        except ValueError as exc:
            raise LabError(f"lab subnet {subnet!r} is invalid ({exc}); e.g. 10.77.0.0/24") from None
        if self.subnet.prefixlen > 26:
            raise LabError(f"lab subnet {subnet} is too small: use a /26 or larger, e.g. /24")
        self.state_dir = state_root / name
        state = self._load_state()
        if state is not None:  # a running lab keeps the subnet it was started with
            self.subnet = IPv4Network(state["subnet"])
        digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:6]
        self.bridge = f"pkl-{digest}"
        # Policy-routing table and rule priority of this lab (below main's 32766).
        self.route_table = 1000 + int(digest, 16) % 30000
        self.bridge_ip = str(self.subnet.network_address + 1)
        self.node_states: dict[str, str] = {}  # after up(): running, or degraded + failed units

    def owner(self) -> int | None:
        """PID of the live process that started this lab (a test session), if any."""
        state = self._load_state()
        pid = state.get("owner_pid") if state else None
        return pid if isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid) else None

    # -- paths ---------------------------------------------------------------------------
    @property
    def www_dir(self) -> Path:
        """The HTTP server's document root (stand-ins put the apt repository here)."""
        return self.state_dir / "www"

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    @property
    def private_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def public_key(self) -> Path:
        return self.ssh_dir / "id_ed25519.pub"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def cluster_file(self) -> Path:
        return self.state_dir / "cluster.yaml"

    @property
    def http_url(self) -> str:
        return f"http://{self.bridge_ip}:{HTTP_PORT}"

    @property
    def apt_proxy(self) -> str:
        return f"http://{self.bridge_ip}:{acng.ACNG_PORT}"

    @property
    def control_path_dir(self) -> Path:
        """Per-run SSH ControlPersist sockets: a fresh dir for every ``up`` (DESIGN.md)."""
        state = self._load_state()
        run_id = state.get("run_id", "none") if state else "none"
        return self.state_dir / f"cp-{run_id}"

    def node_dir(self, node: str) -> Path:
        return self.state_dir / "nodes" / node

    # -- state ---------------------------------------------------------------------------
    def _state_path(self) -> Path:
        return self.state_dir / "state.json"

    def _load_state(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self._state_path().read_text())
        except (OSError, ValueError):
            return None
        return data

    def _save_state(self, state: dict[str, Any]) -> None:
        tmp = self._state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.rename(self._state_path())

    def nodes(self) -> list[NodeSpec]:
        state = self._load_state()
        if not state:
            return []
        return [NodeSpec(**n) for n in state["nodes"]]

    def node(self, name: str) -> NodeSpec:
        for spec in self.nodes():
            if name in (spec.name, spec.ip, spec.machine):
                return spec
        known = ", ".join(n.name for n in self.nodes()) or "none (is the lab up?)"
        raise LabError(f"lab {self.name} has no node {name!r}; nodes: {known}")

    def spec(self, index: int, pi: bool, os: str = "ubuntu") -> NodeSpec:
        name = f"node-{index}"
        digest = hashlib.sha1(f"{self.name}/{name}".encode(), usedforsecurity=False).digest()
        # Raspberry Pi Trading's OUI (dc:a6:32), as a Pi 4's onboard Ethernet reports.
        mac = "dc:a6:32:" + ":".join(f"{b:02x}" for b in digest[:3])
        return NodeSpec(
            name=name,
            index=index,
            ip=str(self.subnet.network_address + FIRST_NODE_OFFSET + index),
            mac=mac,
            pi=pi,
            netns=f"{self.name}-{name}",
            veth=f"{self.bridge}-{index}",
            machine=f"{self.name}-{name}",
            os=os if pi else "ubuntu",
        )

    # -- up ------------------------------------------------------------------------------
    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, overlayfs, systemd-nspawn)")
        missing = missing_tools()
        if missing:
            raise LabError(
                "missing tools: " + ", ".join(missing) + " (apt-get install debootstrap "
                "systemd-container iproute2 util-linux openssh-client apt-cacher-ng)"
            )

    def _check_subnet_free(self) -> None:
        out = _run(["ip", "-j", "-4", "addr", "show"]).stdout
        for link in json.loads(out):
            for addr in link.get("addr_info", []):
                if link["ifname"] == self.bridge:
                    continue
                net = IPv4Network(f"{addr['local']}/{addr['prefixlen']}", strict=False)
                if net.overlaps(self.subnet):
                    raise LabError(
                        f"subnet {self.subnet} overlaps {net} on {link['ifname']}: choose "
                        "another lab subnet (--subnet / PIKUBE_LAB_SUBNET)"
                    )

    def up(
        self,
        count: int,
        distribution: str = "kubeadm",
        pi: int = 0,
        cluster_out: Path | None = None,
        timeout: float = 240.0,
        log: Callable[[str], None] | None = None,
        pi_os: str = "ubuntu",
    ) -> dict[str, float]:
        """Start ``count`` nodes (the first ``pi`` with a Raspberry Pi personality, running
        ``pi_os``: Ubuntu's Pi image, or Raspberry Pi OS with sshd disabled until enabled).

        Returns timings. On any failure or interrupt everything created so far is torn down.
        """
        say = log or (lambda msg: print(f"lab {self.name}: {msg}", file=sys.stderr))
        self.preflight()
        if count < 1 or count > self.subnet.num_addresses - FIRST_NODE_OFFSET - 2:
            raise LabError(f"cannot start {count} nodes in {self.subnet}")
        if distribution not in ("kubeadm", "microk8s"):
            raise LabError(f"unknown distribution {distribution!r}: use kubeadm or microk8s")
        if pi_os not in PI_OSES:
            raise LabError(f"unknown Pi OS personality {pi_os!r}: use {' or '.join(PI_OSES)}")
        if self._load_state() is not None or self._leftovers():
            raise LabError(
                f"lab {self.name} already exists (state in {self.state_dir}); run "
                f"`tests/lab/lab down --name {self.name}` first"
            )
        self._check_subnet_free()
        timings: dict[str, float] = {}
        started = time.monotonic()
        with acng.users_lock():
            # Registered before the proxy is ensured, so a lab going down meanwhile sees us.
            self.state_dir.mkdir(parents=True, exist_ok=True)
            (self.state_dir / acng.USER_MARKER).write_text(f"{os.getpid()}\n")
            acng.ensure_acng()
        try:
            base, build_seconds = rootfs.ensure_rootfs()
        except BaseException:
            self.down()  # unregisters, and stops the proxy if no other lab uses it
            raise
        timings["rootfs_build"] = build_seconds
        specs = [self.spec(i, pi=i <= pi, os=pi_os) for i in range(1, count + 1)]
        state: dict[str, Any] = {
            "name": self.name,
            "subnet": str(self.subnet),
            "bridge": self.bridge,
            "bridge_ip": self.bridge_ip,
            "rootfs": str(base),
            "distribution": distribution,
            "run_id": uuid.uuid4().hex[:8],
            "owner_pid": os.getpid(),
            "nodes": [asdict(s) for s in specs],
            "stopped": [],
            "isolated": [],
        }
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._save_state(state)
            for sub in ("www", "ssh", "logs", "run", "nodes"):
                (self.state_dir / sub).mkdir()
            self.control_path_dir.mkdir(mode=0o700)
            self._make_bridge()
            self._start_services()
            self._prepare_standins()
            self._make_keys()
            node_files = {os: self._standin_node_files(os) for os in {s.os for s in specs}}
            boot_started = time.monotonic()
            for spec in specs:
                self._make_netns(spec)
                self._make_overlay(spec, base, specs, node_files[spec.os])
                self._start_supervisor(spec)
            say(f"booting {count} nodes")
            states = self.wait_ready([s.name for s in specs], timeout=timeout)
            timings["boot"] = time.monotonic() - boot_started
            self._write_known_hosts()
            self.write_cluster(self.cluster_file, distribution)
            if cluster_out is not None:
                self.write_cluster(cluster_out, distribution)
            self.node_states = states
            degraded = {n: s for n, s in states.items() if s != "running"}
            if degraded:
                say(f"degraded nodes: {degraded}")
        except BaseException:
            kept = self._keep_logs()
            say(f"start failed; tearing the lab down (logs kept in {kept})")
            self.down()
            raise
        timings["total"] = time.monotonic() - started
        return timings

    def _keep_logs(self) -> Path:
        """Copy the logs of a failed start out of the state dir that ``down`` removes."""
        target = LOG_ROOT / f"{self.name}-{time.strftime('%Y%m%dT%H%M%S')}"
        with contextlib.suppress(OSError):
            shutil.copytree(self.state_dir / "logs", target)
        return target

    def _make_bridge(self) -> None:
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "link", "set", self.bridge, "alias", f"pikube-lab:{self.name}"])
        _run(["ip", "addr", "add", f"{self.bridge_ip}/{self.subnet.prefixlen}", "dev", self.bridge])
        # Nodes get a default route via the bridge (as on a home LAN, so tools that need one
        # work), but the host never forwards their packets: nothing leaves the lab network.
        # Two locks: no forwarding on the bridge, and a policy rule sending everything that
        # arrives on the bridge and is not for the host itself to an `unreachable` route (it
        # holds even if someone turns on forwarding globally later).
        Path(f"/proc/sys/net/ipv4/conf/{self.bridge}/forwarding").write_text("0\n")
        _run(["ip", "route", "add", "unreachable", "default", "table", str(self.route_table)])
        _run(
            [
                "ip",
                "rule",
                "add",
                "iif",
                self.bridge,
                "priority",
                str(self.route_table),
                "table",
                str(self.route_table),
            ]
        )
        with contextlib.suppress(OSError):
            Path(f"/proc/sys/net/ipv6/conf/{self.bridge}/disable_ipv6").write_text("1\n")
        _run(["ip", "link", "set", self.bridge, "up"])

    def _start_services(self) -> None:
        argv = [
            sys.executable,
            str(HERE / "services.py"),
            "--bind",
            self.bridge_ip,
            "--www",
            str(self.www_dir),
        ]
        if acng.listening(self.bridge_ip, acng.ACNG_PORT):
            argv.append("--no-forward")  # an apt-cacher-ng on all addresses answers already
        log = (self.state_dir / "logs" / "services.log").open("w")
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
        (self.state_dir / "run" / "services.pid").write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 10
        while not acng.listening(self.bridge_ip, HTTP_PORT):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"lab HTTP server did not start; see {log.name}")
            time.sleep(0.05)

    def _standins(self) -> Any:
        try:
            from . import standins  # type: ignore[attr-defined]
        except ImportError:
            return None
        return standins

    def _prepare_standins(self) -> None:
        standins = self._standins()
        if standins is not None and hasattr(standins, "prepare"):
            standins.prepare(self.www_dir, self.bridge_ip)

    def _standin_node_files(self, personality: str = "ubuntu") -> dict[str, tuple[bytes, int]]:
        standins = self._standins()
        files: dict[str, tuple[bytes, int]] = {}
        if personality != "ubuntu" and hasattr(standins, "personality_node_files"):
            files = standins.personality_node_files(personality, self.http_url)
        elif standins is not None and hasattr(standins, "node_files"):
            files = standins.node_files()
        return files

    def _make_keys(self) -> None:
        _run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"pikube-lab-{self.name}",
                "-f",
                str(self.private_key),
            ]
        )
        self.private_key.chmod(0o600)
        self.known_hosts.write_text("")

    def _make_netns(self, spec: NodeSpec) -> None:
        _run(["ip", "netns", "add", spec.netns])
        ns = ["ip", "-n", spec.netns]
        _run(
            [
                "ip",
                "link",
                "add",
                spec.veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                spec.netns,
            ]
        )
        _run(["ip", "link", "set", spec.veth, "alias", f"pikube-lab:{self.name}:{spec.name}"])
        _run(["ip", "link", "set", spec.veth, "master", self.bridge, "up"])
        _run([*ns, "link", "set", "eth0", "address", spec.mac])
        _run([*ns, "addr", "add", f"{spec.ip}/{self.subnet.prefixlen}", "dev", "eth0"])
        _run([*ns, "link", "set", "lo", "up"])
        _run([*ns, "link", "set", "eth0", "up"])
        _run([*ns, "route", "add", "default", "via", self.bridge_ip])

    def _make_overlay(
        self,
        spec: NodeSpec,
        base: Path,
        all_specs: Sequence[NodeSpec],
        node_files: dict[str, tuple[bytes, int]],
    ) -> None:
        ndir = self.node_dir(spec.name)
        for sub in ("upper", "work", "merged"):
            (ndir / sub).mkdir(parents=True)
        _run(
            [
                "mount",
                "-t",
                "overlay",
                f"pikube-lab-{spec.machine}",
                "-o",
                f"lowerdir={base},upperdir={ndir / 'upper'},workdir={ndir / 'work'}",
                str(ndir / "merged"),
            ]
        )
        root = ndir / "merged"
        uid, gid = _user_ids(root, rootfs.USER)
        hosts = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
        hosts += f"127.0.1.1 {spec.name}\n"
        hosts += "".join(f"{s.ip} {s.name}\n" for s in all_specs)
        files: dict[str, tuple[bytes, int]] = {
            "/etc/hostname": (f"{spec.name}\n".encode(), 0o644),
            "/etc/machine-id": (f"{uuid.uuid4().hex}\n".encode(), 0o444),
            "/etc/hosts": (hosts.encode(), 0o644),
            "/etc/resolv.conf": (f"nameserver {self.bridge_ip}\n".encode(), 0o644),
            LAB_ENV_PATH: (
                (
                    f"LAB_HTTP={self.http_url}\nLAB_NAME={self.name}\nLAB_BRIDGE={self.bridge_ip}\n"
                    f"LAB_NODE={spec.name}\nLAB_APT_PROXY={self.apt_proxy}\n"
                ).encode(),
                0o644,
            ),
        }
        if spec.pi:
            if spec.os == "raspios":
                for name in ("cmdline.txt", "config.txt"):
                    boot = (RASPIOS_FILES / name).read_bytes()
                    files[f"/boot/firmware/{name}"] = (boot, 0o755)
            else:
                files["/boot/firmware/cmdline.txt"] = (PI_CMDLINE.encode(), 0o755)
                files["/boot/firmware/config.txt"] = (PI_CONFIG_TXT.encode(), 0o755)
            files["/etc/pikube-lab/device-tree-model"] = (PI_MODEL_STRING.encode() + b"\0", 0o444)
            # The file bind-mounted over the node's /sys/firmware/devicetree/base/model.
            (ndir / "model").write_bytes(PI_MODEL_STRING.encode() + b"\0")
        files.update(node_files)
        if spec.os == "raspios":
            files.update(raspios_files())
        for path, (data, mode) in files.items():
            _write_inside(root, path, data, mode)
        if spec.os == "raspios":
            raspios_units(root)
        ssh = _write_inside(
            root, f"/home/{rootfs.USER}/.ssh/authorized_keys", self.public_key.read_bytes(), 0o600
        )
        for path in (ssh, ssh.parent):
            os.chown(path, uid, gid)
        ssh.parent.chmod(0o700)

    def nspawn_argv(self, spec: NodeSpec) -> list[str]:
        ndir = self.node_dir(spec.name)
        argv = [
            "systemd-nspawn",
            "--boot",
            "--keep-unit",
            "--register=no",
            "--capability=CAP_NET_ADMIN",
            f"--network-namespace-path=/run/netns/{spec.netns}",
            f"--directory={ndir / 'merged'}",
            f"--machine={spec.machine}",
            f"--hostname={spec.name}",
            "--console=read-only",
            "--resolv-conf=off",
            "--timezone=off",
            "--link-journal=no",
        ]
        if spec.pi:
            argv += [
                "--tmpfs=/sys/firmware:mode=0755",
                f"--bind-ro={ndir / 'model'}:{DEVICE_TREE_MODEL_PATH}",
            ]
        return argv

    def _start_supervisor(self, spec: NodeSpec) -> None:
        run = self.state_dir / "run"
        argv = [
            sys.executable,
            str(HERE / "supervisor.py"),
            "--cgroup",
            f"pikube-lab/{self.name}/{spec.name}",
            "--pidfile",
            str(run / f"{spec.name}.nspawn.pid"),
            "--",
            *self.nspawn_argv(spec),
        ]
        env = dict(os.environ, SYSTEMD_NSPAWN_API_VFS_WRITABLE="network")
        log = (self.state_dir / "logs" / f"{spec.name}.log").open("a")
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True
        )
        (run / f"{spec.name}.supervisor.pid").write_text(f"{proc.pid}\n")

    # -- node access ---------------------------------------------------------------------
    def _still_stopped(self, node: str) -> bool:
        """A second look a moment later: a node counts as stopped only if it stays so."""
        time.sleep(1.0)
        return self.system_state(node) == "stopped"

    def _diagnose(self, node: str) -> str:
        pid = _read_pid(self.state_dir / "run" / f"{node}.supervisor.pid")
        if pid is None:
            return "no supervisor pid file"
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            stat = "gone"
        return f"supervisor {pid}: state {stat}, argv {_cmdline(pid)[:120]!r}"

    def supervisor_pid(self, node: str) -> int | None:
        pid = _read_pid(self.state_dir / "run" / f"{node}.supervisor.pid")
        return pid if pid and _pid_alive(pid) and "supervisor.py" in _cmdline(pid) else None

    def leader_pid(self, node: str) -> int | None:
        """PID (host view) of the node's systemd: the child of its systemd-nspawn."""
        spec = self.node(node)
        nspawn = _read_pid(self.state_dir / "run" / f"{spec.name}.nspawn.pid")
        if not nspawn or not _pid_alive(nspawn):
            return None
        try:
            children = Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()
        except OSError:
            return None
        for child in children:
            if _cmdline(int(child)).startswith(
                ("/usr/lib/systemd/systemd", "/lib/systemd/systemd", "/sbin/init")
            ):
                return int(child)
        return None

    def exec_argv(self, node: str, argv: Sequence[str]) -> list[str]:
        pid = self.leader_pid(node)
        if pid is None:
            raise LabError(f"node {node} of lab {self.name} is not running (`lab start {node}`)")
        # --root/--wd: the node's own root, also when the lab runs in a chroot (nspawn moves the
        # node's tree onto the chroot's /, so the mount namespace's root is not the node's).
        return ["nsenter", "-t", str(pid), "-a", "--root", "--wd", "--", *argv]

    def exec(
        self, node: str, argv: Sequence[str], check: bool = False, timeout: float | None = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside a node as root (no SSH involved)."""
        return _run(self.exec_argv(node, argv), check=check, timeout=timeout)

    def ssh_argv(self, node: str, command: Sequence[str] = ()) -> list[str]:
        spec = self.node(node)
        return [
            "ssh",
            "-i",
            str(self.private_key),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ControlPath=none",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            f"{rootfs.USER}@{spec.ip}",
            *command,
        ]

    def system_state(self, node: str) -> str:
        """`systemctl is-system-running` inside the node, or 'stopped'/'booting'."""
        if self.leader_pid(node) is None:
            return "stopped" if self.supervisor_pid(node) is None else "booting"
        try:
            out = self.exec(node, ["systemctl", "is-system-running"], timeout=15).stdout.strip()
        except (subprocess.TimeoutExpired, LabError):
            return "booting"
        return out or "booting"

    def failed_units(self, node: str) -> list[str]:
        out = self.exec(node, ["systemctl", "--failed", "--plain", "--no-legend"]).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def wait_ready(self, nodes: Iterable[str], timeout: float = 240.0) -> dict[str, str]:
        """Wait until each node's systemd is up (running or degraded) and sshd answers."""
        pending = list(nodes)
        states: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while pending:
            for node in list(pending):
                state = self.system_state(node)
                if state in ("running", "degraded") and (
                    self._ssh_ready(node) or not self._ssh_enabled(node)
                ):
                    states[node] = (
                        state
                        if state == "running"
                        else ("degraded: " + ", ".join(self.failed_units(node)))
                    )
                    pending.remove(node)
                elif state == "stopped" and self._still_stopped(node):
                    raise LabError(
                        f"node {node} stopped while booting ({self._diagnose(node)}); see "
                        f"{self.state_dir / 'logs' / (node + '.log')}"
                    )
            if pending:
                if time.monotonic() > deadline:
                    detail = {n: self.system_state(n) for n in pending}
                    raise LabError(f"nodes not ready after {timeout:.0f}s: {detail}")
                time.sleep(0.25)
        return states

    def _ssh_enabled(self, node: str) -> bool:
        """Whether sshd starts at boot: always on Ubuntu; on Raspberry Pi OS once enabled."""
        if self.node(node).os != "raspios":
            return True
        out = self.exec(node, ["systemctl", "is-enabled", "ssh.service"], timeout=15).stdout
        return out.strip() == "enabled"

    def _ssh_ready(self, node: str) -> bool:
        spec = self.node(node)
        keyfile = self.node_dir(node) / "merged/etc/ssh/ssh_host_ed25519_key.pub"
        return keyfile.exists() and acng.listening(spec.ip, 22)

    def host_keys(self, node: str) -> list[str]:
        """The node's SSH host public keys, read from its filesystem (not from the network)."""
        sshdir = self.node_dir(node) / "merged/etc/ssh"
        keys = []
        for pub in sorted(sshdir.glob("ssh_host_*_key.pub")):
            keytype, key = pub.read_text().split()[:2]
            keys.append(f"{keytype} {key}")
        return keys

    def _write_known_hosts(self) -> None:
        lines = []
        for spec in self.nodes():
            for key in self.host_keys(spec.name):
                lines.append(f"{spec.ip},{spec.name} {key}\n")
        self.known_hosts.write_text("".join(lines))

    # -- day-2 actions -------------------------------------------------------------------
    def _update_list(self, key: str, node: str, add: bool) -> None:
        state = self._load_state() or {}
        items = set(state.get(key, []))
        (items.add if add else items.discard)(node)
        state[key] = sorted(items)
        self._save_state(state)

    def stop(self, node: str, timeout: float = 60.0) -> None:
        """Power a node off (orderly) and keep it off; its disk (overlay) survives."""
        spec = self.node(node)
        pid = self.supervisor_pid(spec.name)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._kill_netns_processes(spec.netns)
        self._update_list("stopped", spec.name, add=True)

    def start(self, node: str, timeout: float = 120.0) -> str:
        """Boot a stopped node again and wait until it is up."""
        spec = self.node(node)
        if self.supervisor_pid(spec.name) is None:
            self._start_supervisor(spec)
        self._update_list("stopped", spec.name, add=False)
        return self.wait_ready([spec.name], timeout=timeout)[spec.name]

    def reboot_count(self, node: str) -> int:
        log = self.state_dir / "logs" / f"{self.node(node).name}.log"
        return log.read_text(errors="replace").count("supervisor: boot ")

    def isolate(self, node: str) -> None:
        """Cut the node off the lab network (its link goes down, as if unplugged)."""
        spec = self.node(node)
        _run(["ip", "link", "set", spec.veth, "down"])
        self._update_list("isolated", spec.name, add=True)

    def heal(self, node: str) -> None:
        spec = self.node(node)
        _run(["ip", "link", "set", spec.veth, "up"])
        self._update_list("isolated", spec.name, add=False)

    def proxy_down(self, timeout: float = 10.0) -> None:
        """Take the lab's apt proxy down for its nodes: connections to BRIDGE:3142 are refused
        and open ones cut, as when apt-cacher-ng stops. Only this lab's forwarder stops; the
        shared apt-cacher-ng on 127.0.0.1 keeps serving the other labs."""
        self._signal_forwarder(signal.SIGUSR1, want_listening=False, timeout=timeout)

    def proxy_up(self, timeout: float = 10.0) -> None:
        """Bring the lab's apt proxy back after `proxy_down`."""
        self._signal_forwarder(signal.SIGUSR2, want_listening=True, timeout=timeout)

    def _signal_forwarder(self, sig: int, want_listening: bool, timeout: float) -> None:
        pid = _read_pid(self.state_dir / "run" / "services.pid")
        if pid is None or not _pid_alive(pid) or "services.py" not in _cmdline(pid):
            raise LabError(f"lab {self.name} has no services process (is it up?)")
        if "--no-forward" in _cmdline(pid):
            raise LabError(
                "this lab uses an apt-cacher-ng listening on all addresses, not its own "
                "forwarder: its apt proxy cannot be taken down for this lab alone"
            )
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while acng.listening(self.bridge_ip, acng.ACNG_PORT) != want_listening:
            if time.monotonic() > deadline:
                state = "up" if want_listening else "down"
                raise LabError(f"the lab's apt proxy on {self.apt_proxy} did not go {state}")
            time.sleep(0.1)

    def memory(self, node: str) -> dict[str, int]:
        """Memory of a node: cgroup usage (incl. page cache) and the PSS of its processes."""
        spec = self.node(node)
        result = {"pss_bytes": 0, "cgroup_bytes": 0}
        pids = _run(["ip", "netns", "pids", spec.netns], check=False).stdout.split()
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        result["pss_bytes"] += int(line.split()[1]) * 1024
            except OSError:
                continue
        for directory in self._cgroup_dirs(spec.name):
            usage = directory / "memory.usage_in_bytes"
            current = directory / "memory.current"
            for f in (usage, current):
                if f.exists():
                    result["cgroup_bytes"] = int(f.read_text())
        return result

    def status(self) -> dict[str, Any]:
        state = self._load_state()
        if state is None:
            return {"name": self.name, "up": False}
        nodes = []
        for spec in self.nodes():
            system = self.system_state(spec.name)
            nodes.append(
                {
                    "name": spec.name,
                    "ip": spec.ip,
                    "role": spec.role,
                    "pi": spec.pi,
                    "os": spec.os,
                    "state": system,
                    "failed_units": self.failed_units(spec.name) if system == "degraded" else [],
                    "isolated": spec.name in state.get("isolated", []),
                    "memory_pss_mb": round(self.memory(spec.name)["pss_bytes"] / 2**20, 1),
                }
            )
        services = _read_pid(self.state_dir / "run" / "services.pid")
        return {
            "name": self.name,
            "up": True,
            "subnet": state["subnet"],
            "bridge": self.bridge,
            "bridge_ip": self.bridge_ip,
            "http": self.http_url,
            "apt_proxy": self.apt_proxy,
            "services_running": bool(services and _pid_alive(services)),
            "cluster_file": str(self.cluster_file),
            "nodes": nodes,
        }

    # -- cluster.yaml --------------------------------------------------------------------
    def cluster_data(self, distribution: str | None = None) -> dict[str, Any]:
        state = self._load_state() or {}
        distribution = distribution or state.get("distribution", "kubeadm")
        kubernetes: dict[str, Any]
        if distribution == "kubeadm":
            kubernetes = {
                "version": "1.31",
                "cni": "flannel",
                "package_repo": f"{self.http_url}/core:/stable:",
            }
        else:
            kubernetes = {"channel": "1.31/stable", "addons": ["dns"]}
        nodes = []
        for spec in self.nodes():
            entry: dict[str, Any] = {
                "name": spec.name,
                "ip": spec.ip,
                "role": spec.role,
                "mac": spec.mac,
            }
            if spec.pi:
                entry["model"] = PI_CLUSTER_MODEL
            nodes.append(entry)
        return {
            "name": self.name,
            "distribution": distribution,
            "kubernetes": kubernetes,
            "network": {
                "subnet": str(self.subnet),
                "gateway": self.bridge_ip,
                "dns": [self.bridge_ip],
            },
            "ssh": {
                "user": rootfs.USER,
                "public_key": str(self.public_key),
                "private_key": str(self.private_key),
                "known_hosts": str(self.known_hosts),
            },
            "image": "ubuntu-24.04-server-amd64",  # the nodes are x86 containers
            "apt_proxy": self.apt_proxy,
            "state_dir": str(self.state_dir / "pikube"),
            "nodes": nodes,
        }

    def write_cluster(self, path: Path, distribution: str | None = None) -> Path:
        import yaml

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = (
            f"# Written by the pikube lab ({self.name}); nodes are systemd-nspawn "
            "containers on the lab bridge.\n"
        )
        path.write_text(header + yaml.safe_dump(self.cluster_data(distribution), sort_keys=False))
        return path

    def ansible_env(self) -> dict[str, str]:
        """Environment for ansible runs against this lab (per-run SSH control path)."""
        if self._load_state() is None:
            raise LabError(f"lab {self.name} is not up (`tests/lab/lab up N --name {self.name}`)")
        return {
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.control_path_dir),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            # The lab's own fact cache: ansible.cfg's shared one (gathering = smart) served one
            # lab's facts of node-1 to another lab's node-1 (another address: "No first item").
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(
                self.control_path_dir.with_name(self.control_path_dir.name.replace("cp-", "facts-"))
            ),
        }

    # -- down ----------------------------------------------------------------------------
    def _netns_names(self) -> list[str]:
        names = {s.netns for s in self.nodes()}
        pattern = re.compile(rf"^{re.escape(self.name)}-node-\d+$")
        out = _run(["ip", "netns", "list"], check=False).stdout
        names.update(
            line.split()[0]
            for line in out.splitlines()
            if line.strip() and pattern.match(line.split()[0])
        )
        return sorted(names)

    def _links(self) -> list[str]:
        out = _run(["ip", "-o", "link", "show"], check=False).stdout
        found = []
        for line in out.splitlines():
            ifname = line.split(":", 2)[1].strip().split("@")[0]
            if ifname == self.bridge or ifname.startswith(self.bridge + "-"):
                found.append(ifname)
        return found

    def _mounts(self) -> list[str]:
        prefix = str(self.state_dir) + "/"
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                mounts.append(point)
        return sorted(mounts, key=len, reverse=True)

    def _processes(self) -> list[int]:
        """Processes of this lab found by their command line (state dir path in argv)."""
        marker = str(self.state_dir) + "/"
        pids = []
        for entry in Path("/proc").iterdir():
            if (
                entry.name.isdigit()
                and int(entry.name) != os.getpid()
                and marker in _cmdline(int(entry.name))
            ):
                pids.append(int(entry.name))
        return pids

    def _cgroup_dirs(self, node: str) -> list[Path]:
        listing = self.state_dir / "run" / f"{node}.nspawn.pid.cgroups"
        try:
            return [Path(p) for p in listing.read_text().split()]
        except OSError:
            return []

    def _all_cgroup_dirs(self) -> list[Path]:
        dirs: set[Path] = set()
        root = Path("/sys/fs/cgroup")
        for hierarchy in [root, *root.iterdir()] if root.exists() else []:
            candidate = hierarchy / "pikube-lab" / self.name
            if candidate.is_dir():
                dirs.add(candidate)
        # Supervisors create node cgroups below the cgroup they start in (per hierarchy);
        # look below ours too, so a lost state file does not hide them.
        hierarchies = {"name=systemd": "systemd", "": "unified", "memory": "memory", "pids": "pids"}
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                mount = hierarchies.get(controllers)
                base = root / mount if mount else None
                if (root / "cgroup.controllers").exists():
                    base = root
                if base is not None:
                    candidate = base / path.lstrip("/") / "pikube-lab" / self.name
                    if candidate.is_dir():
                        dirs.add(candidate)
        for spec in self.nodes():
            for d in self._cgroup_dirs(spec.name):
                dirs.add(d.parent)
        return sorted(dirs)

    def _leftovers(self) -> list[str]:
        """Everything of this lab that exists on the host (empty after a clean ``down``)."""
        found = [f"netns {n}" for n in self._netns_names()]
        found += [f"link {link}" for link in self._links()]
        found += [f"mount {m}" for m in self._mounts()]
        rules = _run(["ip", "rule", "show"], check=False).stdout
        found += [f"ip rule {r.strip()}" for r in rules.splitlines() if f"iif {self.bridge}" in r]
        routes = _run(["ip", "route", "show", "table", str(self.route_table)], check=False)
        found += [f"route {r.strip()}" for r in routes.stdout.splitlines() if r.strip()]
        found += [f"process {p}: {_cmdline(p)[:80]}" for p in self._processes()]
        found += [f"cgroup {c}" for c in self._all_cgroup_dirs() if c.exists()]
        if self.state_dir.exists():
            found.append(f"state dir {self.state_dir}")
        return found

    def leftovers(self) -> list[str]:
        return self._leftovers()

    def _kill_netns_processes(self, netns: str) -> None:
        for _ in range(50):
            pids = _run(["ip", "netns", "pids", netns], check=False).stdout.split()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.1)

    def down(self, timeout: float = 30.0) -> list[str]:
        """Remove every trace of the lab; idempotent. Returns what could not be removed.

        SIGINT and SIGTERM that arrive meanwhile are held until the lab is gone: a second
        signal (a timeout's SIGTERM, then a pkill) must not cut the teardown short.
        """
        with _signals_held():
            return self._down(timeout)

    def _down(self, timeout: float) -> list[str]:
        # 1. Supervisors: orderly poweroff of every node, in parallel.
        sups = [p for p in (self.supervisor_pid(s.name) for s in self.nodes()) if p]
        for pid in sups:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(_pid_alive(p) for p in sups) and time.monotonic() < deadline:
            time.sleep(0.1)
        # 2. Anything still alive: supervisors, nspawn, services, processes in node netns.
        for netns in self._netns_names():
            self._kill_netns_processes(netns)
        for _ in range(3):
            for pid in self._processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            services = _read_pid(self.state_dir / "run" / "services.pid")
            if services and "services.py" in _cmdline(services):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(services, signal.SIGKILL)
            time.sleep(0.1)
        # 3. Mounts (overlays, and anything nspawn left below the state dir).
        for point in self._mounts():
            if not _quiet(["umount", point]):
                _quiet(["umount", "--lazy", point])
        # 4. Network: veths (host side), namespaces, bridge.
        for link in sorted(self._links(), key=lambda n: n == self.bridge):
            _quiet(["ip", "link", "del", link])
        for netns in self._netns_names():
            _quiet(["ip", "netns", "del", netns])
        for _ in range(10):
            if not _quiet(["ip", "rule", "del", "iif", self.bridge]):
                break
        _quiet(["ip", "route", "flush", "table", str(self.route_table)])
        # 5. cgroups (bottom-up) and nspawn's runtime leftovers.
        # A cgroup cannot be removed (EBUSY) until its last killed process has exited, which
        # can take a moment after SIGKILL: retry for a few seconds.
        deadline = time.monotonic() + 10
        while True:
            for top in self._all_cgroup_dirs():
                for directory in sorted(_walk_dirs(top), key=lambda p: len(p.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        directory.rmdir()
                with contextlib.suppress(OSError):
                    top.parent.rmdir()  # .../pikube-lab, if no other lab uses it
            if not any(d.exists() for d in self._all_cgroup_dirs()) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for spec_machine in {f"{self.name}-node-{i}" for i in range(1, 256)}:
            for base in ("/run/systemd/nspawn/propagate", "/run/systemd/nspawn/unix-export"):
                path = Path(base) / spec_machine
                if path.exists():
                    shutil.rmtree(path, ignore_errors=True)
        # 6. The state dir (keys, overlays, control-path dir, logs).
        if self.state_dir.exists() and not self._mounts():
            shutil.rmtree(self.state_dir, ignore_errors=True)
        # 7. The shared apt proxy goes with the last lab: a run leaves no process behind.
        with acng.users_lock():
            others = [
                d
                for d in self.state_dir.parent.glob(f"*/{acng.USER_MARKER}")
                if d.parent != self.state_dir
            ]
            if not others:
                acng.stop_ours()
        return self._leftovers()


def _walk_dirs(top: Path) -> Iterator[Path]:
    if not top.is_dir():
        return
    yield top
    for dirpath, dirnames, _ in os.walk(top):
        for d in dirnames:
            yield Path(dirpath) / d


def _user_ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise LabError(f"user {user} missing from the lab rootfs")


REGENERATE_UNIT = "regenerate_ssh_host_keys.service"


def raspios_files() -> dict[str, tuple[bytes, int]]:
    """raspberrypi-sys-mods' host-key regeneration, as the package installs it."""
    return {
        f"/usr/lib/systemd/system/{REGENERATE_UNIT}": (
            (RASPIOS_FILES / REGENERATE_UNIT).read_bytes(),
            0o644,
        ),
        "/usr/lib/raspberrypi-sys-mods/regenerate_ssh_host_keys": (
            (RASPIOS_FILES / "regenerate_ssh_host_keys").read_bytes(),
            0o755,
        ),
    }


def raspios_units(root: Path) -> None:
    """What Raspberry Pi OS's image build leaves enabled: `systemctl disable ssh` (no
    multi-user.target.wants/ssh.service, no sshd.service alias) and, as pi-gen did until
    2025-08, `systemctl enable regenerate_ssh_host_keys` (see raspios/README.md)."""
    system = root / "etc/systemd/system"
    for link in (system / "multi-user.target.wants/ssh.service", system / "sshd.service"):
        if link.is_symlink() or link.exists():
            link.unlink()
    wants = system / "multi-user.target.wants" / REGENERATE_UNIT
    if not wants.is_symlink():
        wants.symlink_to(f"/lib/systemd/system/{REGENERATE_UNIT}")


def _write_inside(root: Path, path: str, data: bytes, mode: int) -> Path:
    """Write a file into a node's tree without following symlinks out of it."""
    target = root / path.lstrip("/")
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    real_root = root.resolve()
    if not parent.resolve().is_relative_to(real_root):
        raise LabError(f"refusing to write {path}: it leaves the node's filesystem")
    if target.is_symlink():
        target.unlink()
    target.write_bytes(data)
    target.chmod(mode)
    return target


def wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False
