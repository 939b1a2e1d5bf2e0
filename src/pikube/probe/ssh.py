"""SSH for probes: the OpenSSH client, logging in exactly as Ansible does.

Trust model: the options come from ``pikube.runner.argv.ssh_login_args``, the function the
inventory's SSH settings come from too, so a probe uses the same user, key, ssh-agent
(``SSH_AUTH_SOCK``), ``~/.ssh/config`` and pinned host keys (``StrictHostKeyChecking=yes``
against the cluster's known_hosts: no trust on first use) as ``pikube up``. Probes add only
what keeps them unattended and bounded: ``BatchMode=yes`` (never prompt; a key with a
passphrase must be in ssh-agent, as Ansible needs it too), ``ConnectTimeout`` (covers the TCP
connect and the SSH banner), keepalives, and a hard time limit on every ``ssh`` process.

One ``SshConnections`` (a context manager) keeps one OpenSSH master connection per node for
a whole status or doctor run, in a private temporary directory: several commands on a node
pay for one login, and a command's timing starts after the login (the clock-offset estimate
needs that). Leaving the context stops the masters and removes the directory.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from pikube.runner.argv import SshLogin, control_path_dir_fits, ssh_login_args

COMMAND_TIMEOUT_S = 60.0  # one probe command (the facts script, kubectl) once logged in
# Keepalives every 5 s, 3 missed: a node that stops answering mid-command is dropped in 15 s.
KEEPALIVE = ("ServerAliveInterval=5", "ServerAliveCountMax=3")
# An idle master outlives its run by at most this (a run that dies without cleaning up).
CONTROL_PERSIST_S = 60
UNREACHABLE_FIX = "is the node powered and on the network?"
BOOTING_FIX = (
    "wait a minute and try again (first boot of a Pi takes minutes), or let "
    "`pikube up --wait-boot` wait for it"
)


class ProbeError(Exception):
    """A node could not be probed; ``reason`` is short and human readable."""

    def __init__(self, reason: str, fix: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


@dataclass(frozen=True)
class SshTarget:
    host: str  # address to connect to
    user: str
    private_key: Path
    known_hosts: Path
    port: int = 22
    timeout: float = 8.0  # seconds for the TCP connect and again for the SSH banner

    @property
    def login(self) -> SshLogin:
        return SshLogin(self.user, self.private_key, self.known_hosts)

    @property
    def login_time_limit(self) -> float:
        """Connect + banner (``timeout`` each in OpenSSH) + key exchange and login."""
        return 2 * self.timeout + 10.0


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str
    started: float = 0.0  # time.time() when the command was sent (after login)
    first_output: float = 0.0  # time.time() when its first stdout byte arrived


def ssh_argv(target: SshTarget, *options: str) -> list[str]:
    """``ssh`` with the cluster's login options, unattended, and ``options`` (``-o X=Y``...)."""
    probe = ["BatchMode=yes", f"ConnectTimeout={max(1, round(target.timeout))}", *KEEPALIVE]
    return [
        "ssh",
        *ssh_login_args(target.login),
        *[arg for option in probe for arg in ("-o", option)],
        *options,
        "-p",
        str(target.port),
    ]


def master_argv(target: SshTarget, control_path: str) -> list[str]:
    """Log in and, once logged in, leave a master connection in the background (``-f -N``)."""
    return [
        *ssh_argv(
            target,
            "-o",
            "ControlMaster=yes",
            "-o",
            f"ControlPersist={CONTROL_PERSIST_S}",
            "-o",
            f"ControlPath={control_path}",
        ),
        "-f",
        "-N",
        "--",
        target.host,
    ]


def command_argv(target: SshTarget, command: str, control_path: str = "none") -> list[str]:
    """Run ``command`` over the master at ``control_path`` (``none``: a connection of its own)."""
    return [
        *ssh_argv(target, "-o", "ControlMaster=no", "-o", f"ControlPath={control_path}"),
        "--",
        target.host,
        command,
    ]


def exit_argv(target: SshTarget, control_path: str) -> list[str]:
    return [*ssh_argv(target, "-o", f"ControlPath={control_path}"), "-O", "exit", "--", target.host]


