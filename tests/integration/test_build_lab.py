"""`pikube build` in the lab: cards are loop devices inserted into a test sysfs tree, Pis
are lab nodes with real cloud-init that are powered on when their card is written, from the
seed pikube wrote on that card. Slow tier (installing cloud-init and three `up` runs).

1. The build writes the cards for node-1 and node-2, each Pi boots from its card; the build
   is interrupted (SIGINT) while it waits for the third card: exit 130, no traceback.
2. Run again, it resumes: asks only for node-3's card, waits for every first boot by the
   pinned host keys, runs the site playbook and ends with every node Ready (the real kubectl
   agrees). The time from the last card written to all Ready is printed (not asserted).
3. `--reflash node-3`, whose Pi is then never powered on: after the boot deadline the build
   names it with the likely causes (exit 6), and the other nodes are provisioned and Ready.

The lab's own host keys are not in the cluster's known_hosts: a node is reached only once
cloud-init has installed the keys pikube pinned when it wrote the card.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pikube.build import STAGES
from tests.image_support import BuiltImage, mtype
from tests.integration.clusterlab import LAB_TASK_TIMEOUT, cluster_lab
from tests.integration.firstboot import SEED_DIR, SEED_FILES, install_cloud_init
from tests.integration.test_build_cards import Readers, Transcript, blank
from tests.signals import interruptible

pytestmark = [pytest.mark.lab, pytest.mark.slow]

NODES = ("node-1", "node-2", "node-3")


@pytest.fixture(scope="module")
def pis() -> Iterator[Any]:
    """Three lab nodes with Ubuntu's cloud-init set-up, powered off, waiting for cards."""
    with cluster_lab("build", len(NODES), "kubeadm") as lab:
        errors: list[BaseException] = []

        def prepare(node: str) -> None:
            try:
                install_cloud_init(lab, node)  # NoCloud only, networkd as Ubuntu has it
            except BaseException as err:  # reported below, in the test's thread
                errors.append(err)

        threads = [threading.Thread(target=prepare, args=(n,)) for n in NODES]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        for node in NODES:
            lab.stop(node)
        yield lab


def power_on(lab: Any, node: str, card: str, boot_offset: int) -> threading.Thread:
    """Put the card in the Pi: its seed (read back from the card) where NoCloud looks, then
    boot the node in the background."""
    seed_dir = lab.node_dir(node) / "merged" / SEED_DIR.lstrip("/")
    seed_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in SEED_FILES:
        path = seed_dir / name
        path.write_bytes(mtype(card, boot_offset, name))
        os.chmod(path, 0o600)
    thread = threading.Thread(target=lab.start, args=(node,), kwargs={"timeout": 600})
    thread.start()
    return thread


def build_argv(cluster: Path, image: Path, readers: Readers, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "pikube", "build", "-c", str(cluster), "--image", str(image),
        "--yes", "--json", "--sys-root", str(readers.sys_root),
        "--proc-root", str(readers.proc_root), *extra,
    ]  # fmt: skip


def start(argv: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ, PIKUBE_DEBUG="0")
    env.setdefault("ANSIBLE_TASK_TIMEOUT", str(LAB_TASK_TIMEOUT))
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=interruptible,
    )


def insert_and_boot(
    lab: Any, readers: Readers, out: Transcript, node: str, work: Path, size: int, offset: int
) -> threading.Thread | None:
    out.wait_for(f"insert the card for {node}")
    card = readers.insert(blank(work / f"{node}-{len(out.lines)}.img", size))
    out.wait_for(f"card for {node} written", timeout=300)
    return power_on(lab, node, card, offset)


