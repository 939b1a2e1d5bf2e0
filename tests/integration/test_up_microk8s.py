"""`pikube up` (MicroK8s) on lab nodes: 1 control node (Pi personality) + 2 workers, then a 3rd.

Runs the real CLI over real SSH against systemd-nspawn nodes, with the snap and MicroK8s
stand-ins (tests/lab/standins: `snap install microk8s`, single-use `add-node` tokens, a
cluster agent on :25000) and the real kubectl on the admin side through the fetched kubeconfig.
The steps build on each other (one lab per module): fresh up, Pi memory cgroup + one reboot,
no-op re-run, check mode, a worker added to cluster.yaml later, secrets never leaked.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.lab

lab_core = pytest.importorskip("tests.lab.core", reason="the lab (tests/lab) is not installed")
lab_fixtures = pytest.importorskip("tests.lab.fixtures")

FIRST = ("node-1", "node-2", "node-3")
LATER = "node-4"  # booted with the others, but only in cluster.yaml from the last step on
OUTPUTS: list[str] = []  # everything the CLI printed in this module, searched for secrets
STALE_TOKEN: list[str] = []  # a valid but stale token planted on the control node


def pikube_bin() -> str:
    candidate = Path(sys.executable).parent / "pikube"
    return str(candidate) if candidate.exists() else "pikube"


def write_cluster(lab: Any, path: Path, names: tuple[str, ...]) -> Path:
    data = lab.cluster_data("microk8s")
    data["nodes"] = [n for n in data["nodes"] if n["name"] in names]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def microk8s_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """A fresh 4-node lab (node-1 a Pi 4); cluster.yaml names node-1..3 only."""
    lab_fixtures.skip_unless_lab_possible()
    if shutil.which("kubectl") is None:
        pytest.fail(
            "the real kubectl is needed on the admin side: apt-get install kubernetes-client"
        )
    _, second_half = lab_fixtures.lab_halves()
    lab = lab_core.Lab(f"{lab_fixtures.lab_name()}-mk8s", second_half)
    lab.down()
    try:
        lab.up(4, distribution="microk8s", pi=1)
        cluster = write_cluster(lab, tmp_path_factory.mktemp("microk8s") / "cluster.yaml", FIRST)
        yield lab, cluster
    finally:
        lab.down()


def pikube(cluster: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # --skip-doctor: lab nodes are amd64 containers without vxlan, which doctor rightly
    # reports for a cluster file naming an arm64 Pi image.
    proc = subprocess.run(
        [pikube_bin(), *args, "--skip-doctor", "--cluster", str(cluster)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env=dict(os.environ, PIKUBE_DEBUG="0"),
    )
    OUTPUTS.append(proc.stdout + proc.stderr)
    return proc


def state_dir(lab: Any) -> Path:
    return Path(lab.cluster_data("microk8s")["state_dir"])


def latest_run(lab: Any) -> Path:
    return sorted((state_dir(lab) / "runs").iterdir())[-1]


def latest_summary(lab: Any) -> dict[str, Any]:
    return json.loads((latest_run(lab) / "summary.json").read_text())


def latest_events(lab: Any) -> list[dict[str, Any]]:
    lines = (latest_run(lab) / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def changed_per_host(lab: Any) -> dict[str, int]:
    return {h: s["changed"] for h, s in latest_summary(lab)["hosts"].items()}


def kubectl(lab: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(state_dir(lab) / "kubeconfig"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ready_nodes(lab: Any) -> set[str]:
    proc = kubectl(lab, "get", "nodes", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    ready = set()
    for node in json.loads(proc.stdout)["items"]:
        conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
        if conditions.get("Ready") == "True":
            ready.add(node["metadata"]["name"])
    return ready


def control_tokens(lab: Any) -> list[str]:
    """Join tokens the control node's cluster agent would still accept (unspent)."""
    path = "/var/snap/microk8s/current/credentials/cluster-tokens.txt"
    proc = lab.exec("node-1", ["cat", path])
    return [line.split("|")[0] for line in proc.stdout.split()] if proc.returncode == 0 else []


def joins_in(events: list[dict[str, Any]]) -> list[str]:
    """Hosts on which the join task changed something (one event per successful join)."""
    return [
        e["host"]
        for e in events
        if e.get("pikube_event") == "runner"
        and e.get("task", "").endswith("Join the cluster")
        and e.get("status") in ("ok", "changed")
        and e.get("changed")
    ]


def test_fresh_up_makes_every_node_ready(microk8s_lab: tuple[Any, Path]) -> None:
    lab, cluster = microk8s_lab
    proc = pikube(cluster, "up")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert ready_nodes(lab) == set(FIRST)  # the real kubectl, through the fetched kubeconfig
    summary = latest_summary(lab)
    assert set(summary["hosts"]) == set(FIRST)
    assert all(s["failed"] == 0 and s["unreachable"] == 0 for s in summary["hosts"].values())
    assert "kubectl --kubeconfig" in proc.stderr  # the next step is shown
    assert "node-1" in proc.stderr and "changed" in proc.stderr  # the per-host table


