"""X.509 for firmware trust: the Manufacturer Root CA and firmware-signing certificates.

OCPP 2.0.1 requires the firmware-signing certificate to be issued *directly* by the
Manufacturer Root CA (no intermediates).  Certificates are signed through the
:class:`~chargeward.crypto.keys.Signer` protocol: the to-be-signed part is built by
``cryptography`` and its SHA-256 digest signed by whatever holds the issuer key (a file
today, a PKCS#11 token tomorrow), so a CA key never has to leave its token.  CRLs are
signed the same way (:func:`issue_crl`), and a charger accepts one only through
:func:`verify_crl` and :func:`check_crl_progress`::

    >>> der = issue_crl(root_ca, root_signer, [RevokedEntry(serial, now, "keyCompromise")],
    ...                 crl_number=7, this_update=now, next_update=now + CRL_VALIDITY)  # doctest: +SKIP
    >>> crl = verify_crl(der, [root_ca], now=now)  # doctest: +SKIP
    >>> check_crl_progress(held, crl)  # RollbackRefused if crl is older  # doctest: +SKIP
    >>> verify_firmware_signing_certificate(
    ...     cert, [root_ca], revoked_serials=crl.revoked_serials)  # doctest: +SKIP
    Traceback (most recent call last):
    chargeward.errors.RevokedCertificate: signing certificate serial ... revoked

For OCPP M03-M05 the module also checks a certificate offered as a new trust anchor
(:func:`check_root_certificate`) and names certificates as OCPP does
(:func:`certificate_hash_data`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chargeward.crypto.keys import Signer, public_key_fingerprint
from chargeward.errors import (
    BadSignature,
    ConfigError,
    IntegrityError,
    RevokedCertificate,
    RollbackRefused,
    UntrustedCertificate,
)

# AlgorithmIdentifier for ecdsa-with-SHA256 (RFC 5758 3.2), DER.
_ECDSA_SHA256_ALGID = bytes.fromhex("300a06082a8648ce3d040302")
# OCPP 2.0.1 UpdateFirmware: signingCertificate is at most 5500 characters (PEM).
MAX_SIGNING_CERTIFICATE_CHARS = 5500


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(value)) + value


def _der_read(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """The TLV at ``pos`` as ``(tag, value, position after it)`` (definite lengths only)."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length, pos = data[pos], data[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length, pos = int.from_bytes(data[pos : pos + count], "big"), pos + count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, data[pos : pos + length], pos + length


def _scratch_key() -> ec.EllipticCurvePrivateKey:
    """A throwaway P-256 key: ``cryptography`` only builds TBS structures by signing them."""
    return ec.generate_private_key(ec.SECP256R1())


