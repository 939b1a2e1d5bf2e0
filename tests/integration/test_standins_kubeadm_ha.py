"""The kubeadm stand-in keeps kubeadm's contract for more than one control plane:
`init --upload-certs` stores the shared certificates encrypted under a certificate key (a
32-byte AES key, hex) in Secret kubeadm-certs, which expires with its 2 h bootstrap token;
`join --control-plane --certificate-key` gets them only with the right, unexpired key.

Upstream: kubernetes/kubernetes cmd/kubeadm/app/phases/copycerts/copycerts.go (see
tests/lab/standins/payload/pikube_standin/copycerts.py). Nodes are FakeNodes on loopback.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import subprocess
from collections.abc import Iterator

import pytest
from _standins import requires_standin_prereqs, testing

pytestmark = requires_standin_prereqs
FakeNode = testing.FakeNode
KEY_RE = re.compile(r"\[upload-certs\] Using certificate key:\n([0-9a-f]{64})\n")
JOIN_RE = re.compile(
    r"^kubeadm join (\S+) --token ([a-z0-9]{6}\.[a-z0-9]{16}) "
    r"--discovery-token-ca-cert-hash (sha256:[0-9a-f]{64}) $"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    base = tmp_path_factory.mktemp("kubeadm-ha")
    cp = FakeNode(base, "cp1", "127.0.4.1", port=testing.free_port("127.0.4.1"))
    # The stable endpoint every control plane shares (pikube's VIP; here the first node).
    config = testing.init_config(cp, extra_cluster=f"controlPlaneEndpoint: {cp.ip}:{cp.port}\n")
    with testing.initialised_cluster(cp, config, "--upload-certs") as cluster:
        yield cluster


def joiner(cluster: dict[str, object], name: str, ip: str) -> FakeNode:
    # a control plane runs its own API server (and etcd member) on its own port
    n = FakeNode(cluster["base"], name, ip, port=testing.free_port(ip))  # type: ignore[arg-type]
    cluster["nodes"].append(n)  # type: ignore[attr-defined]
    return n


def join_control_plane(
    cluster: dict[str, object], node: FakeNode, key: str
) -> subprocess.CompletedProcess[str]:
    cp: FakeNode = cluster["cp"]  # type: ignore[assignment]
    r = cp.kubeadm("token", "create", "--print-join-command")
    m = JOIN_RE.match(r.stdout.rstrip("\n"))
    assert m, r.stdout + r.stderr
    return node.kubeadm(
        "join",
        m.group(1),
        "--token",
        m.group(2),
        "--discovery-token-ca-cert-hash",
        m.group(3),
        "--control-plane",
        "--certificate-key",
        key,
    )


def current_key(cluster: dict[str, object]) -> str:
    res: subprocess.CompletedProcess[str] = cluster["init"]  # type: ignore[assignment]
    m = KEY_RE.search(res.stdout)
    assert m, res.stdout
    return m.group(1)


def secret(cp: FakeNode, name: str) -> dict[str, object] | None:
    r = cp.kubectl("get", "secret", "-n", "kube-system", name, "-o", "json")
    return json.loads(r.stdout) if r.returncode == 0 else None


def test_init_upload_certs_stores_the_shared_certs_encrypted_for_two_hours(
    cluster: dict[str, object],
) -> None:
    res: subprocess.CompletedProcess[str] = cluster["init"]  # type: ignore[assignment]
    cp: FakeNode = cluster["cp"]  # type: ignore[assignment]
    assert res.returncode == 0, res.stderr
    key = current_key(cluster)
    assert f"--control-plane --certificate-key {key}" in res.stdout
    assert "uploaded-certs will be deleted in two hours" in res.stdout
    certs = secret(cp, "kubeadm-certs")
    assert certs is not None
    data = certs["data"]  # type: ignore[index]
    assert set(data) >= {"ca.crt", "ca.key", "sa.key", "sa.pub", "etcd-ca.crt", "etcd-ca.key"}
    for name in ("ca.crt", "ca.key", "sa.key"):
        assert b"-----BEGIN" not in base64.b64decode(data[name])  # encrypted, not PEM
    # Owned by a bootstrap token that expires two hours after the upload.
    owner = certs["metadata"]["ownerReferences"][0]  # type: ignore[index]
    token = secret(cp, owner["name"])
    assert token is not None and owner["kind"] == "Secret"
    expires = dt.datetime.fromisoformat(
        base64.b64decode(token["data"]["expiration"]).decode().replace("Z", "+00:00")  # type: ignore[index]
    )
    left = expires - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=1, minutes=50) < left <= dt.timedelta(hours=2)


def test_certificate_key_command_prints_a_new_32_byte_hex_key(cluster: dict[str, object]) -> None:
    cp: FakeNode = cluster["cp"]  # type: ignore[assignment]
    keys = {cp.kubeadm("certs", "certificate-key").stdout.strip() for _ in range(2)}
    assert len(keys) == 2 and all(re.fullmatch(r"[0-9a-f]{64}", k) for k in keys)


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("abc", "certificate key decoding error: encoding/hex: odd length hex string"),
        ("zz" * 32, "certificate key decoding error: encoding/hex: invalid byte: U+007A 'z'"),
        ("00" * 16, "invalid certificate key size 16, the key must be an AES key of size 32"),
    ],
)
def test_a_malformed_certificate_key_is_refused(
    cluster: dict[str, object], key: str, error: str
) -> None:
    n = joiner(cluster, f"cpbad{len(key)}", f"127.0.4.{10 + len(key) % 200}")
    r = join_control_plane(cluster, n, key)
    assert r.returncode == 1
    assert f'controlPlane.certificateKey: Invalid value: "{key}": {error}' in r.stderr
    assert not (n.root / "etc/kubernetes/pki/ca.key").exists()


def test_a_wrong_certificate_key_is_refused(cluster: dict[str, object]) -> None:
    n = joiner(cluster, "cpwrong", "127.0.4.20")
    r = join_control_plane(cluster, n, "ab" * 32)
    assert r.returncode == 1
    assert (
        "error execution phase control-plane-prepare/download-certs: error downloading certs: "
        "error decoding secret data with provided key: cipher: message authentication failed"
    ) in r.stderr
    assert not (n.root / "etc/kubernetes/pki/ca.key").exists()


def test_join_control_plane_with_the_key_gets_the_cluster_ca_and_is_marked(
    cluster: dict[str, object],
) -> None:
    cp: FakeNode = cluster["cp"]  # type: ignore[assignment]
    n = joiner(cluster, "cp2", "127.0.4.30")
    r = join_control_plane(cluster, n, current_key(cluster))
    assert r.returncode == 0, r.stderr
    assert "a new control plane instance was created" in r.stdout
    for shared in ("ca.crt", "ca.key", "sa.key", "sa.pub"):
        assert (n.root / "etc/kubernetes/pki" / shared).read_bytes() == (
            cp.root / "etc/kubernetes/pki" / shared
        ).read_bytes()
    assert (n.root / "etc/kubernetes/pki/ca.key").stat().st_mode & 0o077 == 0
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(cp.root / "etc/kubernetes/pki/ca.crt"),
            str(n.root / "etc/kubernetes/pki/apiserver.crt"),
        ],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    labels = cp.kubectl("get", "node", "cp2", "-o", "jsonpath={.metadata.labels}")
    assert "node-role.kubernetes.io/control-plane" in labels.stdout, labels.stderr
    # The key never lands in the joined node's files.
    key = current_key(cluster)
    etc = n.root / "etc/kubernetes"
    assert not any(key in p.read_text(errors="replace") for p in etc.rglob("*") if p.is_file())


def test_a_new_upload_gives_a_new_key_and_the_old_one_stops_working(
    cluster: dict[str, object],
) -> None:
    cp: FakeNode = cluster["cp"]  # type: ignore[assignment]
    old = current_key(cluster)
    r = cp.kubeadm("init", "phase", "upload-certs", "--upload-certs")
    assert r.returncode == 0, r.stderr
    m = KEY_RE.search(r.stdout)
    assert m and m.group(1) != old
    stale = join_control_plane(cluster, joiner(cluster, "cpold", "127.0.4.40"), old)
    assert stale.returncode == 1 and "message authentication failed" in stale.stderr


def test_expired_uploaded_certs_are_refused(cluster: dict[str, object]) -> None:
    cp: FakeNode = cluster["cp"]  # type: ignore[assignment]
    # The same upload with a 1 s token TTL (the real one is 2 h): the token cleaner removes
    # the expired token and the garbage collector the Secret it owns.
    r = cp.kubeadm(
        "init",
        "phase",
        "upload-certs",
        "--upload-certs",
        env={"PIKUBE_STANDIN_CERT_TOKEN_TTL": "1"},
    )
    assert r.returncode == 0, r.stderr
    m = KEY_RE.search(r.stdout)
    assert m
    assert testing.wait_until(lambda: secret(cp, "kubeadm-certs") is None)
    late = join_control_plane(cluster, joiner(cluster, "cplate", "127.0.4.50"), m.group(1))
    assert late.returncode == 1
    assert (
        'error downloading the secret: Secret "kubeadm-certs" was not found in the '
        '"kube-system" Namespace. This Secret might have expired.'
    ) in late.stderr
