"""`pikube up` (kubeadm) on lab nodes: 1 control plane (Pi personality) + 2 workers.

Runs the real CLI over real SSH against systemd-nspawn nodes, with the stand-in kubeadm /
kubelet packages from a signed pkgs.k8s.io-shaped repository and the real kubectl.
The steps build on each other (one lab per module): a worker is down during the first run,
retried with the command the error suggests, then the converged cluster is re-run, checked,
and searched for leaked join tokens.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.clusterlab import Pikube, cluster_lab

pytestmark = pytest.mark.lab


WORKER_DOWN = "node-3"
KEYRING = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg"  # the signed-by keyring apt reads
OUTPUTS: list[str] = []  # everything the CLI printed in this module, searched for secrets


@pytest.fixture(scope="module")
def kubeadm_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """A fresh 3-node lab (node-1 a Pi 4) with the stand-in repository; node-3 powered off."""
    with cluster_lab("kadm", 3, "kubeadm", pi=1) as lab:
        cluster = lab.write_cluster(tmp_path_factory.mktemp("kubeadm") / "cluster.yaml", "kubeadm")
        lab.stop(WORKER_DOWN)
        yield lab, cluster


def pikube(lab: Any, cluster: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # No --skip-doctor: up's preflight runs against the lab nodes too (they name the amd64
    # image and their kernel has vxlan, so only notes that `up` fixes itself remain).
    proc = Pikube(lab, cluster, "kubeadm", skip_doctor=False)(*args, timeout=1800)
    OUTPUTS.append(proc.stdout + proc.stderr)
    return proc


def state_dir(lab: Any) -> Path:
    return Path(lab.cluster_data("kubeadm")["state_dir"])


def latest_summary(lab: Any) -> dict[str, Any]:
    runs = sorted((state_dir(lab) / "runs").iterdir())
    return json.loads((runs[-1] / "summary.json").read_text())


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


def test_check_mode_on_fresh_nodes_changes_nothing(kubeadm_lab: tuple[Any, Path]) -> None:
    lab, cluster = kubeadm_lab
    proc = pikube(lab, cluster, "up", "--check")
    assert proc.returncode == 6, proc.stderr[-3000:]  # node-3 is down: only that is wrong
    summary = latest_summary(lab)
    assert all(summary["hosts"][h]["failed"] == 0 for h in ("node-1", "node-2"))
    assert summary["hosts"]["node-1"]["changed"] > 0  # it reports what it would do ...
    cmdline = lab.exec("node-1", ["cat", "/boot/firmware/cmdline.txt"]).stdout
    assert "cgroup_memory=1" not in cmdline  # ... without doing it
    assert lab.reboot_count("node-1") == 1
    assert (
        lab.exec("node-2", ["test", "-e", "/etc/apt/sources.list.d/kubernetes.list"]).returncode
        == 1
    )


def test_worker_down_leaves_the_others_joined(kubeadm_lab: tuple[Any, Path]) -> None:
    lab, cluster = kubeadm_lab
    proc = pikube(lab, cluster, "up")
    assert proc.returncode == 6, proc.stderr[-3000:]
    assert f"could not reach {WORKER_DOWN}" in proc.stderr
    assert f"pikube up --limit {WORKER_DOWN}" in proc.stderr
    summary = latest_summary(lab)
    assert summary["hosts"][WORKER_DOWN]["unreachable"] >= 1
    assert all(summary["hosts"][h]["failed"] == 0 for h in ("node-1", "node-2"))
    assert ready_nodes(lab) == {"node-1", "node-2"}  # through the fetched kubeconfig


def test_retry_with_limit_joins_the_worker(kubeadm_lab: tuple[Any, Path]) -> None:
    lab, cluster = kubeadm_lab
    lab.start(WORKER_DOWN)
    proc = pikube(lab, cluster, "up", "--limit", WORKER_DOWN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ready_nodes(lab) == {"node-1", "node-2", "node-3"}
    assert "kubectl --kubeconfig" in proc.stderr  # the next step is shown


def test_second_run_changes_nothing(kubeadm_lab: tuple[Any, Path]) -> None:
    lab, cluster = kubeadm_lab
    proc = pikube(lab, cluster, "up")
    assert proc.returncode == 0, proc.stderr[-3000:]
    changed = {h: s["changed"] for h, s in latest_summary(lab)["hosts"].items()}
    assert changed == {"node-1": 0, "node-2": 0, "node-3": 0}


def test_check_mode_on_converged_cluster_reports_no_changes(kubeadm_lab: tuple[Any, Path]) -> None:
    lab, cluster = kubeadm_lab
    proc = pikube(lab, cluster, "up", "--check", "--diff")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = latest_summary(lab)
    assert {h: s["changed"] for h, s in summary["hosts"].items()} == {
        "node-1": 0,
        "node-2": 0,
        "node-3": 0,
    }


def test_rerun_repairs_a_node_changed_by_hand(kubeadm_lab: tuple[Any, Path]) -> None:
    """A re-run that looks like a no-op still reads each node's real state (#18's guard):
    swap brought back at boot, a sysctl reverted, the kubelet stopped and disabled, a package
    unheld, containerd's systemd cgroup driver reverted, containerd stopped and disabled and
    apt's Kubernetes keyring deleted by hand on a converged worker are all repaired, and only
    there."""
    lab, cluster = kubeadm_lab
    node = "node-2"
    lab.exec(
        node,
        [
            "sh",
            "-c",
            # A container cannot swapon a file on overlayfs: swap comes back the way it would
            # at the next boot, an fstab entry and swap.target unmasked.
            "echo '/swapfile none swap sw 0 0' >> /etc/fstab"
            " && systemctl unmask swap.target"
            " && sysctl -w net.ipv4.ip_forward=0"
            " && systemctl disable --now kubelet"
            " && apt-mark unhold kubelet"
            " && sed -i 's/SystemdCgroup = true/SystemdCgroup = false/' /etc/containerd/config.toml"
            " && systemctl disable --now containerd"
            f" && rm {KEYRING}",
        ],
        check=True,
    )
    proc = pikube(lab, cluster, "up")
    assert proc.returncode == 0, proc.stderr[-3000:]
    changed = {h: s["changed"] for h, s in latest_summary(lab)["hosts"].items()}
    assert changed["node-1"] == changed["node-3"] == 0 and changed[node] > 0, changed

    def on_node(*argv: str) -> str:
        return lab.exec(node, list(argv)).stdout.strip()

    fstab = on_node("cat", "/etc/fstab").splitlines()
    assert not [line for line in fstab if "swap" in line and not line.lstrip().startswith("#")]
    assert on_node("systemctl", "is-enabled", "swap.target") == "masked"
    assert on_node("sysctl", "--values", "net.ipv4.ip_forward") == "1"
    assert on_node("systemctl", "is-active", "kubelet") == "active"
    assert on_node("systemctl", "is-enabled", "kubelet", "containerd").split() == ["enabled"] * 2
    assert "kubelet" in on_node("apt-mark", "showhold").split()
    assert "SystemdCgroup = true" in on_node("cat", "/etc/containerd/config.toml")
    assert on_node("systemctl", "is-active", "containerd") == "active"
    assert lab.exec(node, ["test", "-s", KEYRING]).returncode == 0
    assert ready_nodes(lab) == {"node-1", "node-2", "node-3"}


@pytest.mark.slow
def test_rerun_repairs_the_hosts_block_and_the_keyrings_mode(kubeadm_lab: tuple[Any, Path]) -> None:
    """The probes' other shortcuts look too: a node dropped from the /etc/hosts block and the
    keyring made unreadable to apt are repaired on that worker only."""
    lab, cluster = kubeadm_lab
    node = "node-3"
    hosts = lab.exec(node, ["cat", "/etc/hosts"], check=True).stdout
    assert "# BEGIN pikube" in hosts
    # node-1's line inside pikube's block only (the lab names the nodes above it too), in
    # place: sed -i renames, and /etc/hosts may be a bind mount.
    drop = "/^# BEGIN pikube/{b=1} /^# END pikube/{b=0} !(b && / node-1$/)"
    script = f"awk '{drop}' /etc/hosts > /tmp/hosts && cat /tmp/hosts > /etc/hosts"
    script += f" && chmod 600 {KEYRING}"
    lab.exec(node, ["sh", "-c", script], check=True)
    assert (
        lab.exec(node, ["cat", "/etc/hosts"]).stdout.count(" node-1\n")
        == hosts.count(" node-1\n") - 1
    )
    proc = pikube(lab, cluster, "up")
    assert proc.returncode == 0, proc.stderr[-3000:]
    changed = {h: s["changed"] for h, s in latest_summary(lab)["hosts"].items()}
    assert changed["node-1"] == changed["node-2"] == 0 and changed[node] == 2, changed
    assert lab.exec(node, ["cat", "/etc/hosts"]).stdout == hosts
    assert lab.exec(node, ["stat", "-c", "%a", KEYRING]).stdout.strip() == "644"


@pytest.mark.slow
def test_rerun_repairs_the_control_planes_files_changed_by_hand(
    kubeadm_lab: tuple[Any, Path],
) -> None:
    """The control plane's probe and one-run file tasks look too: the SSH user's copy of
    admin.conf edited, pikube's private folder opened up, kubeadm's configuration and the
    flannel manifest edited or deleted, and the admin machine's kubeconfig deleted are all
    put back, and only the control plane changes."""
    lab, cluster = kubeadm_lab
    node = "node-1"
    user = lab.cluster_data("kubeadm")["ssh"]["user"]
    home = lab.exec(node, ["sh", "-c", f"getent passwd {user} | cut -d: -f6"]).stdout.strip()
    before = {
        path: lab.exec(node, ["cat", path], check=True).stdout
        for path in ("/etc/pikube/kubeadm-init.yaml", "/etc/pikube/cni/flannel.yml")
    }
    script = (
        f"echo '# edited' >> {home}/.kube/config"
        " && chmod 755 /etc/pikube"
        " && echo '# edited' >> /etc/pikube/kubeadm-init.yaml"
        " && rm /etc/pikube/cni/flannel.yml"
    )
    lab.exec(node, ["sh", "-c", script], check=True)
    fetched = state_dir(lab) / "kubeconfig"
    fetched.unlink()
    proc = pikube(lab, cluster, "up")
    assert proc.returncode == 0, proc.stderr[-3000:]
    changed = {h: s["changed"] for h, s in latest_summary(lab)["hosts"].items()}
    assert changed["node-2"] == changed["node-3"] == 0 and changed[node] > 0, changed
    same = lab.exec(node, ["cmp", "/etc/kubernetes/admin.conf", f"{home}/.kube/config"])
    assert same.returncode == 0, same.stdout
    assert lab.exec(node, ["stat", "-c", "%a", "/etc/pikube"]).stdout.strip() == "700"
    for path, text in before.items():
        assert lab.exec(node, ["cat", path]).stdout == text, path
    assert fetched.stat().st_mode & 0o777 == 0o600
    assert ready_nodes(lab) == {"node-1", "node-2", "node-3"}


@pytest.mark.slow
def test_an_init_that_stopped_early_is_named_not_taken_for_done(
    kubeadm_lab: tuple[Any, Path],
) -> None:
    """kubeadm init interrupted after it wrote admin.conf leaves no kube-public/cluster-info,
    which every join reads first. A re-run must not take the node for initialised and let the
    joins time out: it stops on the control plane and says to build again."""
    lab, cluster = kubeadm_lab
    saved = kubectl(lab, "get", "configmap", "cluster-info", "-n", "kube-public", "-o", "json")
    assert saved.returncode == 0, saved.stderr
    assert kubectl(lab, "delete", "configmap", "cluster-info", "-n", "kube-public").returncode == 0
    try:
        proc = pikube(lab, cluster, "up")
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert "kubeadm init on node-1 stopped before it finished" in proc.stderr
        assert "`pikube reset`, then `pikube up`" in proc.stderr
    finally:
        restored = json.loads(saved.stdout)
        for field in ("resourceVersion", "uid", "creationTimestamp"):
            restored["metadata"].pop(field, None)
        back = subprocess.run(
            ["kubectl", "--kubeconfig", str(state_dir(lab) / "kubeconfig"), "create", "-f", "-"],
            input=json.dumps(restored), capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert back.returncode == 0, back.stderr
    proc = pikube(lab, cluster, "up")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {h: s["changed"] for h, s in latest_summary(lab)["hosts"].items()} == dict.fromkeys(
        ("node-1", "node-2", "node-3"), 0
    )


def test_kubelet_brought_kubernetes_cni_as_a_dependency(kubeadm_lab: tuple[Any, Path]) -> None:
    """As from pkgs.k8s.io: nobody installs kubernetes-cni by name, kubelet's Depends does."""
    lab, _ = kubeadm_lab
    for node in ("node-1", "node-2", "node-3"):
        status = lab.exec(node, ["dpkg-query", "-W", "-f", "${Status}", "kubernetes-cni"]).stdout
        assert status == "install ok installed", (node, status)
        assert "kubernetes-cni" in lab.exec(node, ["apt-mark", "showauto"]).stdout.split()


