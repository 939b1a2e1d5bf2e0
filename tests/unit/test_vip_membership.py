"""pikube_vip's haproxy.cfg and keepalived.conf list the control planes of the inventory, but
those leaving (remove-node), and the day-2 playbooks hand the role that membership.

The role's own defaults, vars and templates render on localhost through ansible-playbook
(connection local, files written under tmp_path); the playbooks are read as YAML.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from pikube.resources import data_path
from tests.unit.test_vip_role_guards import PASSWORD

PLANES = {"cp1": "10.0.0.11", "cp2": "10.0.0.12", "cp3": "10.0.0.13"}

PLAY = """---
- name: Render pikube_vip's files for some control planes
  hosts: {hosts}
  gather_facts: false
  tasks:
    - name: Check the values and load the role's defaults and vars
      ansible.builtin.include_role:
        name: pikube_vip
        tasks_from: validate
        public: true
    - name: Render the role's templates
      ansible.builtin.template:
        src: "{templates}/{{{{ item }}}}.j2"
        dest: "{out}/{{{{ inventory_hostname }}}}/{{{{ item }}}}"
        mode: "0600"
      loop: [haproxy.cfg, keepalived.conf]
      no_log: true
"""


def render(
    tmp_path: Path, hosts: list[str], leaving: list[str] | None = None
) -> dict[str, dict[str, str]]:
    """haproxy.cfg and keepalived.conf as pikube_vip renders them on each of ``hosts``."""
    auth_pass = tmp_path / "vrrp-auth-pass"
    auth_pass.write_text(PASSWORD + "\n")
    auth_pass.chmod(0o600)
    planes = {
        name: {"ansible_connection": "local", "pikube_node_ip": ip} for name, ip in PLANES.items()
    }
    inventory: dict[str, Any] = {
        "all": {
            "vars": {
                "ansible_python_interpreter": sys.executable,
                "pikube_vip_address": "10.0.0.100",
                "pikube_node_iface": "eth0",
                "pikube_vip_auth_pass_file": str(auth_pass),
            },
            "children": {"control_plane": {"hosts": planes}},
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    out = tmp_path / "out"
    for host in hosts:
        (out / host).mkdir(parents=True)
    templates = data_path("roles") / "pikube_vip" / "templates"
    (tmp_path / "play.yml").write_text(
        PLAY.format(hosts=",".join(hosts), templates=templates, out=out)
    )
    extra = ["-e", yaml.safe_dump({"pikube_vip_leaving": leaving}, default_flow_style=True)]
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(tmp_path / "hosts.yml"),
            *(extra if leaving is not None else []),
            str(tmp_path / "play.yml"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_ROLES_PATH": str(data_path("roles"))},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    return {
        host: {name: (out / host / name).read_text() for name in ("haproxy.cfg", "keepalived.conf")}
        for host in hosts
    }


def servers(haproxy_cfg: str) -> list[str]:
    return [
        " ".join(line.split()[1:3])
        for line in haproxy_cfg.splitlines()
        if line.strip().startswith("server ")
    ]


def peers(keepalived_conf: str) -> list[str]:
    return keepalived_conf.split("unicast_peer {", 1)[1].split("}", 1)[0].split()


def test_every_control_plane_is_a_backend_and_every_other_a_peer(tmp_path: Path) -> None:
    files = render(tmp_path, ["cp2"])["cp2"]
    assert servers(files["haproxy.cfg"]) == [f"{n} {ip}:6443" for n, ip in PLANES.items()]
    assert peers(files["keepalived.conf"]) == ["10.0.0.11", "10.0.0.13"]


def test_a_leaving_control_plane_is_neither_backend_nor_peer(tmp_path: Path) -> None:
    rendered = render(tmp_path, ["cp1", "cp2"], leaving=["cp3"])
    for host, other in (("cp1", "cp2"), ("cp2", "cp1")):
        files = rendered[host]
        assert servers(files["haproxy.cfg"]) == ["cp1 10.0.0.11:6443", "cp2 10.0.0.12:6443"]
        assert peers(files["keepalived.conf"]) == [PLANES[other]]
        # The first control plane still starts as the VRRP master.
        assert ("state MASTER" in files["keepalived.conf"]) == (host == "cp1")


def plays(name: str) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = yaml.safe_load(data_path("playbooks", name).read_text())
    return loaded


def role_includes(play: dict[str, Any]) -> list[dict[str, Any]]:
    """Every include_role of a play (inside blocks too), with the task's vars and when."""
    found: list[dict[str, Any]] = []

    def walk(tasks: list[dict[str, Any]]) -> None:
        for task in tasks:
            walk(task.get("block", []))
            include = task.get("ansible.builtin.include_role")
            if include is not None:
                found.append({**include, "vars": task.get("vars", {}), "when": task.get("when")})

    walk(play.get("tasks", []))
    return found


def vip_plays(name: str) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    return [
        (i, play, include)
        for i, play in enumerate(plays(name))
        for include in role_includes(play)
        if include["name"] == "pikube_vip"
    ]


def test_remove_node_reconfigures_every_other_control_plane_before_the_reset() -> None:
    playbook = plays("remove_node.yml")
    ((index, play, include),) = vip_plays("remove_node.yml")
    assert play["hosts"] == "control_plane:!{{ pikube_remove_node | default('all') }}"
    assert include.get("tasks_from", "main") == "main"
    assert include["vars"] == {"pikube_vip_leaving": ["{{ pikube_remove_node }}"]}
    reset = next(
        i for i, p in enumerate(playbook) if p.get("ansible.builtin.import_playbook") == "reset.yml"
    )
    assert index < reset
    # A removed node that cannot be reached does not stop the others' reconfiguration.
    assert not play.get("any_errors_fatal", False)


def test_reset_stops_keepalived_and_haproxy_on_the_control_planes() -> None:
    ((_, play, include),) = vip_plays("reset.yml")
    assert play["hosts"] == "{{ pikube_reset_hosts | default('cluster') }}"
    assert include["tasks_from"] == "remove"
    assert "inventory_hostname in groups['control_plane']" in include["when"]
    first = role_includes(play)[0]
    assert first["name"] == "pikube_vip"  # before the API server goes: the VIP moves first


def test_add_node_of_a_control_plane_configures_every_control_plane() -> None:
    ((_, play, include),) = vip_plays("add_node.yml")
    assert play["hosts"] == "control_plane"
    assert include.get("tasks_from", "main") == "main" and not include["vars"]


def test_the_remove_entry_point_stops_keepalived_first_and_removes_every_file() -> None:
    role = data_path("roles") / "pikube_vip"
    tasks = yaml.safe_load((role / "tasks" / "remove.yml").read_text())
    stop = next(t for t in tasks if "ansible.builtin.systemd_service" in t)
    assert stop["loop"] == ["keepalived", "haproxy"]
    assert stop["ansible.builtin.systemd_service"] == {
        "name": "{{ item }}",
        "state": "stopped",
        "enabled": False,
    }
    files = next(t for t in tasks if "ansible.builtin.file" in t)
    main = yaml.safe_load((role / "tasks" / "main.yml").read_text())
    written = {
        t["ansible.builtin.template"]["dest"] for t in main if "ansible.builtin.template" in t
    }
    assert set(files["loop"]) == written and files["ansible.builtin.file"]["state"] == "absent"