def _sign_tbs(tbs: bytes, issuer: Signer) -> bytes:
    """Sign a DER to-be-signed structure with ``issuer`` and wrap it (ADR 0003).

    Certificates (RFC 5280 4.1) and CRLs (RFC 5280 5.1) share the outer shape
    ``SEQUENCE { tbs, signatureAlgorithm, BIT STRING signature }``; the TBS part was built by
    ``cryptography`` with a scratch P-256 key, whose signature algorithm (ecdsa-with-SHA256)
    is the one written here.  The signature is checked against the issuer's public key
    first: a signer that returns garbage (a misbehaving token) never yields a signed object.
    Raises :class:`BadSignature` in that case.
    """
    signature = issuer.sign_digest(hashlib.sha256(tbs).digest())
    try:
        issuer.public_key().verify(signature, tbs, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as e:
        raise BadSignature("the issuer key produced an invalid signature") from e
    return _der_tlv(0x30, tbs + _ECDSA_SHA256_ALGID + _der_tlv(0x03, b"\x00" + signature))


def _sign_certificate(builder: x509.CertificateBuilder, issuer: Signer) -> x509.Certificate:
    """Sign ``builder`` with ``issuer`` without needing the private key object."""
    tbs = builder.sign(_scratch_key(), hashes.SHA256()).tbs_certificate_bytes
    try:
        der = _sign_tbs(tbs, issuer)
    except BadSignature as e:  # never hand out such a certificate
        raise UntrustedCertificate("issuer produced an invalid certificate signature") from e
    return x509.load_der_x509_certificate(der)


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_root_ca(
    signer: Signer,
    common_name: str,
    organization: str,
    *,
    days: int = 25 * 365,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Create a self-signed Manufacturer Root CA certificate for ``signer``'s key."""
    now = now or _now()
    public = signer.public_key()
    name = _name(common_name, organization)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return _sign_certificate(builder, signer)


def issue_firmware_signing_certificate(
    ca_signer: Signer,
    ca_certificate: x509.Certificate,
    subject_key: ec.EllipticCurvePublicKey,
    common_name: str,
    organization: str,
    *,
    days: int = 5 * 365,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Issue a firmware-signing certificate for ``subject_key`` directly under the root."""
    now = now or _now()
    if not key_matches_certificate(ca_signer.public_key(), ca_certificate):
        raise UntrustedCertificate("CA key does not match the CA certificate")
    if not _is_ca(ca_certificate):
        raise UntrustedCertificate("the issuing certificate is not a CA certificate")
    if subject_key.public_numbers() == _ec_key(ca_certificate).public_numbers():
        raise UntrustedCertificate("the firmware-signing key must differ from the CA key")
    not_after = min(now + dt.timedelta(days=days), ca_certificate.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organization))
        .issuer_name(ca_certificate.subject)
        .public_key(subject_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(_ec_key(ca_certificate)),
            critical=False,
        )
    )
    return _sign_certificate(builder, ca_signer)


def _ec_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UntrustedCertificate("certificate does not hold an EC key")
    return key


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def key_matches_certificate(key: ec.EllipticCurvePublicKey, cert: x509.Certificate) -> bool:
    """True when ``cert`` certifies exactly ``key`` (e.g. ``signer.public_key()``)."""
    cert_key = cert.public_key()
    return (
        isinstance(cert_key, ec.EllipticCurvePublicKey)
        and cert_key.public_numbers() == key.public_numbers()
    )


def load_certificate(pem: bytes | str) -> x509.Certificate:
    """Parse one PEM certificate; anything malformed is untrusted."""
    data = pem.encode() if isinstance(pem, str) else pem
    if len(data) > MAX_SIGNING_CERTIFICATE_CHARS * 4:
        raise UntrustedCertificate("certificate too large")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise UntrustedCertificate("not a PEM X.509 certificate") from e


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Parse a PEM bundle of one or more certificates."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise UntrustedCertificate("not a PEM X.509 certificate bundle") from e
    return certs


def _read_pem_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read certificate file {path}: {e.strerror}") from e


def load_certificate_file(path: Path) -> x509.Certificate:
    """Read a PEM file that must hold exactly one certificate."""
    certs = load_certificates_file(path)
    if len(certs) != 1:
        raise ConfigError(f"{path} holds {len(certs)} certificates; expected exactly one")
    return certs[0]


def load_certificates_file(path: Path) -> list[x509.Certificate]:
    """Read a PEM file of one or more certificates (e.g. a set of trust anchors)."""
    try:
        return load_certificates(_read_pem_file(path))
    except UntrustedCertificate as e:
        raise UntrustedCertificate(f"{path}: {e}") from e


def certificate_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint, hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


def check_signing_certificate(cert: x509.Certificate, *, now: dt.datetime | None = None) -> None:
    """Check ``cert`` has the firmware-signing profile and is valid at ``now``.

    This does not look at the issuer; :func:`verify_firmware_signing_certificate` does both.
    Raises :class:`UntrustedCertificate` with the reason.
    """
    now = now or _now()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise UntrustedCertificate("signing certificate is not valid at this time")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise UntrustedCertificate("signing certificate is a CA certificate")
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.digital_signature:
            raise UntrustedCertificate("signing certificate lacks digitalSignature key usage")
    except x509.ExtensionNotFound as e:
        raise UntrustedCertificate(f"signing certificate lacks an extension: {e}") from e
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CODE_SIGNING not in eku:
            raise UntrustedCertificate("signing certificate is not for code signing")
    except x509.ExtensionNotFound:
        pass  # OCPP does not require EKU; when present it must allow code signing.
    _ec_key(cert)


def verify_firmware_signing_certificate(
    cert: x509.Certificate,
    anchors: list[x509.Certificate],
    *,
    now: dt.datetime | None = None,
    revoked_serials: frozenset[int] = frozenset(),
) -> x509.Certificate:
    """Check ``cert`` is a valid firmware-signing certificate issued directly by an anchor.

    Returns the anchor that issued it.  Raises :class:`UntrustedCertificate` (with the
    reason) or :class:`RevokedCertificate`.  Anchors that are not CA certificates are
    ignored.

        >>> root = verify_firmware_signing_certificate(cert, [root_ca])  # doctest: +SKIP
    """
    now = now or _now()
    if not anchors:
        raise UntrustedCertificate("no ManufacturerRootCertificate installed")
    check_signing_certificate(cert, now=now)
    for anchor in anchors:
        if anchor.subject != cert.issuer or not _is_ca(anchor):
            continue
        if not anchor.not_valid_before_utc <= now <= anchor.not_valid_after_utc:
            continue
        try:
            cert.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature):
            continue
        if cert.serial_number in revoked_serials:
            raise RevokedCertificate(f"signing certificate serial {cert.serial_number:x} revoked")
        return anchor
    raise UntrustedCertificate("signing certificate is not issued by an installed root")


_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


@dataclass(frozen=True)
class CertificateInfo:
    """A readable summary of a certificate, for display.

    >>> describe_certificate(root_ca).is_ca  # doctest: +SKIP
    True
    """

    subject: str
    issuer: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str
    public_key_fingerprint: str
    is_ca: bool
    self_signed: bool
    key_usage: tuple[str, ...]
    extended_key_usage: tuple[str, ...]


def _spki_fingerprint(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return public_key_fingerprint(key)
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def describe_certificate(cert: x509.Certificate) -> CertificateInfo:
    """Summarise ``cert``: names, validity, fingerprints, CA flag and key usages."""
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        usages = tuple(name for name in _KEY_USAGES if getattr(ku, name))
    except x509.ExtensionNotFound:
        usages = ()
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        extended = tuple(getattr(oid, "_name", oid.dotted_string) for oid in eku)
    except x509.ExtensionNotFound:
        extended = ()
    self_signed = cert.issuer == cert.subject
    if self_signed:
        try:
            cert.verify_directly_issued_by(cert)
        except (ValueError, TypeError, InvalidSignature):
            self_signed = False
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=f"{cert.serial_number:x}",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=certificate_fingerprint(cert),
        public_key_fingerprint=_spki_fingerprint(cert),
        is_ca=_is_ca(cert),
        self_signed=self_signed,
        key_usage=usages,
        extended_key_usage=extended,
    )
