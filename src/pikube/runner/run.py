"""Run one playbook: run directory, ansible-playbook subprocess, events, result, errors."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pikube.errors import HostsUnreachable, PlaybookFailed
from pikube.resources import data_path
from pikube.runner.argv import (
    PlaybookOptions,
    RunPaths,
    build_env,
    build_playbook_argv,
    find_ansible_playbook,
)
from pikube.runner.events import RunResult, build_result, parse_event_line
from pikube.runner.redact import redact, redact_event
from pikube.runner.rundir import (
    EVENTS_FILE,
    create_run_dir,
    make_control_path_dir,
    write_command,
    write_inventory,
    write_summary,
)
from pikube.runner.runlock import note_child, run_lock

EventHandler = Callable[[dict[str, Any]], None]
OutputHandler = Callable[[str], None]
RetryHint = Callable[[list[str]], str]


def default_paths(run_dir: Path, state_dir: Path, control_path_dir: Path) -> RunPaths:
    return RunPaths(
        run_dir=run_dir,
        control_path_dir=control_path_dir,
        fact_cache_dir=state_dir / "facts",
        config_file=data_path("ansible.cfg"),
        roles_path=data_path("roles"),
        callback_dir=data_path("playbooks", "callback_plugins"),
    )


def close_control_sockets(directory: Path) -> None:
    """Ask each ssh master in ``directory`` to exit, so no ssh process outlives the run."""
    if not directory.is_dir():
        return
    ssh = shutil.which("ssh")
    for socket in directory.iterdir():
        if ssh is None or not socket.is_socket():
            continue
        subprocess.run(  # noqa: S603 - fixed argv, no shell
            [ssh, "-o", f"ControlPath={socket}", "-O", "exit", "pikube-control-master"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=10,
        )


def run_playbook(
    playbook: str,
    *,
    inventory_files: Mapping[str, str],
    state_dir: Path,
    command: str,
    options: PlaybookOptions | None = None,
    on_event: EventHandler | None = None,
    on_output: OutputHandler | None = None,
    config_file: Path | None = None,
    base_env: Mapping[str, str] | None = None,
    retry: RetryHint | None = None,
) -> RunResult:
    """Run ``playbooks/<playbook>`` (or an absolute path) on the rendered inventory.

    Raises ``PlaybookFailed`` (a host failed, or ansible-playbook itself failed) or
    ``HostsUnreachable`` (only unreachable hosts); both carry the result as ``.result``;
    ``RunInProgress`` when another run still holds the cluster (see ``runlock``).
    ``retry`` turns the hosts to run again into the command line the error's fix shows
    (default ``pikube <command> --limit HOSTS``).
    """
    options = options or PlaybookOptions()
    state_dir = state_dir.resolve()
    # One run per cluster at a time, including what a killed run left running.
    with run_lock(state_dir) as lock_fd:
        run_dir = create_run_dir(state_dir, command)
        inventory = write_inventory(run_dir, inventory_files)
        control_dir, temporary = make_control_path_dir(run_dir)
        paths = default_paths(run_dir, state_dir, control_dir)
        if config_file is not None:
            paths = RunPaths(**{**paths.__dict__, "config_file": config_file})
        env = build_env(os.environ if base_env is None else base_env, paths)
        playbook_path = (
            Path(playbook) if Path(playbook).is_absolute() else data_path("playbooks", playbook)
        )
        argv = build_playbook_argv(find_ansible_playbook(), playbook_path, inventory, options)
        write_command(run_dir, argv, env)

        events: list[dict[str, Any]] = []
        returncode = -1
        try:
            with (run_dir / EVENTS_FILE).open("w", encoding="utf-8") as log:
                process = subprocess.Popen(  # noqa: S603 - argv list built above, no shell
                    argv,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    text=True,
                    bufsize=1,
                    cwd=run_dir,
                    pass_fds=(lock_fd,),  # the lock lives as long as ansible-playbook does
                )
                note_child(lock_fd, process.pid, run_dir)
                assert process.stdout is not None  # noqa: S101 - Popen(stdout=PIPE) contract
                try:
                    for line in process.stdout:
                        event = parse_event_line(line)
                        if event is None:
                            if on_output is not None and line.strip():
                                on_output(redact(line.rstrip("\n")))
                            continue
                        log.write(redact(line.rstrip("\n")) + "\n")
                        log.flush()
                        # Handlers (progress, the live board) and the result see what the
                        # log keeps: nothing shaped like a secret reaches the screen or --json.
                        event = redact_event(event)
                        events.append(event)
                        if on_event is not None:
                            on_event(event)
                finally:
                    returncode = process.wait()
        finally:
            close_control_sockets(control_dir)
            if temporary:
                shutil.rmtree(control_dir, ignore_errors=True)
            elif control_dir.is_dir():
                with contextlib.suppress(OSError):
                    control_dir.rmdir()

    result = build_result(events, returncode)
    result.run_dir = str(run_dir)
    write_summary(run_dir, {"command": command, "playbook": playbook, **result.to_dict()})
    raise_for_result(result, command, retry)
    return result


def limit_retry(command: str) -> RetryHint:
    """``pikube COMMAND --limit HOSTS``: the retry for commands that take ``--limit``."""
    return lambda hosts: f"pikube {command} --limit {','.join(hosts)}"


def raise_for_result(result: RunResult, command: str, retry: RetryHint | None = None) -> None:
    """Turn a run that did not succeed into the matching typed error (with ``.result``)."""
    hint = retry or limit_retry(command)
    failed, unreachable = result.failed_hosts, result.unreachable_hosts
    events = Path(result.run_dir) / EVENTS_FILE
    error: PlaybookFailed | HostsUnreachable
    if failed:
        by_problem: dict[tuple[str, str], list[str]] = {}
        for host in failed:
            if host in result.failures:
                failure = result.failures[host]
                by_problem.setdefault((failure.task, failure.msg), []).append(host)
        details = "; ".join(
            f"{', '.join(hosts)}: {task}: {msg}".rstrip(": ")
            for (task, msg), hosts in by_problem.items()
        )
        what = f"the playbook failed on {', '.join(failed)}"
        if unreachable:
            what += f" and could not reach {', '.join(unreachable)}"
        error = PlaybookFailed(
            what + (f" ({details})" if details else ""),
            where=str(events),
            fix=f"fix the cause shown above, then retry with `{hint(failed + unreachable)}`",
        )
    elif unreachable:
        others = (
            "no host could be reached"
            if len(unreachable) == len(result.hosts)
            else ("the other hosts completed")
        )
        error = HostsUnreachable(
            f"could not reach {', '.join(unreachable)} over SSH; {others}",
            where=str(events),
            fix=(
                "power the node on and check its network and SSH host key, then run "
                f"`{hint(unreachable)}`"
            ),
        )
    elif result.returncode != 0:
        error = PlaybookFailed(
            f"ansible-playbook exited with code {result.returncode}"
            + ("" if result.complete else " before finishing (see its messages above)"),
            where=str(result.run_dir),
            fix="read the messages above; run again with -v for more detail",
        )
    else:
        return
    error.result = result
    raise error
