"""Builders for cluster files used across unit and CLI tests."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import yaml


def make_key_pair(directory: Path, name: str = "id_ed25519") -> Path:
    """A real OpenSSH ed25519 key pair (private key mode 0600); returns the private key path."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / name
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pikube-test", "-f", str(key)],
            check=True,
        )
    return key


def base_cluster(key: Path, nodes: int = 4, distribution: str = "kubeadm") -> dict[str, Any]:
    """A valid cluster: the classic homelab (Pi 4 control plane, workers) on 192.168.1.0/24."""
    kubernetes: dict[str, Any] = (
        {
            "version": "1.31",
            "cni": "flannel",
            "pod_cidr": "10.244.0.0/16",
            "service_cidr": "10.96.0.0/12",
        }
        if distribution == "kubeadm"
        else {"channel": "1.31/stable", "addons": ["dns"]}
    )
    return {
        "name": "homelab",
        "distribution": distribution,
        "kubernetes": kubernetes,
        "network": {"subnet": "192.168.1.0/24", "gateway": "192.168.1.1", "dns": ["192.168.1.1"]},
        "ssh": {"user": "ubuntu", "public_key": f"{key}.pub", "private_key": str(key)},
        "image": "ubuntu-24.04-server-arm64",
        "nodes": [
            {
                "name": "pi-cp1" if i == 0 else f"pi-w{i}",
                "ip": f"192.168.1.{101 + i}",
                "role": "control-plane" if i == 0 else "worker",
                "model": "pi4-2gb",
            }
            for i in range(nodes)
        ],
    }


def large_cluster(key: Path, nodes: int) -> dict[str, Any]:
    """A lab of many nodes on a /16."""
    data = base_cluster(key, nodes=1)
    data["network"] = {"subnet": "10.50.0.0/16", "gateway": "10.50.0.1", "dns": ["10.50.0.1"]}
    data["nodes"] = [
        {
            "name": f"node-{i:03d}",
            "ip": f"10.50.{1 + i // 250}.{1 + i % 250}",
            "role": "control-plane" if i == 0 else "worker",
        }
        for i in range(nodes)
    ]
    return data


def write_cluster(directory: Path, data: dict[str, Any] | str, name: str = "cluster.yaml") -> Path:
    path = directory / name
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    path.write_text(text)
    return path


def loopback_cluster_data(
    directory: Path, key: Path, nodes: int, model: str | None = None
) -> dict[str, Any]:
    """A cluster whose nodes are loopback addresses (127.0.0.2, ...) with an empty known_hosts
    in ``directory``: CLI tests that must reach no machine but this one."""
    data = base_cluster(key, nodes=nodes)
    data["network"] = {"subnet": "127.0.0.0/8", "gateway": "127.0.0.1", "dns": ["127.0.0.1"]}
    for i, node in enumerate(data["nodes"]):
        node["ip"] = f"127.0.0.{i + 2}"
        if model is not None:
            node["model"] = model
    data["ssh"]["known_hosts"] = str(directory / "known_hosts")
    (directory / "known_hosts").write_text("")
    return data


def edited(data: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``data`` with dotted-path changes, e.g. ``**{"network.gateway": "x"}``."""
    result = copy.deepcopy(data)
    for dotted, value in changes.items():
        target: Any = result
        parts = dotted.split(".")
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target[part]
        last = parts[-1]
        if value is DELETE:
            del target[int(last) if last.isdigit() else last]
        elif last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value
    return result


DELETE = object()


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the ``occurrence``-th line containing ``needle``."""
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not found {occurrence} time(s)")


class InventoryLoader(yaml.SafeLoader):
    """Reads a pikube inventory as Ansible does: ``!unsafe "x"`` is the string ``x``."""


InventoryLoader.add_constructor(
    "!unsafe",
    lambda loader, node: loader.construct_scalar(node),  # type: ignore[arg-type]
)


def load_inventory(text: str) -> Any:
    """A rendered inventory or group_vars file as plain data (``!unsafe`` tags dropped)."""
    return yaml.load(text, Loader=InventoryLoader)  # noqa: S506 - SafeLoader plus one tag


def plain_listing(value: Any) -> Any:
    """``ansible-inventory --list`` output with its unsafe markers removed.

    ansible-inventory writes a ``!unsafe`` string as ``{"__ansible_unsafe": "x"}``.
    """
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain_listing(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_listing(v) for v in value]
    return value


def run_dirs(cluster: Path) -> list[Path]:
    """The run folders pikube recorded for the cluster file ``cluster`` (state dir .pikube)."""
    base = cluster.parent / ".pikube" / "runs"
    return sorted(base.iterdir()) if base.is_dir() else []
