"""The vendored CNI manifests are exactly the reviewed, pinned files, and each pod network
role sets the cluster's values in them as parsed documents (and nothing else)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from pikube.resources import data_path
from tests.cni import CNIS, patched_manifest, pinned_manifest, plugin_module, role_vars

# Update a sum only together with a reviewed manifest change (new pinned version).
MANIFEST_SHA256 = {
    "kube-flannel-v0.26.1.yml": "229c460f216d7c8b6fa79133ab74611b36249382dbfc7fd55020cfbd06241f92",
    # Project Calico's manifests/calico-typha.yaml of v3.29.5, unmodified (files/README.md).
    "calico-typha-v3.29.5.yml": "e918c9331acf46ddb716eb3b0edada2a5522e9de1839886aa2074ec72c1c4e1d",
}
CLUSTER = {
    "pikube_pod_cidr": "10.99.0.0/16",
    "pikube_network_subnet": "10.77.52.0/24",
    "groups": {"cluster": ["node-1", "node-2", "node-3"]},
    "hostvars": {
        "node-1": {"pikube_node_ip": "10.77.52.11"},
        "node-2": {"pikube_node_ip": "10.77.52.12"},
        "node-3": {},  # no address known: no --iface for it
    },
}
patch_manifest = plugin_module("pikube_manifest_patch").patch_manifest
ManifestPatchError = plugin_module("pikube_manifest_patch").ManifestPatchError


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(text, Loader=yaml.CSafeLoader) if d]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = (d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    return doc


def manifest_name(cni: str) -> str:
    name: str = role_vars(cni, **CLUSTER)[f"pikube_cni_{cni}_manifest"]
    return name


def test_every_cni_choice_has_a_role_with_a_pinned_manifest() -> None:
    assert {manifest_name(cni) for cni in CNIS} == set(MANIFEST_SHA256)
    roles = {p.name for p in data_path("roles").glob("pikube_cni_*")}
    assert roles == {f"pikube_cni_{cni}" for cni in CNIS}


@pytest.mark.parametrize("cni", CNIS)
def test_manifests_match_their_pinned_checksums(cni: str) -> None:
    path = data_path("roles", f"pikube_cni_{cni}", "files", manifest_name(cni))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == MANIFEST_SHA256[path.name]


def test_flannel_images_are_pinned_and_pod_network_is_replaceable() -> None:
    docs = documents(pinned_manifest("flannel"))
    daemonset = named(docs, "DaemonSet", "kube-flannel-ds")
    spec = daemonset["spec"]["template"]["spec"]
    images = [c["image"] for c in spec["containers"] + spec["initContainers"]]
    assert images and all(":" in i and not i.endswith(":latest") for i in images)
    # The role sets this Network to the cluster's pod_cidr ...
    config = named(docs, "ConfigMap", "kube-flannel-cfg")
    assert json.loads(config["data"]["net-conf.json"])["Network"] == "10.244.0.0/16"
    # ... and appends --iface=<node address> options to exactly these flanneld args.
    (flanneld,) = spec["containers"]
    assert flanneld["args"] == ["--ip-masq", "--kube-subnet-mgr"]


def test_flannel_role_sets_network_and_ifaces_and_nothing_else() -> None:
    pinned = documents(pinned_manifest("flannel"))
    patched = documents(patched_manifest("flannel", **CLUSTER))
    config = named(patched, "ConfigMap", "kube-flannel-cfg")
    net_conf = json.loads(config["data"]["net-conf.json"])
    assert net_conf == {
        "Network": "10.99.0.0/16",
        "EnableNFTables": False,
        "Backend": {"Type": "vxlan"},
    }
    (flanneld,) = named(patched, "DaemonSet", "kube-flannel-ds")["spec"]["template"]["spec"][
        "containers"
    ]
    assert flanneld["args"] == [
        "--ip-masq",
        "--kube-subnet-mgr",
        "--iface=10.77.52.11",
        "--iface=10.77.52.12",
    ]
    # Undo exactly those two changes: every other field of every document is the pinned one.
    expected = copy.deepcopy(pinned)
    named(expected, "ConfigMap", "kube-flannel-cfg")["data"]["net-conf.json"] = config["data"][
        "net-conf.json"
    ]
    named(expected, "DaemonSet", "kube-flannel-ds")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ] = flanneld["args"]
    assert patched == expected


def test_calico_role_sets_the_pool_and_autodetection_and_nothing_else() -> None:
    pinned = documents(pinned_manifest("calico"))
    patched = documents(patched_manifest("calico", **CLUSTER))
    node = named(patched, "DaemonSet", "calico-node")["spec"]["template"]["spec"]
    (container,) = (c for c in node["containers"] if c["name"] == "calico-node")
    env = container["env"]
    assert env[-2:] == [
        {"name": "CALICO_IPV4POOL_CIDR", "value": "10.99.0.0/16"},
        {"name": "IP_AUTODETECTION_METHOD", "value": "cidr=10.77.52.0/24"},
    ]
    assert [e["name"] for e in env].count("CALICO_IPV4POOL_CIDR") == 1
    expected = copy.deepcopy(pinned)
    named(expected, "DaemonSet", "calico-node")["spec"]["template"]["spec"]["containers"][0][
        "env"
    ] += env[-2:]
    assert patched == expected


def test_calico_images_are_pinned_multi_arch_releases_and_pool_is_settable() -> None:
    docs = documents(pinned_manifest("calico"))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("DaemonSet", "calico-node") in kinds and ("Deployment", "calico-typha") in kinds
    assert ("CustomResourceDefinition", "ippools.crd.projectcalico.org") in kinds
    images = set()
    for doc in docs:
        if doc["kind"] in ("DaemonSet", "Deployment"):
            spec = doc["spec"]["template"]["spec"]
            images |= {c["image"] for c in spec["containers"] + spec.get("initContainers", [])}
    # Calico's release images are multi-arch (amd64, arm64, ...): pinned to the release tag.
    assert images == {
        f"docker.io/calico/{name}:v3.29.5" for name in ("cni", "node", "kube-controllers", "typha")
    }
    node = next(d for d in docs if d["kind"] == "DaemonSet")
    env = {e["name"] for e in node["spec"]["template"]["spec"]["containers"][0]["env"]}
    # The role adds these two; upstream must not set them already (no duplicate env entries).
    assert "CALICO_IPV4POOL_CIDR" not in env and "IP_AUTODETECTION_METHOD" not in env


def rename(kind: str, name: str, new: str) -> Callable[[list[dict[str, Any]]], None]:
    def change(docs: list[dict[str, Any]]) -> None:
        named(docs, kind, name)["metadata"]["name"] = new

    return change


def rename_container(docs: list[dict[str, Any]]) -> None:
    named(docs, "DaemonSet", "calico-node")["spec"]["template"]["spec"]["containers"][0]["name"] = (
        "node"
    )


def rename_network(docs: list[dict[str, Any]]) -> None:
    data = named(docs, "ConfigMap", "kube-flannel-cfg")["data"]
    data["net-conf.json"] = data["net-conf.json"].replace('"Network"', '"Networks"')


def rename_net_conf(docs: list[dict[str, Any]]) -> None:
    data = named(docs, "ConfigMap", "kube-flannel-cfg")["data"]
    data["net-conf.yaml"] = data.pop("net-conf.json")


@pytest.mark.parametrize(
    ("cni", "change", "message"),
    [
        # a new release renamed the DaemonSet, the container, the ConfigMap, the JSON key ...
        ("calico", rename("DaemonSet", "calico-node", "calico-agent"),
         "no DaemonSet named calico-node (found: DaemonSet calico-agent)"),
        ("calico", rename_container,
         "DaemonSet calico-node: no container named calico-node (found: node)"),
        ("flannel", rename("ConfigMap", "kube-flannel-cfg", "flannel-cfg"),
         "no ConfigMap named kube-flannel-cfg (found: ConfigMap flannel-cfg)"),
        ("flannel", rename_network,
         "data key net-conf.json has no Network (found: Networks, EnableNFTables, Backend)"),
        ("flannel", rename_net_conf,
         "no data key net-conf.json (found: cni-conf.json, net-conf.yaml)"),
    ],
)  # fmt: skip
def test_a_manifest_whose_structure_changed_fails_naming_what_is_missing(
    cni: str, change: Callable[[list[dict[str, Any]]], None], message: str
) -> None:
    """A patch that no longer matches must fail, never leave the upstream default silently."""
    docs = documents(pinned_manifest(cni))
    change(docs)
    patches = role_vars(cni, **CLUSTER)[f"pikube_cni_{cni}_patches"]
    with pytest.raises(ManifestPatchError) as caught:
        patch_manifest(yaml.safe_dump_all(docs), patches, "next.yml")
    assert message in str(caught.value)
    assert "update the role's patches" in str(caught.value)


def test_values_land_as_data_whatever_they_hold() -> None:
    """A value with YAML syntax in it stays one string: it cannot add fields or documents."""
    value = '10.0.0.0/8"\n---\nkind: Secret\n- x: {{ y }}'
    text = patch_manifest(
        pinned_manifest("calico"),
        [{"kind": "DaemonSet", "name": "calico-node", "container": "calico-node",
          "env": {"CALICO_IPV4POOL_CIDR": value}}],
        "calico.yml",
    )  # fmt: skip
    docs = documents(text)
    assert len(docs) == len(documents(pinned_manifest("calico")))
    node = named(docs, "DaemonSet", "calico-node")["spec"]["template"]["spec"]["containers"][0]
    assert node["env"][-1] == {"name": "CALICO_IPV4POOL_CIDR", "value": value}


def test_a_malformed_patch_is_refused() -> None:
    with pytest.raises(ManifestPatchError, match="malformed patch"):
        patch_manifest(
            pinned_manifest("flannel"), [{"kind": "DaemonSet", "name": "x", "env": {}}], "f.yml"
        )
