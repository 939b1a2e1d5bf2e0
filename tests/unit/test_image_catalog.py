"""pikube's image catalog: complete, consistent entries; readable errors for bad catalogs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pikube.config.load import image_ids
from pikube.errors import ConfigError, PikubeError
from pikube.image.catalog import find_image, load_catalog


def test_shipped_catalog_entries_are_complete() -> None:
    entries = load_catalog()
    assert [e.id for e in entries] == list(image_ids())
    assert len({e.id for e in entries}) == len(entries)
    for entry in entries:
        assert entry.url.startswith("https://")
        assert entry.checksums and entry.checksums.startswith("https://")
        if not entry.sd_card:  # VM images for rehearsals: never flashed, no boot layout used
            assert entry.arch == "amd64"
            continue
        assert entry.filename.endswith(".img.xz")
        assert entry.arch == "arm64"
        assert entry.boot.partition == 1 and entry.boot.label and entry.boot.cmdline
    assert sum(e.sd_card for e in entries) >= 2


def test_ubuntu_images_use_system_boot() -> None:
    entry = find_image("ubuntu-24.04-server-arm64", load_catalog())
    assert entry.boot.label == "system-boot" and entry.default_user == "ubuntu"


def test_unknown_image_suggests_the_close_one() -> None:
    with pytest.raises(PikubeError, match="unknown image") as err:
        find_image("ubuntu-24.04-server-arm", load_catalog())
    assert "ubuntu-24.04-server-arm64" in (err.value.fix or "")


def test_bad_catalog_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "images:\n"
        "  - id: a\n    url: https://x/a.img.xz\n    arch: arm64\n"
        "  - id: b\n    arch: arm64\n    sha256: abc\n"
        "  - id: c\n    url: https://x/c.img.xz\n    arch: arm64\n    sha256: nothex\n"
    )
    with pytest.raises(ConfigError) as err:
        load_catalog(path)
    text = err.value.render()
    assert "neither `checksums:` nor `sha256:`" in text
    assert "missing url" in text
    assert "images[2].sha256" in text


def test_raspberry_pi_os_is_its_own_family_and_ubuntu_the_default() -> None:
    catalog = load_catalog()
    raspios = find_image("raspios-trixie-lite-arm64", catalog)
    assert raspios.family == "raspios" and raspios.to_json()["family"] == "raspios"
    assert raspios.os_family.ssh_enabled is False
    assert raspios.os_family.netplan_renderer == "NetworkManager"
    assert raspios.os_family.host_key_regenerators == ("regenerate_ssh_host_keys.service",)
    ubuntu = find_image("ubuntu-24.04-server-arm64", catalog).os_family
    assert (ubuntu.ssh_enabled, ubuntu.netplan_renderer, ubuntu.host_key_regenerators) == (
        True,
        None,
        (),
    )


def test_unknown_os_family_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "images:\n  - id: a\n    url: https://x/a.img.xz\n    arch: arm64\n"
        f"    sha256: {'0' * 64}\n    family: raspbian\n"
    )
    with pytest.raises(ConfigError) as err:
        load_catalog(path)
    text = err.value.render()
    assert "images[0].family" in text and "unknown OS family 'raspbian'" in text
    assert "raspios" in text and "ubuntu" in text
