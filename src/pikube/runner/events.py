"""Events from the ``pikube_events`` callback, and the per-host result built from them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

EVENT_MARKER = "pikube_event"
COLUMNS = ("ok", "changed", "failed", "unreachable", "skipped")


def parse_event_line(line: str) -> dict[str, Any] | None:
    """One callback event, or None for any other output line (warnings, -v text)."""
    text = line.strip()
    if not text.startswith("{") or EVENT_MARKER not in text:
        return None
    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get(EVENT_MARKER), str):
        return None
    return event


@dataclass
class HostStats:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0

    @property
    def healthy(self) -> bool:
        return self.failed == 0 and self.unreachable == 0


@dataclass
class Failure:
    """The first problem seen on a host: which task and the (redacted) message."""

    host: str
    task: str
    status: str
    msg: str


@dataclass
class RunResult:
    """What a playbook run did, per host, built only from its events."""

    returncode: int
    hosts: dict[str, HostStats] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)
    run_dir: str = ""
    complete: bool = True  # False when no final stats event arrived (ansible crashed)

    @property
    def failed_hosts(self) -> list[str]:
        return sorted(h for h, s in self.hosts.items() if s.failed)

    @property
    def unreachable_hosts(self) -> list[str]:
        return sorted(h for h, s in self.hosts.items() if s.unreachable and not s.failed)

    @property
    def changed_total(self) -> int:
        return sum(s.changed for s in self.hosts.values())

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and all(s.healthy for s in self.hosts.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "returncode": self.returncode,
            "complete": self.complete,
            "ok": self.ok,
            "run_dir": self.run_dir,
            "hosts": {h: asdict(s) for h, s in sorted(self.hosts.items())},
            "failures": {h: asdict(f) for h, f in sorted(self.failures.items())},
        }


def _stats_from_summary(summary: Mapping[str, Any]) -> HostStats:
    return HostStats(
        ok=int(summary.get("ok", 0)),
        changed=int(summary.get("changed", 0)),
        failed=int(summary.get("failures", 0)),
        unreachable=int(summary.get("unreachable", 0)),
        skipped=int(summary.get("skipped", 0)),
        rescued=int(summary.get("rescued", 0)),
        ignored=int(summary.get("ignored", 0)),
    )


def stops_host(event: Mapping[str, Any]) -> bool:
    """A failed (not ignored) or unreachable result: Ansible drops the host from the run."""
    status = event.get("status")
    return status == "unreachable" or (status == "failed" and not event.get("ignored"))


def count_result(stats: HostStats, event: Mapping[str, Any]) -> None:
    """Add one ``runner`` event to a host's counts, as Ansible's own stats count it."""
    status = event.get("status")
    if status == "ok":
        stats.ok += 1
        stats.changed += int(bool(event.get("changed")))
    elif status == "skipped":
        stats.skipped += 1
    elif status == "failed" and event.get("ignored"):
        stats.ignored += 1
    elif status == "failed":
        stats.failed += 1
    elif status == "unreachable":
        stats.unreachable += 1


def stats_from_event(event: Mapping[str, Any]) -> dict[str, HostStats]:
    """The final per-host counts carried by a ``stats`` event."""
    return {h: _stats_from_summary(s) for h, s in dict(event.get("hosts", {})).items()}


def build_result(events: Iterable[Mapping[str, Any]], returncode: int) -> RunResult:
    """Per-host counts from the final ``stats`` event; counted from results if it is missing."""
    counted: dict[str, HostStats] = {}
    failures: dict[str, Failure] = {}
    final: dict[str, HostStats] | None = None
    for event in events:
        kind = event.get(EVENT_MARKER)
        if kind == "stats":
            final = stats_from_event(event)
        if kind != "runner":
            continue
        host = str(event.get("host", ""))
        status = str(event.get("status", ""))
        count_result(counted.setdefault(host, HostStats()), event)
        if stops_host(event):
            failures.setdefault(
                host,
                Failure(host, str(event.get("task", "")), status, str(event.get("msg", ""))),
            )
    hosts = final if final is not None else counted
    for host in counted:  # hosts that never reached the stats (rare) still show up
        hosts.setdefault(host, counted[host])
    return RunResult(returncode, hosts, failures, complete=final is not None)


def summary_table(result: RunResult) -> str:
    """The per-host table shown at the end of every run."""
    if not result.hosts:
        return "no hosts were contacted"
    width = max(len("HOST"), *(len(h) for h in result.hosts))
    header = "HOST".ljust(width) + "".join(c.upper().rjust(13) for c in COLUMNS)
    lines = [header]
    for host, stats in sorted(result.hosts.items()):
        row = host.ljust(width) + "".join(str(getattr(stats, c)).rjust(13) for c in COLUMNS)
        lines.append(row)
    return "\n".join(lines)


def describe_event(event: Mapping[str, Any]) -> str | None:
    """One progress line for people, or None for events that stay quiet."""
    kind = event.get(EVENT_MARKER)
    if kind == "play_start":
        return f"PLAY  {event.get('play', '')}"
    if kind == "task_start":
        prefix = "  handler " if event.get("handler") else "  "
        return f"{prefix}{event.get('task', '')}"
    if kind == "retry":
        return (
            f"    retry   {event.get('host', '')} "
            f"(attempt {event.get('attempts', '?')} of {event.get('retries', '?')})"
        )
    if kind == "diff":
        return f"    diff    {event.get('host', '')}\n{event.get('diff', '')}".rstrip()
    if kind == "no_hosts_remaining":
        return "  no hosts remaining"
    if kind != "runner":
        return None
    status = str(event.get("status", ""))
    host = str(event.get("host", ""))
    if status == "ok" and event.get("changed"):
        return f"    changed {host}"
    if status == "ok" and event.get("msg"):
        return f"    ok      {host}: {event['msg']}"
    if status == "failed" and event.get("ignored"):
        return f"    failed  {host} (ignored)"
    if status in ("failed", "unreachable", "item_failed"):
        msg = str(event.get("msg", "")).strip()
        return f"    {status.upper()} {host}" + (f": {msg}" if msg else "")
    return None
