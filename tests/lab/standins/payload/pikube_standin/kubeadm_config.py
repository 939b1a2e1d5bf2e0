"""kubeadm configuration API: decoding of the multi-document config file, as kubeadm does it.

Which fields exist, their Go types and the releases they exist in come from
kubeadm_fields.yaml, generated from the upstream types.go files (provenance in its header;
tests/lab/standins/upstream_fields.py regenerates it).

How kubeadm reads the file (k8s.io/kubernetes cmd/kubeadm/app/util/config/:
initconfiguration.go documentMapToInitConfiguration, joinconfiguration.go, common.go
ValidateConfig/validateKnownGVKs, strict/strict.go VerifyUnmarshalStrict):

- SplitConfigDocuments: every document needs apiVersion and kind; kubeadm.k8s.io/v1beta1 and
  v1beta2 are refused (validateSupportedVersion).
- strict.VerifyUnmarshalStrict (unknown and duplicate fields, unknown GroupVersionKinds) only
  logs a klog warning, unless strictErrors is set: it is for `kubeadm config validate`, not
  for init/join.
- runtime.DecodeInto(UniversalDecoder) then decodes the documents the command uses: YAML is
  turned into JSON (YAML numbers stay JSON numbers) and unmarshalled into the Go structs, so a
  value of the wrong JSON type ("6443" for an int32, 7 for a string, "yes" for a bool) is a
  fatal "json: cannot unmarshal ..." error.
- init: documents of a group that is neither kubeadm's nor a component config's are skipped
  with "[config] WARNING: Ignored configuration document with GroupVersionKind ..."; join reads
  its JoinConfiguration and skips everything else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

FIELDS_FILE = Path(__file__).resolve().parent / "kubeadm_fields.yaml"

KUBEADM_GROUP = "kubeadm.k8s.io"
COMPONENT_GROUPS = ("kubelet.config.k8s.io", "kubeproxy.config.k8s.io")
# Root kinds registered in kubeadm's schemes (kubeadm v1beta3/v1beta4 register.go,
# componentconfigs/scheme.go); every other struct in the table is only a field type.
ROOT_KINDS = {
    "kubeadm.k8s.io/v1beta3": (
        "InitConfiguration",
        "ClusterConfiguration",
        "JoinConfiguration",
    ),
    "kubeadm.k8s.io/v1beta4": (
        "InitConfiguration",
        "ClusterConfiguration",
        "JoinConfiguration",
        "ResetConfiguration",
        "UpgradeConfiguration",
    ),
    "kubelet.config.k8s.io/v1beta1": ("KubeletConfiguration",),
    "kubeproxy.config.k8s.io/v1alpha1": ("KubeProxyConfiguration",),
}
# The kinds each command decodes (and so type-checks).
COMMAND_KINDS = {
    "init": (
        "InitConfiguration",
        "ClusterConfiguration",
        "KubeletConfiguration",
        "KubeProxyConfiguration",
    ),
    "join": ("JoinConfiguration",),
    "reset": ("ResetConfiguration",),
    "upgrade": ("UpgradeConfiguration",),
}
SCHEME_FILE = {
    "kubeadm.k8s.io": "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/scheme/scheme.go:31",
    "kubelet.config.k8s.io": "k8s.io/kubernetes/cmd/kubeadm/app/componentconfigs/scheme.go:28",
    "kubeproxy.config.k8s.io": "k8s.io/kubernetes/cmd/kubeadm/app/componentconfigs/scheme.go:28",
}
INTS = {"int", "int32", "int64", "uint32", "uint64"}
FLOATS = {"float32", "float64"}
_DURATION_RE = re.compile(r"^[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$|^[-+]?0$")
_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
_TOKEN_RE = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")


class ConfigError(Exception):
    pass


@cache
def table() -> dict[str, Any]:
    import yaml

    data: dict[str, Any] = yaml.safe_load(FIELDS_FILE.read_text())
    return data


def releases() -> list[str]:
    return sorted({s["release"] for s in table()["sources"]}, key=lambda r: int(r.split(".")[1]))


def release_for(minor: int) -> str:
    """The table's release for a kubeadm minor (the nearest known one outside its range)."""
    known = releases()
    wanted = f"1.{minor}"
    if wanted in known:
        return wanted
    return known[0] if minor < int(known[0].split(".")[1]) else known[-1]


def served(api_version: str, release: str) -> bool:
    return any(s["api"] == api_version and s["release"] == release for s in table()["sources"])


