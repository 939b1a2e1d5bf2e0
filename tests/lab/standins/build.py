"""Entry points for the lab: prepare(www, bridge_ip) and node_files().

prepare() fills the lab's static web root with everything the stand-ins fetch:
    www/core:/stable:/v1.NN/deb/...     signed apt repositories (see repo.py)
    www/snaps/microk8s/index.json       the "snap store": channel -> revision, version, files
    www/snaps/microk8s/microk8s_<rev>_<arch>.tar.gz   MicroK8s stand-in payloads
    www/pikube-standins.json            what was built, from which inputs (content hash)
It is cached by a hash of its inputs: a second call with unchanged inputs returns at once.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from .repo import (
    ARCHES,
    PAYLOAD,
    RELEASES,
    build_repo,
    cache_dir,
    input_hash,
    kubectl_debs,
    payload_files,
)

MICROK8S_REVISIONS = {"1.30": 7394, "1.31": 7446}  # stand-in revision numbers, one per track
MANIFEST = "pikube-standins.json"


def snap_channels() -> dict[str, dict[str, object]]:
    chans: dict[str, dict[str, object]] = {}
    for minor, rev in MICROK8S_REVISIONS.items():
        entry = {
            "revision": rev,
            "version": f"v{RELEASES[minor].kube}",
            "confinement": "classic",
            "files": {a: f"microk8s_{rev}_{a}.tar.gz" for a in ARCHES},
        }
        chans[f"{minor}/stable"] = entry
        chans[f"{minor}/candidate"] = entry
    latest = max(MICROK8S_REVISIONS, key=lambda m: tuple(int(x) for x in m.split(".")))
    chans["latest/stable"] = chans[f"{latest}/stable"]
    return chans


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def build_snaps(www: Path) -> Path:
    out = Path(www) / "snaps/microk8s"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    debs = kubectl_debs()
    with tempfile.TemporaryDirectory(prefix="pikube-standin-snap-") as t:
        kubectl: dict[str, bytes] = {}
        for a in ARCHES:
            subprocess.run(["dpkg-deb", "-x", str(debs[a]), f"{t}/{a}"], check=True)
            kubectl[a] = Path(f"{t}/{a}/usr/bin/kubectl").read_bytes()
        for minor, rev in MICROK8S_REVISIONS.items():
            version = f"v{RELEASES[minor].kube}"
            for a in ARCHES:
                with tarfile.open(
                    out / f"microk8s_{rev}_{a}.tar.gz", "w:gz", compresslevel=1
                ) as tar:
                    for p in payload_files():
                        _add(tar, f"lib/pikube_standin/{p.name}", p.read_bytes(), 0o644)
                    _add(tar, "kubectl", kubectl[a], 0o755)
                    _add(tar, "VERSION", f"{version}\n".encode(), 0o644)
                    _add(
                        tar,
                        "meta/snap.yaml",
                        (
                            f"name: microk8s\nversion: {version}\nconfinement: classic\n"
                            f"architectures: [{a}]\ngrade: stable\n"
                        ).encode(),
                        0o644,
                    )
    (out / "index.json").write_text(
        json.dumps(
            {"name": "microk8s", "publisher": "canonical", "channels": snap_channels()}, indent=2
        )
    )
    return out


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a built tree into the web root, hard-linking files when on the same filesystem."""
    if dst.exists():
        shutil.rmtree(dst)

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link)


def prepare(www: Path, bridge_ip: str) -> None:
    """Build the apt repos and snap payloads into the lab's web root (cached by content hash)."""
    www = Path(www)
    www.mkdir(parents=True, exist_ok=True)
    versions = tuple(RELEASES)
    digest = input_hash(
        versions,
        extra=Path(__file__).read_text() + "".join(p.name for p in kubectl_debs().values()),
    )
    manifest = www / MANIFEST
    if manifest.exists():
        try:
            if (
                json.loads(manifest.read_text()).get("inputs") == digest
                and all((www / f"core:/stable:/v{m}/deb/InRelease").exists() for m in versions)
                and (www / "snaps/microk8s/index.json").exists()
            ):
                return
        except ValueError:
            pass
    # One build at a time per machine: concurrent labs (CI, developers, parallel tests)
    # would otherwise delete or rebuild the tree another one is copying from.
    cache_dir().mkdir(parents=True, exist_ok=True)
    with (cache_dir() / "www.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = cache_dir() / "www" / digest[:16]
        if not (built / MANIFEST).exists():
            shutil.rmtree(built, ignore_errors=True)
            build_repo(built, versions=versions)
            build_snaps(built)
            (built / MANIFEST).write_text("{}")
            for old in built.parent.iterdir():  # keep one build: each is ~100 MB
                if old != built:
                    shutil.rmtree(old, ignore_errors=True)
        for m in versions:
            _link_tree(built / f"core:/stable:/v{m}", www / f"core:/stable:/v{m}")
        _link_tree(built / "snaps/microk8s", www / "snaps/microk8s")
    manifest.write_text(
        json.dumps(
            {
                "inputs": digest,
                "apt": {
                    m: {
                        "path": f"core:/stable:/v{m}/deb/",
                        "url": f"http://{bridge_ip}:8080/core:/stable:/v{m}/deb/",
                        "kubeadm": RELEASES[m].deb_version,
                    }
                    for m in versions
                },
                "package_repo": f"http://{bridge_ip}:8080/core:/stable:",
                "snaps": {"microk8s": sorted(snap_channels())},
            },
            indent=2,
        )
    )


def node_files() -> dict[str, tuple[bytes, int]]:
    """Files to bake into every lab node: the `snap` stand-in and Ubuntu's /snap/bin PATH."""
    files: dict[str, tuple[bytes, int]] = {}
    for p in payload_files():
        files[f"/usr/lib/pikube-standin/snap/pikube_standin/{p.name}"] = (p.read_bytes(), 0o644)
    files["/usr/bin/snap"] = (
        b"#!/usr/bin/python3\nimport sys\nsys.path.insert(0, "
        b'"/usr/lib/pikube-standin/snap")\nfrom pikube_standin.snap import main\n'
        b"sys.exit(main())\n",
        0o755,
    )
    path_line = (
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/games:/usr/local/games"
        ":/snap/bin"
    )
    files["/etc/environment"] = (f'PATH="{path_line}"\n'.encode(), 0o644)
    files["/etc/profile.d/apps-bin-path.sh"] = (
        b"# Expand $PATH to include the directory where snappy applications go (as snapd ships "
        b"it).\n"
        b'snap_bin_path="/snap/bin"\nif [ -n "${PATH##*${snap_bin_path}}" ] && [ -n '
        b'"${PATH##*${snap_bin_path}:*}" ]; '
        b'then\n    export PATH="$PATH:${snap_bin_path}"\nfi\n',
        0o644,
    )
    files["/etc/sudoers.d/pikube-lab-snap-path"] = (
        b"# Ubuntu's sudoers secure_path includes /snap/bin\nDefaults secure_path=\""
        + path_line.replace(":/usr/games:/usr/local/games", "").encode()
        + b'"\n',
        0o440,
    )
    return files


def describe() -> str:
    return json.dumps({"payload": str(PAYLOAD), "files": sorted(node_files())}, indent=2)


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3:
        prepare(Path(sys.argv[1]), sys.argv[2])
        print(f"prepared {sys.argv[1]}", file=sys.stderr)
    else:
        print(describe())
