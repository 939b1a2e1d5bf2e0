"""Helpers shared by the lab modules that drive the real `pikube` CLI against a lab cluster.

`cluster_lab()` boots a throwaway lab (second half of PIKUBE_LAB_SUBNET) for one module and
always tears it down; `Pikube` runs the CLI as a subprocess against that lab's cluster file and
reads back what the runs left: run directories, per-host summaries, event logs, and the
cluster itself through the real kubectl and the fetched kubeconfig. `start_up` starts `up` in
the background as an `Interrupted` run, to SIGKILL `pikube` or its ansible-playbook when the
run's own event log reaches a point (a task starting, a command running on a node).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def pikube_bin() -> str:
    """The venv's `pikube` next to this interpreter, else the one on PATH."""
    candidate = Path(sys.executable).parent / "pikube"
    return str(candidate) if candidate.exists() else "pikube"


def require_kubectl() -> None:
    if shutil.which("kubectl") is None:
        pytest.fail(
            "the real kubectl is needed on the admin side: apt-get install kubernetes-client"
        )


@contextmanager
def cluster_lab(
    suffix: str, count: int, distribution: str, pi: int = 1, pi_os: str = "ubuntu"
) -> Iterator[Any]:
    """A fresh lab of `count` nodes (the first `pi` with the Pi personality, running `pi_os`),
    torn down after.

    Skips when the lab cannot run here (not root, tools missing); kubeadm labs get the
    stand-in package repository (two minors) in their web root.
    """
    from tests.lab import core as lab_core
    from tests.lab import fixtures as lab_fixtures

    lab_fixtures.skip_unless_lab_possible()
    require_kubectl()
    _, second_half = lab_fixtures.lab_halves()
    lab = lab_core.Lab(f"{lab_fixtures.lab_name()}-{suffix}", second_half)
    lab.down()  # left over by a crashed run of the same name
    try:
        lab.up(count, distribution=distribution, pi=pi, pi_os=pi_os)
        if distribution == "kubeadm" and not any(
            lab.www_dir.glob("core:/stable:/v*/deb/Release.key")
        ):
            from tests.lab.standins import build_repo

            build_repo(lab.www_dir)
        yield lab
    finally:
        lab.down()


# Every Ansible task in a lab run is cut off after this long (ansible's task_timeout): no lab
# task takes more than a few minutes, and a hung one then fails on its own host, by name.
LAB_TASK_TIMEOUT = 600