def gvk_repr(api_version: str, kind: str) -> str:
    group, _, version = api_version.rpartition("/")
    return f'schema.GroupVersionKind{{Group:"{group}", Version:"{version}", Kind:"{kind}"}}'


def gvk_string(api_version: str, kind: str) -> str:
    """schema.GroupVersionKind.String(), as %v prints it."""
    return f"{api_version}, Kind={kind}"


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {value}" if isinstance(value, float) else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"  # dates and other YAML scalars become JSON strings


class _Decoder:
    """One document against the field table of one API version and release."""

    def __init__(self, api_version: str, release: str) -> None:
        self.api = table()["apis"][api_version]
        self.external = table()["external"]
        self.release = release
        self.package = api_version.rpartition("/")[2]
        self.type_errors: list[str] = []
        self.unknown: list[str] = []

    def qualified(self, gotype: str) -> str:
        """A Go type as reflect prints it: local types carry their package name (v1beta4.Arg)."""

        def q(m: re.Match[str]) -> str:
            local = m.group(0) in self.api["structs"] or m.group(0) in self.api["aliases"]
            return f"{self.package}.{m.group(0)}" if local else m.group(0)

        return re.sub(r"(?<![.\w])[A-Z]\w*", q, gotype)

    def struct(self, name: str, doc: dict[str, Any], path: str, fields: Any = None) -> None:
        if fields is None:
            fields = {
                k: v["go"]
                for k, v in self.api["structs"][name].items()
                if self.release in v["releases"]
            }
        for key, value in doc.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in fields:
                self.unknown.append(sub)
                continue
            self.value(fields[key], value, name, sub)

    def value(self, gotype: str, value: Any, parent: str, path: str) -> None:
        if value is None:
            return  # JSON null leaves any Go value as it is
        gotype = gotype.lstrip("*")
        shown = self.external.get(gotype) if isinstance(self.external.get(gotype), str) else None
        base = shown or self.api["aliases"].get(gotype) or gotype

        def wrong(go_name: str = "") -> None:
            # encoding/json names the innermost struct and the JSON path without indices
            field = re.sub(r"\[\d+\]", "", path)
            self.type_errors.append(
                f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
                f"{parent}.{field} of type "
                f"{self.qualified(go_name or gotype)}"
            )

        if base.startswith("[]"):
            if not isinstance(value, list):
                wrong()
                return
            for i, item in enumerate(value):
                self.value(base[2:], item, parent, f"{path}[{i}]")
            return
        if base.startswith("map[string]"):
            if not isinstance(value, dict):
                wrong()
                return
            for k, item in value.items():
                self.value(base[len("map[string]") :], item, parent, f"{path}.{k}")
            return
        if base == "string":
            if not isinstance(value, str):
                wrong("string")
        elif base == "bool":
            if not isinstance(value, bool):
                wrong("bool")
        elif base in INTS:
            if isinstance(value, bool) or not isinstance(value, int):
                wrong(base)
        elif base in FLOATS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                wrong(base)
        elif base == "duration":
            if not isinstance(value, str):
                wrong("string")
            elif not _DURATION_RE.match(value):
                self.type_errors.append(f'time: invalid duration "{value}"')
        elif base == "time":
            if not isinstance(value, str) or not _TIME_RE.match(value):
                self.type_errors.append(
                    f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00": cannot parse'
                )
        elif base == "token":
            if not isinstance(value, str) or not _TOKEN_RE.match(value):
                self.type_errors.append(
                    f'the bootstrap token "{value}" was not of the form '
                    '"[a-z0-9]{6}.[a-z0-9]{16}"'
                )
        elif base in self.api["structs"] or isinstance(self.external.get(base), dict):
            if not isinstance(value, dict):
                wrong()
                return
            fields = self.external.get(base) if base not in self.api["structs"] else None
            self.struct(base.rpartition(".")[2], value, path, fields)
        # anything else is a type from a package the table keeps opaque (logging, tracing, ...)


def decode(doc: dict[str, Any], api_version: str, kind: str, release: str) -> list[str]:
    """Type-check one root document; returns its unknown fields (strict decoding errors)."""
    d = _Decoder(api_version, release)
    d.struct(kind, doc, "")
    if d.type_errors:
        raise ConfigError(d.type_errors[0])
    return d.unknown


