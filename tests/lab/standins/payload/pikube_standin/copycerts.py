"""kubeadm's certificate sharing between control planes: `init --upload-certs` and
`join --control-plane --certificate-key`.

Upstream (kubernetes/kubernetes, read at commit 046d201c):
- cmd/kubeadm/app/phases/copycerts/copycerts.go: UploadCerts, DownloadCerts, the files shared
  (certsToTransfer), the Secret "kubeadm-certs" owned by a bootstrap token whose TTL is 2 h
  (DefaultCertTokenDuration), so the garbage collector deletes the Secret when the token
  expires, and the Role/RoleBinding "kubeadm:get-kubeadm-certs" letting bootstrap tokens read it;
- cmd/kubeadm/app/util/crypto/crypto.go: EncryptBytes/DecryptBytes, AES-GCM with the random
  nonce prepended to the sealed data;
- cmd/kubeadm/app/apis/kubeadm/validation/validation.go: ValidateCertificateKey, a hex string
  of a 32-byte AES key (CertificateKeySize).
The error texts are upstream's.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from pathlib import Path
from typing import Any

from . import common
from .common import ApiError, Client

CERTIFICATE_KEY_SIZE = 32  # kubeadmconstants.CertificateKeySize (AES-256)
CERT_TOKEN_TTL = 2 * 3600  # kubeadmconstants.DefaultCertTokenDuration
SECRET = "kubeadm-certs"  # kubeadmconstants.KubeadmCertsSecret
ROLE = "kubeadm:get-kubeadm-certs"  # kubeadmconstants.KubeadmCertsClusterRoleName
BOOTSTRAP_GROUP = "system:bootstrappers:kubeadm:default-node-token"
NONCE_SIZE = 12  # Go's cipher.NewGCM nonce size
# certsToTransfer for stacked etcd, relative to the certificates dir.
SHARED = (
    "ca.crt",
    "ca.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "sa.pub",
    "sa.key",
    "etcd/ca.crt",
    "etcd/ca.key",
)
_HEX = re.compile(r"[0-9a-fA-F]*")


class CertError(Exception):
    """A refused key or a failed download, with kubeadm's message."""


def create_certificate_key() -> str:
    """copycerts.CreateCertificateKey: 32 random bytes, hex-encoded (64 characters)."""
    return secrets.token_hex(CERTIFICATE_KEY_SIZE)


def _hex_decode(key: str) -> bytes:
    """Go's hex.DecodeString, with its error texts."""
    bad = next((c for c in key if not _HEX.fullmatch(c)), None)
    if bad is not None:
        raise CertError(f"encoding/hex: invalid byte: U+{ord(bad):04X} {bad!r}")
    if len(key) % 2:
        raise CertError("encoding/hex: odd length hex string")
    return bytes.fromhex(key)


def validate_certificate_key(key: str, field: str) -> bytes:
    """validation.ValidateCertificateKey: the decoded key, or kubeadm's field error."""
    try:
        raw = _hex_decode(key)
    except CertError as e:
        raise CertError(
            f'{field}: Invalid value: "{key}": certificate key decoding error: {e}'
        ) from None
    if len(raw) != CERTIFICATE_KEY_SIZE:
        raise CertError(
            f'{field}: Invalid value: "{key}": invalid certificate key size {len(raw)}, the key '
            f"must be an AES key of size {CERTIFICATE_KEY_SIZE}"
        )
    return raw


def encrypt_bytes(data: bytes, key: bytes) -> bytes:
    """crypto.EncryptBytes: AES-GCM, nonce || ciphertext || tag."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, data, None)


def decrypt_bytes(data: bytes, key: bytes) -> bytes:
    """crypto.DecryptBytes; a wrong key fails GCM's authentication, as in Go."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(data) <= NONCE_SIZE:
        raise CertError("size of data is less than the nonce")
    try:
        return AESGCM(key).decrypt(data[:NONCE_SIZE], data[NONCE_SIZE:], None)
    except InvalidTag:
        raise CertError("cipher: message authentication failed") from None


def _secret_name(cert: str) -> str:
    return cert.replace("/", "-")  # certOrKeyNameToSecretName


def upload_certs(client: Client, pkidir: Path, key: str, token: str) -> None:
    """UploadCerts: encrypt the shared files into Secret kubeadm-certs, owned by ``token``
    (a bootstrap token the caller created with CERT_TOKEN_TTL), and let bootstrap tokens
    read that Secret."""
    raw = _hex_decode(key)
    token_id = token.split(".")[0]
    owner = client.get(f"/api/v1/namespaces/kube-system/secrets/bootstrap-token-{token_id}")
    data = {}
    for cert in SHARED:
        file = pkidir / cert
        # A missing file (no front-proxy or etcd CA) travels as an empty entry, as upstream.
        data[_secret_name(cert)] = (
            base64.b64encode(encrypt_bytes(file.read_bytes(), raw)).decode()
            if file.exists()
            else ""
        )
    secret: dict[str, Any] = {
        "metadata": {
            "name": SECRET,
            "namespace": "kube-system",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "type": "Opaque",
        "data": data,
    }
    _create_or_replace(client, "/api/v1/namespaces/kube-system/secrets", SECRET, secret)
    _create_or_replace(
        client,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles",
        ROLE,
        {
            "metadata": {"name": ROLE, "namespace": "kube-system"},
            "rules": [
                {
                    "verbs": ["get"],
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": [SECRET],
                }
            ],
        },
    )
    _create_or_replace(
        client,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/rolebindings",
        ROLE,
        {
            "metadata": {"name": ROLE, "namespace": "kube-system"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE},
            "subjects": [
                {"kind": "Group", "name": BOOTSTRAP_GROUP, "apiGroup": "rbac.authorization.k8s.io"}
            ],
        },
    )


def _create_or_replace(client: Client, collection: str, name: str, body: dict[str, Any]) -> None:
    try:
        client.post(collection, body)
    except ApiError as e:
        if e.status != 409:
            raise
        client.request("PUT", f"{collection}/{name}", body)


def download_certs(client: Client, pkidir: Path, key: str) -> list[str]:
    """DownloadCerts: fetch Secret kubeadm-certs with the join's bootstrap token, decrypt every
    entry with ``key`` (all or nothing) and write the files; returns the files written."""
    raw = _hex_decode(key)
    try:
        secret = client.get(f"/api/v1/namespaces/kube-system/secrets/{SECRET}")
    except ApiError as e:
        if e.status == 404:
            raise CertError(
                "error downloading the secret: "
                f'Secret "{SECRET}" was not found in the "kube-system" Namespace. This Secret '
                "might have expired. Please, run `kubeadm init phase upload-certs "
                "--upload-certs` on a control plane to generate a new one"
            ) from None
        raise CertError(f"error downloading the secret: {e}") from None
    plain: dict[str, bytes] = {}
    for name, value in (secret.get("data") or {}).items():
        sealed = base64.b64decode(value)
        try:
            plain[name] = decrypt_bytes(sealed, raw) if sealed else b""
        except CertError as e:
            raise CertError(f"error decoding secret data with provided key: {e}") from None
    written = []
    for cert in SHARED:
        content = plain.get(_secret_name(cert))
        if content is None:
            raise CertError(
                "the Secret does not include the required certificate or key - name: "
                f"{cert}, path: {pkidir / cert}"
            )
        if not content:
            continue
        common.write_file(pkidir / cert, content, 0o600 if cert.endswith(".key") else 0o644)
        written.append(cert)
    return written
