"""Load ``cluster.yaml`` into a ``Cluster``, or raise one ``ConfigError`` listing every problem."""

from __future__ import annotations

import difflib
import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pikube.config.checks import check_cluster, check_strings, resolve_path
from pikube.config.inputs import read_input_file
from pikube.config.known_hosts import check_known_hosts
from pikube.config.model import DEFAULT_STATE_DIR, SECTIONS, Cluster
from pikube.config.yamlpos import dotted, line_of, load_with_positions
from pikube.errors import ConfigError, Problem
from pikube.resources import data_path

# A cluster file of 100 nodes with comments is about 20 KiB; 1 MiB leaves fifty times that
# and bounds what a wrong --cluster (a log, an image, /dev/zero) can make pikube read.
MAX_CLUSTER_FILE_BYTES = 1024 * 1024

# Fixes for pydantic's generic error types.
GENERIC_FIXES = {
    "missing": "add it",
    "ip_v4_address": "write an IPv4 address such as 192.168.1.10",
    "ip_v4_network": "write a network in CIDR form with no host bits, e.g. 192.168.1.0/24",
    "literal_error": "use one of the listed values",
    "string_type": "write a string (quote it if YAML reads it as a number)",
    "list_type": "write a YAML list (one '- item' per line)",
    "model_type": "write a mapping of keys and values",
    "dict_type": "write a mapping of keys and values",
    "too_short": "add at least one entry",
}


@functools.cache
def image_catalog() -> dict[str, dict[str, Any]]:
    """Entries of pikube's image catalog (``images/catalog.yaml``) by id."""
    catalog = yaml.safe_load(data_path("images", "catalog.yaml").read_text())
    return {entry["id"]: entry for entry in catalog.get("images", [])}


def image_ids() -> tuple[str, ...]:
    return tuple(image_catalog())


def load_cluster(path: Path) -> Cluster:
    """Read, validate and resolve a cluster file. Raises ``ConfigError``."""
    text = read_input_file(
        path,
        what="cluster file",
        limit=MAX_CLUSTER_FILE_BYTES,
        missing_fix="run `pikube init` to write one, or pass --cluster FILE",
    )
    return parse_cluster(text, file=str(path), base_dir=path.resolve().parent)


def parse_cluster(text: str, *, file: str = "<input>", base_dir: Path | None = None) -> Cluster:
    """Validate cluster YAML text; relative paths resolve against ``base_dir``."""
    base_dir = base_dir or Path.cwd()
    try:
        data, positions, problems = load_with_positions(text, file)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        reason = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            [
                Problem(
                    "",
                    f"not valid YAML: {reason}",
                    "check indentation and quoting around this line (a YAML linter helps)",
                    line=mark.line + 1 if mark else None,
                    file=file,
                )
            ],
            file=file,
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            [
                Problem(
                    "",
                    "the file must be a YAML mapping (name:, distribution:, nodes:, ...)",
                    "start from `pikube init`",
                    line=1,
                    file=file,
                )
            ],
            file=file,
        )

    # One rule for every key and string value at any depth, whatever its field.
    unsafe = [
        Problem(dotted(p), m, f, line_of(positions, p), file) for p, m, f in check_strings(data)
    ]
    cluster: Cluster | None = None
    try:
        cluster = Cluster.model_validate(data)
    except ValidationError as err:
        problems += [_from_pydantic(e, positions, file) for e in err.errors()]

    for path, message, fix in check_cluster(data, base_dir):
        problems.append(Problem(dotted(path), message, fix, line_of(positions, path), file))
    image = data.get("image")
    if isinstance(image, str) and image not in image_ids():
        problems.append(
            _unknown(
                "image",
                image,
                image_ids(),
                ("image",),
                positions,
                file,
                "run `pikube image list` for the catalog",
            )
        )
    # A value the string rule refuses gets that one problem, not more from its field's checks.
    refused = {p.path for p in unsafe}
    problems = unsafe + [p for p in problems if p.path not in refused]
    if problems or cluster is None:
        raise ConfigError(_dedupe(problems), file=file)
    resolved = _resolve(cluster, base_dir)
    # Every command loads the cluster through here, so none uses a malformed known_hosts.
    check_known_hosts(Path(str(resolved.ssh.known_hosts)))
    return resolved


def _resolve(cluster: Cluster, base_dir: Path) -> Cluster:
    state_dir = resolve_path(cluster.state_dir or DEFAULT_STATE_DIR, base_dir)
    ssh = cluster.ssh.model_copy(
        update={
            "public_key": resolve_path(cluster.ssh.public_key, base_dir),
            "private_key": resolve_path(cluster.ssh.private_key, base_dir),
            "known_hosts": resolve_path(
                cluster.ssh.known_hosts or state_dir / "known_hosts", base_dir
            ),
        }
    )
    return cluster.model_copy(update={"ssh": ssh, "state_dir": state_dir})


def _section(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    names = [part for part in loc if isinstance(part, str)]
    return SECTIONS.get(".".join(names[:1]) if names else "")


def _unknown(
    kind: str,
    value: str,
    known: Any,
    loc: tuple[str | int, ...],
    positions: dict[Any, int],
    file: str,
    extra: str = "",
) -> Problem:
    close = difflib.get_close_matches(value, list(known), n=1)
    fix = f"did you mean {close[0]!r}?" if close else ""
    fix = " ".join(p for p in (fix, extra or "known: " + ", ".join(known)) if p)
    return Problem(dotted(loc), f"unknown {kind} {value!r}", fix, line_of(positions, loc), file)


def _from_pydantic(error: Any, positions: dict[Any, int], file: str) -> Problem:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        section = _section(loc[:-1])
        known = list(section.model_fields) if section else []
        where = dotted(loc[:-1]) or "the top level"
        problem = _unknown("key", str(loc[-1]), known, loc, positions, file)
        return replace(problem, message=f"{problem.message} in {where}")
    if kind == "missing":
        where = dotted(loc[:-1]) or "the top level"
        return Problem(
            dotted(loc),
            f"required key {loc[-1]!r} is missing in {where}",
            f"add `{loc[-1]}:` to {where}",
            line_of(positions, loc),
            file,
        )
    ctx = error.get("ctx") or {}
    if kind == "pikube":
        return Problem(dotted(loc), ctx["message"], ctx["fix"], line_of(positions, loc), file)
    message = error["msg"]
    if "input" in error and not isinstance(error["input"], dict | list):
        message = f"{error['input']!r}: {message[0].lower()}{message[1:]}"
    fix = GENERIC_FIXES.get(kind, "see the commented example from `pikube init`")
    return Problem(dotted(loc), message, fix, line_of(positions, loc), file)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    unique = []
    for problem in problems:
        key = (problem.path, problem.message)
        if key not in seen:
            seen.add(key)
            unique.append(problem)
    return unique
