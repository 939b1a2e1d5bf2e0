"""pikube_events: an Ansible stdout callback that emits one JSON object per line.

pikube's runner reads these lines from ansible-playbook's stdout, keeps them as the run's
event log and turns them into progress and the per-host summary. Only a whitelist of result
fields is emitted: never task arguments, never anything of a ``no_log`` result, and strings
that look like kubeadm bootstrap tokens or certificate keys are redacted on top of that.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: pikube_events
    type: stdout
    short_description: JSON-lines events for pikube's runner
    description:
      - One JSON object per line on stdout, prefixed by nothing; pikube reads them.
      - Task arguments are never emitted; results of no_log tasks only as their status.
    requirements:
      - set as the stdout callback (ANSIBLE_STDOUT_CALLBACK=pikube_events)
"""

EVENT_MARKER = "pikube_event"
HIDDEN = "the output has been hidden due to no_log"
MAX_TEXT = 2000


def _secret_patterns() -> tuple[re.Pattern[str], ...]:
    """The secret shapes pikube's runner masks too: one list, next to this plugin."""
    path = Path(__file__).with_name("secret_patterns.json")
    entries = json.loads(path.read_text(encoding="utf-8"))["patterns"]
    return tuple(re.compile(e["regex"], re.DOTALL if e.get("dotall") else 0) for e in entries)


SECRET_PATTERNS = _secret_patterns()


def redact(text: str) -> str:
    """Replace anything shaped like a join token, certificate key or private key."""
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(r"\1<redacted>" if pattern.groups else "<redacted>", text)
    return text


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        value = json.dumps(value, default=str, sort_keys=True)
    value = redact(value)
    if len(value) > limit:
        value = "..." + value[-limit:]
    return value


def _is_no_log(result: Any) -> bool:
    data = _result_data(result)
    task = getattr(result, "_task", None)
    hidden = data.get("_ansible_no_log") or data.get("censored")
    return bool(hidden or getattr(task, "no_log", False))


def _result_data(result: Any) -> dict[str, Any]:
    data = getattr(result, "_result", None)
    return dict(data) if isinstance(data, dict) or hasattr(data, "items") else {}


def result_fields(result: Any, status: str) -> dict[str, Any]:
    """The whitelisted, redacted fields of one task result."""
    data = _result_data(result)
    fields: dict[str, Any] = {"changed": bool(data.get("changed", False))}
    if _is_no_log(result):
        fields["no_log"] = True
        if status in ("failed", "unreachable"):
            fields["msg"] = HIDDEN
        return fields
    if "attempts" in data:
        fields["attempts"] = data["attempts"]
    if status in ("failed", "unreachable"):
        for key in ("msg", "rc", "stderr", "stdout", "reason", "url", "status_code"):
            if key in data and data[key] not in ("", None):
                fields[key] = _text(data[key]) if key != "rc" else data[key]
        if "results" in data and "msg" not in fields:
            fields["msg"] = "one or more items failed"
    elif status == "ok":
        task = getattr(result, "_task", None)
        if getattr(task, "action", "") in ("debug", "ansible.builtin.debug") and "msg" in data:
            fields["msg"] = _text(data["msg"])
    return fields


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "pikube_events"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._play = ""
        self._task = ""
        self._task_uuid: str | None = None
        self._stream = sys.stdout

    # -- output ---------------------------------------------------------------------------
    def _emit(self, event: str, **fields: Any) -> None:
        record = {EVENT_MARKER: event, "time": round(time.time(), 3), **fields}
        self._stream.write(json.dumps(record, default=str, sort_keys=True) + "\n")
        self._stream.flush()

    def _host(self, result: Any) -> str:
        host = getattr(result, "_host", None)
        return host.get_name() if host is not None else ""

    def _runner(self, result: Any, status: str, **extra: Any) -> None:
        task = getattr(result, "_task", None)
        name = task.get_name() if task is not None else self._task
        self._emit(
            "runner",
            status=status,
            host=self._host(result),
            task=redact(name),
            play=self._play,
            **result_fields(result, status),
            **extra,
        )

    # -- playbook structure ---------------------------------------------------------------
    def v2_playbook_on_start(self, playbook: Any) -> None:
        self._emit("playbook_start", playbook=str(getattr(playbook, "_file_name", "")))

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._play = redact(play.get_name().strip())
        self._emit("play_start", play=self._play)

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        uuid = getattr(task, "_uuid", None)
        if uuid is not None and uuid == self._task_uuid:
            return  # meta tasks (flush_handlers) start once per host: announce them once
        self._task_uuid = uuid
        self._task = redact(task.get_name().strip())
        self._emit("task_start", task=self._task, play=self._play, handler=False)

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._task = redact(task.get_name().strip())
        self._emit("task_start", task=self._task, play=self._play, handler=True)

    def v2_playbook_on_no_hosts_matched(self) -> None:
        self._emit("no_hosts_matched", play=self._play)

    def v2_playbook_on_no_hosts_remaining(self) -> None:
        self._emit("no_hosts_remaining", play=self._play)

    # -- results --------------------------------------------------------------------------
    def v2_runner_on_ok(self, result: Any) -> None:
        self._runner(result, "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._runner(result, "failed", ignored=bool(ignore_errors))

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._runner(result, "skipped")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._runner(result, "unreachable")

    def v2_runner_retry(self, result: Any) -> None:
        data = _result_data(result)
        self._emit(
            "retry",
            host=self._host(result),
            task=self._task,
            attempts=data.get("attempts"),
            retries=data.get("retries"),
        )

    def v2_runner_item_on_failed(self, result: Any) -> None:
        self._runner(result, "item_failed")

    def v2_on_file_diff(self, result: Any) -> None:
        data = _result_data(result)
        if _is_no_log(result) or "diff" not in data:
            return
        diff = self._get_diff(data["diff"])
        if diff:
            self._emit("diff", host=self._host(result), task=self._task, diff=_text(diff, 20000))

    def v2_playbook_on_stats(self, stats: Any) -> None:
        hosts = {host: stats.summarize(host) for host in sorted(stats.processed)}
        self._emit("stats", hosts=hosts)