def test_each_worker_joined_once_with_a_token_spent_in_that_run(
    microk8s_lab: tuple[Any, Path],
) -> None:
    lab, _ = microk8s_lab
    assert sorted(joins_in(latest_events(lab))) == ["node-2", "node-3"]
    # Every token the run created was single-use and is spent: none is left to be reused.
    assert control_tokens(lab) == []
    workers = kubectl(lab, "get", "nodes", "-l", "node.kubernetes.io/microk8s-worker", "-o", "name")
    assert sorted(workers.stdout.split()) == ["node/node-2", "node/node-3"]  # joined --worker


def test_pi_gets_memory_cgroup_flags_and_one_reboot_before_microk8s(
    microk8s_lab: tuple[Any, Path],
) -> None:
    lab, _ = microk8s_lab
    cmdline = lab.exec("node-1", ["cat", "/boot/firmware/cmdline.txt"]).stdout
    words = cmdline.split()
    assert cmdline.count("\n") == 1 and cmdline.endswith("\n")  # still one line
    assert words.count("cgroup_enable=memory") == 1 and words.count("cgroup_memory=1") == 1
    assert "root=LABEL=writable" in words and "rootwait" in words  # the rest is kept
    effective = lab.exec("node-1", ["cat", "/run/pikube-lab/cmdline"]).stdout.split()
    assert "cgroup_memory=1" in effective  # the running kernel has it: the reboot happened
    assert lab.reboot_count("node-1") == 2  # first boot + exactly one reboot
    assert lab.reboot_count("node-2") == 1  # not a Pi: never rebooted
    # The reboot came before MicroK8s was installed (the stand-in's kubelite would not start
    # without the memory cgroup): in the event log of the fresh run.
    runs = sorted((state_dir(lab) / "runs").iterdir())
    lines = (runs[0] / "events.jsonl").read_text().splitlines()
    events = [json.loads(x) for x in lines if x.startswith("{")]
    node1 = [e.get("task", "") for e in events if e.get("host") == "node-1"]
    reboot = next(i for i, t in enumerate(node1) if t.endswith("Reboot node"))
    install = next(i for i, t in enumerate(node1) if t.endswith("Install the microk8s snap"))
    assert reboot < install


def test_second_run_changes_nothing(microk8s_lab: tuple[Any, Path]) -> None:
    lab, cluster = microk8s_lab
    proc = pikube(cluster, "up")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert changed_per_host(lab) == {h: 0 for h in FIRST}
    assert joins_in(latest_events(lab)) == []


def test_check_mode_on_converged_cluster_reports_no_changes(
    microk8s_lab: tuple[Any, Path],
) -> None:
    lab, cluster = microk8s_lab
    proc = pikube(cluster, "up", "--check", "--diff")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert changed_per_host(lab) == {h: 0 for h in FIRST}


def test_kubeconfig_is_private_and_points_at_the_control_node(
    microk8s_lab: tuple[Any, Path],
) -> None:
    lab, _ = microk8s_lab
    path = state_dir(lab) / "kubeconfig"
    assert path.stat().st_mode & 0o777 == 0o600
    config = yaml.safe_load(path.read_text())
    assert config["clusters"][0]["cluster"]["server"] == f"https://{lab.node('node-1').ip}:16443"
    assert config["current-context"] == lab.name


def test_worker_added_later_joins_with_a_fresh_token_others_untouched(
    microk8s_lab: tuple[Any, Path],
) -> None:
    lab, cluster = microk8s_lab
    # A stale token, valid and unspent, as a leftover from an earlier manual add-node would be.
    stale = lab.exec("node-1", ["/snap/bin/microk8s", "add-node", "--format", "token"])
    assert stale.returncode == 0, stale.stdout + stale.stderr
    STALE_TOKEN.append(stale.stdout.strip())
    write_cluster(lab, cluster, (*FIRST, LATER))
    proc = pikube(cluster, "up")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert ready_nodes(lab) == {*FIRST, LATER}
    changed = changed_per_host(lab)
    assert {h: changed[h] for h in FIRST} == {h: 0 for h in FIRST}
    assert changed[LATER] > 0
    assert joins_in(latest_events(lab)) == [LATER]
    # The stale token is still unspent: the join used the token made for it in this run,
    # which is spent now.
    assert control_tokens(lab) == STALE_TOKEN


def test_secrets_appear_nowhere(microk8s_lab: tuple[Any, Path]) -> None:
    lab, _ = microk8s_lab
    config = yaml.safe_load((state_dir(lab) / "kubeconfig").read_text())
    user = config["users"][0]["user"]
    key_pem = base64.b64decode(user["client-key-data"]).decode()
    key_body = "".join(line for line in key_pem.splitlines() if "-----" not in line)
    secrets = [user["client-key-data"], key_body[:64], *STALE_TOKEN]
    assert len(secrets) == 3 and all(len(s) >= 32 for s in secrets)
    texts = [
        p.read_text(errors="replace")
        for p in state_dir(lab).joinpath("runs").rglob("*")
        if p.is_file()
    ]
    texts += OUTPUTS
    assert texts
    for secret in secrets:
        assert not any(secret in text for text in texts)
    join_string = re.compile(r":25000/[0-9a-f]{32}")
    assert not any(join_string.search(text) for text in texts)
