"""The image catalog (``images/catalog.yaml``): which OS images pikube knows and their layout."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

from pikube.errors import ConfigError, PikubeError, Problem
from pikube.resources import data_path

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class BootLayout:
    partition: int = 1
    label: str = "system-boot"
    cmdline: str = "cmdline.txt"
    seed_dir: str = ""


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    description: str
    url: str
    arch: str
    boot: BootLayout
    checksums: str | None = None
    sha256: str | None = None
    bmap: str | None = None
    default_user: str = ""
    sd_card: bool = True  # False: an image for VMs and rehearsals, never written to a card

    @property
    def filename(self) -> str:
        return unquote(Path(urlparse(self.url).path).name)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "url": self.url,
            "checksums": self.checksums,
            "sha256": self.sha256,
            "bmap": self.bmap,
            "arch": self.arch,
            "sd_card": self.sd_card,
            "boot": {
                "partition": self.boot.partition,
                "label": self.boot.label,
                "cmdline": self.boot.cmdline,
                "seed_dir": self.boot.seed_dir,
            },
        }


def default_catalog_path() -> Path:
    return data_path("images", "catalog.yaml")


def load_catalog(path: Path | None = None) -> list[CatalogEntry]:
    """Read and check a catalog file (pikube's own by default). Raises ``ConfigError``."""
    path = path or default_catalog_path()
    file = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(
            [Problem("", f"cannot read the image catalog: {err}", "check the file", file=file)],
            file=file,
        ) from None
    items = data.get("images") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ConfigError(
            [Problem("images", "no `images:` list", "add `images:` with entries", file=file)],
            file=file,
        )
    problems: list[Problem] = []
    entries: list[CatalogEntry] = []
    for i, item in enumerate(items):
        where = f"images[{i}]"
        if not isinstance(item, dict):
            problems.append(Problem(where, "not a mapping", "write id:, url:, ...", file=file))
            continue
        missing = [key for key in ("id", "url", "arch") if not item.get(key)]
        if missing:
            problems.append(
                Problem(where, f"missing {', '.join(missing)}", "add the key(s)", file=file)
            )
            continue
        if not item.get("checksums") and not item.get("sha256"):
            problems.append(
                Problem(
                    where,
                    f"image {item['id']!r} has neither `checksums:` nor `sha256:`",
                    "add the URL of the SHA256SUMS file or the image's sha256",
                    file=file,
                )
            )
            continue
        sha = str(item.get("sha256") or "").lower() or None
        if sha and not SHA256_RE.match(sha):
            problems.append(
                Problem(f"{where}.sha256", "not a sha256 hex digest", "64 hex digits", file=file)
            )
            continue
        boot = item.get("boot") or {}
        entries.append(
            CatalogEntry(
                id=str(item["id"]),
                description=str(item.get("description", "")),
                url=str(item["url"]),
                arch=str(item["arch"]),
                checksums=item.get("checksums"),
                sha256=sha,
                bmap=item.get("bmap"),
                default_user=str(item.get("default_user") or ""),
                sd_card=bool(item.get("sd_card", True)),
                boot=BootLayout(
                    partition=int(boot.get("partition", 1)),
                    label=str(boot.get("label", "system-boot")),
                    cmdline=str(boot.get("cmdline", "cmdline.txt")),
                    seed_dir=str(boot.get("seed_dir", "") or "").strip("/"),
                ),
            )
        )
    if problems:
        raise ConfigError(problems, file=file)
    return entries


def find_image(image_id: str, catalog: list[CatalogEntry]) -> CatalogEntry:
    for entry in catalog:
        if entry.id == image_id:
            return entry
    from difflib import get_close_matches

    close = get_close_matches(image_id, [e.id for e in catalog], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise PikubeError(
        f"unknown image {image_id!r}",
        where="the image catalog",
        fix=hint + "run `pikube image list` for the ids, or pass a path to an .img.xz file",
    )
