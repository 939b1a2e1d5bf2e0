"""Remove the firewall chains a pod network or kube-proxy created, and every rule using them.

Reads each table with ``iptables-save`` / ``ip6tables-save`` and, when a chain matches, loads
the same rules back without those chains, their rules and the rules that jump to them
(``iptables-restore``, one atomic commit per table). Default policies and every other rule,
such as an administrator's SSH access, are kept. A node without iptables has nothing to remove.
"""

from __future__ import annotations

import re
import shutil

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: pikube_iptables_chains
short_description: Remove firewall chains matching a pattern, with the rules that use them
description:
  - For IPv4 and IPv6 (when the tools exist), removes every chain whose name matches
    O(pattern), the rules in those chains and the rules that jump or go to them; keeps default
    policies and all other rules. Supports check mode.
options:
  pattern:
    description: Regular expression matched at the start of chain names, e.g. C(^(KUBE-|CNI-)).
    type: str
    required: true
  state:
    description: Only C(absent).
    type: str
    choices: [absent]
    default: absent
author: pikube
"""

RETURN = r"""
removed:
  description: Per tool (iptables, ip6tables), the chains removed (or to remove in check mode).
  returned: success
  type: dict
"""

TOOLS = ("iptables", "ip6tables")


def chains_matching(save: str, pattern: str) -> list[str]:
    """The chains declared in an iptables-save dump (``:NAME POLICY [..]``) matching ``pattern``."""
    names = [line[1:].split()[0] for line in save.splitlines() if line.startswith(":")]
    return [name for name in names if re.match(pattern, name)]


def without_chains(save: str, chains: list[str]) -> str:
    """The dump ``save`` without ``chains``, their rules and the rules jumping to them."""
    doomed = set(chains)

    def kept(line: str) -> bool:
        words = line.split()
        if line.startswith(":") and words[0][1:] in doomed:
            return False
        if line.startswith("-A ") and len(words) > 1 and words[1] in doomed:
            return False
        targets = {words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-j", "-g")}
        return not targets & doomed

    return "".join(line + "\n" for line in save.splitlines() if kept(line))


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "pattern": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["absent"], "default": "absent"},
        },
        supports_check_mode=True,
    )
    removed: dict[str, list[str]] = {}
    for tool in TOOLS:
        save_bin = shutil.which(f"{tool}-save") or module.get_bin_path(f"{tool}-save")
        restore_bin = shutil.which(f"{tool}-restore") or module.get_bin_path(f"{tool}-restore")
        if not save_bin or not restore_bin:
            continue  # minimal images may not have it: nothing to remove
        rc, save, err = module.run_command([save_bin])
        if rc != 0:
            module.fail_json(msg=f"{tool}-save failed: {err.strip()}", rc=rc)
        chains = chains_matching(save, module.params["pattern"])
        if not chains:
            continue
        removed[tool] = chains
        if not module.check_mode:
            rc, _, err = module.run_command([restore_bin], data=without_chains(save, chains))
            if rc != 0:
                module.fail_json(msg=f"{tool}-restore failed: {err.strip()}", rc=rc)
    module.exit_json(changed=bool(removed), removed=removed)


if __name__ == "__main__":
    main()
