"""``pikube image list|fetch|verify``: the image catalog and the download cache."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pikube.cli.common import info

if TYPE_CHECKING:
    from rich.progress import Progress

F = TypeVar("F", bound=Callable[..., Any])


def cache_dir_option(func: F) -> F:
    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="PIKUBE_CACHE_DIR",
        show_envvar=True,
        help="Where downloaded images are kept (default: $XDG_CACHE_HOME/pikube/images).",
    )(func)


def catalog_option(func: F) -> F:
    return click.option(
        "--catalog",
        "catalog_file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="PIKUBE_CATALOG",
        show_envvar=True,
        help="Use this image catalog instead of pikube's own (e.g. a local mirror).",
    )(func)


def resolve_cache_dir(cache_dir: Path | None) -> Path:
    from pikube.image.download import default_cache_dir

    return cache_dir or default_cache_dir()


def binary_speed(task: Any) -> str:
    """Throughput in binary units (``70.0 MiB/s``), like every size pikube prints."""
    from pikube.image.device import human_size

    speed = task.finished_speed or task.speed
    return "?" if speed is None else f"{human_size(int(speed))}/s"


def bytes_bar(*, transient: bool = False) -> Progress:
    """A rich progress display for byte counts (size, throughput, ETA) on stderr.

    Sizes and speeds in KiB/MiB/GiB: rich's defaults are decimal (MB), pikube's summaries
    and the README are binary.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        Task,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class BinarySpeedColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(binary_speed(task), style="progress.data.speed")

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(binary_units=True),
        BinarySpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=transient,
    )


@contextmanager
def byte_progress(description: str) -> Iterator[Callable[[int, int | None], None]]:
    """A rich progress bar on stderr when it is a terminal; silent otherwise."""
    import sys

    if not sys.stderr.isatty():
        yield lambda done, total: None
        return
    with bytes_bar(transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@click.group()
def image() -> None:
    """The OS image catalog and the download cache."""
    from pikube.invoker import adopt_invoker_home

    adopt_invoker_home()  # under sudo, the cache is the user's ~/.cache, owned by them


@image.command("list")
@catalog_option
@cache_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
def list_images(catalog_file: Path | None, cache_dir: Path | None, as_json: bool) -> None:
    """List the images pikube knows and whether each is in the cache."""
    from pikube.image.catalog import load_catalog
    from pikube.image.download import cached_path

    entries = load_catalog(catalog_file)
    folder = resolve_cache_dir(cache_dir)
    rows = []
    for entry in entries:
        path = cached_path(entry, folder)
        cached = path.is_file() and path.with_name(path.name + ".sha256").is_file()
        rows.append({**entry.to_json(), "cached": str(path) if cached else None})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(r["id"]) for r in rows) if rows else 0
    for row in rows:
        state = "cached" if row["cached"] else "-"
        kind = "sd-card" if row["sd_card"] else "vm-only"
        click.echo(
            f"{row['id']:<{width}}  {row['arch']:<6} {state:<7} {kind:<8} {row['description']}"
        )


@image.command()
@click.argument("image_id")
@catalog_option
@cache_dir_option
def fetch(image_id: str, catalog_file: Path | None, cache_dir: Path | None) -> None:
    """Download IMAGE_ID once into the cache (resuming), verify its sha256; print its path."""
    from pikube.image.catalog import find_image, load_catalog
    from pikube.image.download import fetch_image

    entry = find_image(image_id, load_catalog(catalog_file))
    folder = resolve_cache_dir(cache_dir)
    with byte_progress(f"fetch {entry.id}") as progress:
        cached = fetch_image(entry, folder, progress=progress)
    if cached.downloaded:
        info(f"downloaded and verified {entry.id}: sha256 {cached.sha256}")
    else:
        info(f"{entry.id} is already in the cache (sha256 {cached.sha256})")
    click.echo(str(cached.path))


@image.command()
@click.argument("image_id")
@catalog_option
@cache_dir_option
def verify(image_id: str, catalog_file: Path | None, cache_dir: Path | None) -> None:
    """Re-hash the cached IMAGE_ID against its published sha256."""
    from pikube.image.catalog import find_image, load_catalog
    from pikube.image.download import verify_cached

    entry = find_image(image_id, load_catalog(catalog_file))
    with byte_progress(f"verify {entry.id}") as progress:
        cached = verify_cached(entry, resolve_cache_dir(cache_dir), progress=progress)
    info(f"{entry.id}: OK, sha256 {cached.sha256}")
    click.echo(str(cached.path))
