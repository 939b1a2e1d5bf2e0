"""Downloads over real HTTP on 127.0.0.1: cache, resume with Range, sha256, file:// URLs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pikube.errors import ImageVerifyError
from pikube.image.catalog import BootLayout, CatalogEntry
from pikube.image.download import (
    DownloadError,
    download,
    fetch_image,
    parse_checksums,
    verify_cached,
)
from tests.image_support import Served, http_server

NAME = "test-image.img.xz"


@pytest.fixture
def payload(tmp_path: Path) -> tuple[Path, bytes, str]:
    root = tmp_path / "www"
    root.mkdir()
    data = os.urandom(3 << 20) + bytes(1 << 20)
    (root / NAME).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    (root / "SHA256SUMS").write_text(f"{'0' * 64} *other.img.xz\n{digest} *{NAME}\n")
    return root, data, digest


def entry(base: str, **kw: str) -> CatalogEntry:
    return CatalogEntry(
        id="test",
        description="test image",
        url=kw.get("url", f"{base}/{NAME}"),
        arch="arm64",
        boot=BootLayout(),
        checksums=kw.get("checksums", f"{base}/SHA256SUMS"),
        sha256=kw.get("sha256"),
    )


def image_requests(served: Served) -> list[str | None]:
    return [rng for path, rng in served.requests if path.endswith(NAME)]


def test_fetch_downloads_verifies_and_caches_once(
    payload: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    root, data, digest = payload
    cache = tmp_path / "cache"
    with http_server(root) as served:
        first = fetch_image(entry(served.base), cache)
        second = fetch_image(entry(served.base), cache)
    assert first.downloaded and not second.downloaded
    assert first.path.read_bytes() == data and first.sha256 == digest
    assert (cache / f"{NAME}.sha256").read_text() == f"{digest}  {NAME}\n"
    assert len(image_requests(served)) == 1  # the second fetch came from the cache
    assert not (cache / f"{NAME}.part").exists()


def test_interrupted_download_resumes_with_a_range_request(
    payload: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    root, data, digest = payload
    dest = tmp_path / "cache" / NAME
    with http_server(root) as served:
        served.drop_after[f"/{NAME}"] = 1_500_000
        with pytest.raises(DownloadError, match="1500000 bytes kept") as err:
            download(f"{served.base}/{NAME}", dest, sha256=digest, retries=0)
        assert err.value.fix == "run the same command again to resume"
        part = dest.with_name(NAME + ".part")
        assert not dest.exists() and part.stat().st_size == 1_500_000
        download(f"{served.base}/{NAME}", dest, sha256=digest, retries=0)
    assert image_requests(served) == [None, "bytes=1500000-"]
    assert dest.read_bytes() == data and not part.exists()


def test_dropped_connection_is_retried_within_one_fetch(
    payload: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    root, data, _ = payload
    with http_server(root) as served:
        served.drop_after[f"/{NAME}"] = 2_000_000
        cached = fetch_image(entry(served.base), tmp_path / "cache")
    assert image_requests(served) == [None, "bytes=2000000-"]
    assert cached.path.read_bytes() == data


def test_server_without_range_support_restarts_cleanly(
    payload: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    root, data, digest = payload
    dest = tmp_path / NAME
    dest.with_name(NAME + ".part").write_bytes(b"stale bytes from an older download")
    with http_server(root) as served:
        served.ignore_range = True
        download(f"{served.base}/{NAME}", dest, sha256=digest)
    assert dest.read_bytes() == data


def test_checksum_mismatch_leaves_nothing_flashable(
    payload: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    root, _, _ = payload
    cache = tmp_path / "cache"
    with (
        http_server(root) as served,
        pytest.raises(ImageVerifyError, match="checksum mismatch") as err,
    ):
        fetch_image(entry(served.base, sha256="ab" * 32), cache)
    assert err.value.exit_code == 5
    assert list(cache.iterdir()) == []  # no image, no .part, no marker


def test_file_urls_work_for_air_gapped_use(
    payload: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    root, data, _ = payload
    cached = fetch_image(entry(root.as_uri()), tmp_path / "cache")
    assert cached.downloaded and cached.path.read_bytes() == data


def test_http_errors_are_reported_with_the_url(
    payload: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    root, _, _ = payload
    with http_server(root) as served, pytest.raises(DownloadError, match="HTTP 404"):
        fetch_image(
            entry(served.base, url=f"{served.base}/missing.img.xz", sha256="ab" * 32), tmp_path
        )


def test_verify_cached_detects_a_damaged_cache(
    payload: tuple[Path, bytes, str], tmp_path: Path
) -> None:
    root, _, _ = payload
    cache = tmp_path / "cache"
    cached = fetch_image(entry(root.as_uri()), cache)
    verify_cached(entry(root.as_uri()), cache)
    with cached.path.open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\0damage")
    with pytest.raises(ImageVerifyError, match="damaged"):
        verify_cached(entry(root.as_uri()), cache)


@pytest.mark.parametrize(
    "text",
    [
        f"{'a' * 64} *{NAME}\n",
        f"{'a' * 64}  {NAME}\n",
        f"{'b' * 64}  other\n{'a' * 64}  ./dir/{NAME}\n",
        f"{'a' * 64}\n",  # a bare .sha256 file
    ],
)
def test_checksum_list_formats(text: str) -> None:
    assert parse_checksums(text, NAME, source="SUMS") == "a" * 64


def test_checksum_list_without_the_image_is_an_error() -> None:
    with pytest.raises(ImageVerifyError, match="no sha256 for"):
        parse_checksums(f"{'a' * 64}  other.img.xz\n", NAME, source="SUMS")
