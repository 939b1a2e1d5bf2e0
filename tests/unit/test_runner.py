"""The runner's pure parts: argv, environment, run directory names, events -> result, errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pikube.errors import EXIT_UNREACHABLE, HostsUnreachable, PlaybookFailed
from pikube.runner.argv import (
    PlaybookOptions,
    RunPaths,
    build_env,
    build_playbook_argv,
    control_path_dir_fits,
)
from pikube.runner.events import (
    RunResult,
    build_result,
    describe_event,
    parse_event_line,
    summary_table,
)
from pikube.runner.redact import redact
from pikube.runner.run import raise_for_result
from pikube.runner.rundir import create_run_dir, make_control_path_dir, run_dir_name

EXE = ["/venv/bin/ansible-playbook"]


def test_argv_is_minimal_without_options() -> None:
    argv = build_playbook_argv(EXE, Path("/p/site.yml"), Path("/r/hosts.yml"), PlaybookOptions())
    assert argv == [*EXE, "--inventory", "/r/hosts.yml", "/p/site.yml"]


def test_argv_passes_every_option_as_separate_items() -> None:
    options = PlaybookOptions(
        check=True,
        diff=True,
        limit="pi-w1,pi-w2",
        tags="prepare",
        verbosity=2,
        extra_vars={"a": "b c"},
    )
    argv = build_playbook_argv(EXE, Path("/p/site.yml"), Path("/r/hosts.yml"), options)
    assert argv[-1] == "/p/site.yml"
    assert "--check" in argv and "--diff" in argv and "-vv" in argv
    assert argv[argv.index("--limit") + 1] == "pi-w1,pi-w2"
    assert argv[argv.index("--tags") + 1] == "prepare"
    assert json.loads(argv[argv.index("--extra-vars") + 1]) == {"a": "b c"}


def test_verbosity_is_capped_at_four() -> None:
    argv = build_playbook_argv(EXE, Path("/s.yml"), Path("/h"), PlaybookOptions(verbosity=9))
    assert "-vvvv" in argv and "-vvvvv" not in argv


def _paths(tmp_path: Path) -> RunPaths:
    return RunPaths(
        run_dir=tmp_path,
        control_path_dir=tmp_path / "cp",
        fact_cache_dir=tmp_path / "facts",
        config_file=tmp_path / "ansible.cfg",
        roles_path=tmp_path / "roles",
        callback_dir=tmp_path / "cb",
    )


def test_env_points_ansible_at_pikube_files_and_run_local_paths(tmp_path: Path) -> None:
    base = {"PATH": "/bin", "ANSIBLE_ROLES_PATH": "/elsewhere", "ANSIBLE_LOG_PATH": "/tmp/x.log"}
    env = build_env(base, _paths(tmp_path))
    assert env["PATH"] == "/bin"
    assert env["ANSIBLE_CONFIG"] == str(tmp_path / "ansible.cfg")
    assert env["ANSIBLE_ROLES_PATH"] == str(tmp_path / "roles")  # the user's value replaced
    assert env["ANSIBLE_STDOUT_CALLBACK"] == "pikube_events"
    assert env["ANSIBLE_SSH_CONTROL_PATH_DIR"] == str(tmp_path / "cp")
    assert env["ANSIBLE_CACHE_PLUGIN_CONNECTION"] == str(tmp_path / "facts")
    assert "ANSIBLE_LOG_PATH" not in env  # an unfiltered log would defeat the event filter
    assert base["ANSIBLE_ROLES_PATH"] == "/elsewhere"  # input not mutated


def test_control_path_length_limit() -> None:
    assert control_path_dir_fits(Path("/tmp/pikube-cp-abc"))
    # The lab's real state dir: ssh failed with "too long for Unix domain socket" here.
    assert not control_path_dir_fits(
        Path("/var/lib/pikube-lab/pkl4/pikube/runs/20261122T174538Z-up/cp")
    )


def test_long_state_dir_gets_a_short_control_path_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    directory, temporary = make_control_path_dir(deep)
    try:
        assert temporary and str(directory).startswith("/tmp/pikube-cp-")
        assert control_path_dir_fits(directory)
    finally:
        directory.rmdir()


def test_run_dir_name_is_utc_sortable_and_names_the_command() -> None:
    now = datetime(2026, 11, 22, 17, 33, 58, tzinfo=UTC)
    assert run_dir_name("up", now) == "20261122T173358Z-up"
    assert run_dir_name("add node/x", now) == "20261122T173358Z-add-node-x"


def test_run_dirs_in_the_same_second_stay_apart(tmp_path: Path) -> None:
    now = datetime(2026, 11, 22, 17, 33, 58, tzinfo=UTC)
    first = create_run_dir(tmp_path, "up", now)
    second = create_run_dir(tmp_path, "up", now)
    assert first != second and first.is_dir() and second.is_dir()
    assert (first.stat().st_mode & 0o777) == 0o700


def test_parse_event_line_ignores_other_output() -> None:
    assert parse_event_line('{"pikube_event": "stats", "hosts": {}}\n') == {
        "pikube_event": "stats",
        "hosts": {},
    }
    assert parse_event_line("Using /etc/ansible.cfg as config file") is None
    assert parse_event_line('{"other": 1}') is None
    assert parse_event_line('{"pikube_event": broken') is None


def _runner(host: str, status: str, **extra: object) -> dict[str, object]:
    return {"pikube_event": "runner", "host": host, "status": status, "task": "t", **extra}


def test_result_comes_from_the_final_stats_event() -> None:
    events = [
        _runner("a", "ok", changed=True),
        {
            "pikube_event": "stats",
            "hosts": {
                "a": {"ok": 5, "changed": 2, "failures": 0, "unreachable": 0, "skipped": 1},
                "b": {"ok": 0, "changed": 0, "failures": 0, "unreachable": 1, "skipped": 0},
            },
        },
    ]
    result = build_result(events, 4)
    assert result.hosts["a"].ok == 5 and result.hosts["a"].changed == 2
    assert result.unreachable_hosts == ["b"] and result.failed_hosts == []
    assert result.complete


def test_result_is_counted_from_results_when_stats_are_missing() -> None:
    events = [
        _runner("a", "ok", changed=True),
        _runner("a", "ok"),
        _runner("a", "skipped"),
        _runner("b", "failed", msg="boom"),
        _runner("b", "failed", ignored=True),
    ]
    result = build_result(events, 2)
    assert not result.complete
    assert (result.hosts["a"].ok, result.hosts["a"].changed, result.hosts["a"].skipped) == (2, 1, 1)
    assert result.hosts["b"].failed == 1 and result.hosts["b"].ignored == 1
    assert result.failures["b"].msg == "boom"


def test_summary_table_has_one_row_per_host() -> None:
    result = build_result(
        [
            {
                "pikube_event": "stats",
                "hosts": {
                    "pi-cp1": {
                        "ok": 40,
                        "changed": 0,
                        "failures": 0,
                        "unreachable": 0,
                        "skipped": 3,
                    },
                    "pi-w1": {"ok": 2, "changed": 0, "failures": 0, "unreachable": 1, "skipped": 0},
                },
            }
        ],
        4,
    )
    lines = summary_table(result).splitlines()
    assert lines[0].split() == ["HOST", "OK", "CHANGED", "FAILED", "UNREACHABLE", "SKIPPED"]
    assert lines[1].split() == ["pi-cp1", "40", "0", "0", "0", "3"]
    assert lines[2].split() == ["pi-w1", "2", "0", "0", "1", "0"]


def test_progress_lines() -> None:
    assert describe_event({"pikube_event": "task_start", "task": "Install containerd"}) == (
        "  Install containerd"
    )
    assert describe_event(_runner("a", "ok")) is None  # unchanged hosts stay quiet
    assert describe_event(_runner("a", "ok", changed=True)) == "    changed a"
    assert (
        describe_event(_runner("a", "unreachable", msg="refused")) == "    UNREACHABLE a: refused"
    )


def test_unreachable_only_raises_hosts_unreachable_with_retry_hint(tmp_path: Path) -> None:
    result = RunResult(4, run_dir=str(tmp_path))
    result.hosts = build_result([_runner("pi-w2", "unreachable")], 4).hosts
    with pytest.raises(HostsUnreachable) as caught:
        raise_for_result(result, "up")
    assert caught.value.exit_code == EXIT_UNREACHABLE
    assert "pi-w2" in caught.value.what
    assert "pikube up --limit pi-w2" in (caught.value.fix or "")
    assert caught.value.result is result


def test_failure_wins_over_unreachable(tmp_path: Path) -> None:
    result = build_result(
        [_runner("pi-cp1", "failed", msg="kubeadm init failed"), _runner("pi-w2", "unreachable")],
        2,
    )
    result.run_dir = str(tmp_path)
    with pytest.raises(PlaybookFailed) as caught:
        raise_for_result(result, "up")
    assert "pi-cp1" in caught.value.what and "kubeadm init failed" in caught.value.what
    assert "pikube up --limit pi-cp1,pi-w2" in (caught.value.fix or "")


def test_nonzero_exit_without_host_failures_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PlaybookFailed, match="exited with code 1"):
        raise_for_result(RunResult(1, run_dir=str(tmp_path), complete=False), "up")
    raise_for_result(RunResult(0, run_dir=str(tmp_path)), "up")  # success: no error


@pytest.mark.parametrize(
    "text",
    [
        "kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash",
        "--certificate-key " + "a1" * 32,
        "certificate_key: " + "ff" * 32,
        "controlPlane:\n  certificateKey: " + "ff" * 32,
        "[upload-certs] Using certificate key:\n" + "a1" * 32,
        "microk8s join 10.0.0.1:25000/" + "0123456789abcdef" * 2 + "/a1b2c3d4e5f6 --worker",
        "-----BEGIN EC PRIVATE KEY-----\n" + "ff" * 32 + "\n-----END EC PRIVATE KEY-----",
    ],
)
def test_redact_masks_tokens_and_certificate_keys(text: str) -> None:
    masked = redact(text)
    assert "0123456789abcdef" not in masked and "a1" * 32 not in masked and "ff" * 32 not in masked
    assert "<redacted>" in masked


@pytest.mark.parametrize(
    "line", ["    auth_pass Ab3dEf9H", "auth_pass: Ab3dEf9H", "auth_pass 'x1'"]
)
def test_redact_masks_the_vrrp_password(line: str) -> None:
    masked = redact(f"vrrp_instance kube_api {{\n{line}\n}}")
    assert "Ab3dEf9H" not in masked and "x1" not in masked
    assert "auth_pass" in masked and "<redacted>" in masked
