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

SHA256_RE = re.compile(r"[0-9a-f]{64}")


# A file name pikube may create in its cache: no folders, no hidden or special names.
SAFE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]*")
CACHE_SUFFIXES = (".part", ".sha256")  # the cache's own bookkeeping files
URL_SCHEMES = ("https", "http", "file")


def url_file_name(url: str) -> str | None:
    """The file name a download of ``url`` is cached under, or None when the URL does not
    end in a plain file name (``.../`` or ``..%2F..%2Fx.img.xz`` would name a folder or a
    place outside the cache)."""
    last = urlparse(url).path.rpartition("/")[2]
    name = unquote(last)
    if not SAFE_NAME_RE.fullmatch(name) or name.endswith(CACHE_SUFFIXES):
        return None
    return name


@dataclass(frozen=True)
class BootLayout:
    partition: int = 1
    label: str = "system-boot"
    cmdline: str = "cmdline.txt"
    seed_dir: str = ""


@dataclass(frozen=True)
class OsFamily:
    """What an image's OS does at first boot that pikube's cloud-init seed must make up for.

    The one place these OS differences live (the seed templates and docs ask for them). Each
    fact was read in the upstream source named beside it.
    """

    name: str
    # Ubuntu's preinstalled Pi images enable ssh.service. Raspberry Pi OS's pi-gen runs
    # `systemctl disable ssh` unless ENABLE_SSH=1 (stage2/01-sys-tweaks/01-run.sh), and
    # cloud-init's cc_ssh writes keys but never enables sshd, so Raspberry Pi Imager adds
    # `runcmd: [systemctl, enable, --now, ssh]` (rpi-imager src/customization_generator.cpp).
    ssh_enabled: bool = True
    # Units that would delete the host keys cloud-init wrote: raspberrypi-sys-mods'
    # regenerate_ssh_host_keys.service removes /etc/ssh/ssh_host_*_key* and runs ssh-keygen -A.
    # It has default dependencies (after sysinit.target), and cloud-init's network stage,
    # where cc_ssh writes pikube's keys, runs before sysinit.target: where the service is
    # enabled, it runs after cloud-init and replaces the pinned keys. The seed masks it first.
    host_key_regenerators: tuple[str, ...] = ()
    # netplan's renderer for the seed's network-config; None: netplan's default (networkd,
    # which Ubuntu enables). Raspberry Pi OS runs NetworkManager and leaves systemd-networkd
    # disabled (pi-gen stage2/02-net-tweaks), and cloud-init's raspberry-pi-os variant renders
    # through netplan (cloud-init config/cloud.cfg.tmpl), so the file must name NetworkManager.
    netplan_renderer: str | None = None


OS_FAMILIES: dict[str, OsFamily] = {
    "ubuntu": OsFamily("ubuntu"),
    "raspios": OsFamily(
        "raspios",
        ssh_enabled=False,
        host_key_regenerators=("regenerate_ssh_host_keys.service",),
        netplan_renderer="NetworkManager",
    ),
}
DEFAULT_FAMILY = "ubuntu"


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
    family: str = DEFAULT_FAMILY  # a key of OS_FAMILIES (checked when the catalog is loaded)

    @property
    def os_family(self) -> OsFamily:
        return OS_FAMILIES[self.family]

    @property
    def filename(self) -> str:
        """The image's name in the cache (checked when the catalog is loaded)."""
        name = url_file_name(self.url)
        if name is None:
            raise PikubeError(
                f"the URL of image {self.id} does not end in a file name: {self.url}",
                where="the image catalog",
                fix="point url: at the .img.xz file itself",
            )
        return name

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
            "family": self.family,
            "boot": {
                "partition": self.boot.partition,
                "label": self.boot.label,
                "cmdline": self.boot.cmdline,
                "seed_dir": self.boot.seed_dir,
            },
        }


def default_catalog_path() -> Path:
    return data_path("images", "catalog.yaml")


ENTRY_KEYS = {
    "id",
    "description",
    "url",
    "checksums",
    "sha256",
    "bmap",
    "arch",
    "boot",
    "default_user",
    "sd_card",
    "family",
}
BOOT_KEYS = {"partition", "label", "cmdline", "seed_dir"}
BOOT_PATH_RE = re.compile(r"[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*")


class _Checker:
    """Collects the problems of one catalog file, each with its line and a fix."""

    def __init__(self, file: str, positions: dict[tuple[str | int, ...], int]) -> None:
        self.file = file
        self.positions = positions
        self.problems: list[Problem] = []

    def add(self, path: tuple[str | int, ...], message: str, fix: str) -> None:
        from pikube.config.yamlpos import dotted, line_of

        self.problems.append(
            Problem(dotted(path), message, fix, line_of(self.positions, path), self.file)
        )

    def error(self) -> ConfigError:
        error = ConfigError(self.problems, file=self.file)
        error.fix = "correct each entry above (or drop --catalog / PIKUBE_CATALOG)"
        return error

    def text(
        self, item: dict[str, Any], path: tuple[str | int, ...], key: str, *, required: bool
    ) -> str | None:
        value = item.get(key)
        if value is None or value == "":
            if required:
                self.add((*path, key), f"missing {key}", f"add `{key}:`")
            return None
        if not isinstance(value, str):
            self.add((*path, key), f"{key} must be text, not {_kind(value)}", "quote the value")
            return None
        return value

    def url(self, item: dict[str, Any], path: tuple[str | int, ...], key: str) -> str | None:
        value = self.text(item, path, key, required=key == "url")
        if value is None:
            return None
        if urlparse(value).scheme not in URL_SCHEMES:
            self.add(
                (*path, key),
                f"{key} {value!r} is not an https://, http:// or file:// URL",
                "write the full URL",
            )
            return None
        if key in ("url", "bmap") and url_file_name(value) is None:
            self.add(
                (*path, key),
                f"{key} {value!r} does not end in a plain file name (the cache would write "
                "a folder or outside itself)",
                "point it at the file itself, e.g. https://host/path/NAME.img.xz (letters, "
                "digits and . _ + ~ - only; no encoded slashes)",
            )
            return None
        return value


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