def _strict_error(api_version: str, kind: str, unknown: list[str]) -> str:
    detail = ", ".join(f'unknown field "{u}"' for u in unknown)
    return (
        f"error unmarshaling configuration {gvk_repr(api_version, kind)}: "
        f"strict decoding error: {detail}"
    )


def load_documents(
    text: str,
    kubeadm_minor: int,
    command: str = "validate",
    warn: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Decode a kubeadm config file for `command`; returns {kind: document} of what it uses.

    command is init, join, reset, upgrade, or validate (`kubeadm config validate`: strict,
    unknown fields and unknown kinds are errors). Warnings go to warn().
    """
    import yaml

    warn = warn or (lambda _msg: None)
    strict = command == "validate"
    release = release_for(kubeadm_minor)
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ConfigError(f"error converting YAML to JSON: {e}") from e
    metas: list[tuple[str, str, dict[str, Any]]] = []
    for d in docs:  # SplitConfigDocuments
        if not isinstance(d, dict):
            raise ConfigError("couldn't decode the configuration: expected a YAML mapping")
        api_version, kind = d.get("apiVersion"), d.get("kind")
        if not api_version or not kind or not isinstance(api_version, str):
            gvk = gvk_repr(str(api_version or ""), str(kind or ""))
            raise ConfigError(
                f"invalid configuration for GroupVersionKind {gvk}: "
                "kind and apiVersion is mandatory information that must be specified"
            )
        metas.append((api_version, str(kind), d))
    kinds = {k for _a, k, _d in metas}
    if strict:
        wanted: set[str] = set()
        for cmd in ("init", "join", "reset", "upgrade"):
            if kinds & set(COMMAND_KINDS[cmd][:2]):
                wanted |= set(COMMAND_KINDS[cmd])
    else:
        wanted = set(COMMAND_KINDS[command])
    out: dict[str, dict[str, Any]] = {}
    for api_version, kind, d in metas:
        group = api_version.rpartition("/")[0]
        if command == "join" and kind != "JoinConfiguration":
            continue  # documentMapToJoinConfiguration: "not interested in anything other than"
        if api_version in ("kubeadm.k8s.io/v1beta1", "kubeadm.k8s.io/v1beta2"):
            raise ConfigError(
                f'your configuration file uses an old API spec: "{api_version}" (kind: "{kind}"). '
                "Please use kubeadm v1.22 instead and run 'kubeadm config migrate --old-config "
                "old.yaml --new-config new.yaml', which will write the new, similar spec using a "
                "newer API version."
            )
        registered = kind in ROOT_KINDS.get(api_version, ()) and served(api_version, release)
        if not registered:
            if group == KUBEADM_GROUP and kind in wanted:
                raise ConfigError(  # runtime.DecodeInto cannot create the object
                    f'no kind "{kind}" is registered for version "{api_version}" in scheme '
                    f'"{SCHEME_FILE[KUBEADM_GROUP]}"'
                )
            msg = (
                f"unknown configuration {gvk_repr(api_version, kind)} for scheme definitions in "
                f'"{SCHEME_FILE[KUBEADM_GROUP]}" and "{SCHEME_FILE["kubelet.config.k8s.io"]}"'
            )
            if strict:  # common.go ValidateConfig -> validateKnownGVKs
                raise ConfigError(
                    "unknown configuration APIs: "
                    f"[]schema.GroupVersionKind{{{gvk_repr(api_version, kind)}}}"
                )
            warn(msg)
            if group not in COMPONENT_GROUPS:
                warn(
                    "[config] WARNING: Ignored configuration document with GroupVersionKind "
                    + gvk_string(api_version, kind)
                )
            continue
        if kind not in wanted:
            if group == KUBEADM_GROUP:
                warn(
                    "[config] WARNING: Ignored configuration document with GroupVersionKind "
                    + gvk_string(api_version, kind)
                )
            continue
        unknown = decode(d, api_version, kind, release)
        if unknown:
            msg = _strict_error(api_version, kind, unknown)
            if strict:
                raise ConfigError(msg)
            warn(msg)
        if kind in out:
            raise ConfigError(f"duplicate {kind} in the configuration file")
        out[kind] = d
    return out


def kubelet_extra_args(nodereg: dict[str, Any]) -> dict[str, str]:
    raw = nodereg.get("kubeletExtraArgs") or {}
    if isinstance(raw, list):
        return {str(a.get("name")): str(a.get("value")) for a in raw}
    return {str(k): str(v) for k, v in raw.items()}
