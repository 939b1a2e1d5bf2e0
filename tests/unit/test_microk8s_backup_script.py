"""roles/pikube_microk8s/files/pikube-backup: which archives it accepts and which datastore
keys it can delete through the API (the parts that need no MicroK8s; the lab runs the rest)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import io
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[2] / "roles/pikube_microk8s/files/pikube-backup"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("pikube_backup_under_test", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def archive(path: Path, top: str, members: dict[str, bytes], dirs: tuple[str, ...] = ()) -> Path:
    """A tar.gz as dbctl packs it: the directory, then its files."""
    with tarfile.open(path, "w:gz") as tar:
        for d in (top, *dirs):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def dump(top: str, keys: list[str]) -> dict[str, bytes]:
    out = {}
    for i, key in enumerate(keys):
        out[f"{top}/{i}.key"] = key.encode()
        out[f"{top}/{i}.data"] = b"{}"
    return out


KEYS = ["/registry/configmaps/default/a", "/registry/namespaces/kube-system"]


def test_dbctls_layout_is_accepted(script: ModuleType, tmp_path: Path) -> None:
    path = archive(tmp_path / "b.tar.gz", "backup-1", dump("backup-1", KEYS))
    assert script.archive_keys(path) == ("backup-1", KEYS)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("gap", "numbered 0..N in pairs"),
        ("no-data", "numbered 0..N in pairs"),
        ("two-dirs", "expected one directory"),
        ("outside", "unexpected member"),
        ("not-kubernetes", "not a MicroK8s datastore backup"),
        ("empty", "numbered 0..N in pairs"),
    ],
)
def test_broken_or_foreign_archives_are_refused(
    script: ModuleType, tmp_path: Path, case: str, reason: str
) -> None:
    members = dump("d", KEYS)
    dirs: tuple[str, ...] = ()
    if case == "gap":
        members = {k.replace("/1.", "/2."): v for k, v in members.items()}
    elif case == "no-data":
        del members["d/1.data"]
    elif case == "two-dirs":
        dirs = ("e",)
    elif case == "outside":
        members["../0.key"] = b"/x"
    elif case == "not-kubernetes":
        members = dump("d", ["/registry/configmaps/default/a"])
    elif case == "empty":
        members = {}
    path = archive(tmp_path / "b.tar.gz", "d", members, dirs)
    with pytest.raises(script.Failed, match=reason):
        script.archive_keys(path)


def test_a_file_that_is_no_tar_gz_is_refused(script: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "b.tar.gz"
    path.write_bytes(b"etcd snapshot, not a dbctl archive")
    with pytest.raises(script.Failed, match=r"not a readable tar\.gz archive"):
        script.archive_keys(path)


@pytest.mark.parametrize(
    ("key", "obj"),
    [
        ("/registry/configmaps/default/b", ("configmaps", "default", "b")),
        ("/registry/namespaces/team", ("namespaces", "", "team")),
        # kube-apiserver's storage prefixes that are not the resource's name
        ("/registry/services/specs/default/web", ("services", "default", "web")),
        ("/registry/services/endpoints/default/web", ("endpoints", "default", "web")),
        ("/registry/minions/node-4", ("nodes", "", "node-4")),
        ("/registry/controllers/default/rc", ("replicationcontrollers", "default", "rc")),
        ("/registry/ingress/web/site", ("ingresses", "web", "site")),
        # group-keyed: CRDs, custom resources, aggregated APIs
        (
            "/registry/apiextensions.k8s.io/customresourcedefinitions/ippools.crd.projectcalico.org",
            ("customresourcedefinitions.apiextensions.k8s.io", "", "ippools.crd.projectcalico.org"),
        ),
        (
            "/registry/metallb.io/ipaddresspools/metallb-system/pool",
            ("ipaddresspools.metallb.io", "metallb-system", "pool"),
        ),
        # allocator bookkeeping and foreign keys are no objects: never deleted
        ("/registry/ranges/serviceips", None),
        ("/registry/masterleases/10.0.0.1", None),
        ("/pikube-standin/dqlite/members", None),
        ("/registry/configmaps", None),
    ],
)
def test_storage_keys_map_to_the_objects_kubectl_deletes(
    script: ModuleType, key: str, obj: tuple[str, str, str] | None
) -> None:
    assert script.object_of(key) == obj
