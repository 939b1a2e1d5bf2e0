"""The pikube_events callback: whitelisted fields only, nothing of no_log results."""

from __future__ import annotations

import importlib.util
import io
import json
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from pikube.resources import data_path

TOKEN = "abcdef.0123456789abcdef"  # a fake bootstrap token to look for


def load_plugin() -> ModuleType:
    path = data_path("playbooks", "callback_plugins", "pikube_events.py")
    spec = importlib.util.spec_from_file_location("pikube_events_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeHost:
    def get_name(self) -> str:
        return "pi-w1"


class FakeTask:
    def __init__(self, name: str, no_log: bool, action: str = "ansible.builtin.command") -> None:
        self.name, self.no_log, self.action = name, no_log, action
        self.args = {"argv": ["kubeadm", "join", "--token", TOKEN]}

    def get_name(self) -> str:
        return self.name


def result(data: dict[str, Any], *, no_log: bool, action: str = "ansible.builtin.command") -> Any:
    return SimpleNamespace(_result=data, _host=FakeHost(), _task=FakeTask("Join", no_log, action))


@pytest.fixture
def plugin() -> tuple[Any, io.StringIO]:
    module = load_plugin()
    callback = module.CallbackModule()
    stream = io.StringIO()
    callback._stream = stream
    return callback, stream


def events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_no_log_results_keep_only_their_status(plugin: tuple[Any, io.StringIO]) -> None:
    callback, stream = plugin
    secret = {
        "stdout": f"kubeadm join x --token {TOKEN}",
        "cmd": ["kubeadm", TOKEN],
        "changed": True,
    }
    callback.v2_runner_on_ok(result(secret, no_log=True))
    callback.v2_runner_on_failed(result({**secret, "msg": TOKEN, "rc": 1}, no_log=True))
    assert TOKEN not in stream.getvalue()
    ok, failed = events(stream)
    assert ok["status"] == "ok" and ok["no_log"] and ok["changed"]
    assert failed["status"] == "failed" and "hidden" in failed["msg"]


def test_failed_results_show_message_but_never_arguments(plugin: tuple[Any, io.StringIO]) -> None:
    callback, stream = plugin
    data = {"msg": "non-zero return code", "rc": 3, "stderr": "connection refused", "cmd": "x"}
    callback.v2_runner_on_failed(result(data, no_log=False))
    (event,) = events(stream)
    assert event["msg"] == "non-zero return code" and event["rc"] == 3
    assert event["stderr"] == "connection refused"
    assert "cmd" not in event and "invocation" not in event and "argv" not in stream.getvalue()


def test_token_shaped_text_is_redacted_even_without_no_log(plugin: tuple[Any, io.StringIO]) -> None:
    callback, stream = plugin
    callback.v2_runner_on_failed(result({"msg": f"bad token {TOKEN}"}, no_log=False))
    assert TOKEN not in stream.getvalue() and "<redacted>" in stream.getvalue()


def test_ok_results_carry_debug_messages_only(plugin: tuple[Any, io.StringIO]) -> None:
    callback, stream = plugin
    callback.v2_runner_on_ok(
        result({"msg": "pi-w1 v1.31.2"}, no_log=False, action="ansible.builtin.debug")
    )
    callback.v2_runner_on_ok(result({"msg": "module said", "stdout": "secret-ish"}, no_log=False))
    debug, other = events(stream)
    assert debug["msg"] == "pi-w1 v1.31.2"
    assert "msg" not in other and "stdout" not in other


def test_no_diff_for_no_log_tasks(plugin: tuple[Any, io.StringIO]) -> None:
    callback, stream = plugin
    diff = {"diff": [{"before": "", "after": f"token: {TOKEN}\n"}]}
    callback.v2_on_file_diff(result(diff, no_log=True))
    assert stream.getvalue() == ""


def test_stats_event_lists_every_host(plugin: tuple[Any, io.StringIO]) -> None:
    callback, stream = plugin

    class Stats:
        processed = {"b": 1, "a": 1}

        def summarize(self, host: str) -> dict[str, int]:
            return {"ok": 1, "changed": 0, "failures": 0, "unreachable": 0, "skipped": 0}

    callback.v2_playbook_on_stats(Stats())
    (event,) = events(stream)
    assert list(event["hosts"]) == ["a", "b"]
