"""Derive the kubeadm config field table of the stand-in from the upstream Go types.

The stand-in kubeadm (payload/pikube_standin/kubeadm_config.py) type-checks every field of
every document the way kubeadm's decoder does. Which fields exist, with which Go type, in
which Kubernetes release, is not written by hand: this script reads the upstream
``types.go`` files at a named tag/commit and writes ``payload/pikube_standin/
kubeadm_fields.yaml`` (committed, with the provenance of every source file in its header).

Sources (git clones; any clone of these repositories works):

- kubelet.config.k8s.io/v1beta1: https://github.com/kubernetes/kubelet
  ``config/v1beta1/types.go`` at tags v0.30.0, v0.31.0, v0.32.0 (the staging mirror of
  k8s.io/kubernetes ``staging/src/k8s.io/kubelet``, tagged with every release);
- kubeproxy.config.k8s.io/v1alpha1: https://github.com/kubernetes/kube-proxy
  ``config/v1alpha1/types.go`` at the same tags;
- kubeadm.k8s.io/v1beta3 and v1beta4: ``cmd/kubeadm/app/apis/kubeadm/v1beta{3,4}/types.go``
  has no small mirror; https://github.com/tengqm/kubeconfig is the copy SIG Docs resyncs
  at each release to generate the kubeadm config reference on kubernetes.io
  (``config/kubeadm/v1beta{3,4}/types.go``, ``config/bootstraptoken/v1/types.go``). The
  commit used per release is the resync that followed it (see RELEASES).

Types from other packages (metav1.Duration, corev1.Taint, ...) are listed in EXTERNAL with
the upstream file they come from; anything else external is "opaque" (any JSON value).

Usage: python3 tests/lab/standins/upstream_fields.py KUBELET_GIT KUBE_PROXY_GIT KUBECONFIG_GIT
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).resolve().parent / "payload" / "pikube_standin" / "kubeadm_fields.yaml"

# release -> {api group/version: (source key, ref)}; refs are tags, or commits for tengqm.
RELEASES: dict[str, dict[str, tuple[str, str]]] = {
    "1.30": {
        "kubelet.config.k8s.io/v1beta1": ("kubelet", "v0.30.0"),
        "kubeproxy.config.k8s.io/v1alpha1": ("kube-proxy", "v0.30.0"),
        # last resync before 1.31 (v1beta4 there is the unreleased draft: 1.30 does not serve it)
        "kubeadm.k8s.io/v1beta3": ("kubeadm-v1beta3", "68595b8f270440b523bc01921d0768be54b4fc23"),
    },
    "1.31": {
        "kubelet.config.k8s.io/v1beta1": ("kubelet", "v0.31.0"),
        "kubeproxy.config.k8s.io/v1alpha1": ("kube-proxy", "v0.31.0"),
        # "Update v1beta4 kubeadm type definitions" (2024-08-19), after v1.31.0 (2024-08-13)
        "kubeadm.k8s.io/v1beta3": ("kubeadm-v1beta3", "df3693d84f6f86d4436c9b92f29ca5c93214ee50"),
        "kubeadm.k8s.io/v1beta4": ("kubeadm-v1beta4", "df3693d84f6f86d4436c9b92f29ca5c93214ee50"),
    },
    "1.32": {
        "kubelet.config.k8s.io/v1beta1": ("kubelet", "v0.32.0"),
        "kubeproxy.config.k8s.io/v1alpha1": ("kube-proxy", "v0.32.0"),
        # "Resync v1beta4 configuration changes" (2024-12-11), the day of v1.32.0
        "kubeadm.k8s.io/v1beta3": ("kubeadm-v1beta3", "0c4df2bffc81291b9d4e654b12f30919222edd96"),
        "kubeadm.k8s.io/v1beta4": ("kubeadm-v1beta4", "0c4df2bffc81291b9d4e654b12f30919222edd96"),
    },
}

# source key -> (argv index of its git dir, repository URL, [paths parsed together])
SOURCES: dict[str, tuple[int, str, list[str]]] = {
    "kubelet": (0, "https://github.com/kubernetes/kubelet", ["config/v1beta1/types.go"]),
    "kube-proxy": (1, "https://github.com/kubernetes/kube-proxy", ["config/v1alpha1/types.go"]),
    "kubeadm-v1beta3": (
        2,
        "https://github.com/tengqm/kubeconfig",
        ["config/kubeadm/v1beta3/types.go", "config/bootstraptoken/v1/types.go"],
    ),
    "kubeadm-v1beta4": (
        2,
        "https://github.com/tengqm/kubeconfig",
        ["config/kubeadm/v1beta4/types.go", "config/bootstraptoken/v1/types.go"],
    ),
}

# Types from other Go packages, as JSON sees them.
#   k8s.io/apimachinery/pkg/apis/meta/v1/duration.go: Duration marshals as a string
#     (time.ParseDuration); time.go: Time as an RFC 3339 string; types.go: TypeMeta.
#   k8s.io/api/core/v1/types.go: Taint, EnvVar (valueFrom kept opaque), PullPolicy,
#     HostPathType (string types).
#   bootstraptoken/v1/utils.go: BootstrapTokenString unmarshals from a "abcdef.0123..." string.
EXTERNAL: dict[str, Any] = {
    "metav1.Duration": "duration",
    "metav1.Time": "time",
    "corev1.PullPolicy": "string",
    "corev1.HostPathType": "string",
    "corev1.TaintEffect": "string",
    "BootstrapTokenString": "token",
    "metav1.TypeMeta": {
        "apiVersion": "string",
        "kind": "string",
    },
    "corev1.Taint": {
        "key": "string",
        "value": "string",
        "effect": "string",
        "timeAdded": "*metav1.Time",
    },
    "corev1.EnvVar": {"name": "string", "value": "string", "valueFrom": "opaque"},
    # kubelet's types.go imports k8s.io/api/core/v1 as "v1"
    "v1.Taint": {
        "key": "string",
        "value": "string",
        "effect": "string",
        "timeAdded": "*metav1.Time",
    },
}

STRUCT_RE = re.compile(r"^type (\w+) struct \{\n(.*?)^\}", re.M | re.S)
ALIAS_RE = re.compile(r"^type (\w+) (string|bool|int32|int64|int|float64|float32)$", re.M)
FIELD_RE = re.compile(r"^\t(?:(\w+)\s+)?([\w.*\[\]]+)\s+`json:\"([^\"]*)\"", re.M)


def git_show(git_dir: str, ref: str, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", git_dir, "show", f"{ref}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def commit_of(git_dir: str, ref: str) -> tuple[str, str]:
    out = subprocess.run(
        ["git", "--git-dir", git_dir, "log", "-1", "--format=%H %cs", ref],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return out[0], out[1]


def parse_go(text: str) -> tuple[dict[str, list[tuple[str, str, bool]]], dict[str, str]]:
    """Structs as [(json name, Go type, inline)] and named basic types (type X string)."""
    text = re.sub(r"^\s*//.*$", "", text, flags=re.M)
    structs: dict[str, list[tuple[str, str, bool]]] = {}
    for m in STRUCT_RE.finditer(text):
        fields = []
        for f in FIELD_RE.finditer(m.group(2)):
            name, gotype, tag = f.group(1), f.group(2), f.group(3)
            json_name = tag.split(",")[0]
            if json_name == "-":
                continue
            inline = name is None or ",inline" in tag
            fields.append((json_name, gotype, inline))
        structs[m.group(1)] = fields
    aliases = dict(ALIAS_RE.findall(text))
    return structs, aliases


def flatten(structs: dict[str, list[tuple[str, str, bool]]], name: str) -> dict[str, str]:
    """A struct's JSON fields with inline (embedded) structs merged in, as encoding/json does."""
    out: dict[str, str] = {}
    for json_name, gotype, inline in structs[name]:
        gotype = gotype.replace("bootstraptokenv1.", "")  # parsed together with kubeadm's
        if inline:
            base = gotype.lstrip("*")
            if base in structs:
                out.update(flatten(structs, base))
            else:
                out.update(EXTERNAL[base])
        else:
            out[json_name] = gotype
    return out


