"""Pure logic of the lab stand-ins: strict kubeadm decoding, patches, selectors, JWS."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PAYLOAD = Path(__file__).resolve().parents[1] / "lab" / "standins" / "payload"
if str(PAYLOAD) not in sys.path:
    sys.path.insert(0, str(PAYLOAD))

from pikube_standin import apiserver, kubeadm  # noqa: E402
from pikube_standin.kubeadm_config import ConfigError, load_documents  # noqa: E402

INIT = """apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
nodeRegistration:
  name: cp1
  kubeletExtraArgs:
  - name: node-ip
    value: 10.0.0.1
  taints:
  - key: a
    effect: NoSchedule
    colour: blue
"""


def test_unknown_field_inside_a_list_item_is_reported_with_its_path() -> None:
    with pytest.raises(ConfigError, match=r'unknown field "nodeRegistration.taints\[0\].colour"'):
        load_documents(INIT, 31)


def test_v1beta3_extra_args_map_is_valid_but_v1beta4_needs_a_list() -> None:
    v3 = (
        "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n"
        "apiServer:\n  extraArgs:\n    audit-log-maxage: '7'\n"
    )
    assert "ClusterConfiguration" in load_documents(v3, 31)
    with pytest.raises(ConfigError, match=r"apiServer.extraArgs of type \[\]v1beta4.Arg"):
        load_documents(v3.replace("v1beta3", "v1beta4"), 31)


def test_kubelet_configuration_unknown_top_level_field() -> None:
    doc = (
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nfailSwapOff: true\n"
    )
    with pytest.raises(ConfigError, match='unknown field "failSwapOff"'):
        load_documents(doc, 31)


def test_missing_kind_is_an_error() -> None:
    with pytest.raises(ConfigError, match="kind and apiVersion is mandatory"):
        load_documents("apiVersion: kubeadm.k8s.io/v1beta4\n", 31)


def test_merge_patch_removes_null_and_replaces_lists() -> None:
    doc = {"spec": {"unschedulable": True, "taints": [{"key": "a"}]}, "x": 1}
    out = apiserver.merge_patch(doc, {"spec": {"unschedulable": None, "taints": []}})
    assert out == {"spec": {"taints": []}, "x": 1}


def test_strategic_merge_merges_named_list_items_and_honours_delete() -> None:
    doc = {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}
    patch = {
        "containers": [{"name": "a", "image": "2"}, {"name": "b", "$patch": "delete"}],
        "$setElementOrder/containers": [{"name": "a"}],
    }
    assert apiserver.strategic_merge(doc, patch) == {"containers": [{"name": "a", "image": "2"}]}


def test_json_patch_ops() -> None:
    doc = {"metadata": {"labels": {"a": "1"}}, "spec": {"list": [1, 2]}}
    out = apiserver.json_patch(
        doc,
        [
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/a"},
            {"op": "add", "path": "/spec/list/-", "value": 3},
        ],
    )
    assert out == {"metadata": {"labels": {"b": "2"}}, "spec": {"list": [1, 2, 3]}}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=flannel", True),
        ("app!=flannel", False),
        ("tier", True),
        ("!tier", False),
        ("app in (x,flannel)", True),
        ("app notin (flannel)", False),
        ("app=flannel,tier=node", True),
        ("app=flannel,tier=web", False),
    ],
)
def test_label_selectors(selector: str, expected: bool) -> None:
    obj = {"metadata": {"labels": {"app": "flannel", "tier": "node"}}}
    assert apiserver.label_match(obj, selector) is expected


def test_field_selectors() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "w1"}}
    assert apiserver.field_match(pod, "spec.nodeName=w1,metadata.namespace==ns")
    assert not apiserver.field_match(pod, "spec.nodeName!=w1")


def test_jws_signature_verifies_only_with_the_token_secret() -> None:
    sig = apiserver.detached_jws("kubeconfig-bytes", "abcdef", "0123456789abcdef")
    assert sig.count(".") == 2 and ".." in sig
    assert kubeadm.verify_jws("kubeconfig-bytes", sig, "0123456789abcdef")
    assert not kubeadm.verify_jws("kubeconfig-bytes", sig, "fedcba9876543210")
    assert not kubeadm.verify_jws("tampered", sig, "0123456789abcdef")


@pytest.mark.parametrize(
    ("seconds", "text"), [(5, "5s"), (119, "119s"), (150, "2m30s"), (3600, "60m"), (7260, "121m")]
)
def test_age_column_uses_kubernetes_human_duration(seconds: int, text: str) -> None:
    assert apiserver.human_duration(seconds) == text


def test_go_durations_for_token_ttl() -> None:
    assert kubeadm.parse_go_duration("24h0m0s") == 86400
    assert kubeadm.parse_go_duration("1m30s") == 90
    assert kubeadm.parse_go_duration("0") == 0
    with pytest.raises(kubeadm.Fail, match="invalid duration"):
        kubeadm.parse_go_duration("soon")
