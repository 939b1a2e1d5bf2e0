"""The control plane's kubeadm config, rendered by the installed ansible-core, decodes in kubeadm.

kubeadm decodes its config into Go structs: a quoted number where an int32 is declared
(`bindPort: '6443'`) is fatal. The role builds the documents as data; these tests render the
role's template with its real defaults and vars (ansible-playbook on localhost, connection
local) from a pikube-rendered inventory, then check the types and run the documents through
the stand-in's decoder, whose field table is derived from the upstream Go types.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pikube.config import load_cluster
from pikube.inventory import render_inventory_files, write_files
from pikube.resources import data_path
from tests.factories import base_cluster, write_cluster

PAYLOAD = Path(__file__).resolve().parents[1] / "lab" / "standins" / "payload"
if str(PAYLOAD) not in sys.path:
    sys.path.insert(0, str(PAYLOAD))

from pikube_standin.kubeadm_config import load_documents  # noqa: E402

ROLE = data_path("roles") / "pikube_kubeadm_control_plane"

# The role's own files, loaded as the role loads them (defaults, then vars), and its template.
PLAYBOOK = """\
- name: Render the control plane's kubeadm config here
  hosts: pi-cp1
  gather_facts: false
  tasks:
    - name: Load the role defaults
      ansible.builtin.include_vars:
        file: {role}/defaults/main.yml
    - name: Load the role vars
      ansible.builtin.include_vars:
        file: {role}/vars/main.yml
    - name: Kubernetes version as the role sets it when kubeadm is not installed yet
      ansible.builtin.set_fact:
        pikube_kubeadm_control_plane_installed_version: >-
          {{{{ 'v' ~ pikube_kubeadm_control_plane_kubernetes_version }}}}
    - name: Render the template
      ansible.builtin.template:
        src: {role}/templates/{template}
        dest: {dest}
        mode: "0600"
"""


def render(
    tmp_path: Path,
    ssh_key: Path,
    *,
    data: dict[str, Any] | None = None,
    template: str = "kubeadm-init.yaml.j2",
    host: str = "pi-cp1",
    extra_vars: dict[str, Any] | None = None,
    **kubernetes: Any,
) -> list[dict[str, Any]]:
    data = data or base_cluster(ssh_key)
    data["kubernetes"].update(kubernetes)
    tmp_path.mkdir(parents=True, exist_ok=True)
    cluster = load_cluster(write_cluster(tmp_path, data))
    write_files(render_inventory_files(cluster), tmp_path / "inventory")
    dest = tmp_path / "kubeadm-init.yaml"
    playbook = tmp_path / "render.yml"
    text = PLAYBOOK.format(role=ROLE, dest=dest, template=template)
    playbook.write_text(text.replace("hosts: pi-cp1", f"hosts: {host}"))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(data_path("ansible.cfg")),
        "ANSIBLE_ROLES_PATH": str(data_path("roles")),
    }
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(tmp_path / "inventory" / "hosts.yml"),
            "-e",
            f"ansible_connection=local ansible_python_interpreter={sys.executable}",
            "-e",
            json.dumps(extra_vars or {}),
            str(playbook),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [d for d in yaml.safe_load_all(dest.read_text()) if d is not None]


# What a cluster.yaml's kubernetes.kubeadm_config adds (merged as data by the template).
EXTRA = {
    "ClusterConfiguration": {"apiServer": {"certSANs": ["api.homelab.example"]}},
    "KubeletConfiguration": {"maxPods": 50},
}


@pytest.fixture(scope="module", params=["1.30", "1.31"])
def rendered(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, ssh_key: Path
) -> tuple[str, list[dict[str, Any]]]:
    """(version, documents) rendered once per Kubernetes minor (v1beta3 / v1beta4)."""
    version: str = request.param
    tmp = tmp_path_factory.mktemp(f"kubeadm-{version}")
    return version, render(tmp, ssh_key, version=version, kubeadm_config=EXTRA)


def test_control_plane_config_carries_go_types(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    docs = {d["kind"]: d for d in rendered[1]}
    endpoint = docs["InitConfiguration"]["localAPIEndpoint"]
    assert type(endpoint["bindPort"]) is int, endpoint  # Go int32: a quoted '6443' is fatal
    assert endpoint["advertiseAddress"] == "192.168.1.101"
    sans = docs["ClusterConfiguration"]["apiServer"]["certSANs"]
    assert isinstance(sans, list) and all(isinstance(s, str) for s in sans), sans
    assert docs["ClusterConfiguration"]["controlPlaneEndpoint"] == "192.168.1.101:6443"
    assert type(docs["KubeletConfiguration"]["maxPods"]) is int


def test_control_plane_config_passes_kubeadm_config_validate(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """`kubeadm config validate` (strict) of the stand-in, for that release's field table."""
    version, docs = rendered
    decoded = load_documents(yaml.safe_dump_all(docs), int(version.split(".")[1]), "validate")
    assert set(decoded) == {"InitConfiguration", "ClusterConfiguration", "KubeletConfiguration"}
    assert "api.homelab.example" in decoded["ClusterConfiguration"]["apiServer"]["certSANs"]


