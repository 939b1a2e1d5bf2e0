"""Download images once into a cache, resume interrupted downloads, verify sha256.

Cache layout (``$XDG_CACHE_HOME/pikube/images`` or ``--cache-dir``)::

    NAME.img.xz           only ever appears complete and verified (renamed into place)
    NAME.img.xz.sha256    "HASH  NAME" written after verification; `image verify` re-hashes
    NAME.img.xz.part      an unfinished download; the next fetch resumes it (HTTP Range)

A checksum mismatch deletes the ``.part`` file: nothing flashable is left behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from urllib.parse import unquote, urlparse

from pikube.errors import ImageVerifyError, PikubeError
from pikube.image.catalog import SHA256_RE, CatalogEntry, url_file_name
from pikube.invoker import hand_over

BLOCK = 1 << 20
TIMEOUT = 60
RETRIES = 3

# Called with (bytes done, total or None). ``done`` may jump (a resumed download).
Progress = Callable[[int, int | None], None]


class DownloadError(PikubeError):
    """A download failed (network, HTTP status); the partial file is kept for resuming."""


@dataclass(frozen=True)
class CachedImage:
    path: Path
    sha256: str
    downloaded: bool  # False when the cache already had it


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pikube" / "images"


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def parse_checksums(text: str, filename: str, *, source: str) -> str:
    """The sha256 for ``filename`` in sha256sum's format ("HASH *NAME" / "HASH  NAME")."""
    lines = [line.split(None, 1) for line in text.splitlines() if line.strip()]
    rows = [
        (parts[0].lower(), parts[1].lstrip("*").strip() if len(parts) > 1 else "")
        for parts in lines
    ]
    rows = [(digest, name) for digest, name in rows if SHA256_RE.fullmatch(digest)]
    for digest, name in rows:
        if Path(name).name == filename:
            return digest
    if len(rows) == 1 and not rows[0][1]:
        return rows[0][0]
    raise ImageVerifyError(
        f"{source} has no sha256 for {filename}",
        where=source,
        fix="the catalog entry's url and checksums do not match; update images/catalog.yaml "
        "or pass --sha256",
    )


def _open(url: str, offset: int = 0) -> tuple[object, int, int | None]:
    """Open ``url`` from ``offset``; returns (response, start offset served, total size)."""
    request = urllib.request.Request(url, headers={"User-Agent": "pikube"})  # noqa: S310
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    response = urllib.request.urlopen(request, timeout=TIMEOUT)  # noqa: S310
    status = getattr(response, "status", 200)
    length = response.headers.get("Content-Length")
    if status == 206:
        content_range = response.headers.get("Content-Range", "")
        # "bytes START-END/TOTAL"
        try:
            span, total = content_range.split(" ", 1)[1].split("/")
            start = int(span.split("-")[0])
            return response, start, int(total) if total != "*" else None
        except (IndexError, ValueError):
            response.close()
            return _open(url, 0)
    return response, 0, int(length) if length and length.isdigit() else None


def read_text_url(url: str) -> str:
    """Small files (checksum lists, block maps)."""
    try:
        if urlparse(url).scheme in ("", "file"):
            return Path(_local_path(url)).read_text(encoding="utf-8")
        response, _, _ = _open(url)
        with response:  # type: ignore[attr-defined]
            data: bytes = response.read(16 << 20)  # type: ignore[attr-defined]
        return data.decode("utf-8", errors="replace")
    except (OSError, urllib.error.URLError, HTTPException) as err:
        raise DownloadError(
            f"cannot download {url}: {_reason(err)}",
            where=url,
            fix="check the network (or the catalog URL); for air-gapped use copy the file "
            "and use a file:// URL",
        ) from None


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


def _local_path(url: str) -> str:
    parsed = urlparse(url)
    return unquote(parsed.path) if parsed.scheme == "file" else url


