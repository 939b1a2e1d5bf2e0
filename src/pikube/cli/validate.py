"""``pikube validate``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pikube.cli.common import cluster_option, info, load


@click.command()
@cluster_option
@click.option("--json", "as_json", is_flag=True, help="Print the resolved model as JSON.")
def validate(cluster_file: Path, as_json: bool) -> None:
    """Check cluster.yaml; report every problem with its line and a fix."""
    cluster = load(cluster_file)
    if as_json:
        click.echo(json.dumps(cluster.model_dump(mode="json"), indent=2, sort_keys=True))
    flavour = f"{cluster.flavour.title} {cluster.release.text}"
    info(
        f"{cluster_file}: OK: cluster {cluster.name!r}, {flavour}, {len(cluster.nodes)} nodes "
        f"(control plane {cluster.control_plane.name}, {len(cluster.workers)} workers)"
    )
