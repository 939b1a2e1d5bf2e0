"""Options and helpers shared by commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from pikube.config.model import Cluster

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_CLUSTER_FILE = "cluster.yaml"


def _cluster_from_group(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path:
    """A command's own --cluster wins; else `pikube --cluster FILE` (or $PIKUBE_CLUSTER)."""
    if value is not None:
        return value
    root = ctx.find_root().params.get("cluster")
    return Path(root) if root else Path(DEFAULT_CLUSTER_FILE)


def cluster_option(func: F) -> F:
    """``--cluster FILE`` on every command (also before it: ``pikube --cluster FILE up``).

    Default ./cluster.yaml, or $PIKUBE_CLUSTER.
    """
    return click.option(
        "--cluster",
        "-c",
        "cluster_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        callback=_cluster_from_group,
        help=f"The cluster file [default: {DEFAULT_CLUSTER_FILE}, or $PIKUBE_CLUSTER].",
    )(func)


def load(cluster_file: Path) -> Cluster:
    from pikube.config import load_cluster

    return load_cluster(cluster_file)


def info(message: str) -> None:
    """Progress and status for people: stderr, so stdout stays data."""
    click.echo(message, err=True)
