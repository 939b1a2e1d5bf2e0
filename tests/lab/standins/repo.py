"""A local, signed apt repository shaped like pkgs.k8s.io.

Layout (https://kubernetes.io/blog/2023/08/15/pkgs-k8s-io-introduction/):
    www/core:/stable:/v1.NN/deb/{Release,InRelease,Release.gpg,Release.key,Packages,Packages.gz}
    www/core:/stable:/v1.NN/deb/{amd64,arm64}/<package>_<version>_<arch>.deb
used as
    deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] URL/core:/stable:/v1.NN/deb/ /

kubectl is Debian's real kubectl (package kubernetes-client) repackaged; kubeadm,
kubelet and cri-tools carry the Python stand-ins from ./payload; kubernetes-cni holds no
plugins (nothing in the lab executes them), only its name, version and place in the graph.

Package relations follow the upstream packaging metadata, kubernetes/release
cmd/krel/templates/latest/metadata.yaml (commit 158b73501ef626f98f80361a1493a923a6a22f4a)
and kubelet/kubelet.spec: kubelet >= 1.28 Depends kubernetes-cni (>= 1.2.0), mount,
util-linux; kubeadm 1.30-1.31 Depends cri-tools (>= 1.30.0) only (no kubelet/kubectl).
"""

from __future__ import annotations

import email.utils
import fcntl
import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.lab.rootfs import MIRROR as NODE_MIRROR
from tests.lab.rootfs import SUITE as NODE_SUITE

HERE = Path(__file__).resolve().parent
PAYLOAD = HERE / "payload"
ARCHES = ("amd64", "arm64")
KEY_UID = "pikube lab apt repository (stand-in for pkgs.k8s.io) <lab@pikube.invalid>"


@dataclass(frozen=True)
class Release:
    minor: str  # "1.31"
    kube: str  # "1.31.13"
    cri: str  # "1.31.1"
    cni: str  # kubernetes-cni in that pkgs.k8s.io repository: "1.5.1"

    @property
    def deb_version(self) -> str:
        return f"{self.kube}-1.1"

    @property
    def cri_deb_version(self) -> str:
        return f"{self.cri}-1.1"

    @property
    def cni_deb_version(self) -> str:
        return f"{self.cni}-1.1"


RELEASES = {
    "1.30": Release("1.30", "1.30.14", "1.30.1", "1.4.0"),
    "1.31": Release("1.31", "1.31.13", "1.31.1", "1.5.1"),
}


def cache_dir() -> Path:
    d = Path(os.environ.get("PIKUBE_STANDIN_CACHE", Path.home() / ".cache" / "pikube-standins"))
    d.mkdir(parents=True, exist_ok=True)
    return d


class BuildError(RuntimeError):
    pass


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, check=False, text=True, capture_output=True, **kw)  # type: ignore[call-overload]
    if r.returncode != 0:
        raise BuildError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- inputs
def kubectl_debs() -> dict[str, Path]:
    """Debian's kubernetes-client .deb for each arch, fetched once through apt (cached)."""
    return debian_debs("kubernetes-client")


def debian_debs(package: str, arches: tuple[str, ...] = ARCHES) -> dict[str, Path]:
    """The nodes' Debian .deb of ``package`` for each arch, fetched once through apt (cached)."""
    cache = cache_dir() / "debs"
    cache.mkdir(exist_ok=True)
    found = {a: next(iter(sorted(cache.glob(f"{package}_*_{a}.deb"))), None) for a in arches}
    if all(found.values()):
        return {a: p for a, p in found.items() if p is not None}
    apt = cache / "apt"
    for d in ("lists/partial", "archives/partial", "sources.list.d"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    # The nodes' Debian, whatever the host runs (trixie's kubernetes-client is a transitional
    # package without kubectl).
    (apt / "sources.list").write_text(
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        f"{NODE_MIRROR} {NODE_SUITE} main\n"
    )
    opts = [
        "-o",
        f"Dir::Etc::SourceList={apt / 'sources.list'}",
        "-o",
        f"Dir::Etc::SourceParts={apt / 'sources.list.d'}",
        "-o",
        f"Dir::State::Lists={apt / 'lists'}",
        "-o",
        f"Dir::Cache={apt}",
        "-o",
        "Dir::State::status=/dev/null",
        "-o",
        "Acquire::Languages=none",
        "-o",
        "APT::Architectures::=amd64",
        "-o",
        "APT::Architectures::=arm64",
        "-o",
        "APT::Sandbox::User=root",
    ]
    run(["apt-get", *opts, "update"])
    run(["apt-get", *opts, "download", *(f"{package}:{a}" for a in arches)], cwd=cache)
    return {a: next(iter(sorted(cache.glob(f"{package}_*_{a}.deb")))) for a in arches}


def gnupg_home() -> Path:
    """The repository's signing key: generated once, then reused (cached)."""
    home = cache_dir() / "gnupg"
    if (home / "pubring.kbx").exists() and _secret_keys(home):
        return home
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(mode=0o700)
    try:
        run(
            [
                "gpg",
                "--homedir",
                str(home),
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-gen-key",
                KEY_UID,
                "rsa3072",
                "sign",
                "never",
            ]
        )
    finally:
        stop_agent(home)
    return home


def _secret_keys(home: Path) -> bool:
    r = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--list-secret-keys", "--with-colons"],
        capture_output=True,
        text=True,
        check=False,
    )
    stop_agent(home)
    return "sec:" in r.stdout


