"""Station certificates for attack tests: files a TLS client loads, and certificates from the
charger CA (signed through its signer, as the server signs) with exactly the extensions a test
asks for.  Keys are generated per call; nothing here is a secret."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chargeward.crypto import certificate_pem
from chargeward.crypto.sealing import generate_device_key_pair
from tests.support.tls import StationCert, TlsPki, now


def station_files(base: Path, cert: x509.Certificate, private_pem: str) -> StationCert:
    base.parent.mkdir(parents=True, exist_ok=True)
    chain, key = base.with_suffix(".pem"), base.with_suffix(".key")
    chain.write_text(certificate_pem(cert))
    loaded = serialization.load_pem_private_key(private_pem.encode(), None)
    key.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return StationCert(cert, private_pem, chain, key)


@dataclass(frozen=True)
class Leaf:
    ca: bool
    key_usage: dict[str, bool] | None  # None: no keyUsage extension
    extended: list[x509.ObjectIdentifier] | None  # None: no extendedKeyUsage extension


_KU = dict.fromkeys(
    [
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ],
    False,
)
CLIENT = [ExtendedKeyUsageOID.CLIENT_AUTH]
SIGN = {**_KU, "digital_signature": True}
LEAVES = {
    # A CA certificate naming the station: it could issue more certificates for the CN.
    "ca": (
        Leaf(True, {**SIGN, "key_cert_sign": True}, CLIENT),
        "certificate is a CA certificate (basicConstraints CA=true)",
    ),
    # No extendedKeyUsage: OpenSSL's TLS purpose check lets it through, RFC 5280 4.2.1.12
    # would read it as "any purpose"; a station certificate must name clientAuth.
    "no clientAuth": (
        Leaf(False, SIGN, None),
        "certificate is not for client authentication (no clientAuth extended key usage)",
    ),
    # keyAgreement only: passes OpenSSL's purpose check, cannot sign a TLS handshake.
    "no digitalSignature": (
        Leaf(False, {**_KU, "key_agreement": True}, CLIENT),
        "certificate keyUsage lacks digitalSignature",
    ),
    "no keyUsage": (Leaf(False, None, CLIENT), "certificate keyUsage lacks digitalSignature"),
}


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


ECDSA_WITH_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")


def odd_leaf(pki: TlsPki, cn: str, leaf: Leaf, name: str) -> StationCert:
    """A certificate issued by ``pki``'s charger CA (through its signer, as the server signs)
    with exactly the extensions of ``leaf``."""
    pair = generate_device_key_pair()
    at = now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, cn),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ACME"),
                ]
            )
        )
        .issuer_name(pki.ca.subject)
        .public_key(pair.public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - dt.timedelta(minutes=5))
        .not_valid_after(at + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=leaf.ca, path_length=None), critical=True)
    )
    if leaf.key_usage is not None:
        builder = builder.add_extension(x509.KeyUsage(**leaf.key_usage), critical=True)
    if leaf.extended is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(leaf.extended), critical=False)
    tbs = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    body = tbs.tbs_certificate_bytes
    signature = pki.ca_signer.sign_digest(hashlib.sha256(body).digest())
    der = _der(0x30, body + ECDSA_WITH_SHA256 + _der(0x03, b"\x00" + signature))
    cert = x509.load_der_x509_certificate(der)
    cert.verify_directly_issued_by(pki.ca)
    return station_files(pki.dir / name, cert, pair.private_pem)
