"""Install the Debian packages a node is missing, in one apt run, with apt-get itself.

Asks dpkg which of the packages are installed; when some are not, refreshes the package lists
(when asked) and installs only those, with one ``apt-get install``. Nothing of apt runs when
every package is there. Unlike Ansible's apt module it needs no python3-apt on the node, which
that module would first install in an apt run of its own, and it never opens apt's cache to
learn that nothing is to do. Check mode says what a real run would install.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: pikube_apt_install
short_description: Install the missing ones of some Debian packages, in one apt run
description:
  - Installs those of O(names) dpkg does not have installed (C(ii) or held C(hi)), with one
    C(apt-get install), after C(apt-get update) when O(update_cache) is true. Runs no apt at
    all when every package is installed. Supports check mode (nothing runs; the result says
    what would be installed). Waits up to O(lock_timeout) for apt's locks; download retries
    come from apt's own configuration (pikube_node_prep writes them).
options:
  names:
    description: Package names (Debian's syntax; no versions, the roles pin through apt
      preferences).
    type: list
    elements: str
    required: true
  update_cache:
    description: Refresh the package lists before installing (only when something is missing).
    type: bool
    default: false
  cache_valid_time:
    description: With O(update_cache), lists refreshed less than this many seconds ago are
      kept (as the apt module's option of that name). Lists holding no package index at all,
      as on a fresh image, are always refreshed.
    type: int
    default: 0
  update_cache_anyway:
    description: Refresh the package lists even when every package is installed (a
      repository just added or changed, whose versions later tasks ask apt for). Not a change.
    type: bool
    default: false
  lock_timeout:
    description: Seconds to wait for apt's locks (the package lists' and dpkg's), held on a
      fresh image by unattended-upgrades or apt-daily.
    type: int
    default: 600
author: pikube
"""

RETURN = r"""
installed:
  description: The packages that were missing and are installed now (would be, in check mode).
  returned: success
  type: list
"""

# Debian policy 5.6.1: lower case letters, digits, '+', '-', '.'; at least two characters,
# starting with a letter or digit. Anything else (an option, a version, a glob) is refused.
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
# Keep the configuration files the node already has, as Ansible's apt module does.
DPKG_OPTIONS = ["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"]


def bad_names(names: list[str]) -> list[str]:
    return [name for name in names if not PACKAGE_NAME.fullmatch(name)]


def missing(names: list[str], dpkg_status: str) -> list[str]:
    """Those of ``names`` the dpkg-query output (``${db:Status-Abbrev}${Package}`` lines)
    does not show installed, in the order asked."""
    installed = {
        line.split()[-1]
        for line in dpkg_status.splitlines()
        if line[:3] in ("ii ", "hi ") and line.split()
    }
    return [name for name in dict.fromkeys(names) if name not in installed]


# What apt prints when another apt or dpkg holds a lock it needs ("Could not get lock
# /var/lib/apt/lists/lock. It is held by process 1234 (apt-get)").
LOCKED = "Could not get lock"
APT_STATE = "/var/lib/apt"
LOCK_POLL_S = 5.0


def apt_lists_age(apt_dir: str) -> float | None:
    """Seconds since apt last refreshed its package lists under ``apt_dir`` (/var/lib/apt),
    read as the apt module's cache_valid_time reads it (the success stamp, else the lists
    folder's mtime); None when the lists folder holds no package index at all."""
    lists = os.path.join(apt_dir, "lists")
    try:
        names = os.listdir(lists)
    except OSError:
        return None
    if not any("_Packages" in name for name in names):
        return None
    for stamp in (os.path.join(apt_dir, "periodic", "update-success-stamp"), lists):
        try:
            return time.time() - os.stat(stamp).st_mtime
        except OSError:
            continue
    return None


def install(
    module: Any,
    names: list[str],
    update_cache: bool,
    lock_timeout: float = 600,
    cache_valid_time: float = 0,
    update_cache_anyway: bool = False,
) -> dict[str, Any]:
    """What the module returns: runs dpkg-query, then apt-get when something is missing.
    dpkg's lock is waited for by apt itself (DPkg::Lock::Timeout); the package lists' lock,
    which apt-get update does not wait for, by polling until ``lock_timeout``."""
    _, out, _ = module.run_command(
        ["dpkg-query", "--show", "--showformat=${db:Status-Abbrev}${Package}\n", *names]
    )
    todo = missing(names, out)
    if not todo and not (update_cache_anyway and not module.check_mode):
        return {"changed": False, "installed": []}
    if module.check_mode:
        return {"changed": True, "installed": todo, "msg": f"would install {', '.join(todo)}"}
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    age = apt_lists_age(APT_STATE)
    refresh = update_cache_anyway or (update_cache and (age is None or age >= cache_valid_time))
    steps = [["apt-get", "-q", "update"]] if refresh else []
    lock = f"DPkg::Lock::Timeout={int(lock_timeout)}"
    if todo:
        steps.append(["apt-get", "-q", "-y", "-o", lock, *DPKG_OPTIONS, "install", "--", *todo])
    outputs = []
    deadline = time.monotonic() + lock_timeout
    for argv in steps:
        while True:
            rc, out, err = module.run_command(argv, environ_update=env)
            if rc == 0 or LOCKED not in err or time.monotonic() >= deadline:
                break
            time.sleep(LOCK_POLL_S)
        outputs.append(out)
        if rc != 0:
            module.fail_json(
                msg=f"{' '.join(argv[:3])} failed (exit {rc}) installing {', '.join(todo)}",
                rc=rc,
                stdout="".join(outputs),
                stderr=err,
            )
    # Package lists refreshed alone change no package: not a change (as the apt module).
    return {"changed": bool(todo), "installed": todo, "stdout": "".join(outputs)}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str", "required": True},
            "update_cache": {"type": "bool", "default": False},
            "lock_timeout": {"type": "int", "default": 600},
            "cache_valid_time": {"type": "int", "default": 0},
            "update_cache_anyway": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    names = module.params["names"]
    wrong = bad_names(names)
    if wrong:
        module.fail_json(msg=f"not Debian package names: {', '.join(map(repr, wrong))}")
    if not names and not module.params["update_cache_anyway"]:
        module.exit_json(changed=False, installed=[])
    params = module.params
    module.exit_json(
        **install(
            module,
            names,
            params["update_cache"],
            params["lock_timeout"],
            params["cache_valid_time"],
            params["update_cache_anyway"],
        )
    )


if __name__ == "__main__":
    main()
