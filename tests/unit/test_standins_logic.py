"""Pure logic of the lab stand-ins: strict kubeadm decoding, patches, selectors, JWS."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

PAYLOAD = Path(__file__).resolve().parents[1] / "lab" / "standins" / "payload"
if str(PAYLOAD) not in sys.path:
    sys.path.insert(0, str(PAYLOAD))

from pikube_standin import apiserver, kubeadm, kubeadm_config  # noqa: E402
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
    doc = KUBELET + "failSwapOff: true\n---\n" + INIT4
    with pytest.raises(ConfigError, match='unknown field "failSwapOff"'):
        load_documents(doc, 31)


# --- decoding as kubeadm does it (common.go documentMapTo*Configuration; strict only for
# `kubeadm config validate`; field types and releases from kubeadm_fields.yaml, derived from
# the upstream types.go files)
INIT4 = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n"
INIT3 = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: InitConfiguration\n"
CLUSTER4 = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n"
KUBELET = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
PROXY = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"


def decode_for(command: str, text: str, minor: int = 31) -> tuple[list[str], list[str]]:
    """(kinds kubeadm `command` decodes, warnings it logs)."""
    warnings: list[str] = []
    return sorted(load_documents(text, minor, command, warnings.append)), warnings


def test_quoted_bind_port_is_fatal_even_for_init() -> None:
    text = INIT4 + "localAPIEndpoint:\n  advertiseAddress: 10.0.0.1\n  bindPort: '6443'\n"
    with pytest.raises(
        ConfigError,
        match=r"json: cannot unmarshal string into Go struct field "
        r"APIEndpoint\.localAPIEndpoint\.bindPort of type int32",
    ):
        decode_for("init", text)
    assert decode_for("init", text.replace("'6443'", "6443"))[0] == ["InitConfiguration"]


@pytest.mark.parametrize(
    ("text", "minor"),
    [
        (
            INIT4 + "nodeRegistration:\n  kubeletExtraArgs:\n  - name: max-pods\n    value: 110\n",
            31,
        ),
        (INIT3 + "nodeRegistration:\n  kubeletExtraArgs:\n    max-pods: 110\n", 30),
    ],
)
def test_number_as_kubelet_extra_arg_value_is_fatal(text: str, minor: int) -> None:
    with pytest.raises(ConfigError, match=r"cannot unmarshal number .*kubeletExtraArgs.* string"):
        decode_for("join" if "Join" in text else "init", text, minor)


def test_string_for_cert_sans_is_fatal() -> None:
    with pytest.raises(ConfigError, match=r"cannot unmarshal string .*certSANs of type \[\]string"):
        decode_for("init", CLUSTER4 + "apiServer:\n  certSANs: api.example\n")


def test_string_for_dry_run_is_fatal() -> None:
    with pytest.raises(ConfigError, match=r"InitConfiguration\.dryRun of type bool"):
        decode_for("init", INIT4 + "dryRun: 'yes'\n")


def test_unknown_field_is_a_warning_for_init_and_an_error_for_validate() -> None:
    text = CLUSTER4 + "apiServer:\n  timeoutForControlPlane: 4m0s\n"
    kinds, warnings = decode_for("init", text)
    assert kinds == ["ClusterConfiguration"]
    assert any('unknown field "apiServer.timeoutForControlPlane"' in w for w in warnings)
    with pytest.raises(ConfigError, match="strict decoding error"):
        decode_for("validate", text)


def test_unrelated_document_is_skipped_with_a_warning_by_init() -> None:
    text = INIT4 + "---\napiVersion: notes.example.com/v1\nkind: Note\ntext: hi\n"
    kinds, warnings = decode_for("init", text)
    assert kinds == ["InitConfiguration"]
    assert (
        "[config] WARNING: Ignored configuration document with GroupVersionKind "
        "notes.example.com/v1, Kind=Note"
    ) in warnings
    assert decode_for("join", text.replace("InitConfiguration", "JoinConfiguration"))[1] == []
    with pytest.raises(ConfigError, match="unknown configuration APIs"):
        decode_for("validate", text)  # common.go ValidateConfig -> validateKnownGVKs


def test_v1beta4_reset_configuration_has_timeouts() -> None:
    text = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ResetConfiguration\n"
    text += "timeouts:\n  kubernetesAPICall: 1m0s\n"
    assert decode_for("validate", text)[0] == ["ResetConfiguration"]


@pytest.mark.parametrize(
    ("field", "first_minor"),
    [
        ("failCgroupV1: true", 31),
        ("singleProcessOOMKill: false", 32),
        ("crashLoopBackOff:\n  maxContainerRestartPeriod: 1m0s", 32),
    ],
)
def test_kubelet_fields_exist_from_their_release_on(field: str, first_minor: int) -> None:
    text = KUBELET + field + "\n---\n" + (INIT4 if first_minor > 30 else INIT3)
    with pytest.raises(ConfigError, match="unknown field"):
        decode_for("validate", text, first_minor - 1)
    assert "KubeletConfiguration" in decode_for("validate", text, first_minor)[0]


def test_kube_proxy_windows_run_as_service_exists_from_1_31() -> None:
    text = PROXY + "windowsRunAsService: true\n---\n" + INIT3
    with pytest.raises(ConfigError, match='unknown field "windowsRunAsService"'):
        decode_for("validate", text, 30)
    assert "KubeProxyConfiguration" in decode_for("validate", text, 31)[0]


def test_every_field_type_is_checked_in_component_configs() -> None:
    with pytest.raises(ConfigError, match=r"KubeletConfiguration\.maxPods of type int32"):
        decode_for("init", KUBELET + "maxPods: '110'\n---\n" + INIT4)
    with pytest.raises(ConfigError, match='time: invalid duration "4 minutes"'):
        decode_for("init", INIT4 + "timeouts:\n  kubeletHealthCheck: 4 minutes\n")


def test_field_table_names_its_upstream_sources() -> None:
    """Each API version served in each release comes from a named upstream file and commit."""
    t = kubeadm_config.table()
    for api in t["apis"]:
        for source in (s for s in t["sources"] if s["api"] == api):
            assert source["repository"].startswith("https://github.com/"), source
            assert re.fullmatch(r"[0-9a-f]{40}", source["commit"]), source
            assert source["path"].endswith("types.go"), source
    assert [s["release"] for s in t["sources"] if s["api"] == "kubeadm.k8s.io/v1beta4"] == [
        "1.31",
        "1.31",
        "1.32",
        "1.32",
    ]


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


def test_etcd_keys_follow_kube_apiserver_registry_layout() -> None:
    from pikube_standin import storage

    builtin = {r.plural: r.group for r in apiserver.BUILTIN}
    cases = {
        ("", "configmaps", "kube-system", "kubeadm-config"): (
            "/registry/configmaps/kube-system/kubeadm-config"
        ),
        ("", "nodes", "", "cp1"): "/registry/nodes/cp1",
        ("apps", "daemonsets", "kube-flannel", "kube-flannel-ds"): (
            "/registry/daemonsets/kube-flannel/kube-flannel-ds"
        ),
        ("crd.projectcalico.org", "ippools", "", "default-ipv4-ippool"): (
            "/registry/crd.projectcalico.org/ippools/default-ipv4-ippool"
        ),
    }
    for k, key in cases.items():
        assert storage.etcd_key(k, builtin) == key
        assert storage.parse_key(key, builtin) == k
    assert storage.parse_key("/registry/unknownthings/x", builtin) is None
    assert storage.parse_key("/other/configmaps/default/x", builtin) is None


def test_etcd_prefix_range_end_is_clientv3s() -> None:
    import base64

    from pikube_standin import etcd

    assert base64.b64decode(etcd.prefix_end("/registry/")) == b"/registry0"
    assert base64.b64decode(etcd.prefix_end("/registry/pods/")) == b"/registry/pods0"


def test_kubelet_stops_a_static_pod_whose_manifest_left_and_starts_it_when_it_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kubeadm's etcd restore moves the manifests out of staticPodPath and back: the kubelet
    stops the Pods, then starts them again (and only those), also across its own restart."""
    from pikube_standin import common, kubelet

    monkeypatch.setenv("PIKUBE_STANDIN_ROOT", str(tmp_path))
    running = {"pikube-standin-etcd", "pikube-standin-apiserver"}
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(common, "service_active", lambda unit: unit in running)

    def stop(unit: str) -> None:
        calls.append(("stop", unit))
        running.discard(unit)

    def start(unit: str, *, restart: bool = True) -> None:
        calls.append(("start", unit))
        running.add(unit)

    monkeypatch.setattr(common, "service_stop", stop)
    monkeypatch.setattr(common, "service_start", start)
    folder = tmp_path / "etc/kubernetes/manifests"
    aside = tmp_path / "aside"
    folder.mkdir(parents=True)
    aside.mkdir()
    for name in ("etcd.yaml", "kube-apiserver.yaml", "kube-scheduler.yaml"):
        (folder / name).write_text("kind: Pod\n")
    pods = kubelet.StaticPods(folder)
    pods.sync()
    assert calls == []  # kubeadm started them; the kubelet leaves running Pods alone
    for manifest in folder.iterdir():
        manifest.rename(aside / manifest.name)
    pods.sync()
    assert sorted(calls) == [("stop", "pikube-standin-apiserver"), ("stop", "pikube-standin-etcd")]
    calls.clear()
    pods = kubelet.StaticPods(folder)  # the kubelet restarted meanwhile
    pods.sync()
    assert calls == []
    for manifest in aside.iterdir():
        manifest.rename(folder / manifest.name)
    pods.sync()
    assert calls == [("start", "pikube-standin-etcd"), ("start", "pikube-standin-apiserver")]
    calls.clear()
    pods.sync()
    assert calls == []
