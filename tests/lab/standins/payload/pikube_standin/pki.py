"""Real X.509 material for the stand-ins (python3-cryptography, Debian's 38.x).

Key types and lifetimes follow kubeadm's defaults: RSA 2048, CA valid 10 years,
leaf certificates 1 year (https://kubernetes.io/docs/setup/best-practices/certificates/).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .common import env, write_file

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> PrivateKey:
    """RSA 2048 as kubeadm's default; PIKUBE_STANDIN_KEY_ALGO=ecdsa (ECDSA-P256) is faster."""
    if env("PIKUBE_STANDIN_KEY_ALGO", "rsa").lower().startswith("ecdsa"):
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str, orgs: list[str] | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs or []]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def make_ca(cn: str = "kubernetes") -> tuple[bytes, bytes]:
    key = new_key()
    name = _name(cn)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert_pem(cert), key_pem(key)


def _load(ca_cert: bytes, ca_key: bytes) -> tuple[x509.Certificate, PrivateKey]:
    cert = x509.load_pem_x509_certificate(ca_cert)
    key = serialization.load_pem_private_key(ca_key, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("unsupported CA key type")
    return cert, key


def _sign(
    ca_cert: bytes,
    ca_key: bytes,
    subject: x509.Name,
    public_key: PublicKey,
    *,
    server: bool,
    client: bool,
    sans: list[str] | None = None,
) -> bytes:
    ca, cakey = _load(ca_cert, ca_key)
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(cakey.public_key()), critical=False
        )
    )
    if sans:
        entries: list[x509.GeneralName] = []
        for s in dict.fromkeys(sans):
            try:
                entries.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                entries.append(x509.DNSName(s))
        b = b.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    return cert_pem(b.sign(cakey, hashes.SHA256()))


def issue(
    ca_cert: bytes,
    ca_key: bytes,
    cn: str,
    *,
    orgs: list[str] | None = None,
    sans: list[str] | None = None,
    server: bool = False,
    client: bool = True,
) -> tuple[bytes, bytes]:
    key = new_key()
    cert = _sign(
        ca_cert, ca_key, _name(cn, orgs), key.public_key(), server=server, client=client, sans=sans
    )
    return cert, key_pem(key)


def make_csr(cn: str, orgs: list[str]) -> tuple[bytes, bytes]:
    key = new_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(cn, orgs))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM), key_pem(key)


def sign_csr(ca_cert: bytes, ca_key: bytes, csr_pem: bytes) -> tuple[bytes, str, list[str]]:
    csr = x509.load_pem_x509_csr(csr_pem)
    if not csr.is_signature_valid:
        raise ValueError("CSR signature is invalid")
    pub = csr.public_key()
    if not isinstance(pub, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError("unsupported CSR key type")
    cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    orgs = [str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return _sign(ca_cert, ca_key, csr.subject, pub, server=False, client=True), str(cn), orgs


def spki_sha256(ca_cert: bytes) -> str:
    """kubeadm's --discovery-token-ca-cert-hash: sha256 of the CA's SubjectPublicKeyInfo (DER)."""
    cert = x509.load_pem_x509_certificate(ca_cert)
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def subject_of(cert: bytes) -> tuple[str, list[str]]:
    c = x509.load_pem_x509_certificate(cert)
    cn = c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    orgs = [str(a.value) for a in c.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return str(cn), orgs


def sans_of(cert: bytes) -> list[str]:
    c = x509.load_pem_x509_certificate(cert)
    try:
        ext = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.get_values_for_type(x509.DNSName)] + [
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    ]


def write_pair(d: Path, base: str, cert: bytes, key: bytes) -> None:
    write_file(d / f"{base}.crt", cert, 0o644)
    write_file(d / f"{base}.key", key, 0o600)
