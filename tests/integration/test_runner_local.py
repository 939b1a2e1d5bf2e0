"""The runner driving the real ansible-playbook (local connection, no lab needed).

Proves: the run directory layout, events -> per-host result, that no_log secrets appear
nowhere in the run directory or the output, and that an unreachable host (a closed port on
loopback) gives HostsUnreachable with a retry hint while the other hosts complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pikube.errors import EXIT_UNREACHABLE, HostsUnreachable, PlaybookFailed, RunInProgress
from pikube.resources import data_path
from pikube.runner import run_playbook
from pikube.runner.rundir import COMMAND_FILE, EVENTS_FILE, SUMMARY_FILE

PLAYBOOK = str(Path(__file__).parent.parent / "fixtures" / "playbooks" / "runner_probe.yml")
SECRETS = ("0123456789abcdef", "9f" * 32)


def local_host(name: str, **extra: object) -> str:
    lines = [
        f"    {name}:",
        "      ansible_connection: local",
        f"      ansible_python_interpreter: {sys.executable}",
    ]
    lines += [f"      {k}: {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines)


def inventory(*hosts: str) -> dict[str, str]:
    return {"hosts.yml": "all:\n  hosts:\n" + "\n".join(hosts) + "\n"}


def run(
    tmp_path: Path, *hosts: str, output: list[str], env: dict[str, str] | None = None
) -> tuple[Path, object]:
    state = tmp_path / "state"
    try:
        result: object = run_playbook(
            PLAYBOOK,
            inventory_files=inventory(*hosts),
            state_dir=state,
            command="up",
            on_event=lambda e: output.append(json.dumps(e)),
            on_output=output.append,
            base_env=None if env is None else {**os.environ, **env},
        )
    except (PlaybookFailed, HostsUnreachable) as err:
        result = err
    (run_dir,) = (state / "runs").iterdir()
    return run_dir, result


def all_text(directory: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in directory.rglob("*") if p.is_file())


def test_successful_run_writes_run_dir_and_keeps_secrets_out(tmp_path: Path) -> None:
    output: list[str] = []
    run_dir, result = run(tmp_path, local_host("one"), local_host("two"), output=output)
    assert not isinstance(result, Exception), result
    assert {p.name for p in run_dir.iterdir()} >= {
        "inventory",
        COMMAND_FILE,
        EVENTS_FILE,
        SUMMARY_FILE,
    }
    assert (run_dir / "inventory" / "hosts.yml").is_file()
    assert "--inventory" in (run_dir / COMMAND_FILE).read_text()
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    assert summary["ok"] and set(summary["hosts"]) == {"one", "two"}
    assert summary["hosts"]["one"]["changed"] == 1  # the one changed_when: true task
    events = [json.loads(line) for line in (run_dir / EVENTS_FILE).read_text().splitlines()]
    assert any(e.get("msg") == "hello from two" for e in events)  # visible output kept
    text = all_text(run_dir) + "\n".join(output)
    for secret in SECRETS:
        assert secret not in text
    assert not (run_dir / "cp").exists()  # per-run control path dir cleaned up


def test_unreachable_host_does_not_stop_the_others(tmp_path: Path) -> None:
    output: list[str] = []
    down = "    down1:\n      ansible_host: 127.0.0.1\n      ansible_port: 1"
    run_dir, result = run(tmp_path, local_host("one"), down, output=output)
    assert isinstance(result, HostsUnreachable)
    assert result.exit_code == EXIT_UNREACHABLE
    assert "down1" in result.what and "pikube up --limit down1" in (result.fix or "")
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    assert summary["hosts"]["down1"]["unreachable"] == 1
    assert summary["hosts"]["one"]["failed"] == 0 and summary["hosts"]["one"]["ok"] >= 3
    assert not any(s in all_text(run_dir) for s in SECRETS)


def test_failed_host_raises_playbook_failed_naming_it(tmp_path: Path) -> None:
    output: list[str] = []
    _, result = run(tmp_path, local_host("one"), local_host("bad", fail_here=True), output=output)
    assert isinstance(result, PlaybookFailed)
    assert "bad" in result.what and "deliberate failure on bad" in result.what
    assert "one" not in result.what.split("(")[0]
    assert "pikube up --limit bad" in (result.fix or "")


def test_ansible_log_path_from_the_user_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "user-ansible.log"
    monkeypatch.setenv("ANSIBLE_LOG_PATH", str(log))
    run(tmp_path, local_host("one"), output=[])
    assert not log.exists()


def test_pikube_ansible_cfg_caps_every_task() -> None:
    """pikube's own ansible.cfg sets a task timeout: no task can hang a run for ever."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-config"), "dump", "--only-changed"],
        env={**os.environ, "ANSIBLE_CONFIG": str(data_path("ansible.cfg"))},
        capture_output=True,
        text=True,
        check=True,
    )
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("TASK_TIMEOUT")]
    assert 600 <= int(line.rsplit("=", 1)[1]) <= 3600, line