def package_table(
    git_dir: str, ref: str, paths: list[str]
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    structs: dict[str, list[tuple[str, str, bool]]] = {}
    aliases: dict[str, str] = {}
    for path in paths:
        s, a = parse_go(git_show(git_dir, ref, path))
        structs.update(s)
        aliases.update(a)
    return {name: flatten(structs, name) for name in structs}, aliases


def build(git_dirs: list[str]) -> dict[str, Any]:
    sources: list[dict[str, str]] = []
    groups: dict[str, Any] = {}
    for release, apis in RELEASES.items():
        for api, (key, ref) in apis.items():
            idx, url, paths = SOURCES[key]
            commit, date = commit_of(git_dirs[idx], ref)
            for path in paths:
                sources.append(
                    {
                        "release": release,
                        "api": api,
                        "repository": url,
                        "path": path,
                        "ref": ref,
                        "commit": commit,
                        "date": date,
                    }
                )
            structs, aliases = package_table(git_dirs[idx], ref, paths)
            g = groups.setdefault(api, {"aliases": {}, "structs": {}})
            g["aliases"].update(aliases)
            for sname, fields in structs.items():
                table = g["structs"].setdefault(sname, {})
                for fname, gotype in fields.items():
                    entry = table.setdefault(fname, {"go": gotype, "releases": []})
                    if entry["go"] != gotype:
                        raise SystemExit(
                            f"{api} {sname}.{fname}: Go type changed ({entry['go']} -> {gotype})"
                        )
                    entry["releases"].append(release)
    return {"sources": sources, "external": EXTERNAL, "apis": groups}


class _Dumper(yaml.SafeDumper):
    """Indents list items under their key, as yamllint's default config wants."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


HEADER = """\
---
# GENERATED by tests/lab/standins/upstream_fields.py from the upstream Go types; do not edit.
# Every field of every config kind kubeadm reads, its Go type and the releases it exists in.
# Provenance of each source file (repository, path, tag/commit, commit date) under `sources`.
"""


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    data = build(argv)
    # provenance first, one block mapping per source file; then the table, leaves in flow style
    sources = yaml.dump({"sources": data.pop("sources")}, Dumper=_Dumper, sort_keys=False)
    table = yaml.dump(data, Dumper=_Dumper, sort_keys=True, width=100, default_flow_style=None)
    OUT.write_text(HEADER + sources + table)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
