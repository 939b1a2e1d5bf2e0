"""Merge one cluster's kubeconfig into a kubeconfig on the admin machine (e.g. ~/.kube/config).

The clusters, users and contexts of the existing file are kept; entries named like the new
ones are replaced. ``current-context`` stays what the file says; a file without one gets the
new context. The result is written with mode 0600 through a temporary file in the same folder
and an atomic rename, so the file is either the old or the new one, never half-written; a
symlinked kubeconfig keeps its link and the file it points to is replaced. An existing file
that is not a kubeconfig is left as it is, with an error naming the line. No message carries
the files' content: they hold client keys.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import yaml
from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: pikube_kubeconfig_merge
short_description: Merge a cluster's kubeconfig into another kubeconfig, atomically, mode 0600
description:
  - Reads the kubeconfig O(src) (one cluster, user and context) and merges it into O(dest).
    Other clusters, users and contexts of O(dest) are kept, same-named ones replaced;
    C(current-context) is kept, or set to the new context when O(dest) has none.
  - Writes O(dest) (and its folder, mode 0700) only when its content or mode changes, with mode
    0600, atomically. Supports check mode. Never returns or prints the files' content.
options:
  src:
    description: The kubeconfig to merge in (pikube's fetched kubeconfig).
    type: path
    required: true
  dest:
    description: The kubeconfig to merge into; created when missing.
    type: path
    required: true
author: pikube
"""

ENTRIES = ("clusters", "users", "contexts")


class KubeconfigMergeError(ValueError):
    """A kubeconfig that cannot be read or merged; the message holds no file content."""


def _load(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as exc:
        # Only the position: str(exc) would quote the offending line (maybe a client key).
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise KubeconfigMergeError(
            f"{what} {path} is not valid YAML ({exc.problem}, {where}); fix it or move it "
            "away, pikube left it as it was"
        ) from None
    except yaml.YAMLError:
        raise KubeconfigMergeError(
            f"{what} {path} is not valid YAML; pikube left it as it was"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KubeconfigMergeError(f"cannot read the {what} {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KubeconfigMergeError(
            f"{what} {path} is not a kubeconfig (a YAML mapping with clusters, users and "
            f"contexts, found a {type(data).__name__}); fix it or move it away, pikube left it as "
            "it was"
        )
    for key in ENTRIES:
        entries = data.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str) for e in entries
        ):
            raise KubeconfigMergeError(
                f"{what} {path}: {key} is not a list of named entries; fix it or move it away, "
                "pikube left it as it was"
            )
    return data


def merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` with the clusters, users and contexts of ``new`` (same names replaced)."""
    result = {**old, "apiVersion": "v1", "kind": "Config"}
    for key in ENTRIES:
        names = {e["name"] for e in new.get(key) or []}
        kept = [e for e in old.get(key) or [] if e["name"] not in names]
        result[key] = kept + list(new.get(key) or [])
    if "current-context" not in old:
        result["current-context"] = new.get("current-context", "")
    return result


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:  # mkstemp: mode 0600 from the start
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def merge_kubeconfig(src: Path, dest: Path, check_mode: bool = False) -> bool:
    """Merge ``src`` into ``dest``; whether ``dest`` changed (or would, in check mode)."""
    if check_mode and not src.exists():
        return True  # the task before, in check mode, did not write it
    new = _load(src, "kubeconfig")
    for key in ENTRIES:
        if len(new.get(key) or []) != 1:
            raise KubeconfigMergeError(
                f"kubeconfig {src} must hold exactly one of {', '.join(ENTRIES)} to merge"
            )
    target = Path(os.path.realpath(dest))  # a symlinked ~/.kube/config keeps its link
    exists = target.exists()
    old = _load(target, "existing kubeconfig") if exists else {}
    result = merged(old, new)
    mode_ok = exists and stat.S_IMODE(target.stat().st_mode) == 0o600
    if exists and result == old and mode_ok:
        return False
    if not check_mode:
        _write(target, yaml.safe_dump(result, sort_keys=False, default_flow_style=False))
    return True


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "src": {"type": "path", "required": True},
            "dest": {"type": "path", "required": True},
        },
        supports_check_mode=True,
    )
    try:
        changed = merge_kubeconfig(
            Path(module.params["src"]), Path(module.params["dest"]), module.check_mode
        )
    except (KubeconfigMergeError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=changed, dest=module.params["dest"])


if __name__ == "__main__":
    main()
