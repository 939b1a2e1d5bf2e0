"""MicroK8s addons in the lab: the cluster file's words become MicroK8s' own addons
(load-balancer -> `metallb:FIRST-LAST` from network.lb_range, storage -> hostpath-storage,
metrics -> metrics-server) next to its native names (dns); dropping a word and re-running
disables that addon and leaves the others; a further run changes nothing.

Real CLI, real SSH, the snap and MicroK8s stand-ins (whose metallb takes its ranges as
upstream's enable script does). Slow tier: a MicroK8s build plus two re-runs.
"""

from __future__ import annotations

import json
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from ipaddress import IPv4Network

import pytest
import yaml

from tests.integration.clusterlab import Pikube, cluster_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SNAP = "/snap/bin/microk8s"


def set_addons(pk: Pikube, addons: list[str]) -> str:
    data = yaml.safe_load(pk.cluster.read_text())
    data["kubernetes"]["addons"] = addons
    hosts = list(IPv4Network(data["network"]["subnet"]).hosts())
    data["network"]["lb_range"] = f"{hosts[-9]}-{hosts[-2]}"
    pk.cluster.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(data["network"]["lb_range"])


def enabled(pk: Pikube, addon: str) -> bool:
    out = pk.lab.exec("node-1", [SNAP, "status", "-a", addon]).stdout.strip()
    assert out in ("enabled", "disabled"), out
    return out == "enabled"


@pytest.fixture(scope="module")
def pk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pikube]:
    with cluster_lab("am", 2, "microk8s") as lab:
        path = lab.write_cluster(tmp_path_factory.mktemp("mk8s") / "cluster.yaml", "microk8s")
        yield Pikube(lab, path, "microk8s")


def test_words_enable_microk8s_own_addons(pk: Pikube) -> None:
    set_addons(pk, ["dns", "load-balancer", "storage", "metrics"])
    pk.ok("up")
    for addon in ("dns", "metallb", "hostpath-storage", "metrics-server"):
        assert enabled(pk, addon), addon
    assert not enabled(pk, "ingress")


def test_status_lists_each_addons_health_from_microk8s_own_workloads(pk: Pikube) -> None:
    """`pikube status` reports every word's MicroK8s addon by the workloads upstream's manifests
    run (metallb-system controller + speaker, kube-system hostpath-provisioner, metrics-server);
    `microk8s enable` does not wait for them, so status is asked until they have rolled out."""
    words = ("load-balancer", "storage", "metrics")
    for _attempt in range(60):
        data = json.loads(pk.ok("status", "--json").stdout)
        health = {a["name"]: a["healthy"] for a in data["addons"]}
        if health == dict.fromkeys(words, True):
            break
        time.sleep(2)
    assert health == dict.fromkeys(words, True), data["addons"]
    text = pk.ok("status").stdout
    assert "addon metrics: healthy (deployment/metrics-server 1/1 ready)" in text, text
    assert "addon load-balancer: healthy (deployment/controller 1/1 ready" in text, text


def test_dropping_a_word_disables_its_addon_and_a_rerun_changes_nothing(pk: Pikube) -> None:
    set_addons(pk, ["dns", "load-balancer"])
    pk.ok("up", "--tags", "addons")
    assert not enabled(pk, "metrics-server") and not enabled(pk, "hostpath-storage")
    assert enabled(pk, "dns") and enabled(pk, "metallb")
    pk.ok("up", "--tags", "addons")
    changed = pk.changed("up")
    assert "node-1" in changed and set(changed.values()) == {0}, changed


def configmap(pk: Pikube, name: str) -> subprocess.CompletedProcess[str]:
    return pk.kubectl("get", "--namespace", "default", f"configmap/{name}", "--output", "name")


def test_backup_then_restore_brings_back_the_snapshot_and_drops_what_came_after(
    pk: Pikube,
) -> None:
    """Issue #16 for MicroK8s on this module's cluster: object A, `pikube backup` (upstream's
    `microk8s dbctl backup` archive: one directory of i.key/i.data per datastore key), object
    B, `pikube restore --yes`: A is there, B is gone (dbctl alone would keep it), every node is
    Ready. The archive is 0600; no Secret's content reaches the output or the run records."""
    assert pk.kubectl("create", "configmap", "before-backup", "--from-literal=a=1").returncode == 0
    assert (
        pk.kubectl("create", "secret", "generic", "s", "--from-literal=pw=hunter2-pikube")
    ).returncode == 0
    pk.ok("backup")
    (archive,) = sorted((pk.state_dir / "backups").glob("*.tar.gz"))
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive) as tar:
        (top,) = [m.name for m in tar.getmembers() if m.isdir()]
        keys = {
            tar.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.name.endswith(".key")
        }
    assert "/registry/configmaps/default/before-backup" in keys, top
    script = pk.lab.exec("node-1", ["stat", "-c", "%a %U", "/usr/local/sbin/pikube-backup"])
    assert script.stdout.strip() == "700 root", script.stdout + script.stderr
    assert pk.kubectl("create", "configmap", "after-backup", "--from-literal=b=2").returncode == 0
    assert pk.kubectl("delete", "configmap", "before-backup").returncode == 0

    pk.ok("restore", str(archive), "--yes")
    assert configmap(pk, "before-backup").returncode == 0
    gone = configmap(pk, "after-backup")
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    pk.wait_all_ready(("node-1", "node-2"))
    for text in pk.outputs:
        assert "hunter2-pikube" not in text and "aHVudGVyMi1waWt1YmU" not in text
    for run in pk.runs("backup") + pk.runs("restore"):
        for path in run.rglob("*"):
            assert not path.is_file() or b"aHVudGVyMi1waWt1YmU" not in path.read_bytes(), path