# The certificate key and join command of a run (shapes of kubeadm's output, not secrets).
KEY = "0f" * 32
JOIN = (
    "kubeadm join 192.168.1.100:8443 --token abcdef.0123456789abcdef "
    "--discovery-token-ca-cert-hash sha256:" + "ab" * 32
)


def ha_cluster(ssh_key: Path) -> dict[str, Any]:
    data = base_cluster(ssh_key)
    for index in (1, 2):
        data["nodes"][index].update(role="control-plane", name=f"pi-cp{index + 1}")
    data["network"]["vip"] = "192.168.1.100"
    return data


@pytest.mark.parametrize("version", ["1.30", "1.31"])
def test_ha_init_config_points_at_the_vip_and_carries_the_key_only_in_its_upload_copy(
    tmp_path: Path, ssh_key: Path, version: str
) -> None:
    kept = render(tmp_path / "kept", ssh_key, data=ha_cluster(ssh_key), version=version)
    upload = render(
        tmp_path / "upload",
        ssh_key,
        data=ha_cluster(ssh_key),
        extra_vars={"pikube_kubeadm_control_plane_upload_key": KEY},
        version=version,
    )
    for docs in (kept, upload):
        cluster = {d["kind"]: d for d in docs}["ClusterConfiguration"]
        assert cluster["controlPlaneEndpoint"] == "192.168.1.100:8443"  # haproxy on the VIP
    assert "certificateKey" not in {d["kind"]: d for d in kept}["InitConfiguration"]
    assert {d["kind"]: d for d in upload}["InitConfiguration"]["certificateKey"] == KEY
    minor = int(version.split(".")[1])
    assert load_documents(yaml.safe_dump_all(upload), minor, "validate")


@pytest.mark.parametrize("version", ["1.30", "1.31"])
def test_control_plane_join_config_carries_go_types_and_decodes(
    tmp_path: Path, ssh_key: Path, version: str
) -> None:
    docs = render(
        tmp_path,
        ssh_key,
        data=ha_cluster(ssh_key),
        template="kubeadm-join.yaml.j2",
        host="pi-cp2",
        extra_vars={"_words": JOIN.split(), "_certificate_key": KEY},
        version=version,
        kubeadm_config={"JoinConfiguration": {"nodeRegistration": {"taints": []}}},
    )
    (join,) = docs
    control_plane = join["controlPlane"]
    assert control_plane["certificateKey"] == KEY
    assert control_plane["localAPIEndpoint"] == {
        "advertiseAddress": "192.168.1.102",
        "bindPort": 6443,
    }
    assert type(control_plane["localAPIEndpoint"]["bindPort"]) is int
    discovery = join["discovery"]["bootstrapToken"]
    assert discovery["apiServerEndpoint"] == "192.168.1.100:8443"
    assert join["nodeRegistration"]["name"] == "pi-cp2"
    assert join["nodeRegistration"]["taints"] == []
    decoded = load_documents(yaml.safe_dump(join), int(version.split(".")[1]), "validate")
    assert set(decoded) == {"JoinConfiguration"}
