"""SSH connections for probes: paramiko with the cluster's known_hosts and no trust-on-first-use."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import paramiko


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
    timeout: float = 8.0


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str
    started: float = 0.0  # time.time() when the command was sent (after login)
    first_output: float = 0.0  # time.time() when its first stdout byte arrived


def run_command(target: SshTarget, command: str, stdin: str = "") -> CommandResult:
    """Run one command on ``target``; the host key must already be in ``known_hosts``."""
    client = paramiko.SSHClient()
    try:
        if target.known_hosts.is_file():
            client.load_host_keys(str(target.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                target.host,
                port=target.port,
                username=target.user,
                key_filename=str(target.private_key),
                timeout=target.timeout,
                banner_timeout=target.timeout,
                auth_timeout=target.timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except paramiko.BadHostKeyException:
            raise ProbeError(
                "host key does not match the pinned one (possible re-flash or impostor)",
                f"if the node was re-flashed, remove its old line from {target.known_hosts}",
            ) from None
        except paramiko.SSHException as err:
            if "not found in known_hosts" in str(err):
                raise ProbeError(
                    "host key unknown (no trust on first use)",
                    f"flash the node with pikube, or add its verified key to {target.known_hosts}",
                ) from None
            if isinstance(err, paramiko.AuthenticationException):
                raise ProbeError(
                    "SSH login refused", "check ssh.user and ssh.private_key"
                ) from None
            raise ProbeError(f"SSH failed: {err}") from None
        except TimeoutError:
            raise ProbeError(
                "no answer (timed out)", "is the node powered and on the network?"
            ) from None
        except OSError as err:
            raise ProbeError(
                f"unreachable: {err.strerror or err}", "is the node powered and on the network?"
            ) from None
        started = time.time()
        stdin_file, stdout_file, stderr_file = client.exec_command(command, timeout=60)
        if stdin:
            stdin_file.write(stdin)
        stdin_file.channel.shutdown_write()
        first = stdout_file.read(1)
        first_output = time.time()
        stdout = (first + stdout_file.read()).decode(errors="replace")
        stderr = stderr_file.read().decode(errors="replace")
        status = stdout_file.channel.recv_exit_status()
        return CommandResult(status, stdout, stderr, started, first_output)
    finally:
        client.close()
