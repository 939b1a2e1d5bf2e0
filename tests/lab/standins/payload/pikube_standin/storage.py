"""Where the API emulator keeps its objects: one interface, two stores.

``EtcdStore`` keeps every object in etcd as kube-apiserver does (``--etcd-servers``): one key per
object, ``/registry/<resource>/[<namespace>/]<name>`` for built-in resources and
``/registry/<group>/<resource>/...`` for CRDs and custom resources (as apiextensions-apiserver),
the value the object's JSON, ``metadata.resourceVersion`` = the key's etcd ``mod_revision``
(a list's = the store revision). Creates are transactions on ``create_revision == 0``, updates
and deletes on ``mod_revision == <resourceVersion read>``, so concurrent writers through several
API servers conflict exactly as with kube-apiserver. Each server keeps a watch cache (all of
etcd, from the revision it loaded) and, like kube-apiserver's consistent reads from cache
(KEP-2340), a read first asks etcd for its current revision with a linearizable (quorum) range
and waits until the cache has caught up: without an etcd leader, reads and writes fail.

``LocalStore`` keeps the objects in one JSON file (``--standin-state-file``), for the MicroK8s
stand-in (dqlite is not modelled) and older callers.

Both expose ``objects`` (the watch cache; read-only for callers), ``rv``, ``events`` and
``cond`` (hold it around read-modify-write sequences), and ``create``/``replace``/``delete``.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import common
from .etcd import Etcd, EtcdError, b64

Key = tuple[str, str, str, str]


class StorageError(Exception):
    pass


class KeyExists(StorageError):
    pass


class Conflict(StorageError):
    pass


class Unavailable(StorageError):
    """The storage cannot answer (etcd down, no leader, no quorum)."""


@dataclass
class Event:
    rv: int
    key: Key
    type: str
    obj: dict[str, Any]


@dataclass
class Store:
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    rv: int = 1
    events: list[Event] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> None:
        raise NotImplementedError

    def sync(self, timeout: float | None = None) -> None:
        """Make the next reads of ``objects`` consistent (a no-op for a single local store)."""

    def leader(self) -> bool:
        """Whether this server runs the controllers (one at a time, like leader election)."""
        return True

    def create(self, k: Key, obj: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def replace(self, k: Key, obj: dict[str, Any], expect_rv: str) -> dict[str, Any]:
        raise NotImplementedError

    def delete(self, k: Key, expect_rv: str | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def _record(self, rv: int, k: Key, typ: str, obj: dict[str, Any]) -> None:
        self.events.append(Event(rv, k, typ, copy.deepcopy(obj)))
        if len(self.events) > 2000:
            del self.events[:1000]


@dataclass
class LocalStore(Store):
    state_file: Path = Path("state.json")

    def start(self) -> None:
        if self.state_file.exists():
            data = json.loads(self.state_file.read_text())
            self.rv = data["rv"]
            for item in data["objects"]:
                self.objects[tuple(item["key"])] = item["obj"]  # type: ignore[index]

    def _save(self) -> None:
        data = {
            "rv": self.rv,
            "objects": [{"key": list(k), "obj": o} for k, o in self.objects.items()],
        }
        common.write_file(self.state_file, json.dumps(data), 0o600)

    def _commit(self, k: Key, typ: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            self.rv += 1
            obj = copy.deepcopy(obj)
            obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
            if typ == "DELETED":
                self.objects.pop(k, None)
            else:
                self.objects[k] = obj
            self._record(self.rv, k, typ, obj)
            self._save()
            self.cond.notify_all()
            return copy.deepcopy(obj)

    def create(self, k: Key, obj: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            if k in self.objects:
                raise KeyExists(str(k))
            return self._commit(k, "ADDED", obj)

    def replace(self, k: Key, obj: dict[str, Any], expect_rv: str) -> dict[str, Any]:
        with self.cond:
            old = self.objects.get(k)
            if old is None or old["metadata"].get("resourceVersion") != expect_rv:
                raise Conflict(str(k))
            return self._commit(k, "MODIFIED", obj)

    def delete(self, k: Key, expect_rv: str | None = None) -> dict[str, Any]:
        with self.cond:
            old = self.objects.get(k)
            if old is None or (expect_rv and old["metadata"].get("resourceVersion") != expect_rv):
                raise Conflict(str(k))
            return self._commit(k, "DELETED", old)


# --------------------------------------------------------------------------- etcd
REGISTRY = "/registry/"
# Groups whose resources kube-apiserver keys by group (apiextensions-apiserver, aggregator, CRs).
# Built-in resources of every other group are keyed by resource name alone.


def etcd_key(k: Key, builtin: dict[str, str]) -> str:
    group, plural, ns, name = k
    res = plural if builtin.get(plural) == group else f"{group}/{plural}"
    return f"{REGISTRY}{res}/{ns}/{name}" if ns else f"{REGISTRY}{res}/{name}"


def parse_key(raw: str, builtin: dict[str, str]) -> Key | None:
    if not raw.startswith(REGISTRY):
        return None
    parts = raw[len(REGISTRY) :].split("/")
    if "." in parts[0]:
        group, parts = parts[0], parts[1:]
        if not parts:
            return None
        plural = parts[0]
    else:
        plural = parts[0]
        if plural not in builtin:
            return None
        group = builtin[plural]
    rest = parts[1:]
    if len(rest) == 1:
        return (group, plural, "", rest[0])
    if len(rest) == 2:
        return (group, plural, rest[0], rest[1])
    return None


def _stored(obj: dict[str, Any]) -> str:
    out = copy.deepcopy(obj)
    out.get("metadata", {}).pop("resourceVersion", None)
    return json.dumps(out, separators=(",", ":"), sort_keys=True)


@dataclass
class EtcdStore(Store):
    client: Etcd | None = None
    builtin: dict[str, str] = field(default_factory=dict)  # plural -> group of built-ins
    _stop: bool = False
    _failed: str = ""
    _leader_at: float = 0.0
    _leader: bool = False

    @property
    def etcd(self) -> Etcd:
        assert self.client is not None
        return self.client

    def _decode(self, kv: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(base64.b64decode(kv.get("value", "")) or b"{}")
        obj.setdefault("metadata", {})["resourceVersion"] = kv["mod_revision"]
        return obj

    def _load(self) -> None:
        doc = self.etcd.range(REGISTRY, prefix=True)
        objects = {}
        for kv in doc.get("kvs") or []:
            k = parse_key(base64.b64decode(kv["key"]).decode(), self.builtin)
            if k is not None:
                objects[k] = self._decode(kv)
        with self.cond:
            self.objects = objects
            self.rv = int(doc["header"]["revision"])
            self.cond.notify_all()

    def start(self) -> None:
        """Load the cache (waits for etcd, as kube-apiserver does at start), then follow it."""
        deadline = time.monotonic() + float(common.env("PIKUBE_STANDIN_ETCD_WAIT", "120"))
        while True:
            try:
                self._load()
                break
            except EtcdError as e:
                if time.monotonic() > deadline:
                    raise Unavailable(e.message) from e
                time.sleep(0.5)
        threading.Thread(target=self._follow, daemon=True, name="etcd-watch").start()

    def _follow(self) -> None:
        while not self._stop:
            try:
                for result in self.etcd.watch(self.rv + 1, lambda: self._stop):
                    self._apply(result)
                    if result.get("compact_revision") not in (None, "0"):
                        self._load()  # compacted past our revision: relist
                        break
            except EtcdError:
                pass
            time.sleep(0.3)

    def _apply(self, result: dict[str, Any]) -> None:
        with self.cond:
            for ev in result.get("events") or []:
                kv = ev.get("kv", {})
                k = parse_key(base64.b64decode(kv.get("key", "")).decode(), self.builtin)
                rev = int(kv.get("mod_revision", 0))
                self.rv = max(self.rv, rev)
                if k is None:
                    continue
                if ev.get("type") == "DELETE":
                    gone = self.objects.pop(k, None)
                    if gone is not None:
                        gone["metadata"]["resourceVersion"] = str(rev)
                        self._record(rev, k, "DELETED", gone)
                    continue
                obj = self._decode(kv)
                typ = "MODIFIED" if k in self.objects else "ADDED"
                self.objects[k] = obj
                self._record(rev, k, typ, obj)
            header = result.get("header", {})
            if not result.get("events") and not result.get("created") and "revision" in header:
                # a progress notification: every event up to this revision was delivered (the
                # "created" answer's revision comes before the catch-up events: not one)
                self.rv = max(self.rv, int(header["revision"]))
            self.cond.notify_all()

    def _wait_for(self, rev: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.rv < rev:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable("etcdserver: request timed out (watch cache not ready)")
                self.cond.wait(timeout=left)

    def sync(self, timeout: float | None = None) -> None:
        try:
            doc = self.etcd.call(
                "kv/range", {"key": b64(REGISTRY), "count_only": True}, timeout=timeout
            )
        except EtcdError as e:
            raise Unavailable(e.message) from e
        self._wait_for(int(doc["header"]["revision"]))

    def leader(self) -> bool:
        now = time.monotonic()
        if now - self._leader_at > 2.0:
            self._leader_at = now
            try:
                st = self.etcd.status(timeout=2.0)
                self._leader = st.get("leader") == st.get("header", {}).get("member_id")
            except EtcdError:
                self._leader = False
        return self._leader

    def _txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> bool:
        try:
            ok, rev = self.etcd.txn(compare, success)
        except EtcdError as e:
            raise Unavailable(e.message) from e
        if ok:
            self._wait_for(rev)
        return ok

    def create(self, k: Key, obj: dict[str, Any]) -> dict[str, Any]:
        key = etcd_key(k, self.builtin)
        ok = self._txn(
            [{"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            [{"request_put": {"key": b64(key), "value": b64(_stored(obj))}}],
        )
        if not ok:
            raise KeyExists(key)
        return copy.deepcopy(self.objects[k])

    def replace(self, k: Key, obj: dict[str, Any], expect_rv: str) -> dict[str, Any]:
        key = etcd_key(k, self.builtin)
        ok = self._txn(
            [{"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": expect_rv}],
            [{"request_put": {"key": b64(key), "value": b64(_stored(obj))}}],
        )
        if not ok:
            raise Conflict(key)
        return copy.deepcopy(self.objects[k])

    def delete(self, k: Key, expect_rv: str | None = None) -> dict[str, Any]:
        key = etcd_key(k, self.builtin)
        old = self.objects.get(k)
        if old is None:
            raise Conflict(key)
        rv = expect_rv or old["metadata"]["resourceVersion"]
        with self.cond:
            ok = self._txn(
                [{"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": rv}],
                [{"request_delete_range": {"key": b64(key)}}],
            )
            if not ok:
                raise Conflict(key)
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self.rv)
            return gone
