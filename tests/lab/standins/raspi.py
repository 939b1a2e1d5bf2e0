"""The Raspberry Pi OS personality's side of the stand-ins: no `snap` until snapd is installed.

Raspberry Pi OS lists two apt sources: Debian and archive.raspberrypi.com
(/etc/apt/sources.list.d/raspi.sources). The lab imitates the second with a small signed flat
repository on its web server, ``www/raspi/``, holding a stand-in ``snapd`` package: the same
`snap` stand-in every Ubuntu-personality node has baked in, but arriving the way snapd
arrives on Pi OS (`apt-get install snapd`). Its version sorts above Debian's snapd, so apt
picks it, as a node would pick the real package. Debian's sudoers (no /snap/bin on
secure_path) and /etc/environment stay as they are.
"""

from __future__ import annotations

import fcntl
import gzip
import tempfile
from pathlib import Path

from .build import node_files
from .repo import (
    _hashes,
    build_deb,
    cache_dir,
    gnupg_home,
    packages_index,
    public_key_armored,
    sign_repo,
)

SNAPD_VERSION = "2.68.5-1+rpt1+pikubelab"  # above bookworm's 2.57.6 and trixie's 2.68.x
# What the snapd package ships among the Ubuntu personality's baked-in files.
SNAPD_PATHS = ("/usr/bin/snap", "/etc/profile.d/apps-bin-path.sh")
SNAPD_PAYLOAD = "/usr/lib/pikube-standin/snap/"
# Ubuntu's, not Debian's: /snap/bin on PATH and on sudo's secure_path.
UBUNTU_ONLY_PATHS = ("/etc/environment", "/etc/sudoers.d/pikube-lab-snap-path")
KEYRING = "/usr/share/keyrings/pikube-lab-raspi.asc"
SOURCES = "/etc/apt/sources.list.d/raspi.sources"


def _is_snapd(path: str) -> bool:
    return path in SNAPD_PATHS or path.startswith(SNAPD_PAYLOAD)


def build_raspi_repo(www: Path) -> Path:
    """Write the signed flat repository ``www/raspi/`` with the stand-in snapd."""
    repo = Path(www) / "raspi"
    repo.mkdir(parents=True, exist_ok=True)
    cache_dir().mkdir(parents=True, exist_ok=True)
    with (cache_dir() / "www.lock").open("w") as lock, tempfile.TemporaryDirectory() as t:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one user of the signing key at a time
        stage = Path(t) / "snapd"
        for path, (data, mode) in node_files().items():
            if _is_snapd(path):
                target = stage / path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                target.chmod(mode)
        deb = build_deb(
            stage,
            repo,
            "snapd",
            SNAPD_VERSION,
            "all",
            ["python3"],
            "Daemon and tooling that enable snap packages (pikube lab stand-in)",
        )
        index = packages_index(repo, [deb])
        (repo / "Packages").write_text(index)
        with gzip.GzipFile(repo / "Packages.gz", "wb", mtime=0) as gz:
            gz.write(index.encode())
        release = ["Origin: Raspberry Pi Foundation (pikube lab stand-in)", "Label: raspi"]
        for field, key in (("MD5Sum", "MD5sum"), ("SHA1", "SHA1"), ("SHA256", "SHA256")):
            release.append(f"{field}:")
            for name in ("Packages", "Packages.gz"):
                size = (repo / name).stat().st_size
                release.append(f" {_hashes(repo / name)[key]} {size:>16} {name}")
        (repo / "Release").write_text("\n".join(release) + "\n")
        sign_repo(repo, gnupg_home())
    return repo


def personality_node_files(personality: str, http_url: str) -> dict[str, tuple[bytes, int]]:
    """The stand-ins' files for a node of ``personality`` (``raspios``): no snap, no Ubuntu
    PATH, and the raspi apt source that offers the stand-in snapd."""
    if personality != "raspios":
        raise ValueError(f"unknown personality {personality!r}")
    files = {
        path: entry
        for path, entry in node_files().items()
        if not _is_snapd(path) and path not in UBUNTU_ONLY_PATHS
    }
    files[KEYRING] = (public_key_armored().encode(), 0o644)
    files[SOURCES] = (
        (f"Types: deb\nURIs: {http_url}/raspi/\nSuites: ./\nSigned-By: {KEYRING}\n").encode(),
        0o644,
    )
    return files
