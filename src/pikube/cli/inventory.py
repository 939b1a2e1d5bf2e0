"""``pikube inventory``."""

from __future__ import annotations

from pathlib import Path

import click

from pikube.cli.common import cluster_option, info, load


@click.command()
@cluster_option
@click.option(
    "--output",
    "-o",
    "output_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write hosts.yml and group_vars/ into this folder instead of stdout.",
)
def inventory(cluster_file: Path, output_dir: Path | None) -> None:
    """Render the Ansible inventory (groups control_plane, workers, cluster) and group_vars."""
    from pikube.inventory import render_inventory, render_inventory_files, write_files

    cluster = load(cluster_file)
    if output_dir is None:
        click.echo(render_inventory(cluster), nl=False)
        return
    written = write_files(render_inventory_files(cluster), output_dir)
    for path in written:
        info(f"wrote {path}")
