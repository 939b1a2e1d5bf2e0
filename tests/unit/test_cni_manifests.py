"""The vendored CNI manifests are exactly the reviewed, pinned files."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from pikube.resources import data_path

# Update a sum only together with a reviewed manifest change (new pinned version).
MANIFEST_SHA256 = {
    "kube-flannel-v0.26.1.yml": "229c460f216d7c8b6fa79133ab74611b36249382dbfc7fd55020cfbd06241f92",
    # Project Calico's manifests/calico-typha.yaml of v3.29.5, unmodified (files/README.md).
    "calico-typha-v3.29.5.yml": "e918c9331acf46ddb716eb3b0edada2a5522e9de1839886aa2074ec72c1c4e1d",
}


def role_vars() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(
        data_path("roles", "pikube_cni", "vars", "main.yml").read_text()
    )
    return data


def manifest(name: str) -> str:
    return data_path("roles", "pikube_cni", "files", name).read_text()


def test_every_cni_choice_has_a_pinned_manifest() -> None:
    manifests = role_vars()["pikube_cni_manifests"]
    assert set(manifests) == {"flannel", "calico"}  # the choices of kubernetes.cni
    assert set(manifests.values()) == set(MANIFEST_SHA256)


def test_manifests_match_their_pinned_checksums() -> None:
    for name, expected in MANIFEST_SHA256.items():
        path = data_path("roles", "pikube_cni", "files", name)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == expected, name


def test_flannel_images_are_pinned_and_pod_network_is_replaceable() -> None:
    text = data_path("roles", "pikube_cni", "files", "kube-flannel-v0.26.1.yml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    daemonset = next(d for d in docs if d["kind"] == "DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    images = [c["image"] for c in spec["containers"] + spec["initContainers"]]
    assert images and all(":" in i and not i.endswith(":latest") for i in images)
    # The role rewrites exactly this string to the cluster's pod_cidr.
    assert text.count('"Network": "10.244.0.0/16"') == 1
    # ... and appends --iface=<node address> options to exactly these flanneld args.
    assert text.count("args: [--ip-masq, --kube-subnet-mgr]") == 1


def test_every_substituted_string_occurs_exactly_once() -> None:
    """A string that moved in a new upstream release would silently leave the default."""
    variables = role_vars()
    for plugin, edits in variables["pikube_cni_edits"].items():
        text = manifest(variables["pikube_cni_manifests"][plugin])
        assert edits, plugin
        for edit in edits:
            assert text.count(edit["old"]) == 1, (plugin, edit["old"])


def test_calico_images_are_pinned_multi_arch_releases_and_pool_is_settable() -> None:
    text = manifest("calico-typha-v3.29.5.yml")
    docs = [d for d in yaml.safe_load_all(text) if d]
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
