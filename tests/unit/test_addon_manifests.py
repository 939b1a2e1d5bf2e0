"""The addon manifests kept in pikube are exactly the reviewed upstream files, every image is
pinned, the role knows the same addon words as pikube, and its patches set what a Pi cluster
needs (default StorageClass, metrics-server's kubelet flags) as parsed documents."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from pikube.addons import ADDONS
from pikube.resources import data_path
from tests.cni import plugin_module

ROLE = data_path("roles", "pikube_addons")
# Update a sum only together with a reviewed manifest change (files/README.md).
MANIFEST_SHA256 = {
    "metallb-native-v0.16.1.yml": "bf25feebb7582ca7df845efd52ffbc2960d6cbf4cfc972f47fded9f788b67f0b",  # noqa: E501
    "traefik-v3.7.9.yml": "3862f7ef4333f3c0672402fb29d628acb972d4c04bb8375eceeb7dcc49fd8a04",
    "local-path-storage-v0.0.37.yml": "9781b39c24f3f651bd6d6e41b561e04e4904bbdb6d4f8c7a6009df3a702dcd65",  # noqa: E501
    "metrics-server-v0.9.0.yml": "1cec29a5267809306a2c6ec74a3e449abbb705b4a8beed0c8a1963910f72c79b",
}


def role_vars(**cluster: Any) -> dict[str, Any]:
    loader = DataLoader()
    variables: dict[str, Any] = {}
    for part in ("defaults", "vars"):
        variables |= loader.load_from_file(str(ROLE / part / "main.yml"), trusted_as_template=True)
    variables |= cluster
    templar = Templar(loader=loader, variables=variables)
    return {k: json.loads(json.dumps(templar.template(v))) for k, v in variables.items()}


def patched(addon: str) -> list[dict[str, Any]]:
    entry = role_vars()["pikube_addons_catalog"][addon]
    text = (ROLE / "files" / entry["manifest"]).read_text()
    out = plugin_module("pikube_manifest_patch").patch_manifest(text, entry["patches"], addon)
    return [d for d in yaml.safe_load_all(out) if d]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = (d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    return doc


def test_the_role_installs_exactly_pikubes_addon_words() -> None:
    catalog = role_vars()["pikube_addons_catalog"]
    assert set(catalog) == set(ADDONS)
    assert {entry["manifest"] for entry in catalog.values()} == set(MANIFEST_SHA256)


@pytest.mark.parametrize("name", sorted(MANIFEST_SHA256))
def test_manifests_match_their_pinned_checksums(name: str) -> None:
    digest = hashlib.sha256((ROLE / "files" / name).read_bytes()).hexdigest()
    assert digest == MANIFEST_SHA256[name]
    assert name in (ROLE / "files" / "README.md").read_text()
    assert MANIFEST_SHA256[name] in (ROLE / "files" / "README.md").read_text()


@pytest.mark.parametrize("addon", sorted(ADDONS))
def test_every_image_is_pinned_and_every_workload_waited_for_exists(addon: str) -> None:
    docs = patched(addon)
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "DaemonSet")]
    images = [c["image"] for p in pods for c in p["containers"] + p.get("initContainers", [])]
    assert images and all(":" in i.rsplit("/", 1)[-1] and not i.endswith(":latest") for i in images)
    for workload in role_vars()["pikube_addons_catalog"][addon]["workloads"]:
        kind, name = workload["name"].split("/")
        doc = named(docs, {"deployment": "Deployment", "daemonset": "DaemonSet"}[kind], name)
        assert doc["metadata"]["namespace"] == workload["namespace"]


def test_local_path_is_the_default_storage_class() -> None:
    sc = named(patched("storage"), "StorageClass", "local-path")
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"


def test_metrics_server_scrapes_kubelets_by_address_without_verifying_them() -> None:
    deploy = named(patched("metrics"), "Deployment", "metrics-server")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert "--kubelet-insecure-tls" in args
    assert [a for a in args if a.startswith("--kubelet-preferred-address-types")] == [
        "--kubelet-preferred-address-types=InternalIP"
    ]
    assert "--metric-resolution=15s" in args  # upstream's other flags stay


def test_ingress_is_exposed_through_the_load_balancer() -> None:
    assert named(patched("ingress"), "Service", "traefik")["spec"]["type"] == "LoadBalancer"


def test_metallb_pool_holds_the_clusters_range() -> None:
    pool = role_vars(pikube_addons_lb_range="10.0.0.240-10.0.0.250")["pikube_addons_metallb_pool"]
    ip_pool = next(d for d in pool if d["kind"] == "IPAddressPool")
    assert ip_pool["spec"]["addresses"] == ["10.0.0.240-10.0.0.250"]
    l2 = next(d for d in pool if d["kind"] == "L2Advertisement")
    assert l2["spec"]["ipAddressPools"] == [ip_pool["metadata"]["name"]]


def test_set_args_replaces_a_flag_and_appends_a_missing_one() -> None:
    module = plugin_module("pikube_manifest_patch")
    text = yaml.safe_dump(
        {
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "c", "args": ["--a=1", "--b=2", "--a=3"]}]}
                }
            },
        }
    )
    out = module.patch_manifest(
        text,
        [{"kind": "Deployment", "name": "d", "container": "c", "set_args": ["--a=9", "--c"]}],
        "t",
    )
    (doc,) = [d for d in yaml.safe_load_all(out) if d]
    assert doc["spec"]["template"]["spec"]["containers"][0]["args"] == ["--a=9", "--b=2", "--c"]