def login_failure(target: SshTarget, stderr: str) -> ProbeError:
    """What ``ssh``'s messages (exit 255) mean for the user, with the fix."""
    text = stderr.lower()
    known_hosts = target.known_hosts
    if "remote host identification has changed" in text or "host key for" in text:
        return ProbeError(
            "host key does not match the pinned one (possible re-flash or impostor)",
            f"if the node was re-flashed, remove its old line from {known_hosts}",
        )
    if "host key verification failed" in text or "host key is known" in text:
        return ProbeError(
            "host key unknown (no trust on first use)",
            f"flash the node with pikube, or add its verified key to {known_hosts}",
        )
    if "banner exchange" in text or "kex_exchange_identification" in text:
        return ProbeError(
            "SSH port open but no SSH greeting (booting?): the node is probably still starting",
            BOOTING_FIX,
        )
    if "permission denied" in text or "too many authentication failures" in text:
        return ProbeError("SSH login refused", login_fix(target))
    if "connection refused" in text:
        return ProbeError(
            "unreachable: connection refused (booting?)",
            "if the node was just powered on, wait for sshd; else check the address in the "
            "cluster file",
        )
    if "timed out" in text:
        return ProbeError("no answer (timed out)", UNREACHABLE_FIX)
    for phrase in ("no route to host", "network is unreachable", "host is down"):
        if phrase in text:
            return ProbeError(f"unreachable: {phrase}", UNREACHABLE_FIX)
    last = [line for line in stderr.strip().splitlines() if line.strip()]
    return ProbeError(f"SSH failed: {last[-1] if last else 'ssh exited 255'}")


def login_fix(target: SshTarget) -> str:
    """A refused login's likely cause: a passphrase key that ssh-agent does not hold, or
    the user or key. Asks ssh-keygen and ssh-add (local only), once per refused node."""
    key = target.private_key
    if _has_passphrase(key) and not _agent_holds(key):
        return (
            f"{key} has a passphrase: load it into ssh-agent (`ssh-add {key}`) in the "
            "session that runs pikube (SSH_AUTH_SOCK), as Ansible needs it too"
        )
    return f"check ssh.user ({target.user}) and that ssh.private_key is authorised on the node"


def _local(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # noqa: S603 - fixed argv, no shell
            [shutil.which(argv[0]) or argv[0], *argv[1:]],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):  # no such tool: no hint from it
        return subprocess.CompletedProcess(argv, 1, "", "")


def _has_passphrase(key: Path) -> bool:
    return "passphrase" in _local(["ssh-keygen", "-y", "-P", "", "-f", str(key)]).stderr


def _agent_holds(key: Path) -> bool:
    """Whether ssh-agent (``SSH_AUTH_SOCK``) holds ``key``, by its ``.pub`` file's key."""
    try:
        public = Path(f"{key}.pub").read_text().split()[:2]
    except (OSError, UnicodeDecodeError):
        return False
    listed = _local(["ssh-add", "-L"]).stdout.splitlines()
    return any(line.split()[:2] == public for line in listed)


def _timed_out(target: SshTarget, limit: float) -> ProbeError:
    return ProbeError(f"no answer within {limit:.0f} s after connecting (booting?)", BOOTING_FIX)


# The remote command's exit code for "logged in, but not there yet" (EX_TEMPFAIL).
NOT_YET = 75


