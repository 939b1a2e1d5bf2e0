"""The vendored CNI manifests are exactly the reviewed, pinned files."""

from __future__ import annotations

import hashlib

import yaml

from pikube.resources import data_path

# Update a sum only together with a reviewed manifest change (new pinned version).
MANIFEST_SHA256 = {
    "kube-flannel-v0.26.1.yml": "229c460f216d7c8b6fa79133ab74611b36249382dbfc7fd55020cfbd06241f92",
}


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