def test_control_plane_kubeadm_config_keeps_go_types(kubeadm_lab: tuple[Any, Path]) -> None:
    lab, _ = kubeadm_lab
    text = lab.exec("node-1", ["cat", "/etc/pikube/kubeadm-init.yaml"]).stdout
    docs = {d["kind"]: d for d in __import__("yaml").safe_load_all(text) if d}
    assert type(docs["InitConfiguration"]["localAPIEndpoint"]["bindPort"]) is int


def test_pi_gets_cmdline_flags_once_and_one_reboot(kubeadm_lab: tuple[Any, Path]) -> None:
    lab, _ = kubeadm_lab
    cmdline = lab.exec("node-1", ["cat", "/boot/firmware/cmdline.txt"]).stdout
    words = cmdline.split()
    assert cmdline.count("\n") == 1 and cmdline.endswith("\n")  # still one line
    assert words.count("cgroup_enable=memory") == 1 and words.count("cgroup_memory=1") == 1
    assert "root=LABEL=writable" in words and "rootwait" in words  # the rest is kept
    assert lab.reboot_count("node-1") == 2  # first boot + exactly one reboot
    assert lab.reboot_count("node-2") == 1  # not a Pi: never rebooted


def test_fetched_kubeconfig_is_private_and_points_at_the_control_plane(
    kubeadm_lab: tuple[Any, Path],
) -> None:
    lab, _ = kubeadm_lab
    path = state_dir(lab) / "kubeconfig"
    assert path.stat().st_mode & 0o777 == 0o600
    config = __import__("yaml").safe_load(path.read_text())
    assert config["clusters"][0]["cluster"]["server"] == f"https://{lab.node('node-1').ip}:6443"


def test_join_tokens_appear_nowhere(kubeadm_lab: tuple[Any, Path]) -> None:
    lab, _ = kubeadm_lab
    proc = kubectl(lab, "get", "secrets", "--namespace", "kube-system", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    import base64

    secrets = []
    for item in json.loads(proc.stdout)["items"]:
        if item.get("type") == "bootstrap.kubernetes.io/token":
            data = {k: base64.b64decode(v).decode() for k, v in item["data"].items()}
            secrets.append(data["token-secret"])
            secrets.append(f"{data['token-id']}.{data['token-secret']}")
    assert secrets, "pikube's joins should have left bootstrap tokens (15m TTL) behind"
    runs = state_dir(lab) / "runs"
    texts = [p.read_text(errors="replace") for p in runs.rglob("*") if p.is_file()]
    texts += OUTPUTS
    for secret in secrets:
        assert not any(secret in text for text in texts)
    token_shape = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
    assert not any(token_shape.search(text) for text in texts)