def _login(target: SshTarget, argv: list[str], not_yet: tuple[str, str] | None = None) -> None:
    """Run a login-only ``ssh`` (a master, or a short command); raise the classified failure,
    or ``ProbeError(*not_yet)`` (reason, fix) when the command exits with ``NOT_YET``."""
    try:
        proc = subprocess.run(  # noqa: S603 - argv built by ssh_argv, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=target.login_time_limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _timed_out(target, target.login_time_limit) from None
    except FileNotFoundError:
        raise ProbeError(
            "the OpenSSH client (ssh) is not installed", "install openssh-client"
        ) from None
    if proc.returncode == NOT_YET and not_yet is not None:
        raise ProbeError(*not_yet)
    if proc.returncode != 0:
        raise login_failure(target, proc.stderr)


def check_login(target: SshTarget) -> None:
    """Log in once (host key pinned) and run ``true``; raise ``ProbeError`` on failure."""
    _login(target, command_argv(target, "true"))


# cloud-init's own word on the first boot (cloudinit/cmd/status.py: "status: running", or
# "degraded running"; "done", "error", "disabled" and "not run", where it never runs, are
# final). Until it is done its later stages still change the node: cc_set_passwords restarts
# sshd for the seed's ssh_pwauth, refusing connections for a moment (seen on the emulated Pi).
FIRST_BOOT_CHECK = f'case "$(cloud-init status 2>/dev/null)" in *running*) exit {NOT_YET};; esac'
FIRST_BOOT_RUNNING = (
    "booting: first boot not finished (cloud-init is still running)",
    "wait: a Pi's first boot takes a few minutes; `cloud-init status --long` on the node says why",
)


def check_first_boot_done(target: SshTarget) -> None:
    """Log in once (host key pinned) and check cloud-init has finished the first boot; a node
    without cloud-init counts as booted. Raise ``ProbeError`` otherwise."""
    _login(target, command_argv(target, FIRST_BOOT_CHECK), not_yet=FIRST_BOOT_RUNNING)


def _execute(argv: list[str], stdin: str, limit: float) -> CommandResult:
    """Run ``argv`` feeding ``stdin``; note when it started and when stdout's first byte came."""
    out, err = bytearray(), bytearray()
    started = time.time()
    first_output = 0.0
    deadline = time.monotonic() + limit
    pipe = subprocess.PIPE
    with (
        subprocess.Popen(argv, stdin=pipe, stdout=pipe, stderr=pipe, bufsize=0) as proc,  # noqa: S603 - argv from command_argv, no shell
        selectors.DefaultSelector() as selector,
    ):
        assert proc.stdin and proc.stdout and proc.stderr  # noqa: S101 - Popen(PIPE) contract
        # A probe script is a few KiB: it fits the pipe, so writing never waits for the node.
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(stdin.encode())
        proc.stdin.close()
        selector.register(proc.stdout, selectors.EVENT_READ, out)
        selector.register(proc.stderr, selectors.EVENT_READ, err)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                raise ProbeError(
                    f"command did not finish within {limit:.0f} s",
                    "the node may be overloaded; try again, or log in and look",
                )
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                if key.data is out and not out:
                    first_output = time.time()
                key.data.extend(chunk)
        status = proc.wait()
    return CommandResult(
        status,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        started,
        first_output or time.time(),
    )


class SshConnections:
    """One OpenSSH master connection per target for the length of a ``with`` block."""

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._lock = threading.Lock()
        self._masters: dict[tuple[str, int, str], threading.Lock] = {}
        self._up: dict[tuple[str, int, str], SshTarget] = {}
        self._failed: dict[tuple[str, int, str], ProbeError] = {}

    def __enter__(self) -> SshConnections:
        directory = Path(tempfile.mkdtemp(prefix="pikube-ssh-"))
        if not control_path_dir_fits(directory):  # a very long $TMPDIR
            shutil.rmtree(directory)
            directory = Path(tempfile.mkdtemp(prefix="pikube-ssh-", dir="/tmp"))
        self._dir = directory
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def control_path(self) -> str:
        if self._dir is None:
            raise RuntimeError("SshConnections used outside its `with` block")
        return str(self._dir / "%C")

    def connect(self, target: SshTarget) -> None:
        """Log in to ``target`` once; later calls reuse the master, or get the same error
        at once (an unreachable control plane costs one timeout per run, not one per command).
        """
        key = (target.host, target.port, target.user)
        with self._lock:
            lock = self._masters.setdefault(key, threading.Lock())
        with lock:  # concurrent commands to one node wait for its one login
            if key in self._failed:
                failed = self._failed[key]
                raise ProbeError(failed.reason, failed.fix)
            if key not in self._up:
                try:
                    _login(target, master_argv(target, self.control_path))
                except ProbeError as err:
                    self._failed[key] = err
                    raise
                self._up[key] = target

    def run(self, target: SshTarget, command: str, stdin: str = "") -> CommandResult:
        """Run ``command`` on ``target`` after logging in; ``ProbeError`` if the login fails."""
        self.connect(target)
        argv = command_argv(target, command, self.control_path)
        result = _execute(argv, stdin, COMMAND_TIMEOUT_S)
        if result.exit_status == 255 and "connection" in result.stderr.lower():
            raise ProbeError(f"connection lost: {result.stderr.strip()}", UNREACHABLE_FIX)
        return result

    def close(self) -> None:
        """Stop every master (all at once) and remove the control directory."""
        stopping = [
            subprocess.Popen(  # noqa: S603 - argv from exit_argv, no shell
                exit_argv(target, self.control_path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for target in self._up.values()
        ]
        for proc in stopping:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._up.clear()
        self._failed.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def run_command(target: SshTarget, command: str, stdin: str = "") -> CommandResult:
    """Run one command on ``target``; the host key must already be in ``known_hosts``."""
    with SshConnections() as connections:
        return connections.run(target, command, stdin)