def download(
    url: str,
    dest: Path,
    *,
    sha256: str,
    progress: Progress | None = None,
    retries: int = RETRIES,
) -> None:
    """Download ``url`` to ``dest`` via ``dest.part``, resuming it; verify; rename into place.

    Raises ``DownloadError`` (the ``.part`` is kept for the next try) or ``ImageVerifyError``
    (the ``.part`` is deleted).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if urlparse(url).scheme in ("", "file"):
        source = Path(_local_path(url))
        if not source.is_file():
            raise DownloadError(
                f"{source} does not exist", where=url, fix="check the path in the catalog entry"
            )
        shutil.copyfile(source, part)
    else:
        attempt = 0
        while True:
            try:
                _download_once(url, part, progress)
                break
            except (OSError, urllib.error.URLError, HTTPException) as err:
                if isinstance(err, urllib.error.HTTPError) and err.code < 500:
                    raise DownloadError(
                        f"cannot download {url}: {_reason(err)}",
                        where=url,
                        fix="check the URL in the image catalog",
                    ) from None
                attempt += 1
                if attempt > retries:
                    have = part.stat().st_size if part.exists() else 0
                    raise DownloadError(
                        f"download of {url} failed after {attempt} tries: {_reason(err)}; "
                        f"{have} bytes kept in {part}",
                        where=url,
                        fix="run the same command again to resume",
                    ) from None
    actual = sha256_file(part)
    if actual != sha256:
        part.unlink(missing_ok=True)
        raise ImageVerifyError(
            f"checksum mismatch for {url}: sha256 {actual}, expected {sha256}; the download "
            "was deleted",
            where=str(dest),
            fix="fetch again; if it fails again the mirror or the catalog's checksum is wrong",
        )
    os.replace(part, dest)
    dest.with_name(dest.name + ".sha256").write_text(f"{sha256}  {dest.name}\n")


def _download_once(url: str, part: Path, progress: Progress | None) -> None:
    have = part.stat().st_size if part.exists() else 0
    try:
        response, start, total = _open(url, have)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the .part is already complete
            return
        raise
    with response:  # type: ignore[attr-defined]
        mode = "ab" if start == have and have else "wb"
        if mode == "wb":
            have = 0
        with part.open(mode) as handle:
            if progress:
                progress(have, total)
            while block := response.read(BLOCK):  # type: ignore[attr-defined]
                handle.write(block)
                have += len(block)
                if progress:
                    progress(have, total)
    if total is not None and have < total:
        raise HTTPException(f"connection closed after {have} of {total} bytes")


def cached_path(entry: CatalogEntry, cache_dir: Path) -> Path:
    return cache_dir / entry.filename


def expected_sha256(entry: CatalogEntry) -> str:
    if entry.sha256:
        return entry.sha256
    if not entry.checksums:
        raise ImageVerifyError(
            f"image {entry.id} has no checksum source", fix="add checksums: or sha256: to it"
        )
    return parse_checksums(read_text_url(entry.checksums), entry.filename, source=entry.checksums)


def fetch_image(
    entry: CatalogEntry, cache_dir: Path, *, progress: Progress | None = None
) -> CachedImage:
    """Make sure the verified image is in the cache; download (or resume) it if not."""
    dest = cached_path(entry, cache_dir)
    marker = dest.with_name(dest.name + ".sha256")
    if dest.is_file() and marker.is_file():
        recorded = marker.read_text().split()[0] if marker.read_text().split() else ""
        if entry.sha256 is None or recorded == entry.sha256:
            return CachedImage(dest, recorded, downloaded=False)
    sha = expected_sha256(entry)
    if dest.is_file() and sha256_file(dest) == sha:  # e.g. copied in by hand
        marker.write_text(f"{sha}  {dest.name}\n")
        return CachedImage(dest, sha, downloaded=False)
    download(entry.url, dest, sha256=sha, progress=progress)
    hand_over(dest)
    hand_over(marker)
    bmap_name = url_file_name(entry.bmap) if entry.bmap else None
    if entry.bmap and bmap_name:  # load_catalog refuses other bmap URLs
        bmap_dest = dest.with_name(bmap_name)
        bmap_dest.write_text(read_text_url(entry.bmap))
        hand_over(bmap_dest)
    return CachedImage(dest, sha, downloaded=True)


def verify_cached(
    entry: CatalogEntry, cache_dir: Path, *, progress: Progress | None = None
) -> CachedImage:
    """Re-hash a cached image against the catalog's checksum. Raises ``ImageVerifyError``."""
    dest = cached_path(entry, cache_dir)
    if not dest.is_file():
        raise PikubeError(
            f"image {entry.id} is not in the cache ({dest})",
            where=str(cache_dir),
            fix=f"run `pikube image fetch {entry.id}`",
        )
    marker = dest.with_name(dest.name + ".sha256")
    recorded = (
        marker.read_text().split()[0] if marker.is_file() and marker.read_text().split() else ""
    )
    expected = entry.sha256 or recorded or expected_sha256(entry)
    actual = sha256_file(dest, progress)
    if actual != expected:
        raise ImageVerifyError(
            f"cached image {dest} is damaged: sha256 {actual}, expected {expected}",
            where=str(dest),
            fix=f"delete it and run `pikube image fetch {entry.id}` again",
        )
    return CachedImage(dest, actual, downloaded=False)
