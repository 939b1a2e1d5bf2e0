"""The local pkgs.k8s.io-shaped apt repository is accepted by real apt only when signed."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from _standins import requires_standin_prereqs, testing

pytestmark = requires_standin_prereqs


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from standins.repo import build_repo

    w = tmp_path_factory.mktemp("www")
    build_repo(w)
    return w


@pytest.fixture(scope="module")
def http(www: Path) -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(www)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def apt(tmp: Path, url: str, minor: str, *, keyring_from: Path, arch: str = "amd64") -> list[str]:
    """Options for an apt-get confined to tmp, with one signed-by source like the kubeadm docs."""
    for d in ("lists/partial", "cache/archives/partial", "parts", "keyrings"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    (tmp / "status").touch()
    keyring = tmp / "keyrings/kubernetes-apt-keyring.gpg"
    keyring.unlink(missing_ok=True)
    subprocess.run(["gpg", "--dearmor", "-o", str(keyring), str(keyring_from)], check=True)
    (tmp / "sources.list").write_text(
        f"deb [signed-by={keyring}] {url}/core:/stable:/v{minor}/deb/ /\n"
    )
    return [
        "-o",
        f"Dir::Etc::SourceList={tmp / 'sources.list'}",
        "-o",
        f"Dir::Etc::SourceParts={tmp / 'parts'}",
        "-o",
        f"Dir::State::Lists={tmp / 'lists'}",
        "-o",
        f"Dir::Cache={tmp / 'cache'}",
        "-o",
        f"Dir::State::status={tmp / 'status'}",
        "-o",
        f"APT::Architecture={arch}",
        "-o",
        f"APT::Architectures::={arch}",
        "-o",
        "APT::Sandbox::User=root",
        "-o",
        "Debug::NoLocking=1",
        "-o",
        "Acquire::Languages=none",
    ]


def repo_dir(www: Path, minor: str) -> Path:
    return www / f"core:/stable:/v{minor}/deb"


@pytest.mark.parametrize("minor,version", [("1.30", "1.30.14-1.1"), ("1.31", "1.31.13-1.1")])
def test_real_apt_accepts_signed_repo_and_sees_packages(
    tmp_path: Path, www: Path, http: str, minor: str, version: str
) -> None:
    opts = apt(tmp_path, http, minor, keyring_from=repo_dir(www, minor) / "Release.key")
    r = subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "W:" not in r.stderr and "E:" not in r.stderr, r.stderr
    for pkg in ("kubeadm", "kubelet", "kubectl"):
        pol = subprocess.run(
            ["apt-cache", *opts, "policy", pkg], capture_output=True, text=True, check=True
        )
        assert f"Candidate: {version}" in pol.stdout, pol.stdout
    deps = subprocess.run(
        ["apt-cache", *opts, "depends", "kubeadm"], capture_output=True, text=True, check=True
    )
    for dep in ("cri-tools", "python3-cryptography"):
        assert f"Depends: {dep}" in deps.stdout or f"Depends: <{dep}>" in deps.stdout
    dl = subprocess.run(
        ["apt-get", *opts, "download", "kubectl"], cwd=tmp_path, capture_output=True, text=True
    )
    assert dl.returncode == 0, dl.stderr


@pytest.mark.parametrize("minor,cni", [("1.30", "1.4.0-1.1"), ("1.31", "1.5.1-1.1")])
def test_package_relations_are_upstreams(
    tmp_path: Path, www: Path, http: str, minor: str, cni: str
) -> None:
    """kubelet pulls kubernetes-cni; kubeadm 1.30/1.31 needs only cri-tools (krel metadata.yaml)."""
    opts = apt(tmp_path, http, minor, keyring_from=repo_dir(www, minor) / "Release.key")
    subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True, check=True)

    def depends(pkg: str) -> str:
        return subprocess.run(
            ["apt-cache", *opts, "depends", pkg], capture_output=True, text=True, check=True
        ).stdout

    assert "Depends: kubernetes-cni" in depends("kubelet")
    kubeadm = depends("kubeadm")
    assert "Depends: cri-tools" in kubeadm
    assert "Depends: kubelet" not in kubeadm and "Depends: kubectl" not in kubeadm, kubeadm
    pol = subprocess.run(
        ["apt-cache", *opts, "policy", "kubernetes-cni"], capture_output=True, text=True, check=True
    )
    assert f"Candidate: {cni}" in pol.stdout, pol.stdout


def test_arm64_packages_are_published(tmp_path: Path, www: Path, http: str) -> None:
    opts = apt(
        tmp_path, http, "1.31", keyring_from=repo_dir(www, "1.31") / "Release.key", arch="arm64"
    )
    subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True, check=True)
    show = subprocess.run(
        ["apt-cache", *opts, "show", "kubeadm"], capture_output=True, text=True, check=True
    )
    assert "Architecture: arm64" in show.stdout


def test_kubectl_package_carries_debians_real_kubectl(tmp_path: Path, www: Path) -> None:
    deb = repo_dir(www, "1.31") / "amd64/kubectl_1.31.13-1.1_amd64.deb"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    r = subprocess.run(
        [str(tmp_path / "usr/bin/kubectl"), "version", "--client"], capture_output=True, text=True
    )
    assert r.returncode == 0 and 'GitVersion:"v1.20' in r.stdout, r.stdout + r.stderr


def test_kubelet_and_kubeadm_ship_upstream_units(www: Path) -> None:
    kubelet = subprocess.run(
        ["dpkg-deb", "-c", str(repo_dir(www, "1.31") / "amd64/kubelet_1.31.13-1.1_amd64.deb")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kubeadm = subprocess.run(
        ["dpkg-deb", "-c", str(repo_dir(www, "1.31") / "amd64/kubeadm_1.31.13-1.1_amd64.deb")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "./usr/lib/systemd/system/kubelet.service" in kubelet
    assert "./etc/default/kubelet" in kubelet
    assert "./usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf" in kubeadm
    assert "./usr/bin/kubeadm" in kubeadm


def test_tampered_package_index_is_rejected(tmp_path: Path, www: Path, http: str) -> None:
    bad = tmp_path / "www"
    shutil.copytree(www, bad)
    idx = repo_dir(bad, "1.31") / "Packages"
    idx.write_text(idx.read_text().replace("Version: 1.31.13-1.1", "Version: 1.31.99-1.1", 1))
    (repo_dir(bad, "1.31") / "Packages.gz").unlink()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(bad)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        opts = apt(
            tmp_path / "apt",
            f"http://127.0.0.1:{srv.server_address[1]}",
            "1.31",
            keyring_from=repo_dir(www, "1.31") / "Release.key",
        )
        r = subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True)
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.returncode != 0
    assert "Hash Sum mismatch" in r.stderr or "File has unexpected size" in r.stderr, r.stderr


def test_tampered_release_signature_is_rejected(tmp_path: Path, www: Path) -> None:
    bad = tmp_path / "www"
    shutil.copytree(www, bad)
    inrel = repo_dir(bad, "1.31") / "InRelease"
    inrel.write_text(
        inrel.read_text().replace("Label: isv:kubernetes", "Label: evil:kubernetes", 1)
    )
    (repo_dir(bad, "1.31") / "Release.gpg").unlink()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(bad)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        opts = apt(
            tmp_path / "apt",
            f"http://127.0.0.1:{srv.server_address[1]}",
            "1.31",
            keyring_from=repo_dir(www, "1.31") / "Release.key",
        )
        r = subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True)
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.returncode != 0
    assert "BADSIG" in r.stderr or "signatures were invalid" in r.stderr, r.stderr


def test_repository_signed_by_another_key_is_rejected(tmp_path: Path, www: Path, http: str) -> None:
    other = tmp_path / "gnupg"
    other.mkdir(mode=0o700)
    subprocess.run(
        [
            "gpg",
            "--homedir",
            str(other),
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            "someone else <x@invalid>",
            "rsa2048",
            "sign",
            "never",
        ],
        check=True,
        capture_output=True,
    )
    key = tmp_path / "other.asc"
    subprocess.run(
        ["gpg", "--homedir", str(other), "--armor", "--export", "-o", str(key)], check=True
    )
    subprocess.run(["gpgconf", "--homedir", str(other), "--kill", "all"], check=False)
    opts = apt(tmp_path / "apt", http, "1.31", keyring_from=key)
    r = subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "NO_PUBKEY" in r.stderr or "not signed" in r.stderr, r.stderr


def test_kubectl_binary_helper_is_real_kubectl() -> None:
    r = subprocess.run(
        [str(testing.kubectl_binary()), "version", "--client"], capture_output=True, text=True
    )
    assert "Client Version" in r.stdout