def _boot_layout(check: _Checker, boot: object, path: tuple[str | int, ...]) -> BootLayout | None:
    if boot is None:
        return BootLayout()
    if not isinstance(boot, dict):
        check.add(
            path,
            f"boot must be a mapping, not {_kind(boot)}",
            "write boot: with partition:, label:, cmdline: and seed_dir: below it",
        )
        return None
    ok = True
    for key in sorted(set(boot) - BOOT_KEYS):
        check.add((*path, key), f"unknown key {key!r}", f"use {', '.join(sorted(BOOT_KEYS))}")
        ok = False
    partition = boot.get("partition", 1)
    if isinstance(partition, bool) or not isinstance(partition, int) or not 1 <= partition <= 4:
        check.add(
            (*path, "partition"),
            f"partition must be an MBR partition number 1-4, not {partition!r}",
            "write the boot partition's number, e.g. partition: 1",
        )
        ok = False
    texts: dict[str, str] = {}
    for key, default in (("label", "system-boot"), ("cmdline", "cmdline.txt"), ("seed_dir", "")):
        value = boot.get(key, default)
        if value is None:
            value = default
        if not isinstance(value, str):
            check.add((*path, key), f"{key} must be text, not {_kind(value)}", "quote the value")
            ok = False
            continue
        value = value.strip("/") if key == "seed_dir" else value
        unsafe = not BOOT_PATH_RE.fullmatch(value) or ".." in value.split("/")
        if key != "label" and value and unsafe:
            check.add(
                (*path, key),
                f"{key} {value!r} is not a plain path inside the boot partition",
                "write it relative to the partition's root, e.g. cmdline.txt or firmware",
            )
            ok = False
            continue
        texts[key] = value
    if not ok:
        return None
    return BootLayout(partition=partition, **texts)


def load_catalog(path: Path | None = None) -> list[CatalogEntry]:
    """Read and check a catalog file (pikube's own by default). Raises ``ConfigError``
    naming every problem with its line and a fix (exit 3)."""
    from pikube.config.yamlpos import load_with_positions

    path = path or default_catalog_path()
    file = str(path)
    try:
        data, positions, duplicates = load_with_positions(path.read_text(encoding="utf-8"), file)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(
            [Problem("", f"cannot read the image catalog: {err}", "check the file", file=file)],
            file=file,
        ) from None
    check = _Checker(file, positions)
    check.problems += duplicates
    items = data.get("images") if isinstance(data, dict) else None
    if not isinstance(items, list):
        check.add(("images",), "no `images:` list", "add `images:` with entries")
        raise check.error()
    entries: list[CatalogEntry] = []
    ids: set[str] = set()
    for i, item in enumerate(items):
        where: tuple[str | int, ...] = ("images", i)
        if not isinstance(item, dict):
            check.add(
                where, f"an entry must be a mapping, not {_kind(item)}", "write id:, url:, ..."
            )
            continue
        before = len(check.problems)
        for key in sorted(set(item) - ENTRY_KEYS, key=str):
            check.add((*where, key), f"unknown key {key!r}", f"use {', '.join(sorted(ENTRY_KEYS))}")
        image_id = check.text(item, where, "id", required=True)
        arch = check.text(item, where, "arch", required=True)
        url = check.url(item, where, "url")
        checksums = check.url(item, where, "checksums")
        bmap = check.url(item, where, "bmap")
        description = check.text(item, where, "description", required=False) or ""
        default_user = check.text(item, where, "default_user", required=False) or ""
        sha = check.text(item, where, "sha256", required=False)
        if sha is not None and not SHA256_RE.fullmatch(sha.lower()):
            check.add((*where, "sha256"), "not a sha256 hex digest", "64 hex digits")
        if not item.get("checksums") and not item.get("sha256"):
            check.add(
                where,
                f"image {image_id or i!r} has neither `checksums:` nor `sha256:`",
                "add the URL of the SHA256SUMS file or the image's sha256",
            )
        sd_card = item.get("sd_card", True)
        if not isinstance(sd_card, bool):
            check.add((*where, "sd_card"), "sd_card must be true or false", "write true or false")
        family = check.text(item, where, "family", required=False) or DEFAULT_FAMILY
        if family not in OS_FAMILIES:
            check.add(
                (*where, "family"),
                f"unknown OS family {family!r}",
                f"use one of {', '.join(sorted(OS_FAMILIES))}",
            )
        boot = _boot_layout(check, item.get("boot"), (*where, "boot"))
        if len(check.problems) > before or not (image_id and url and arch and boot):
            continue
        if image_id in ids:
            check.add((*where, "id"), f"id {image_id!r} appears twice", "give each its own id")
        ids.add(image_id)
        entries.append(
            CatalogEntry(
                id=image_id,
                description=description,
                url=url,
                arch=arch,
                checksums=checksums,
                sha256=sha.lower() if sha else None,
                bmap=bmap,
                default_user=default_user,
                sd_card=bool(sd_card),
                family=family,
                boot=boot,
            )
        )
    if check.problems:
        raise check.error()
    return entries


def image_family(image_id: str, catalog: list[CatalogEntry] | None = None) -> OsFamily:
    """The OS family of a catalog image; an id the catalog lacks gets the default family."""
    for entry in catalog if catalog is not None else load_catalog():
        if entry.id == image_id:
            return entry.os_family
    return OS_FAMILIES[DEFAULT_FAMILY]


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