def kill_group(process: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL, to the process group `process` leads (start_new_session)."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(grace)
            # the leader is gone; make sure the rest of its group is, too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue


def is_ready(node: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
    return conditions.get("Ready") == "True"


@dataclass
class Pikube:
    """The pikube CLI against one lab cluster file, and what its runs left behind."""

    lab: Any
    cluster: Path
    distribution: str
    skip_doctor: bool = True  # for `up`: see the module using it
    outputs: list[str] = field(default_factory=list)  # all CLI output, searched for secrets

    def __call__(
        self, *args: str, timeout: int = 1500, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `pikube ARGS --cluster FILE`; a run that outlives `timeout` fails the test.

        Lab runs cap every Ansible task at LAB_TASK_TIMEOUT (a hung task then fails on its own
        host, named in the output). If the whole run still hangs, its process group (pikube,
        ansible-playbook, ssh) is killed, so nothing of it keeps acting on the lab while later
        tests run, and the failure shows where it stood: the last task started, the hosts that
        had not answered it, and what runs on every node.
        """
        extra = ["--skip-doctor"] if args[0] == "up" and self.skip_doctor else []
        env = dict(os.environ, PIKUBE_DEBUG="0")
        env.setdefault("ANSIBLE_TASK_TIMEOUT", str(LAB_TASK_TIMEOUT))
        argv = [pikube_bin(), *args, *extra, "--cluster", str(self.cluster)]
        with subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,  # its own process group, killed as one
        ) as process:
            try:
                stdout, stderr = process.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(process)
                stdout, stderr = process.communicate()
                self.outputs.append(stdout + stderr)
                pytest.fail(
                    f"`pikube {' '.join(args)}` ran longer than {timeout} s and was killed\n"
                    + self.hang_report()
                    + "\n--- its last output ---\n"
                    + stderr[-3000:],
                    pytrace=False,
                )
        proc = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
        self.outputs.append(proc.stdout + proc.stderr)
        return proc

    def hang_report(self) -> str:
        """Where a run stood: its last task, the hosts that had not answered it, node processes."""
        lines = []
        runs = self.runs()
        if runs:
            events = self.events()
            starts = [i for i, e in enumerate(events) if e.get("pikube_event") == "task_start"]
            if starts:
                last = events[starts[-1]]
                answered = {str(e["host"]) for e in events[starts[-1] :] if e.get("host")}
                lines.append(
                    f"run {runs[-1].name}: last task started: {last.get('play')} / "
                    f"{last.get('task')}; answered by: {sorted(answered) or 'no host'}"
                )
        for spec in self.lab.nodes():
            try:
                proc = self.lab.exec(
                    spec.name,
                    ["ps", "-eo", "pid,etimes,stat,args", "--sort=start_time"],
                    timeout=20,
                )
                listing = proc.stdout.splitlines()[-25:]
            except (OSError, subprocess.SubprocessError, RuntimeError) as err:
                listing = [f"(could not list: {err})"]
            lines.append(f"--- {spec.name} (newest processes last) ---")
            lines.extend(listing)
        return "\n".join(lines)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = self(*args)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc

    @property
    def state_dir(self) -> Path:
        return Path(self.lab.cluster_data(self.distribution)["state_dir"])

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def runs(self, command: str = "") -> list[Path]:
        base = self.state_dir / "runs"
        return sorted(p for p in base.iterdir() if command in p.name) if base.is_dir() else []

    def summary(self, command: str = "") -> dict[str, Any]:
        summary: dict[str, Any] = json.loads((self.runs(command)[-1] / "summary.json").read_text())
        return summary

    def events(self, command: str = "") -> list[dict[str, Any]]:
        lines = (self.runs(command)[-1] / "events.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def changed(self, command: str = "") -> dict[str, int]:
        return {h: s["changed"] for h, s in self.summary(command)["hosts"].items()}

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=360,
            check=False,
        )

    def nodes(self) -> dict[str, dict[str, Any]]:
        proc = self.kubectl("get", "nodes", "--output", "json")
        assert proc.returncode == 0, proc.stderr
        return {n["metadata"]["name"]: n for n in json.loads(proc.stdout)["items"]}

    def ready_nodes(self) -> set[str]:
        return {name for name, node in self.nodes().items() if is_ready(node)}

    def wait_all_ready(self, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """Wait (kubectl wait) until every node is Ready; the node set must be `names`."""
        proc = self.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=180s")
        assert proc.returncode == 0, proc.stderr
        found = self.nodes()
        assert set(found) == set(names)
        assert all(is_ready(n) for n in found.values())
        return found

    def wait_not_ready(self, node: str, timeout: float = 240) -> None:
        """Wait until `node` is no longer Ready: its kubelet stopped posting and the grace
        period ran out. A read that fails (an API server going away behind the VIP) is retried;
        still Ready after `timeout` fails the test, as what follows would prove nothing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.kubectl("get", "nodes", "--output", "json", "--request-timeout=10s")
            if proc.returncode == 0:
                found = {n["metadata"]["name"]: n for n in json.loads(proc.stdout)["items"]}
                if not is_ready(found[node]):
                    return
            time.sleep(5)
        pytest.fail(f"{node} never turned NotReady within {timeout:.0f} s", pytrace=False)

    def exists(self, node: str, path: str) -> bool:
        return bool(self.lab.exec(node, ["test", "-e", path]).returncode == 0)


def task_started(suffix: str) -> Callable[[dict[str, Any]], bool]:
    """Event filter: a task whose name ends with `suffix` started (the callback's task_start)."""
    return lambda e: e.get("pikube_event") == "task_start" and e.get("task", "").endswith(suffix)


def child_pids(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def lock_free(state_dir: Path) -> bool:
    """Whether no pikube run (nor what is left of one) holds the cluster's run lock."""
    path = state_dir / "run.lock"
    if not path.exists():
        return True
    with path.open("rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


@dataclass
class Interrupted:
    """A `pikube` run started in the background, to be killed at a point of its event log."""

    pk: Pikube
    process: subprocess.Popen[str]
    earlier_runs: set[Path]
    log: Path  # pikube's stdout + stderr (files, not pipes: an orphan must never block on them)
    killed: str = ""

    @property
    def run_dir(self) -> Path | None:
        new = sorted(set(self.pk.runs()) - self.earlier_runs)
        return new[-1] if new else None

    def events(self) -> list[dict[str, Any]]:
        run_dir = self.run_dir
        if run_dir is None or not (run_dir / "events.jsonl").exists():
            return []
        lines = (run_dir / "events.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]

    def wait_for(self, point: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """Wait until the run records an event matching `point`; fail if it ends first."""
        deadline = time.monotonic() + 1500
        while time.monotonic() < deadline:
            found = [e for e in self.events() if point(e)]
            if found:
                return found[0]
            if self.process.poll() is not None:
                pytest.fail(
                    f"the run ended (exit {self.process.returncode}) before {what}\n"
                    + self.log.read_text()[-3000:],
                    pytrace=False,
                )
            time.sleep(0.2)
        self.kill_all()
        pytest.fail(f"the run never reached {what}\n" + self.pk.hang_report(), pytrace=False)

    def wait_on_node(self, node: str, pattern: str, task: str) -> str:
        """After `task` started: wait until `pattern` (a command line) runs on `node`
        ("running"), or the run logged `task`'s result for `node` because it was quicker than
        one look ("done"). Either way the kill that follows lands in that task."""
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.pk.lab.exec(node, ["pgrep", "-f", pattern]).returncode == 0:
                return "running"
            if any(
                e.get("pikube_event") == "runner"
                and e.get("host") == node
                and e.get("task", "").endswith(task)
                for e in self.events()
            ):
                return "done"
            if self.process.poll() is not None:
                pytest.fail(f"the run ended before {task} on {node}", pytrace=False)
            time.sleep(0.1)
        self.kill_all()
        pytest.fail(f"{task} never ran on {node}", pytrace=False)

    def wait_gone_on(self, node: str, pattern: str) -> None:
        """What the killed controller had started on a node goes on there: wait until it ended."""
        deadline = time.monotonic() + 600
        while self.pk.lab.exec(node, ["pgrep", "-f", pattern]).returncode == 0:
            assert time.monotonic() < deadline, f"`{pattern}` still runs on {node}"
            time.sleep(0.5)

    def ansible_playbook_pid(self) -> int:
        for pid in child_pids(self.process.pid):
            if "ansible-playbook" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(
                errors="replace"
            ):
                return pid
        pytest.fail("pikube has no ansible-playbook child to kill", pytrace=False)

    def kill(self, target: str) -> int:
        """SIGKILL `pikube` alone (its ansible-playbook runs on, orphaned) or `ansible-playbook`
        alone (pikube sees it die). Returns the killed pid."""
        pid = self.process.pid if target == "pikube" else self.ansible_playbook_pid()
        os.kill(pid, signal.SIGKILL)
        self.killed = target
        if target != "pikube":
            self.process.wait(300)
        else:
            self.process.wait(30)
        return pid

    def wait_group_gone(self, timeout: float = 1500) -> None:
        """Wait until every process of the run ended: its group (an orphaned ansible-playbook)
        and Ansible's workers (each in a session of its own), which share the run lock."""
        deadline = time.monotonic() + timeout
        while group_alive(self.process.pid) or not lock_free(self.pk.state_dir):
            if time.monotonic() > deadline:
                self.kill_all()
                pytest.fail(
                    f"what was left of the killed run still ran after {timeout} s", pytrace=False
                )
            time.sleep(1)

    def kill_all(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)


def start_up(pk: Pikube, *args: str) -> Interrupted:
    """`pikube up ARGS` in the background (own process group), for `Interrupted` to kill."""
    extra = ["--skip-doctor"] if pk.skip_doctor else []
    env = dict(os.environ, PIKUBE_DEBUG="0")
    env.setdefault("ANSIBLE_TASK_TIMEOUT", str(LAB_TASK_TIMEOUT))
    handle, name = tempfile.mkstemp(prefix="pikube-up-", suffix=".log")
    earlier = set(pk.runs())
    process = subprocess.Popen(
        [pikube_bin(), "up", *args, *extra, "--cluster", str(pk.cluster)],
        stdin=subprocess.DEVNULL,
        stdout=handle,
        stderr=handle,
        text=True,
        env=env,
        start_new_session=True,
    )
    os.close(handle)
    return Interrupted(pk, process, earlier, Path(name))


def check_remove_of_an_unreachable_node(pk: Pikube, node: str, left_behind: str) -> None:
    """`remove-node --force` of a node cut off from the network: Kubernetes forgets it, the
    run exits 6 naming the node and the reset to run later, and the node itself is honestly
    not reset (`left_behind`, a path of its installation, is still there)."""
    others = set(pk.nodes()) - {node}
    pk.lab.isolate(node)
    try:
        proc = pk("remove-node", node, "--yes", "--force", "--drain-timeout", "20")
    finally:
        pk.lab.heal(node)
    assert proc.returncode == 6, proc.stderr[-4000:]
    assert f"{node} was removed from Kubernetes but could not be reached" in proc.stderr
    assert f"pikube reset --limit {node} --yes" in proc.stderr
    assert set(pk.nodes()) == others
    assert pk.exists(node, left_behind)