def test_hung_task_fails_on_its_host_by_name_and_the_others_finish(tmp_path: Path) -> None:
    output: list[str] = []
    run_dir, result = run(
        tmp_path,
        local_host("one"),
        local_host("stuck", hang_here=True),
        output=output,
        env={"ANSIBLE_TASK_TIMEOUT": "3"},  # stands in for pikube's 30 minutes
    )
    assert isinstance(result, PlaybookFailed)
    assert "stuck" in result.what and "Hang where asked" in result.what
    assert "Timed out after 3 second" in result.what  # ansible's own words for the timeout
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    assert summary["hosts"]["one"]["failed"] == 0 and summary["hosts"]["stuck"]["failed"] == 1


HOLD_ON = """\
- name: Hold the hosts for a while
  hosts: all
  gather_facts: false
  tasks:
    - name: Hold on
      ansible.builtin.command: sleep 6
      changed_when: false
"""
FIRST_RUN = """\
import sys
from pathlib import Path
from pikube.runner import run_playbook
run_playbook(sys.argv[1], inventory_files={"hosts.yml": sys.argv[2]}, state_dir=Path(sys.argv[3]),
             command="up")
"""


def test_a_killed_runs_playbook_holds_the_cluster_until_it_ends(tmp_path: Path) -> None:
    """pikube SIGKILLed mid-run: its ansible-playbook runs on (orphaned, still changing the
    hosts), so a new run is refused, naming it, until it ended; then runs."""
    playbook = tmp_path / "hold.yml"
    playbook.write_text(HOLD_ON)
    hosts = inventory(local_host("one"))["hosts.yml"]
    state = tmp_path / "state"
    first = subprocess.Popen(
        [sys.executable, "-c", FIRST_RUN, str(playbook), hosts, str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any("Hold on" in p.read_text() for p in state.glob(f"runs/*/{EVENTS_FILE}")):
            assert first.poll() is None and time.monotonic() < deadline, "the task never started"
            time.sleep(0.1)
        (playbook_pid,) = [
            int(pid)
            for pid in Path(f"/proc/{first.pid}/task/{first.pid}/children").read_text().split()
            if b"ansible-playbook" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        with pytest.raises(RunInProgress) as refused:
            run_playbook(
                str(playbook), inventory_files={"hosts.yml": hosts}, state_dir=state, command="up"
            )
        assert f"ansible-playbook pid {playbook_pid}" in refused.value.what
        assert len(list((state / "runs").iterdir())) == 1  # the refused run left nothing
        while Path(f"/proc/{playbook_pid}").exists():  # it ends on its own: nothing kills it
            assert time.monotonic() < deadline, "the orphaned ansible-playbook never ended"
            time.sleep(0.2)
        result = run_playbook(
            str(playbook), inventory_files={"hosts.yml": hosts}, state_dir=state, command="up"
        )
        assert list(result.hosts) == ["one"] and not result.failed_hosts
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
