"""Typed errors with documented exit codes.

Core code raises these; only ``pikube.cli`` turns them into a message and an exit code.
The exit codes are part of pikube's interface (see README, "Exit codes").
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_FLASH_REFUSED = 4
EXIT_VERIFY_FAILED = 5
EXIT_UNREACHABLE = 6
EXIT_QUORUM = 7
EXIT_INTERRUPTED = 130


class PikubeError(Exception):
    """Base error: ``what`` went wrong, ``where``, and ``fix`` (how to fix it)."""

    exit_code = EXIT_FAILURE

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.where = where
        self.fix = fix

    def render(self) -> str:
        parts = [self.what]
        if self.where:
            parts.append(f"in {self.where}")
        text = ", ".join(parts)
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


@dataclass(frozen=True)
class Problem:
    """One validation problem in a file: location, message and a fix."""

    path: str  # dotted key path inside the document, e.g. "nodes[2].ip"
    message: str
    fix: str = ""
    line: int | None = None
    file: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    def location(self) -> str:
        loc = self.file or "<input>"
        if self.line is not None:
            loc += f":{self.line}"
        if self.path:
            loc += f" ({self.path})"
        return loc

    def render(self) -> str:
        text = f"{self.location()}: {self.message}"
        if self.fix:
            text += f"\n    fix: {self.fix}"
        return text


class ConfigError(PikubeError):
    """The cluster file (or another input file) is invalid; carries every problem found."""

    exit_code = EXIT_CONFIG

    def __init__(self, problems: list[Problem], *, file: str = "") -> None:
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.path, p.message))
        count = len(self.problems)
        what = f"{file or 'configuration'} has {count} problem{'s' if count != 1 else ''}"
        super().__init__(what, fix="correct each entry above and run `pikube validate` again")

    def render(self) -> str:
        if len(self.problems) == 1 and not self.problems[0].path:
            only = self.problems[0]  # a file-level problem: missing, unreadable, not YAML
            return f"{only.message}, in {only.location()}\n  fix: {only.fix}"
        lines = [self.what + ":"]
        lines += ["  " + p.render().replace("\n", "\n  ") for p in self.problems]
        lines.append(f"  fix: {self.fix}")
        return "\n".join(lines)


class FlashRefused(PikubeError):
    """A safety check refused to write to the target; nothing was written."""

    exit_code = EXIT_FLASH_REFUSED


class ImageVerifyError(PikubeError):
    """A checksum or read-back verification failed."""

    exit_code = EXIT_VERIFY_FAILED


class PlaybookFailed(PikubeError):
    """An Ansible run ended with failed hosts."""

    exit_code = EXIT_FAILURE
    result: object | None = None  # the runner's RunResult, for the per-host table


class HostsUnreachable(PikubeError):
    """An Ansible run could not reach some hosts (the others may have succeeded)."""

    exit_code = EXIT_UNREACHABLE
    result: object | None = None  # the runner's RunResult, for the per-host table


class QuorumError(PikubeError):
    """The control planes' datastore has lost quorum (status, doctor), or an action would
    make it lose quorum (remove-node refuses it before changing anything)."""

    exit_code = EXIT_QUORUM


class RunInProgress(PikubeError):
    """Another run (or the ansible-playbook a killed run left behind) holds the cluster."""

    exit_code = EXIT_FAILURE
