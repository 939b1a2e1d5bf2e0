"""Boot a Raspberry Pi SD card image in QEMU's ``raspi3b`` machine, on a lab bridge.

What a Pi's firmware does before Linux starts, QEMU does not: it ignores ``config.txt`` and
``cmdline.txt``. So the harness plays the firmware's part at every boot:

1. read the MBR of the card, find the FAT boot partition, and copy ``vmlinuz``,
   ``initrd.img``, the device tree and ``cmdline.txt`` out of it with mtools (no mount);
2. turn the command line into what the firmware hands to Linux (see ``firmware_cmdline``);
3. start ``qemu-system-aarch64 -M raspi3b -no-reboot`` with the card as its SD card, a
   ``usb-net`` NIC on a tap in the lab bridge, and the serial console logged to a file.

``-no-reboot`` makes QEMU exit when the guest reboots; the supervisor then starts it again
with the card's *current* cmdline.txt, as a Pi's firmware would read it again. So node prep
can add kernel flags and ``ansible.builtin.reboot`` works. A reboot is told from a power-off
by QEMU's own word: its QMP ``SHUTDOWN`` event says ``guest-reset`` or ``guest-shutdown``
(QEMU's BCM2835 power manager, hw/misc/bcm2835_powermgt.c, turns Linux's watchdog reset into
the first, and the same reset with RSTS partition 63, Linux's halt, into the second). The
console is no witness: on Raspberry Pi OS the serial console is not the last ``console=``,
so systemd writes to tty1, and the kernel's last line may not reach the log before QEMU ends.

The lab network lives in its own network namespace, ``pkl6-emu``: a bridge ``pkl6-br0`` with
10.77.6.1/24 and QEMU's tap. Nothing of it is in the host's namespace, and the namespace has
no other interface, so nothing the guest sends can leave it. pikube, ssh and Ansible reach
the node by running inside the namespace (``netns_argv``). The bridge address serves what the
LAN of a homelab would: an apt proxy (a forwarder whose listening socket is in the namespace
and whose upstream is the host's apt-cacher-ng on 127.0.0.1:3142) and NTP (a Pi has no
real-time clock). ``Lab.close()`` stops QEMU and deletes the namespace; the pytest fixtures
call it even on failure, and ``Lab.open()`` first removes what a killed run left.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "pkl6"
# The namespace's name (PIKUBE_EMU_NETNS): two runs with different names run side by side,
# each Pi alone on its own bridge (same addresses, separate namespaces). The bridge and tap
# exist only inside it, so their names need not differ.
NETNS = os.environ.get("PIKUBE_EMU_NETNS", f"{PREFIX}-emu")
BRIDGE = f"{PREFIX}-br0"
TAP = f"{PREFIX}-tap0"
GATEWAY = "10.77.6.1"
PREFIXLEN = 24
ACNG_PORT = 3142
# A MAC in the Raspberry Pi Foundation's OUI: globally administered, so Linux's usbnet names
# the interface eth0, as on a real Pi (a locally administered MAC would make it usb0).
GUEST_MAC = "b8:27:eb:77:06:10"
DTB = "bcm2837-rpi-3-b.dtb"


def log(msg: str) -> None:
    print(f"[emulated-pi] {msg}", file=sys.stderr, flush=True)


def sh(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


# --------------------------------------------------------------------------- card files


@dataclass(frozen=True)
class Partition:
    offset: int
    size: int
    type: int


def partitions(card: Path) -> list[Partition]:
    with open(card, "rb") as handle:
        mbr = handle.read(512)
    if mbr[510:512] != b"\x55\xaa":
        raise RuntimeError(f"{card} has no MBR")
    parts = []
    for i in range(4):
        entry = mbr[446 + 16 * i : 462 + 16 * i]
        ptype = entry[4]
        start, count = struct.unpack("<II", entry[8:16])
        if ptype:
            parts.append(Partition(start * 512, count * 512, ptype))
    return parts


def mtools_env() -> dict[str, str]:
    return dict(os.environ, MTOOLS_SKIP_CHECK="1")


def firmware_files(config_txt: str) -> tuple[str, str | None]:
    """The kernel and initramfs a Pi 3's firmware loads, as ``config.txt`` names them.

    Only the filters that apply to a Pi 3 count (``[all]``, ``[pi3]``, none yet). The
    kernel is ``kernel=`` or, for 64-bit systems, ``kernel8.img``; the initramfs is
    ``initramfs FILE followkernel`` or, with ``auto_initramfs=1``, the kernel's name with
    ``kernel`` made ``initramfs`` and ``.img`` dropped (kernel8.img -> initramfs8), as the
    Raspberry Pi documentation of config.txt describes.
    """
    kernel, initramfs, auto = "kernel8.img", None, False
    applies = True
    for raw in config_txt.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            applies = line[1:-1] in ("all", "pi3")
        elif not applies or not line:
            continue
        elif line.startswith("kernel="):
            kernel = line.removeprefix("kernel=").strip()
        elif line.startswith("initramfs "):
            initramfs = line.split()[1]
        elif line.replace(" ", "") == "auto_initramfs=1":
            auto = True
    if initramfs is None and auto:
        initramfs = kernel.replace("kernel", "initramfs", 1).removesuffix(".img")
    return kernel, initramfs


def read_boot_files(card: Path, dest: Path) -> dict[str, Path]:
    """Copy the firmware's inputs out of the FAT partition (partition 1) into ``dest``:
    ``kernel``, ``initrd``, the device tree and ``cmdline.txt``, chosen by ``config.txt``."""
    kernel, initrd = firmware_files(read_boot_text(card, "config.txt"))
    if initrd is None:
        raise RuntimeError(f"{card}: config.txt names no initramfs (the image needs one)")
    boot = partitions(card)[0]
    out = {}
    for key, name in (("kernel", kernel), ("initrd", initrd), (DTB, DTB), ("cmdline.txt",) * 2):
        target = dest / name
        subprocess.run(
            ["mcopy", "-o", "-n", "-i", f"{card}@@{boot.offset}", f"::/{name}", str(target)],
            check=True,
            env=mtools_env(),
            capture_output=True,
        )
        out[key] = target
    return out


def read_boot_text(card: Path, name: str) -> str:
    boot = partitions(card)[0]
    proc = subprocess.run(
        ["mtype", "-i", f"{card}@@{boot.offset}", f"::/{name}"],
        check=True,
        env=mtools_env(),
        capture_output=True,
    )
    return proc.stdout.decode()


def write_boot_file(card: Path, name: str, text: str) -> None:
    boot = partitions(card)[0]
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-") as tmp:
        src = Path(tmp) / name
        src.write_text(text)
        subprocess.run(
            ["mcopy", "-o", "-i", f"{card}@@{boot.offset}", str(src), f"::/{name}"],
            check=True,
            env=mtools_env(),
            capture_output=True,
        )


def firmware_cmdline(cmdline: str) -> str:
    """The command line Linux gets from a Pi's firmware and kernel, given cmdline.txt.

    * The firmware replaces the alias ``serial0`` with the real UART device; QEMU's first
      serial port on raspi3b is the PL011, ``ttyAMA0``.
    * Raspberry Pi kernels (Raspberry Pi OS, and Ubuntu's raspi kernel) build the memory
      cgroup disabled unless the command line says ``cgroup_enable=memory`` (downstream patch
      "cgroup: Disable cgroup "memory" by default", raspberrypi/linux). Debian's generic
      kernel enables it, so the stand-in firmware adds ``cgroup_disable=memory`` when the
      flag is missing: the emulated Pi behaves like a real one, and node prep's cmdline edit
      plus reboot is what turns the memory cgroup on.
    """
    words = cmdline.split("\n")[0].split()
    words = [w.replace("console=serial0", "console=ttyAMA0") for w in words]
    if "cgroup_enable=memory" not in words:
        words.append("cgroup_disable=memory")
    return " ".join(words)


# What the harness adds to the firmware's command line because the CPU is emulated, never
# written to the card (node prep and doctor see the card's cmdline.txt as pikube left it).
# QEMU's TCG runs the Cortex-A53 10-50x slower than a Pi, and this machine's other work slows
# it further; systemd's and udev's timeouts are meant for real hardware. Each is scaled by
# ~10, not disabled: a service that hangs still fails the boot (and the test, with the
# console log: ``EmulatedPi.failure``). The wait for fstab's devices is the image's
# (image.EMULATED_CPU_SYSTEMD_CONF): bookworm's systemd has no command-line switch for it.
EMULATION_CMDLINE = (
    "systemd.default_timeout_start_sec=900",  # a unit's start (90 s)
    "udev.event_timeout=1800",  # a udev rule's worker is killed after 180 s
)


def emulated_cmdline(cmdline_txt: str) -> str:
    """What QEMU passes to Linux: the firmware's command line plus ``EMULATION_CMDLINE``."""
    return " ".join([firmware_cmdline(cmdline_txt), *EMULATION_CMDLINE])


def qemu_argv(
    files: dict[str, Path], card: Path, cmdline: str, console: Path, qmp: Path
) -> list[str]:
    return [
        *qemu_machine_argv(qmp),
        "-kernel", str(files["kernel"]),
        "-initrd", str(files["initrd"]),
        "-dtb", str(files[DTB]),
        "-append", cmdline,
        "-drive", f"file={card},if=sd,format=raw",
        "-device", f"usb-net,netdev=n0,mac={GUEST_MAC}",
        "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no",
        "-serial", f"file:{console}",
    ]  # fmt: skip


def qemu_machine_argv(qmp: Path) -> list[str]:
    """The Pi 3 machine, exiting on a guest reset, with QMP on ``qmp``.

    ``-S``: the guest stays stopped until ``QmpWatch`` is connected, has negotiated and sends
    ``cont``, so no ``SHUTDOWN`` event goes unseen however fast the guest ends.
    """
    return [
        "qemu-system-aarch64",
        "-M", "raspi3b",
        "-m", "1G",
        "-no-reboot",
        "-display", "none",
        "-monitor", "none",
        "-S",
        "-qmp", f"unix:{qmp},server=on,wait=off",
    ]  # fmt: skip


class QmpWatch(threading.Thread):
    """Connects to QEMU's QMP socket, starts the guest and keeps its ``SHUTDOWN`` reason.

    QMP (docs/interop/qmp-spec): the server greets, the client sends ``qmp_capabilities``,
    then events arrive one JSON object per line; ``cont`` starts the guest held by ``-S``.
    ``reason`` is a ``ShutdownCause`` (qapi/run-state.json): ``guest-reset``,
    ``guest-shutdown``, ``host-signal``, ...
    """

    def __init__(self, path: Path, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(name=f"qmp-{path.name}", daemon=True)
        self.path = path
        self.proc = proc
        self.reason: str | None = None
        self.error: str | None = None

    def _connect(self) -> socket.socket:
        while True:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.connect(str(self.path))
                return conn
            except OSError:
                conn.close()
                if self.proc.poll() is not None:
                    raise
                time.sleep(0.05)

    def run(self) -> None:
        try:
            with self._connect() as conn, conn.makefile("rwb") as stream:
                json.loads(stream.readline())  # the greeting
                stream.write(b'{"execute": "qmp_capabilities"}\n{"execute": "cont"}\n')
                stream.flush()
                for line in stream:
                    message = json.loads(line)
                    if message.get("event") == "SHUTDOWN":
                        self.reason = message.get("data", {}).get("reason")
        except (OSError, ValueError) as err:
            self.error = f"QMP {self.path}: {err}"


# --------------------------------------------------------------------------- network


CLONE_NEWNET = 0x40000000


def netns_argv(argv: list[str]) -> list[str]:
    """``argv`` run inside the lab's network namespace (where the node is reachable)."""
    return ["ip", "netns", "exec", NETNS, *argv]


def netns_exists() -> bool:
    return Path("/run/netns", NETNS).exists()


def netns_socket(family: int, kind: int) -> socket.socket:
    """A socket that belongs to the lab namespace, whichever thread later uses it.

    A socket stays in the namespace it was created in, so a short-lived thread joins the
    namespace (setns affects the calling thread only), creates it and ends.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    made: list[socket.socket] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            with open(Path("/run/netns", NETNS)) as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {NETNS}: {os.strerror(err)}")
            made.append(socket.socket(family, kind))
        except BaseException as err:  # handed to the caller's thread
            errors.append(err)

    worker = threading.Thread(target=create, name=f"{PREFIX}-setns")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]
    return made[0]


def netns_down() -> None:
    """Kill what still runs in this lab's namespace and delete it (by name: ours only)."""
    if not netns_exists():
        return
    pids = sh(["ip", "netns", "pids", NETNS], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = sh(["ip", "netns", "pids", NETNS], check=False).stdout.split()
        time.sleep(0.1)
    sh(["ip", "netns", "del", NETNS], check=False)


def netns_up() -> None:
    """The namespace with lo, the bridge (gateway address) and QEMU's tap; nothing else."""
    netns_down()
    sh(["ip", "netns", "add", NETNS])
    ns = ["ip", "-n", NETNS]
    sh([*ns, "link", "set", "lo", "up"])
    sh([*ns, "link", "add", BRIDGE, "type", "bridge"])
    sh(netns_argv(["sysctl", "-q", "-w", f"net.ipv6.conf.{BRIDGE}.disable_ipv6=1"]))
    sh([*ns, "addr", "add", f"{GATEWAY}/{PREFIXLEN}", "dev", BRIDGE])
    sh([*ns, "link", "set", BRIDGE, "up"])
    sh([*ns, "tuntap", "add", "dev", TAP, "mode", "tap"])
    sh(netns_argv(["sysctl", "-q", "-w", f"net.ipv6.conf.{TAP}.disable_ipv6=1"]))
    sh([*ns, "link", "set", TAP, "master", BRIDGE])
    sh([*ns, "link", "set", TAP, "up"])


# --------------------------------------------------------------------------- services


class _Forward(socketserver.BaseRequestHandler):
    """TCP forwarder: bridge address -> the host's apt-cacher-ng on loopback."""

    def handle(self) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", ACNG_PORT), timeout=10)
        except OSError:
            return
        upstream.settimeout(None)
        self.request.settimeout(None)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump, args=(upstream, self.request), daemon=True)
        back.start()
        pump(self.request, upstream)
        back.join(timeout=600)
        upstream.close()


class _TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


NTP_EPOCH = 2208988800


class _Ntp(socketserver.BaseRequestHandler):
    """Minimal SNTP server (RFC 4330) answering with the host's clock, stratum 2."""

    def handle(self) -> None:
        data, sock = self.request
        if len(data) < 48 or (data[0] & 0x7) != 3:  # mode 3 = client
            return
        received = time.time() + NTP_EPOCH
        version = (data[0] >> 3) & 0x7

        def ts(t: float) -> bytes:
            return struct.pack("!II", int(t), int((t % 1) * (1 << 32)))

        reply = (
            bytes([(0 << 6) | (version << 3) | 4, 2, data[2], 0xEC])  # LI 0, server, stratum 2
            + struct.pack("!II", 0, 0x00000100)  # root delay 0, root dispersion ~4 ms
            + b"LAB\0"
            + ts(received)  # reference time
            + data[40:48]  # originate = client's transmit
            + ts(received)
            + ts(time.time() + NTP_EPOCH)
        )
        sock.sendto(reply, self.client_address)


class _UDPServer(socketserver.ThreadingUDPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve_in_netns(
    kind: type[_TCPServer] | type[_UDPServer],
    port: int,
    handler: type[socketserver.BaseRequestHandler],
) -> socketserver.BaseServer:
    """A server on the gateway address inside the lab namespace (its handlers run here)."""
    server = kind((GATEWAY, port), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = netns_socket(server.address_family, server.socket_type)
    try:
        server.server_bind()
        server.server_activate()
    except OSError:
        server.server_close()
        raise
    return server


# Marks this tier as a user of the shared apt proxy, as a lab's state dir does
# (tests/lab/acng.py): the last user going away stops the proxy the labs started.
ACNG_USER_DIR = Path(os.environ.get("PIKUBE_LAB_STATE", "/var/lib/pikube-lab")) / NETNS


@contextlib.contextmanager
def acng_user() -> Iterator[None]:
    """The host's shared apt-cacher-ng on 127.0.0.1:3142 while the block runs."""
    from tests.lab import acng

    with acng.users_lock():
        ACNG_USER_DIR.mkdir(parents=True, exist_ok=True)
        (ACNG_USER_DIR / acng.USER_MARKER).write_text(f"{os.getpid()}\n")
        acng.ensure_acng()
    try:
        yield
    finally:
        with acng.users_lock():
            (ACNG_USER_DIR / acng.USER_MARKER).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                ACNG_USER_DIR.rmdir()
            others = list(ACNG_USER_DIR.parent.glob(f"*/{acng.USER_MARKER}"))
            if not others:
                acng.stop_ours()


# --------------------------------------------------------------------------- the Pi


@dataclass
class Boot:
    number: int
    cmdline: str
    console: Path
    started: float
    exit_code: int | None = None
    ended: float | None = None
    qmp: QmpWatch | None = None

    def console_text(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def rebooted(self) -> bool:
        """The guest asked for a reset (QEMU's -no-reboot then exits 0, as on power-off).

        QEMU's ``SHUTDOWN`` event decides. Without one (QMP failed), the console: the
        kernel's "reboot: Restarting system", or systemd's reboot.target printed before it.
        """
        if self.qmp is not None and self.qmp.reason is not None:
            return self.qmp.reason == "guest-reset"
        text = self.console_text()
        if "reboot: Restarting system" in text:
            return True
        tail = text[-4000:]
        return "reboot.target" in tail and "poweroff.target" not in tail


# Console text of a boot that will not reach SSH whatever the wait: the kernel gave up, the
# initramfs dropped to its shell (no root file system), or systemd went to emergency mode.
FATAL_CONSOLE = ("Kernel panic", "Dropping to a shell", "emergency mode", "Emergency Shell")


@dataclass
class EmulatedPi:
    """One card booted under a supervisor that restarts QEMU when the guest reboots."""

    card: Path
    workdir: Path
    boots: list[Boot] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name="pkl6-qemu", daemon=True)
        self._thread.start()

    def _launch(self) -> Boot:
        n = len(self.boots) + 1
        files_dir = self.workdir / f"boot{n}"
        files_dir.mkdir()
        files = read_boot_files(self.card, files_dir)
        cmdline = emulated_cmdline(files["cmdline.txt"].read_text())
        console = self.workdir / f"console-{n}.log"
        qmp = self.workdir / f"qmp-{n}.sock"
        boot = Boot(n, cmdline, console, time.monotonic())
        argv = qemu_argv(files, self.card, cmdline, console, qmp)
        log(f"boot {n}: {' '.join(argv)}")
        with self._lock:
            if self._stop.is_set():
                raise RuntimeError("stopping")
            self.proc = subprocess.Popen(
                netns_argv(argv),
                stdin=subprocess.DEVNULL,
                stdout=open(self.workdir / f"qemu-{n}.log", "wb"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            boot.qmp = QmpWatch(qmp, self.proc)
            boot.qmp.start()
        self.boots.append(boot)
        return boot

    def _supervise(self) -> None:
        try:
            while not self._stop.is_set():
                boot = self._launch()
                assert self.proc is not None
                boot.exit_code = self.proc.wait()
                boot.ended = time.monotonic()
                if boot.qmp is not None:
                    boot.qmp.join(timeout=10)  # QEMU closed the socket: its last event is in
                if self._stop.is_set():
                    return
                if boot.exit_code == 0 and boot.rebooted:
                    log(f"boot {boot.number}: guest rebooted; starting again with cmdline.txt")
                    continue
                reason = boot.qmp.reason or boot.qmp.error if boot.qmp else None
                self.error = (
                    f"QEMU exited with {boot.exit_code} without a guest reboot "
                    f"(QMP: {reason or 'no SHUTDOWN event'}; "
                    f"see {boot.console} and {self.workdir}/qemu-{boot.number}.log)"
                )
                log(self.error)
                return
        except Exception as err:
            self.error = f"supervisor failed: {err}"
            log(self.error)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            proc = self.proc
        if proc and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._thread:
            self._thread.join(timeout=15)

    def failure(self) -> str | None:
        """Why the Pi will not come up, once that is certain: QEMU ended without a guest
        reboot, or the current boot's console shows one of ``FATAL_CONSOLE``. With the
        console's tail, so a failed boot fails its test with the evidence."""
        if self.error:
            return self.error
        if not self.boots:
            return None
        boot = self.boots[-1]
        if boot.qmp is not None and boot.qmp.error and boot.exit_code is None:
            return f"boot {boot.number}: the guest was never started: {boot.qmp.error}"
        text = boot.console_text()
        for marker in FATAL_CONSOLE:
            if marker in text:
                return (
                    f"boot {boot.number} failed: {marker!r} on the console ({boot.console}); "
                    f"console tail:\n{text[-6000:]}"
                )
        return None

    def console_tail(self, chars: int = 6000) -> str:
        return self.boots[-1].console_text()[-chars:] if self.boots else ""

    def wait_for_ssh(self, host: str, timeout: float = 900, since_boot: int = 1) -> float:
        """Seconds from the start of boot ``since_boot`` until sshd sends its banner."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            failure = self.failure()
            if failure:
                raise RuntimeError(failure)
            if len(self.boots) >= since_boot:
                try:
                    with netns_socket(socket.AF_INET, socket.SOCK_STREAM) as conn:
                        conn.settimeout(3)
                        conn.connect((host, 22))
                        conn.settimeout(10)
                        if conn.recv(64).startswith(b"SSH-"):
                            return time.monotonic() - self.boots[since_boot - 1].started
                except OSError:
                    pass
            time.sleep(2)
        tail = self.console_tail()
        raise TimeoutError(f"no SSH on {host} after {timeout:.0f} s; console tail:\n{tail}")


class Lab:
    """Namespace, bridge, tap, apt proxy forwarder and NTP on 10.77.6.1; ``close()`` removes all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._servers: list[socketserver.BaseServer] = []
        self.pis: list[EmulatedPi] = []

    def open(self) -> Lab:
        netns_up()
        for server in (
            serve_in_netns(_TCPServer, ACNG_PORT, _Forward),
            serve_in_netns(_UDPServer, 123, _Ntp),
        ):
            self._servers.append(server)
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def boot(self, card: Path) -> EmulatedPi:
        pi = EmulatedPi(card=card, workdir=self.workdir)
        self.pis.append(pi)
        pi.start()
        return pi

    def close(self) -> None:
        for pi in self.pis:
            pi.stop()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        netns_down()


@contextlib.contextmanager
def lab(workdir: Path | None = None, keep: bool = False) -> Iterator[Lab]:
    tmp = workdir or Path(tempfile.mkdtemp(prefix=f"{PREFIX}-qemu-"))
    the_lab = Lab(tmp)
    try:
        yield the_lab.open()
    finally:
        the_lab.close()
        if not keep and workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    """Manual use: ``python -m tests.emulated_pi.harness CARD.img IP``; Ctrl-C tears down."""
    card, ip = Path(argv[0]), argv[1]
    work = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-qemu-"))
    log(f"work dir (console logs) {work}")
    with acng_user(), lab(work) as the_lab:
        pi = the_lab.boot(card)
        log(f"SSH after {pi.wait_for_ssh(ip):.0f} s")
        with contextlib.suppress(KeyboardInterrupt):
            while not pi.error:
                time.sleep(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