@pytest.fixture(scope="module")
def build_runs(
    pis: Any, pi_image: BuiltImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    lab = pis
    work = tmp_path_factory.mktemp("build-lab")
    data = lab.cluster_data("kubeadm")
    for node in data["nodes"]:
        node.pop("mac")  # a veth has no permanent MAC for netplan to match (see seed tests)
    data["ssh"]["known_hosts"] = str(work / "known_hosts")  # only what the build pins
    data["state_dir"] = str(work / "state")
    cluster = work / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(data, sort_keys=False))
    size, offset = 2 * pi_image.layout.size, pi_image.layout.boot_offset
    readers = Readers(work / "fake")
    runs: dict[str, Any] = {}
    boots: list[threading.Thread | None] = []
    try:
        # 1. Two cards, then Ctrl-C while the build waits for the third.
        proc = start(build_argv(cluster, pi_image.xz, readers))
        out = Transcript(proc)
        for node in NODES[:2]:
            boots.append(insert_and_boot(lab, readers, out, node, work, size, offset))
        out.wait_for(f"insert the card for {NODES[2]}")
        proc.send_signal(signal.SIGINT)
        runs["interrupted"] = (proc.wait(timeout=120), out.text(), proc.stdout.read())  # type: ignore[union-attr]

        # 2. Resumed: only node-3's card; then first boots, up, Ready.
        proc = start(build_argv(cluster, pi_image.xz, readers))
        out = Transcript(proc)
        boots.append(insert_and_boot(lab, readers, out, NODES[2], work, size, offset))
        code = proc.wait(timeout=3600)
        runs["resumed"] = (code, out.text(), proc.stdout.read())  # type: ignore[union-attr]
        runs["kubectl"] = subprocess.run(
            ["kubectl", "--kubeconfig", str(work / "state" / "kubeconfig"), "get", "nodes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # 3. node-3's card written again, and that Pi never powered on.
        for thread in boots:
            if thread is not None:
                thread.join()
        lab.stop(NODES[2])
        proc = start(
            build_argv(cluster, pi_image.xz, readers, "--reflash", NODES[2], "--boot-timeout", "60")
        )
        out = Transcript(proc)
        out.wait_for(f"insert the card for {NODES[2]}")
        readers.insert(blank(work / "never.img", size))
        code = proc.wait(timeout=3600)
        runs["never"] = (code, out.text(), proc.stdout.read())  # type: ignore[union-attr]
        yield runs
    finally:
        for thread in boots:
            if thread is not None:
                thread.join()
        readers.close()


def test_interrupted_build_exits_130_and_keeps_the_cards_written(
    build_runs: dict[str, Any],
) -> None:
    code, stderr, stdout = build_runs["interrupted"]
    assert code == 130, stderr
    assert "Traceback" not in stderr and "Error: interrupted" in stderr
    nodes = json.loads(stdout)["nodes"]
    assert [nodes[n]["stage"] for n in NODES] == ["card written", "card written", ""]


def test_resumed_build_asks_only_for_the_missing_card_and_ends_all_ready(
    build_runs: dict[str, Any],
) -> None:
    code, stderr, stdout = build_runs["resumed"]
    assert code == 0, stderr
    asked = [line for line in stderr.splitlines() if "insert the card for" in line]
    assert asked and all("node-3" in line for line in asked), asked
    for node in NODES:
        assert f"{node}: SSH up" in stderr and f"{node}: Ready" in stderr, stderr
    assert "every node is Ready: kubectl --kubeconfig" in stderr
    document = json.loads(stdout)
    assert document["ok"] and document["exit_code"] == 0
    stages = {n: document["nodes"][n]["stages"] for n in NODES}
    for node_stages in stages.values():
        assert set(node_stages) == set(STAGES), stages
    last_card = max(s["card written"] for s in stages.values())
    all_ready = max(s["Ready"] for s in stages.values())
    print(f"\nlast card written -> all Ready: {all_ready - last_card:.0f} s")
    listing = build_runs["kubectl"]
    assert listing.returncode == 0, listing.stderr
    ready = {line.split()[0] for line in listing.stdout.splitlines()[1:] if " Ready " in line}
    assert ready == set(NODES), listing.stdout


def test_a_pi_that_never_boots_is_named_with_causes_while_the_others_go_on(
    build_runs: dict[str, Any],
) -> None:
    code, stderr, stdout = build_runs["never"]
    assert code == 6, stderr
    assert "Traceback" not in stderr
    assert "1 node(s) did not boot within 60 s: node-3" in stderr
    assert "not powered" in stderr and "pikube build` again" in stderr
    assert "insert the card for node-1" not in stderr  # the others' cards were not asked for
    nodes = json.loads(stdout)["nodes"]
    assert nodes["node-3"]["stage"] == "booting"
    assert nodes["node-1"]["stage"] == nodes["node-2"]["stage"] == "Ready"
    assert "node-1: prepared" in stderr and "node-2: joined" in stderr  # provisioned anyway
