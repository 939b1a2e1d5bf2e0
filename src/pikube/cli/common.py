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


def cluster_option(func: F) -> F:
    """``--cluster FILE`` (default ./cluster.yaml, or $PIKUBE_CLUSTER) on every command."""
    return click.option(
        "--cluster",
        "-c",
        "cluster_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_CLUSTER_FILE,
        envvar="PIKUBE_CLUSTER",
        show_default=True,
        show_envvar=True,
        help="The cluster file.",
    )(func)


def load(cluster_file: Path) -> Cluster:
    from pikube.config import load_cluster

    return load_cluster(cluster_file)


def info(message: str) -> None:
    """Progress and status for people: stderr, so stdout stays data."""
    click.echo(message, err=True)
