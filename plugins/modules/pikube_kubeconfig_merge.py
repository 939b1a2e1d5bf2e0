"""Merge one cluster's kubeconfig into a kubeconfig on the admin machine (e.g. ~/.kube/config),
or remove it from there again (``state: absent``, pikube reset).

The clusters, users and contexts of the existing file are kept; entries named like the new
ones are replaced. ``current-context`` stays what the file says; a file without one gets the
new context. Removing a context also removes the cluster and user it names unless another
context still uses them, and clears ``current-context`` when it pointed there. The result is
written with mode 0600 through a temporary file in the same folder and an atomic rename, so
the file is either the old or the new one, never half-written; a symlinked kubeconfig keeps
its link and the file it points to is replaced. An existing file that is not a kubeconfig is
left as it is, with an error naming the line. No message carries the files' content: they
hold client keys.
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
  - With O(state=absent), removes the context O(name) from O(dest), with the cluster and user
    it names unless another context still uses them; C(current-context) is cleared when it was
    O(name). Other entries are kept; a missing O(dest) or context changes nothing.
options:
  src:
    description: The kubeconfig to merge in (pikube's fetched kubeconfig); for O(state=present).
    type: path
  dest:
    description: The kubeconfig to merge into (created when missing) or remove from.
    type: path
    required: true
  state:
    description: V(present) merges O(src) in, V(absent) removes the context O(name).
    type: str
    choices: [present, absent]
    default: present
  name:
    description: The context to remove; for O(state=absent).
    type: str
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


def without(old: dict[str, Any], name: str) -> dict[str, Any]:
    """``old`` without the context ``name`` and the cluster and user only it used."""
    contexts = old.get("contexts") or []
    gone = [e for e in contexts if e["name"] == name]
    if not gone:
        return old
    kept = [e for e in contexts if e["name"] != name]

    def refs(entries: list[dict[str, Any]], field: str) -> set[str]:
        values = (e.get("context") for e in entries)
        return {v[field] for v in values if isinstance(v, dict) and isinstance(v.get(field), str)}

    result = {**old, "contexts": kept}
    for key, field in (("clusters", "cluster"), ("users", "user")):
        drop = refs(gone, field) - refs(kept, field)
        if key in old:
            result[key] = [e for e in old[key] or [] if e["name"] not in drop]
    if old.get("current-context") == name:
        result["current-context"] = ""
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


def _update(dest: Path, result_of: Any, check_mode: bool, create: bool) -> bool:
    """Write ``result_of(old)`` to ``dest`` when content or mode changes; whether it did."""
    target = Path(os.path.realpath(dest))  # a symlinked ~/.kube/config keeps its link
    exists = target.exists()
    if not exists and not create:
        return False
    old = _load(target, "existing kubeconfig") if exists else {}
    result = result_of(old)
    mode_ok = exists and stat.S_IMODE(target.stat().st_mode) == 0o600
    if exists and result == old and mode_ok:
        return False
    if not check_mode:
        _write(target, yaml.safe_dump(result, sort_keys=False, default_flow_style=False))
    return True


def remove_context(dest: Path, name: str, check_mode: bool = False) -> bool:
    """Remove the context ``name`` (and what only it used) from ``dest``; whether it changed."""
    return _update(dest, lambda old: without(old, name), check_mode, create=False)


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
    return _update(dest, lambda old: merged(old, new), check_mode, create=True)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "src": {"type": "path"},
            "dest": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "name": {"type": "str"},
        },
        required_if=[("state", "present", ["src"]), ("state", "absent", ["name"])],
        supports_check_mode=True,
    )
    dest = Path(module.params["dest"])
    try:
        if module.params["state"] == "absent":
            changed = remove_context(dest, module.params["name"], module.check_mode)
        else:
            changed = merge_kubeconfig(Path(module.params["src"]), dest, module.check_mode)
    except (KubeconfigMergeError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=changed, dest=module.params["dest"])


if __name__ == "__main__":
    main()
