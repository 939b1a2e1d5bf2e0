"""YAML loading that remembers where every key and item came from.

``load_with_positions`` returns the plain data (as ``yaml.safe_load`` would) and a map from
key paths (tuples of keys and list indices) to 1-based line numbers, so errors can point at
the line a user has to edit. Duplicate keys, which PyYAML silently collapses, are reported.

The text is untrusted. Before anything is built from it, one pass over its parse events
refuses aliases (``*name``): a few lines of nested aliases ("billion laughs") expand to
gigabytes in any walk over the data, and a recursive one never ends. It also refuses
nesting deeper than ``MAX_DEPTH``, which would otherwise end in a ``RecursionError`` inside
PyYAML's composer. Both are located ``ConfigError``s (exit 3).
"""

from __future__ import annotations

from typing import Any

import yaml

from pikube.errors import ConfigError, Problem

Path = tuple[str | int, ...]

# A cluster file nests about five levels (kubernetes.kubeadm_config.Kind.section.key: [..]);
# 64 leaves room for any real kubeadm setting and stays far below Python's recursion limit
# (1000), which PyYAML's recursive composer would otherwise hit on deep nesting.
MAX_DEPTH = 64


def load_with_positions(text: str, file: str) -> tuple[Any, dict[Path, int], list[Problem]]:
    """Parse ``text``; return (data, positions, duplicate-key problems).

    Raises ``yaml.YAMLError`` for malformed YAML; callers turn it into a ``ConfigError``.
    """
    _refuse_aliases_and_depth(text, file)
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    data = yaml.safe_load(text)
    positions: dict[Path, int] = {}
    problems: list[Problem] = []
    if node is not None:
        positions[()] = node.start_mark.line + 1
        _walk(node, (), positions, problems, file)
    return data, positions, problems


def _refuse_aliases_and_depth(text: str, file: str) -> None:
    """Scan the parse events (no data is built) for aliases and excessive nesting."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError(
                [
                    Problem(
                        "",
                        f"YAML alias *{event.anchor} is not allowed",
                        "write the value out in full: pikube does not expand YAML anchors "
                        "and aliases (&name, *name) in its input files",
                        line=line,
                        file=file,
                    )
                ],
                file=file,
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(
                    [
                        Problem(
                            "",
                            f"the YAML nests deeper than {MAX_DEPTH} levels",
                            "flatten the structure: no pikube setting nests this deep",
                            line=line,
                            file=file,
                        )
                    ],
                    file=file,
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _walk(
    node: yaml.Node, path: Path, positions: dict[Path, int], problems: list[Problem], file: str
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    Problem(
                        path=dotted((*path, key)),
                        message=f"key {key!r} appears twice (first on line {seen[key]})",
                        fix="keep one of the two entries; YAML silently drops the first",
                        line=line,
                        file=file,
                    )
                )
            seen[key] = line
            positions[(*path, key)] = line
            _walk(value_node, (*path, key), positions, problems, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            positions[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), positions, problems, file)


def line_of(positions: dict[Path, int], path: Path) -> int | None:
    """The line of ``path``, or of its nearest ancestor that has one."""
    for end in range(len(path), -1, -1):
        line = positions.get(path[:end])
        if line is not None:
            return line
    return None


def dotted(path: Path) -> str:
    """``("nodes", 2, "ip")`` -> ``nodes[2].ip``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text