def stop_agent(home: Path) -> None:
    subprocess.run(
        ["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False
    )


def payload_files() -> list[Path]:
    # the modules and the kubeadm field table they read (kubeadm_fields.yaml)
    pkg = PAYLOAD / "pikube_standin"
    return sorted([*pkg.glob("*.py"), *pkg.glob("*.yaml")])


def input_hash(versions: tuple[str, ...], extra: str = "") -> str:
    h = hashlib.sha256()
    for p in [*payload_files(), Path(__file__)]:
        h.update(p.name.encode() + p.read_bytes())
    h.update(repr(versions).encode() + extra.encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- debs
SCRIPT = """#!/usr/bin/python3
import sys
sys.path.insert(0, "/usr/lib/pikube-standin/{component}")
from pikube_standin.{module} import main
sys.exit(main())
"""

KUBELET_SERVICE = """[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
"""

KUBEADM_DROPIN = """# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
# This is a file that "kubeadm init" and "kubeadm join" generates at runtime, populating the KUBELET_KUBEADM_ARGS variable dynamically
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
# This is a file that the user can use for overrides of the kubelet args as a last resort. Preferably, the user should use
# the .NodeRegistration.KubeletExtraArgs object in the configuration files instead. KUBELET_EXTRA_ARGS should be sourced from this file.
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"""  # noqa: E501 - verbatim upstream drop-in (kubernetes/release)

APISERVER_SERVICE = """[Unit]
Description=pikube lab stand-in for the kube-apiserver static Pod (run by kubeadm init)
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kube-apiserver/
ConditionPathExists=/etc/kubernetes/manifests/kube-apiserver.yaml
After=network-online.target

[Service]
Environment=PYTHONPATH=/usr/lib/pikube-standin/kubeadm
EnvironmentFile=-/etc/default/pikube-standin
ExecStart=/usr/bin/python3 -m pikube_standin.apiserver --from-manifest /etc/kubernetes/manifests/kube-apiserver.yaml
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"""  # noqa: E501 - systemd lines cannot wrap

ETCD_SERVICE = """[Unit]
Description=pikube lab stand-in for the etcd static Pod (stacked etcd, run by kubeadm init/join)
Documentation=https://kubernetes.io/docs/setup/production-environment/tools/kubeadm/ha-topology/#stacked-etcd-topology
ConditionPathExists=/etc/kubernetes/manifests/etcd.yaml
After=network-online.target

[Service]
Environment=PYTHONPATH=/usr/lib/pikube-standin/kubeadm
EnvironmentFile=-/etc/default/pikube-standin
ExecStart=/usr/bin/python3 -m pikube_standin.etcd --from-manifest /etc/kubernetes/manifests/etcd.yaml
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"""  # noqa: E501 - systemd lines cannot wrap

# Debian's etcd-server ships its own etcd.service (localhost:2379, /var/lib/etcd/default): the
# stacked member is kubeadm's, so that one must never run (the lab rootfs masks it too).
KUBEADM_POSTINST_EXTRA = """    systemctl mask --now etcd.service >/dev/null 2>&1 || true
"""

SYSTEMD_POSTINST = """#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
{extra}fi
exit 0
"""

KUBELET_POSTINST_EXTRA = """    systemctl enable kubelet.service >/dev/null 2>&1 || true
    systemctl restart kubelet.service || true
"""

KUBELET_PRERM = """#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl stop kubelet.service || true
    systemctl disable kubelet.service >/dev/null 2>&1 || true
fi
exit 0
"""


def _control(
    pkg: str, version: str, arch: str, depends: list[str], description: str, size_kb: int
) -> str:
    lines = [
        f"Package: {pkg}",
        f"Version: {version}",
        f"Architecture: {arch}",
        "Maintainer: pikube lab stand-ins <lab@pikube.invalid>",
        f"Installed-Size: {size_kb}",
        "Section: admin",
        "Priority: optional",
        "Homepage: https://kubernetes.io",
    ]
    if depends:
        lines.append("Depends: " + ", ".join(depends))
    lines.append(f"Description: {description}")
    return "\n".join(lines) + "\n"


def _install_payload(root: Path, component: str, version: str) -> None:
    lib = root / "usr/lib/pikube-standin" / component
    (lib / "pikube_standin").mkdir(parents=True)
    for p in payload_files():
        shutil.copy2(p, lib / "pikube_standin" / p.name)
    (lib / "VERSION").write_text(version + "\n")


def _write(root: Path, rel: str, text: str | bytes, mode: int = 0o644) -> None:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    p.chmod(mode)


def build_deb(
    stage: Path,
    out: Path,
    pkg: str,
    version: str,
    arch: str,
    depends: list[str],
    description: str,
    *,
    postinst: str | None = None,
    prerm: str | None = None,
    conffiles: list[str] | None = None,
) -> Path:
    size_kb = sum(f.stat().st_size for f in stage.rglob("*") if f.is_file()) // 1024 + 1
    debian = stage / "DEBIAN"
    debian.mkdir(exist_ok=True)
    (debian / "control").write_text(_control(pkg, version, arch, depends, description, size_kb))
    for name, text in (("postinst", postinst), ("prerm", prerm)):
        if text:
            (debian / name).write_text(text)
            (debian / name).chmod(0o755)
    if conffiles:
        (debian / "conffiles").write_text("\n".join(conffiles) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    deb = out / f"{pkg}_{version}_{arch}.deb"
    run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(stage), str(deb)])
    return deb


def build_packages(rel: Release, arch: str, kubectl_deb: Path, out: Path, tmp: Path) -> list[Path]:
    v = rel.deb_version
    debs = []
    py = ["python3", "python3-yaml", "python3-cryptography"]

    # kubeadm
    s = tmp / f"kubeadm-{arch}"
    _install_payload(s, "kubeadm", rel.kube)
    _write(s, "/usr/bin/kubeadm", SCRIPT.format(component="kubeadm", module="kubeadm"), 0o755)
    _write(s, "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf", KUBEADM_DROPIN)
    _write(s, "/usr/lib/systemd/system/pikube-standin-apiserver.service", APISERVER_SERVICE)
    _write(s, "/usr/lib/systemd/system/pikube-standin-etcd.service", ETCD_SERVICE)
    debs.append(
        build_deb(
            s,
            out,
            "kubeadm",
            v,
            arch,
            # etcd-server: the etcd binary the stacked etcd static Pod runs (Debian's, not the
            # registry.k8s.io/etcd image)
            ["cri-tools (>= 1.30.0)", *py, "etcd-server"],
            "Command-line utility for administering a Kubernetes cluster (pikube lab stand-in)",
            postinst=SYSTEMD_POSTINST.format(extra=KUBEADM_POSTINST_EXTRA),
        )
    )

    # kubelet
    s = tmp / f"kubelet-{arch}"
    _install_payload(s, "kubelet", rel.kube)
    _write(s, "/usr/bin/kubelet", SCRIPT.format(component="kubelet", module="kubelet"), 0o755)
    _write(s, "/usr/lib/systemd/system/kubelet.service", KUBELET_SERVICE)
    _write(s, "/etc/default/kubelet", "KUBELET_EXTRA_ARGS=\n")
    debs.append(
        build_deb(
            s,
            out,
            "kubelet",
            v,
            arch,
            ["kubernetes-cni (>= 1.2.0)", "mount", "util-linux", *py, "iproute2"],
            "Node agent for Kubernetes clusters (pikube lab stand-in)",
            postinst=SYSTEMD_POSTINST.format(extra=KUBELET_POSTINST_EXTRA),
            prerm=KUBELET_PRERM,
            conffiles=["/etc/default/kubelet"],
        )
    )

    # cri-tools
    s = tmp / f"cri-tools-{arch}"
    _install_payload(s, "cri-tools", rel.cri)
    _write(s, "/usr/bin/crictl", SCRIPT.format(component="cri-tools", module="crictl"), 0o755)
    debs.append(
        build_deb(
            s,
            out,
            "cri-tools",
            rel.cri_deb_version,
            arch,
            ["python3"],
            "Command-line utility for interacting with a container runtime (pikube lab stand-in)",
        )
    )

    # kubernetes-cni: upstream ships the containernetworking plugins in /opt/cni/bin
    s = tmp / f"kubernetes-cni-{arch}"
    _write(
        s,
        "/opt/cni/bin/PIKUBE-STANDIN",
        "pikube lab stand-in for kubernetes-cni: no CNI plugin binaries here.\n",
    )
    debs.append(
        build_deb(
            s,
            out,
            "kubernetes-cni",
            rel.cni_deb_version,
            arch,
            [],
            "Binaries required to provision kubernetes container networking (pikube lab stand-in)",
        )
    )

    # kubectl: the real binary from Debian's kubernetes-client
    s = tmp / f"kubectl-{arch}"
    run(["dpkg-deb", "-x", str(kubectl_deb), str(s)])
    shutil.rmtree(s / "usr/share/doc", ignore_errors=True)
    debian_version = run(["dpkg-deb", "-f", str(kubectl_deb), "Version"]).stdout.strip()
    debs.append(
        build_deb(
            s,
            out,
            "kubectl",
            v,
            arch,
            [],
            f"Command-line utility for interacting with a Kubernetes cluster\n Repackaged for the "
            f"pikube lab from Debian's kubernetes-client {debian_version} (real kubectl).",
        )
    )
    return debs


# --------------------------------------------------------------------------- index + signing
def _hashes(p: Path) -> dict[str, str]:
    data = p.read_bytes()
    return {
        "MD5sum": hashlib.md5(data).hexdigest(),  # noqa: S324 - apt index field, not security
        "SHA1": hashlib.sha1(data).hexdigest(),  # noqa: S324 - apt index field, not security
        "SHA256": hashlib.sha256(data).hexdigest(),
    }


def packages_index(repo: Path, debs: list[Path]) -> str:
    stanzas = []
    for deb in sorted(debs):
        control = run(["dpkg-deb", "-f", str(deb)]).stdout.rstrip("\n")
        h = _hashes(deb)
        stanzas.append(
            control
            + f"\nFilename: {deb.relative_to(repo)}\nSize: {deb.stat().st_size}\n"
            + "".join(f"{k}: {v}\n" for k, v in h.items())
        )
    return "\n".join(stanzas)


def release_file(repo: Path, minor: str, files: list[str]) -> str:
    out = [
        f"Origin: obs://build.opensuse.org/isv:kubernetes:core:stable:v{minor}/deb",
        f"Label: isv:kubernetes:core:stable:v{minor}",
        "Architectures: " + " ".join(ARCHES),
        f"Date: {email.utils.formatdate(usegmt=True)}",
    ]
    for field, algo in (("MD5Sum", "md5"), ("SHA1", "sha1"), ("SHA256", "sha256")):
        out.append(f"{field}:")
        for f in files:
            data = (repo / f).read_bytes()
            out.append(f" {hashlib.new(algo, data).hexdigest()} {len(data):>16} {f}")
    return "\n".join(out) + "\n"


def sign_repo(repo: Path, home: Path) -> None:
    base = [
        "gpg",
        "--homedir",
        str(home),
        "--batch",
        "--yes",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]
    try:
        run([*base, "--armor", "--export", "-o", str(repo / "Release.key")])
        run([*base, "--clearsign", "-o", str(repo / "InRelease"), str(repo / "Release")])
        run(
            [
                *base,
                "--armor",
                "--detach-sign",
                "-o",
                str(repo / "Release.gpg"),
                str(repo / "Release"),
            ]
        )
    finally:
        stop_agent(home)


@contextmanager
def _cache_locked() -> Iterator[None]:
    """Hold the shared cache (kubectl's debs and their apt lists, the signing key) for one
    builder: labs started side by side (tests and a bench) share it, and a second apt-get
    update on the same lists fails at once on apt's lock instead of waiting."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_repo(www: Path, *, versions: tuple[str, ...] = ("1.30", "1.31")) -> dict[str, Path]:
    """Write one signed flat repository per minor under www; returns {minor: repo dir}."""
    with _cache_locked():
        kubectl = kubectl_debs()
        home = gnupg_home()
    out: dict[str, Path] = {}
    for minor in versions:
        rel = RELEASES[minor]
        repo = Path(www) / f"core:/stable:/v{minor}/deb"
        if repo.exists():
            shutil.rmtree(repo)
        repo.mkdir(parents=True)
        debs: list[Path] = []
        with tempfile.TemporaryDirectory(prefix="pikube-standin-deb-") as t:
            for arch in ARCHES:
                debs += build_packages(rel, arch, kubectl[arch], repo / arch, Path(t))
        index = packages_index(repo, debs)
        (repo / "Packages").write_text(index)
        with gzip.GzipFile(repo / "Packages.gz", "wb", mtime=0) as gz:
            gz.write(index.encode())
        (repo / "Release").write_text(release_file(repo, minor, ["Packages", "Packages.gz"]))
        sign_repo(repo, home)
        out[minor] = repo
    return out


def public_key_armored() -> str:
    return (
        (cache_dir() / "gnupg").exists()
        and run(["gpg", "--homedir", str(gnupg_home()), "--armor", "--export"]).stdout
    ) or ""
