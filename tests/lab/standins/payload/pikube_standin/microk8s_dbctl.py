"""`microk8s dbctl backup|restore`: MicroK8s' datastore backup, on the etcd in dqlite's place.

Upstream (canonical/microk8s 1.30/1.31 scripts/wrappers/dbctl.py; the migrator is
canonical/k8s-dqlite cmd/migrator.go + pkg/migrator/migrator.go, run as
``$SNAP/bin/k8s-dqlite migrator --endpoint unix://.../kine.sock:12379 --mode ...``):

- ``dbctl backup [-o NAME]``: NAME defaults to ``backup-%Y-%m-%d-%H-%M-%S``; a trailing
  ``.tar.gz`` is dropped. The migrator (``--mode backup-dqlite``) lists every key under ``/``
  through kine and writes key number i as ``i.key`` (the key) and ``i.data`` (the value),
  0640, into ``TMP/NAME`` (0700); dbctl packs that directory as ``NAME.tar.gz`` (relative to
  the working directory, member names ``NAME/i.key``) and prints ``The backup is: NAME.tar.gz``.
  A failed migrator prints ``Backup process failed. RC`` and exits 1.
- ``dbctl restore FILE``: extracts FILE (refusing members outside the directory) and hands
  ``TMP/basename(FILE minus .tar.gz)`` to the migrator (``--mode restore-to-dqlite``), which
  reads ``0.key``/``0.data``, ``1.key`` ... until a key file is missing and creates each key,
  or puts it when it exists. Nothing is stopped or restarted: the keys go through kine into
  the Raft log, so every member (and every API server watching it) gets them. Keys that are
  not in the backup are left as they are. An archive whose directory is not named as the file
  restores nothing (``entries=0``), as upstream.
- both: only on a node that runs the datastore (``kine_exists`` and ``is_ha_enabled``, else
  ``Please ensure the kubernetes apiserver is running and HA is enabled.``, exit 10); a joined
  worker answers as ``is_cluster_locked`` does (exit 1).

Deviation: kine lives at the stand-in's etcd (microk8s_dqlite.py), so the migrator's listing
is an etcd range over ``/``; the stand-in's own bookkeeping under ``/pikube-standin/``
(dqlite keeps membership in its Raft configuration, not in kine's key space) is neither
written nor restored. The migrator's log lines go to stderr, as logrus writes them.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import os
import sys
import tarfile
import tempfile
from pathlib import Path

from . import microk8s_dqlite as dqlite
from .etcd import EtcdError, prefix_end

NOT_READY = "Please ensure the kubernetes apiserver is running and HA is enabled."
# The stand-in's own keys: not part of kine's key space (see the module docstring).
OWN_PREFIX = "/pikube-standin/"


def log(msg: str, **fields: object) -> None:
    extra = "".join(f" {k}={v}" for k, v in fields.items())
    print(f'level=info msg="{msg}"{extra}', file=sys.stderr)


def kine_keys() -> list[tuple[bytes, bytes]]:
    """kine ``List("/", 0)``: every key under ``/`` with its value, sorted by key."""
    client = dqlite.client()
    doc = client.call("kv/range", {"key": _b64(b"/"), "range_end": prefix_end("/")})
    out = []
    for kv in doc.get("kvs") or []:
        key = base64.b64decode(kv["key"])
        if not key.decode(errors="replace").startswith(OWN_PREFIX):
            out.append((key, base64.b64decode(kv.get("value", ""))))
    return sorted(out)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def migrator_backup(directory: Path) -> None:
    """pkg/migrator BackupDqlite."""
    log("Starting migrator", mode="backup-dqlite", dir=directory)
    pairs = kine_keys()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for idx, (key, value) in enumerate(pairs):
        log("Writing key", index=idx, key=key.decode(errors="replace"), len=len(value))
        for name, content in ((f"{idx}.key", key), (f"{idx}.data", value)):
            p = directory / name
            p.write_bytes(content)
            p.chmod(0o640)


def migrator_restore(directory: Path) -> int:
    """pkg/migrator RestoreToDqlite: create or put every numbered key; returns the count."""
    log("Starting migrator", mode="restore-to-dqlite", dir=directory)
    client = dqlite.client()
    idx = 0
    while (directory / f"{idx}.key").exists():
        key = (directory / f"{idx}.key").read_bytes()
        value = (directory / f"{idx}.data").read_bytes()
        try:
            client.call("kv/put", {"key": _b64(key), "value": _b64(value)})
        except EtcdError:
            print(f'level=error msg="Failed to restore key" index={idx}', file=sys.stderr)
        idx += 1
    log("Completed database restore", entries=idx)
    return idx


def backup(fname: str | None) -> int:
    name = fname or "backup-" + datetime.datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
    name = name.removesuffix(".tar.gz")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / name
        try:
            migrator_backup(src)
        except (EtcdError, OSError) as e:
            print(f'level=fatal msg="Failed to backup dqlite" error="{e}"', file=sys.stderr)
            print("Backup process failed. 1")
            return 1
        with tarfile.open(f"{name}.tar.gz", "w:gz") as tar:
            tar.add(src, arcname=os.path.basename(src))
    print(f"The backup is: {name}.tar.gz")
    return 0


def restore(fname_tar: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fname_tar, "r:gz") as tar:
            root = os.path.abspath(tmp)
            for member in tar.getmembers():
                target = os.path.abspath(os.path.join(tmp, member.name))
                if os.path.commonpath([root, target]) != root:
                    raise SystemExit("Attempted Path Traversal in Tar File")
            tar.extractall(tmp)  # noqa: S202 - members checked above, as dbctl.py
        fname = os.path.basename(fname_tar.removesuffix(".tar.gz"))
        try:
            migrator_restore(Path(tmp) / fname)
        except (EtcdError, OSError) as e:
            print(f'level=fatal msg="Failed to restore to etcd" error="{e}"', file=sys.stderr)
            print("Restore process failed. 1")
            return 3
    return 0


def main(args: list[str], worker: bool, locked_message: str) -> int:
    if worker:  # is_cluster_locked()
        print(locked_message)
        return 1
    if not dqlite.healthy():  # kine_exists() / is_ha_enabled()
        print(NOT_READY)
        return 10
    p = argparse.ArgumentParser(
        prog="microk8s dbctl", description="backup and restore the Kubernetes datastore."
    )
    p.add_argument("--debug", action="store_true", help="print debug output")
    commands = p.add_subparsers(title="commands", help="backup and restore operations")
    r = commands.add_parser("restore")
    r.add_argument("backup-file", help="name of file with the backup")
    b = commands.add_parser("backup")
    b.add_argument("-o", metavar="backup-file", help="output filename")
    a = p.parse_args(args)
    if "backup-file" in a:
        fname = vars(a)["backup-file"]
        print(f"Restoring from {fname}")
        return restore(fname)
    if "o" in a:
        print("Backing up the datastore")
        return backup(a.o)
    p.print_help()
    return 0
