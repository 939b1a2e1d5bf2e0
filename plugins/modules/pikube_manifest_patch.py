"""Set the cluster's values in a pinned Kubernetes manifest, as parsed YAML documents.

Runs on the admin machine (``delegate_to: localhost``): it reads the pinned file, sets the
fields each patch names and returns the patched manifest; it writes nothing. Every patch must
find exactly the document, container, data key and JSON key it names: a pinned manifest whose
structure changed in a new upstream release fails here with a message naming what is missing,
instead of leaving the upstream default in place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml  # ansible-core's own dependency, on the admin machine
from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: pikube_manifest_patch
short_description: Set fields in the documents of a pinned Kubernetes manifest
description:
  - Parses the YAML documents of O(src), applies O(patches) and returns the patched manifest
    in RV(manifest). Writes nothing; run it on the admin machine.
  - A patch that does not find its document, container, data key or JSON key fails the task.
options:
  src:
    description: The pinned manifest (a multi-document YAML file) on the admin machine.
    type: path
    required: true
  patches:
    description:
      - Each names one document by O(patches[].kind) and O(patches[].name), then one change.
      - "C(container) + C(env): set these environment variables of that container (replace the
        value of an existing entry, append a missing one)."
      - "C(container) + C(args): append these arguments to that container's args."
      - "C(container) + C(set_args): set these C(--flag=value) arguments of that container:
        replace the argument of the same flag, append a missing one."
      - "C(annotations): set these annotations of the document."
      - "C(data_key) + C(json): set these keys, which must exist, of the JSON object held in
        that key of a ConfigMap's data."
    type: list
    elements: dict
    required: true
author: pikube
"""

RETURN = r"""
manifest:
  description: The patched manifest, every document of O(src) in order.
  returned: success
  type: str
"""

CHANGES = {"env", "args", "set_args", "json", "annotations"}


class ManifestPatchError(ValueError):
    """A patch does not match the manifest (or is itself malformed)."""


def _one(items: list[dict[str, Any]], what: str, where: str, found: list[str]) -> dict[str, Any]:
    if len(items) != 1:
        count = "no" if not items else f"{len(items)}"
        raise ManifestPatchError(
            f"{where}: {count} {what} (found: {', '.join(found) or 'none'}); the pinned "
            "manifest's structure changed: update the role's patches (vars/main.yml) to it"
        )
    return items[0]


def _container(doc: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    containers = doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    return _one(
        [c for c in containers if c.get("name") == name],
        f"container named {name}",
        where,
        [str(c.get("name")) for c in containers],
    )


def _set_env(container: dict[str, Any], env: dict[str, str]) -> None:
    entries = container.setdefault("env", [])
    for name, value in env.items():
        existing = [e for e in entries if e.get("name") == name]
        if existing:
            for entry in existing:
                entry.pop("valueFrom", None)
                entry["value"] = str(value)
        else:
            entries.append({"name": name, "value": str(value)})


def _set_args(container: dict[str, Any], args: list[str]) -> None:
    """Each ``--flag=value`` replaces the container's arguments for the same flag (a flag
    given twice would append to a list-valued one, e.g. metrics-server's address types)."""
    current = [str(a) for a in container.get("args") or []]
    for arg in args:
        flag = arg.split("=", 1)[0]
        same = [i for i, a in enumerate(current) if a.split("=", 1)[0] == flag]
        if same:
            current[same[0]] = arg
            current = [a for i, a in enumerate(current) if i not in same[1:]]
        else:
            current.append(arg)
    container["args"] = current


def _set_json(doc: dict[str, Any], key: str, values: dict[str, Any], where: str) -> None:
    data = doc.get("data") or {}
    if key not in data:
        _one([], f"data key {key}", where, sorted(data))
    try:
        document = json.loads(data[key])
    except json.JSONDecodeError as exc:
        raise ManifestPatchError(f"{where}: data key {key} is not JSON ({exc})") from exc
    missing = sorted(set(values) - set(document if isinstance(document, dict) else {}))
    if missing:
        raise ManifestPatchError(
            f"{where}: data key {key} has no {', '.join(missing)} (found: "
            f"{', '.join(document) if isinstance(document, dict) else 'no JSON object'}); the "
            "pinned manifest's structure changed: update the role's patches (vars/main.yml) to it"
        )
    document.update(values)
    data[key] = json.dumps(document, indent=2) + "\n"


def _apply(docs: list[dict[str, Any]], patch: dict[str, Any], source: str) -> None:
    kind, name = patch.get("kind"), patch.get("name")
    changes = CHANGES & set(patch)
    target = (
        "container"
        if changes & {"env", "args", "set_args"}
        else "name"
        if "annotations" in changes
        else "data_key"
    )
    if not kind or not name or len(changes) != 1 or target not in patch:
        raise ManifestPatchError(
            f"{source}: malformed patch {sorted(patch)}: give kind, name and one of "
            "container + env, container + args, container + set_args, data_key + json, "
            "annotations"
        )
    where = f"{source}: {kind} {name}"
    doc = _one(
        [d for d in docs if d.get("kind") == kind and d.get("metadata", {}).get("name") == name],
        f"{kind} named {name}",
        source,
        [
            f"{d.get('kind')} {d.get('metadata', {}).get('name')}"
            for d in docs
            if d.get("kind") == kind
        ],
    )
    if "json" in patch:
        _set_json(doc, str(patch["data_key"]), dict(patch["json"]), where)
        return
    if "annotations" in patch:
        annotations = doc.setdefault("metadata", {}).setdefault("annotations", {})
        annotations.update({str(k): str(v) for k, v in dict(patch["annotations"]).items()})
        return
    container = _container(doc, str(patch["container"]), where)
    if "env" in patch:
        _set_env(container, dict(patch["env"]))
    elif "set_args" in patch:
        _set_args(container, [str(a) for a in patch["set_args"]])
    else:
        container["args"] = list(container.get("args") or []) + [str(a) for a in patch["args"]]


def patch_manifest(text: str, patches: list[dict[str, Any]], source: str) -> str:
    """The manifest ``text`` (named ``source`` in errors) with ``patches`` applied."""

    class Dumper(yaml.SafeDumper):
        """Multi-line strings (descriptions, JSON in ConfigMaps) as readable block scalars."""

    def represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, represent_str)
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it
        docs = [d for d in yaml.load_all(text, Loader=loader) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestPatchError(f"{source} is not valid YAML: {exc}") from exc
    if not all(isinstance(d, dict) for d in docs):
        raise ManifestPatchError(f"{source}: every document must be a Kubernetes object")
    for patch in patches:
        _apply(docs, patch, source)
    header = f"# {source} with the cluster's values set by pikube (pikube_manifest_patch)\n"
    body = yaml.dump_all(
        docs,
        Dumper=Dumper,
        sort_keys=False,
        default_flow_style=False,
        width=1 << 16,
        explicit_start=True,
    )
    return header + body


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "src": {"type": "path", "required": True},
            "patches": {"type": "list", "elements": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    src = Path(module.params["src"])
    try:
        manifest = patch_manifest(src.read_text(), module.params["patches"], src.name)
    except OSError as exc:
        module.fail_json(msg=f"cannot read the manifest {src}: {exc.strerror}")
    except ManifestPatchError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, manifest=manifest)


if __name__ == "__main__":
    main()
