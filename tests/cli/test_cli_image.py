"""``pikube image list|fetch|verify`` through CliRunner, against a catalog on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pikube.cli.main import cli
from pikube.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_VERIFY_FAILED
from tests.image_support import http_server

NAME = "tiny.img.xz"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    data = os.urandom(1 << 20)
    (root / NAME).write_bytes(data)
    (root / "SHA256SUMS").write_text(f"{hashlib.sha256(data).hexdigest()} *{NAME}\n")
    return root


def catalog(tmp_path: Path, base: str) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "images:\n"
        f"  - id: tiny\n    description: a test image\n    url: {base}/{NAME}\n"
        f"    checksums: {base}/SHA256SUMS\n    arch: arm64\n"
        f"  - id: broken\n    description: wrong checksum\n    url: {base}/{NAME}\n"
        f"    sha256: {'ab' * 32}\n    arch: arm64\n"
    )
    return path


def test_list_shows_the_shipped_catalog_as_json(tmp_path: Path) -> None:
    result = run("image", "list", "--json", "--cache-dir", str(tmp_path))
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    ids = [row["id"] for row in rows]
    assert "ubuntu-24.04-server-arm64" in ids and "ubuntu-22.04-server-arm64" in ids
    assert all(row["cached"] is None for row in rows)
    assert rows[0]["boot"]["label"] == "system-boot"


def test_fetch_prints_the_path_then_list_shows_it_cached(www: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with http_server(www) as served:
        cat = catalog(tmp_path, served.base)
        fetched = run("image", "fetch", "tiny", "--catalog", str(cat), "--cache-dir", str(cache))
        again = run("image", "fetch", "tiny", "--catalog", str(cat), "--cache-dir", str(cache))
    assert fetched.exit_code == 0, fetched.stderr
    assert fetched.stdout == f"{cache / NAME}\n"  # stdout is data only
    assert "downloaded and verified tiny" in fetched.stderr
    assert "already in the cache" in again.stderr
    listed = run("image", "list", "--catalog", str(cat), "--cache-dir", str(cache))
    assert listed.stdout.splitlines()[0].split()[:3] == ["tiny", "arm64", "cached"]
    verified = run("image", "verify", "tiny", "--catalog", str(cat), "--cache-dir", str(cache))
    assert verified.exit_code == 0 and "tiny: OK" in verified.stderr


def test_checksum_mismatch_exits_5_and_leaves_nothing(www: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with http_server(www) as served:
        cat = catalog(tmp_path, served.base)
        result = run("image", "fetch", "broken", "--catalog", str(cat), "--cache-dir", str(cache))
    assert result.exit_code == EXIT_VERIFY_FAILED
    assert result.stderr.startswith("Error: checksum mismatch")
    assert "fix:" in result.stderr and result.stdout == ""
    assert list(cache.iterdir()) == []


def test_verify_of_a_damaged_cache_exits_5(www: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cat = catalog(tmp_path, www.as_uri())
    assert (
        run("image", "fetch", "tiny", "--catalog", str(cat), "--cache-dir", str(cache)).exit_code
        == 0
    )
    (cache / NAME).write_bytes(b"damaged")
    result = run("image", "verify", "tiny", "--catalog", str(cat), "--cache-dir", str(cache))
    assert result.exit_code == EXIT_VERIFY_FAILED and "is damaged" in result.stderr


def test_unknown_image_and_uncached_verify_are_errors(tmp_path: Path) -> None:
    unknown = run("image", "fetch", "ubuntu-24.04-server", "--cache-dir", str(tmp_path))
    assert unknown.exit_code == EXIT_FAILURE
    assert "Error: unknown image 'ubuntu-24.04-server'" in unknown.stderr
    assert "ubuntu-24.04-server-arm64" in unknown.stderr
    uncached = run("image", "verify", "ubuntu-24.04-server-arm64", "--cache-dir", str(tmp_path))
    assert uncached.exit_code == EXIT_FAILURE and "pikube image fetch" in uncached.stderr


def test_unreachable_mirror_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    cat = catalog(tmp_path, "http://127.0.0.1:9")  # discard port: connection refused
    result = run(
        "image", "fetch", "tiny", "--catalog", str(cat), "--cache-dir", str(tmp_path / "c")
    )
    assert result.exit_code == EXIT_FAILURE
    assert result.stderr.startswith("Error: cannot download http://127.0.0.1:9/SHA256SUMS")


def test_catalog_url_cannot_name_a_file_outside_the_cache(www: Path, tmp_path: Path) -> None:
    """`..%2F..%2Fx.img.xz` decodes to `../../x.img.xz`: refused, nothing written."""
    (www / "a" / "b").mkdir(parents=True)
    digest = hashlib.sha256((www / NAME).read_bytes()).hexdigest()
    cat = tmp_path / "catalog.yaml"
    cat.write_text(
        "images:\n"
        f"  - id: escape\n    url: {(www / 'a' / 'b').as_uri()}/..%2F..%2F{NAME}\n"
        f"    sha256: {digest}\n    arch: arm64\n"
    )
    cache = tmp_path / "cache" / "images"
    result = CliRunner().invoke(
        cli, ["image", "fetch", "escape", "--catalog", str(cat), "--cache-dir", str(cache)]
    )
    assert result.exit_code == EXIT_CONFIG, result.output
    assert f"Error: {cat} has 1 problem" in result.stderr
    assert f"{cat}:3 (images[0].url)" in result.stderr and "plain file name" in result.stderr
    assert not (tmp_path / NAME).exists() and not (tmp_path / "cache").exists()


def test_catalog_url_ending_in_a_slash_is_refused(tmp_path: Path) -> None:
    cat = tmp_path / "catalog.yaml"
    cat.write_text(
        f"images:\n  - id: folder\n    url: {tmp_path.as_uri()}/\n    sha256: {'ab' * 32}\n"
        "    arch: arm64\n"
    )
    cache = tmp_path / "cache" / "images"
    result = CliRunner().invoke(
        cli, ["image", "fetch", "folder", "--catalog", str(cat), "--cache-dir", str(cache)]
    )
    assert result.exit_code == EXIT_CONFIG, result.output
    assert "(images[0].url)" in result.stderr and "fix:" in result.stderr
    assert not list(tmp_path.glob("cache*")) and not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize(
    ("boot", "where", "message"),
    [
        ("[1]", "images[0].boot", "boot must be a mapping, not a list"),
        ("{partition: five}", "images[0].boot.partition", "partition must be an MBR partition"),
        ("{partition: 7}", "images[0].boot.partition", "partition must be an MBR partition"),
        (
            "{cmdline: ../../etc/passwd}",
            "images[0].boot.cmdline",
            "cmdline '../../etc/passwd' is not a plain path",
        ),
        ("{label: [a]}", "images[0].boot.label", "label must be text, not a list"),
    ],
)
def test_bad_catalog_values_are_located_errors_with_exit_3(
    tmp_path: Path, boot: str, where: str, message: str
) -> None:
    cat = tmp_path / "catalog.yaml"
    cat.write_text(
        f"images:\n  - id: x\n    url: https://example.invalid/x.img.xz\n    sha256: {'ab' * 32}\n"
        f"    arch: arm64\n    boot: {boot}\n"
    )
    for args in (["image", "list"], ["image", "fetch", "x"]):
        result = CliRunner().invoke(cli, [*args, "--catalog", str(cat)])
        assert result.exit_code == EXIT_CONFIG, result.output
        assert result.stderr.startswith(f"Error: {cat} has 1 problem")
        assert f"{cat}:6 ({where}): {message}" in result.stderr and "fix:" in result.stderr
        assert "Traceback" not in result.output
