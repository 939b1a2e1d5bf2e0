"""MicroK8s addons in the lab: the cluster file's words become MicroK8s' own addons
(load-balancer -> `metallb:FIRST-LAST` from network.lb_range, storage -> hostpath-storage,
metrics -> metrics-server) next to its native names (dns); dropping a word and re-running
disables that addon and leaves the others; a further run changes nothing.

Real CLI, real SSH, the snap and MicroK8s stand-ins (whose metallb takes its ranges as
upstream's enable script does). Slow tier: a MicroK8s build plus two re-runs.
"""

from __future__ import annotations

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


def test_dropping_a_word_disables_its_addon_and_a_rerun_changes_nothing(pk: Pikube) -> None:
    set_addons(pk, ["dns", "load-balancer"])
    pk.ok("up", "--tags", "addons")
    assert not enabled(pk, "metrics-server") and not enabled(pk, "hostpath-storage")
    assert enabled(pk, "dns") and enabled(pk, "metallb")
    pk.ok("up", "--tags", "addons")
    changed = pk.changed("up")
    assert "node-1" in changed and set(changed.values()) == {0}, changed
