"""The pod network roles' pinned manifests and patches, as the roles apply them.

The patches in each role's vars/main.yml are rendered by ansible-core's own templar with the
role's defaults and the given cluster values, then applied by the collection's module
(plugins/modules/pikube_manifest_patch.py), imported here as the module Ansible runs.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from types import ModuleType
from typing import Any

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from pikube.resources import data_path

CNIS = ("flannel", "calico")  # the choices of kubernetes.cni


@functools.cache
def plugin_module(name: str) -> ModuleType:
    """One of the collection's modules (plugins/modules/NAME.py), imported once."""
    path = data_path("plugins", "modules", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def role_vars(cni: str, **cluster: Any) -> dict[str, Any]:
    """Role pikube_cni_<cni>'s defaults and vars, rendered with the ``cluster`` values."""
    loader = DataLoader()
    role = data_path("roles", f"pikube_cni_{cni}")
    variables: dict[str, Any] = {}
    for part in ("defaults", "vars"):
        variables |= loader.load_from_file(str(role / part / "main.yml"), trusted_as_template=True)
    variables |= {"ansible_play_hosts": []}  # a magic variable: the play's hosts
    variables |= cluster
    templar = Templar(loader=loader, variables=variables)
    # Through JSON, as module arguments travel (and into plain str, list, dict).
    return {
        name: json.loads(json.dumps(templar.template(value))) for name, value in variables.items()
    }


def pinned_manifest(cni: str) -> str:
    """The pinned manifest the role ships for its default version."""
    name = role_vars(cni, groups={"cluster": []}, hostvars={})[f"pikube_cni_{cni}_manifest"]
    return data_path("roles", f"pikube_cni_{cni}", "files", name).read_text()


def patched_manifest(cni: str, **cluster: Any) -> str:
    """The manifest the role copies to the control plane for a cluster with these values."""
    variables = role_vars(cni, **cluster)
    patch = plugin_module("pikube_manifest_patch").patch_manifest
    text: str = patch(pinned_manifest(cni), variables[f"pikube_cni_{cni}_patches"], cni)
    return text
