"""Read, in one round trip, everything pikube_node_prep decides from a node's real state.

Swap in use and the services that bring it back, kernel modules still to load or unknown,
the kernel's values of the role's sysctls, whether the node is a container, chrony, the
device-tree model, cmdline.txt and its words, the kernel's cgroup controllers, packages dpkg
lacks and the hostnames. Read-only (changes nothing, so check mode runs it too); the role's
tasks then each decide what is left to do, so a node changed by hand is still repaired.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: pikube_node_state
short_description: Read the node state pikube_node_prep decides from, in one round trip
description:
  - Read-only; supports check mode. Returns O(state) for the role's tasks.
options:
  swap_services:
    description: systemd services that bring swap back at boot (e.g. dphys-swapfile).
    type: list
    elements: str
    default: []
  kernel_modules:
    description: Modules loaded at boot; those still to load or unknown are returned.
    type: list
    elements: str
    default: []
  required_modules:
    description: Modules that must exist on this kernel (modinfo).
    type: list
    elements: str
    default: []
  sysctl:
    description: sysctl keys whose current values are returned in this order.
    type: list
    elements: str
    default: []
  model_files:
    description: Files holding the device-tree model, the first existing is read.
    type: list
    elements: str
    default: []
  cmdline_files:
    description: Candidate cmdline.txt paths, the first existing is returned.
    type: list
    elements: str
    default: []
  packages:
    description: Packages whose absence (not installed, or installed and held) is reported.
    type: list
    elements: str
    default: []
  units:
    description: systemd units whose unit file state (enabled, masked, ...) and active state
      are returned, keyed by the name asked.
    type: list
    elements: str
    default: []
  fstab_swap_regexp:
    description: The lines of /etc/fstab matching it (multiline) are counted.
    type: str
  etc_hosts:
    description: Return /etc/hosts' text, mode, owner and group.
    type: bool
    default: false
author: pikube
"""

RETURN = r"""
state:
  description: The node's state (swap_active, swap_services, modules_to_load, modules_unknown,
    modules_missing, sysctl, container, chrony, model, cmdline_file,
    cmdline_words, proc_cgroups, packages_missing, hostname,
    static_hostname, units, fstab_swap_lines, etc_hosts).
  returned: always
  type: dict
"""


def probe(ask: dict[str, Any]) -> dict[str, Any]:
    """The state, as the role's tasks read it."""

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        except OSError as err:
            return 127, "", str(err)
        return proc.returncode, proc.stdout, proc.stderr

    def first_existing(paths: list[str]) -> str:
        return next((p for p in paths if os.path.exists(p)), "")

    state: dict[str, Any] = {}
    # Swap in use now, and the services that bring it back at boot.
    state["swap_active"] = run("swapon", "--show=NAME", "--noheadings")[1].split()
    state["swap_services"] = [
        name
        for name in ask["swap_services"]
        if os.path.exists(f"/lib/systemd/system/{name}.service")
    ]
    # `modprobe --dry-run --first-time` fails for a module that is loaded or built in.
    state["modules_to_load"], state["modules_unknown"] = [], []
    for module in ask["kernel_modules"]:
        rc, _, err = run("modprobe", "--dry-run", "--first-time", module)
        if "not found" in err:
            state["modules_unknown"].append(module)
        elif rc == 0:
            state["modules_to_load"].append(module)
    state["modules_missing"] = [
        m for m in ask["required_modules"] if run("modinfo", "--field=filename", m)[0] != 0
    ]
    # The kernel's values of the drop-in's settings, in the order asked (None: unreadable).
    rc, out, _ = run("sysctl", "--values", *ask["sysctl"])
    state["sysctl"] = [line.strip() for line in out.splitlines()] if rc == 0 else None
    state["container"] = run("systemd-detect-virt", "--container")[0] == 0
    state["chrony"] = os.path.exists("/usr/sbin/chronyd")
    model_file = first_existing(ask["model_files"])
    state["model"] = ""
    if model_file:
        with open(model_file, "rb") as raw:
            state["model"] = raw.read(4096).replace(b"\0", b"").decode("utf-8", "replace").strip()
    state["cmdline_file"] = first_existing(ask["cmdline_files"])
    # cmdline.txt is one line: its words (the role adds the flags it lacks).
    state["cmdline_words"] = []
    if state["cmdline_file"]:
        with open(state["cmdline_file"], encoding="utf-8", errors="replace") as handle:
            state["cmdline_words"] = handle.readline().split()
    # The kernel's cgroup controllers (subsys_name hierarchy num_cgroups enabled).
    try:
        with open("/proc/cgroups", encoding="utf-8") as handle:
            state["proc_cgroups"] = handle.read()
    except OSError:
        state["proc_cgroups"] = ""
    # Packages dpkg does not have installed ("ii ", or "hi " when held).
    _, out, _ = run(
        "dpkg-query", "--show", "--showformat=${db:Status-Abbrev}${Package}\n", *ask["packages"]
    )
    installed = {line.split()[-1] for line in out.splitlines() if line[:3] in ("ii ", "hi ")}
    state["packages_missing"] = [name for name in ask["packages"] if name not in installed]
    # The running (transient) and the static hostname.
    state["hostname"] = socket.gethostname()
    try:
        with open("/etc/hostname", encoding="utf-8") as handle:
            state["static_hostname"] = handle.read().strip()
    except OSError:
        state["static_hostname"] = ""
    state["units"] = unit_states(ask["units"], run)
    state["fstab_swap_lines"] = 0
    if ask["fstab_swap_regexp"]:
        try:
            with open("/etc/fstab", encoding="utf-8", errors="replace") as handle:
                fstab = handle.read()
        except FileNotFoundError:
            fstab = ""
        state["fstab_swap_lines"] = len(re.findall(ask["fstab_swap_regexp"], fstab, re.MULTILINE))
    state["etc_hosts"] = read_with_attrs("/etc/hosts") if ask["etc_hosts"] else None
    return state


def unit_states(units: list[str], run: Any) -> dict[str, dict[str, str]]:
    """``systemctl show`` of every unit in one call: its blocks come in the order asked."""
    if not units:
        return {}
    _, out, _ = run("systemctl", "show", "--property=UnitFileState,ActiveState", "--", *units)
    blocks = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
              for block in out.strip("\n").split("\n\n")]  # fmt: skip
    if len(blocks) != len(units):
        return {unit: {"enabled": "", "active": ""} for unit in units}  # unknown: tasks run
    return {
        unit: {"enabled": block.get("UnitFileState", ""), "active": block.get("ActiveState", "")}
        for unit, block in zip(units, blocks)  # noqa: B905 (lengths checked; Python 3.9 nodes)
    }


def read_with_attrs(path: str) -> dict[str, Any] | None:
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    return {"content": text, "mode": f"{stat.S_IMODE(st.st_mode):04o}", "uid": st.st_uid,
            "gid": st.st_gid}  # fmt: skip


def main() -> None:
    spec: dict[str, Any] = {
        name: {"type": "list", "elements": "str", "default": []}
        for name in (
            "units",
            "swap_services",
            "kernel_modules",
            "required_modules",
            "sysctl",
            "model_files",
            "cmdline_files",
            "packages",
        )
    }
    spec["fstab_swap_regexp"] = {"type": "str"}
    spec["etc_hosts"] = {"type": "bool", "default": False}
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    module.exit_json(changed=False, state=probe(module.params))


if __name__ == "__main__":
    main()
