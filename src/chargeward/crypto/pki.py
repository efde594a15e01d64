"""X.509 for firmware trust: the Manufacturer Root CA and firmware-signing certificates.

OCPP 2.0.1 requires the firmware-signing certificate to be issued *directly* by the
Manufacturer Root CA (no intermediates).  Certificates are signed through the
:class:`~chargeward.crypto.keys.Signer` protocol: the to-be-signed part is built by
``cryptography`` and its SHA-256 digest signed by whatever holds the issuer key (a file
today, a PKCS#11 token tomorrow), so a CA key never has to leave its token.  CRLs are
signed the same way (:func:`issue_crl`), and a charger accepts one only through
:func:`verify_crl` and :func:`check_crl_progress`::

    entry = RevokedEntry(serial, now, "keyCompromise")
    der = issue_crl(root_ca, root_signer, [entry], crl_number=7, this_update=now,
                    next_update=now + CRL_VALIDITY)
    crl = verify_crl(der, [root_ca], now=now)
    check_crl_progress(held, crl)  # RollbackRefused if crl is older
    verify_firmware_signing_certificate(
        cert, [root_ca], revoked_serials=crl.revoked_serials)
    # raises chargeward.errors.RevokedCertificate: signing certificate serial ... revoked

For OCPP M03-M05 the module also checks a certificate offered as a new trust anchor
(:func:`check_root_certificate`) and names certificates as OCPP does
(:func:`certificate_hash_data`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chargeward.crypto import path
from chargeward.crypto.keys import Signer, public_key_fingerprint
from chargeward.errors import (
    BadSignature,
    ConfigError,
    IntegrityError,
    InvalidValue,
    MisuseError,
    RevokedCertificate,
    RollbackRefused,
    UntrustedCertificate,
)
from chargeward.limits import DEFAULT_FORMAT_LIMITS

# AlgorithmIdentifier for ecdsa-with-SHA256 (RFC 5758 3.2), DER.
_ECDSA_SHA256_ALGID = bytes.fromhex("300a06082a8648ce3d040302")
# OCPP 2.0.1 UpdateFirmware: signingCertificate is at most 5500 characters (PEM).
MAX_SIGNING_CERTIFICATE_CHARS = 5500


# A CA certificate signs certificates and CRLs only (RFC 5280 section 4.2.1.3).
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


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
        raise InvalidValue("truncated DER")
    tag, length, pos = data[pos], data[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or pos + count > len(data):
            raise InvalidValue("bad DER length")
        length, pos = int.from_bytes(data[pos : pos + count], "big"), pos + count
    if pos + length > len(data):
        raise InvalidValue("truncated DER")
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
            CA_KEY_USAGE,
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return _sign_certificate(builder, signer)


def _issue_leaf(
    ca_signer: Signer,
    ca_certificate: x509.Certificate,
    subject_key: ec.EllipticCurvePublicKey,
    name: x509.Name,
    *,
    not_after: dt.datetime,
    now: dt.datetime,
    usage: x509.ObjectIdentifier,
    key_agreement: bool,
    what: str,
    extensions: Sequence[x509.ExtensionType] = (),
) -> x509.Certificate:
    """An end-entity certificate under ``ca_certificate``: checks, extensions, signature.

    ``extensions`` are added non-critical (e.g. the subjectAltName of a TLS server).
    """
    if not key_matches_certificate(ca_signer.public_key(), ca_certificate):
        raise UntrustedCertificate("CA key does not match the CA certificate")
    if not _is_ca(ca_certificate):
        raise UntrustedCertificate("the issuing certificate is not a CA certificate")
    if subject_key.public_numbers() == certificate_ec_key(ca_certificate).public_numbers():
        raise UntrustedCertificate(f"the {what} key must differ from the CA key")
    end = min(not_after, ca_certificate.not_valid_after_utc)
    if end <= now:
        raise ConfigError(f"{what} certificate would not be valid after {now:%Y-%m-%d}")
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca_certificate.subject)
        .public_key(subject_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=key_agreement,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(certificate_ec_key(ca_certificate)),
            critical=False,
        )
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return _sign_certificate(builder, ca_signer)


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
    return _issue_leaf(
        ca_signer,
        ca_certificate,
        subject_key,
        _name(common_name, organization),
        not_after=now + dt.timedelta(days=days),
        now=now,
        usage=ExtendedKeyUsageOID.CODE_SIGNING,
        key_agreement=False,
        what="firmware-signing",
    )


def issue_device_certificate(
    ca_signer: Signer,
    ca_certificate: x509.Certificate,
    device_key: ec.EllipticCurvePublicKey,
    serial_number: str,
    organization: str,
    *,
    not_after: dt.datetime,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Issue a charger's device certificate (CN = serial number, clientAuth) under a CA.

    Validity ends at ``not_after`` or the CA's own end, whichever is first.
    """
    now = now or _now()
    return _issue_leaf(
        ca_signer,
        ca_certificate,
        device_key,
        _name(serial_number, organization),
        not_after=not_after,
        now=now,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        key_agreement=True,
        what="device",
    )


def certificate_common_name(cert: x509.Certificate) -> str | None:
    """The subject's single commonName, or None when it has none or several."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        return None
    return names[0].value


def certificate_ec_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    """The certificate's ECDSA public key; :class:`UntrustedCertificate` for any other kind."""
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
    Raises :class:`UntrustedCertificate` (a :class:`CertificatePathRefused`) with the reason.
    """
    path.check_signing_profile(cert, now or _now())


def verify_firmware_signing_certificate(
    cert: x509.Certificate,
    anchors: list[x509.Certificate],
    *,
    now: dt.datetime | None = None,
    revoked_serials: frozenset[int] = frozenset(),
) -> x509.Certificate:
    """Check ``cert`` is a valid firmware-signing certificate issued directly by an anchor.

    The path is decided by :func:`chargeward.crypto.path.verify_signing_path` (RFC 5280:
    anchor a CA with keyCertSign, no unknown critical extension, name constraints, validity,
    signature; OCPP: no intermediates).  Returns the anchor that issued it.  Raises
    :class:`UntrustedCertificate` (a :class:`CertificatePathRefused` with the reason) or
    :class:`RevokedCertificate`.

        root = verify_firmware_signing_certificate(cert, [root_ca])
    """
    der = serialization.Encoding.DER
    verified = path.verify_signing_path(
        cert.public_bytes(der), [a.public_bytes(der) for a in anchors], at=now or _now()
    )
    if cert.serial_number in revoked_serials:
        raise RevokedCertificate(f"signing certificate serial {cert.serial_number:x} revoked")
    return anchors[verified.anchor_index]


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

    describe_certificate(root_ca).is_ca
    # -> True
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


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as e:  # duplicate or malformed extensions
        raise UntrustedCertificate(f"certificate extensions are malformed: {e}") from e


def _may_sign_crls(cert: x509.Certificate) -> bool:
    """RFC 5280 4.2.1.3: when keyUsage is present, cRLSign must be set to sign CRLs."""
    ku = _key_usage(cert)
    return _is_ca(cert) and (ku is None or ku.crl_sign)


def is_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s key signed ``cert`` (names match, signature verifies)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


# -- trust anchors offered over OCPP (M05) ---------------------------------------------------


def check_root_certificate(cert: x509.Certificate, *, now: dt.datetime) -> None:
    """OCPP M05: may ``cert`` become an installed ManufacturerRootCertificate?

    It must be a self-signed CA certificate allowed to sign certificates (basicConstraints
    CA=true, keyUsage keyCertSign) and valid at ``now``.  Raises :class:`UntrustedCertificate`
    with the reason.

        check_root_certificate(load_certificate(pem), now=now)
    """
    try:
        is_ca = _is_ca(cert)
    except ValueError as e:  # duplicate or malformed extensions
        raise UntrustedCertificate(f"certificate extensions are malformed: {e}") from e
    if not is_ca:
        raise UntrustedCertificate("not a CA certificate (basicConstraints CA is not set)")
    ku = _key_usage(cert)
    if ku is None or not ku.key_cert_sign:
        raise UntrustedCertificate("the certificate may not sign certificates (no keyCertSign)")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise UntrustedCertificate("the certificate is not valid at this time")
    if not is_issued_by(cert, cert):
        raise UntrustedCertificate("not a self-signed root certificate")


_HASH_ALGORITHMS = {"SHA256": "sha256", "SHA384": "sha384", "SHA512": "sha512"}


@dataclass(frozen=True)
class CertificateHashData:
    """OCPP 2.0.1 CertificateHashDataType: a certificate named as OCSP's CertID (RFC 6960).

    Hashes are lower-case hex; ``serial_number`` is hex without leading zeroes.  The fields
    are OCPP CiStrings, so :meth:`names` compares them case-insensitively.
    """

    hash_algorithm: str
    issuer_name_hash: str
    issuer_key_hash: str
    serial_number: str

    def names(self, other: CertificateHashData) -> bool:
        """True when both name the same certificate with the same hash algorithm."""
        return (
            self.hash_algorithm.upper() == other.hash_algorithm.upper()
            and self.issuer_name_hash.lower() == other.issuer_name_hash.lower()
            and self.issuer_key_hash.lower() == other.issuer_key_hash.lower()
            and self.serial_number.lower().lstrip("0") == other.serial_number.lower().lstrip("0")
        )


def _subject_public_key_bits(cert: x509.Certificate) -> bytes:
    """The value of subjectPublicKey (BIT STRING contents after the unused-bits octet)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _, body, _ = _der_read(spki)
    _, _, after_algorithm = _der_read(body)
    tag, bits, _ = _der_read(body, after_algorithm)
    if tag != 0x03 or not bits:
        raise InvalidValue("SubjectPublicKeyInfo without a BIT STRING")
    return bits[1:]


def certificate_hash_data(
    cert: x509.Certificate, *, issuer: x509.Certificate | None = None, algorithm: str = "SHA256"
) -> CertificateHashData:
    """Name ``cert`` as OCPP does (M03 GetInstalledCertificateIds, M04 DeleteCertificate).

    ``issuer`` defaults to ``cert`` itself, as for a self-signed root.

        certificate_hash_data(root_ca).serial_number
        # -> '5c1f...'
    """
    name = _HASH_ALGORITHMS.get(algorithm.upper())
    if name is None:
        raise ConfigError(f"unsupported certificate hash algorithm {algorithm!r}")
    issuer = issuer or cert
    return CertificateHashData(
        hash_algorithm=algorithm.upper(),
        issuer_name_hash=hashlib.new(name, cert.issuer.public_bytes()).hexdigest(),
        issuer_key_hash=hashlib.new(name, _subject_public_key_bits(issuer)).hexdigest(),
        serial_number=f"{cert.serial_number:x}",
    )


# -- certificate revocation lists ------------------------------------------------------------

# RFC 5280 5.3.1 reason codes a firmware CRL may carry.  certificateHold/removeFromCRL are
# left out on purpose: a firmware-signing certificate is revoked for good, never suspended.
REVOCATION_REASONS = (
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
)
CRL_VALIDITY = dt.timedelta(days=30)  # default nextUpdate - thisUpdate
CRL_CLOCK_SKEW = dt.timedelta(minutes=5)  # thisUpdate may lie this far ahead of our clock
MAX_CRL_NUMBER = 2**159 - 1  # RFC 5280 5.2.3: at most 20 octets, non-negative
_CRL_TOKEN = object()


@dataclass(frozen=True)
class RevokedEntry:
    """One revoked certificate: serial number, revocation time, RFC 5280 reason name."""

    serial: int
    revoked_at: dt.datetime
    reason: str = "unspecified"


@dataclass(frozen=True)
class Crl:
    """A CRL whose signature verified against an installed root (made by :func:`verify_crl`).

    ``issuer_key_id`` (SHA-256 of the issuing root's public key, hex) names the CRL's scope:
    CRL numbers are only ordered between CRLs of the same issuer (RFC 5280 5.2.3).
    ``expired`` is True when ``next_update`` had passed at verification time; an expired CRL
    still revokes, it is only overdue for replacement.
    """

    issuer: str
    issuer_key_id: str
    crl_number: int
    this_update: dt.datetime
    next_update: dt.datetime
    revoked_serials: frozenset[int]
    entries: tuple[RevokedEntry, ...]
    expired: bool
    _token: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._token is not _CRL_TOKEN:
            raise MisuseError("Crl is only made by verify_crl()")


def _authority_key_identifier(ca: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(certificate_ec_key(ca))
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def issue_crl(
    ca_certificate: x509.Certificate,
    ca_signer: Signer,
    revoked: Sequence[RevokedEntry],
    *,
    crl_number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> bytes:
    """A DER X.509 v2 CRL (ECDSA-SHA256) listing ``revoked``, signed through ``ca_signer``.

    Carries the CRLNumber and AuthorityKeyIdentifier extensions and a reasonCode per entry
    (none for ``unspecified``, as RFC 5280 5.3.1 recommends).  Raises
    :class:`UntrustedCertificate` when the key does not match a CRL-signing CA certificate and
    :class:`ConfigError` for bad arguments.
    """
    if not key_matches_certificate(ca_signer.public_key(), ca_certificate):
        raise UntrustedCertificate("CA key does not match the CA certificate")
    if not _may_sign_crls(ca_certificate):
        raise UntrustedCertificate("the issuing certificate may not sign CRLs")
    if not 0 <= crl_number <= MAX_CRL_NUMBER:
        raise ConfigError(f"CRL number {crl_number} is outside 0..2^159-1")
    if next_update <= this_update:
        raise ConfigError("the CRL's next update must come after its this-update time")
    serials = [entry.serial for entry in revoked]
    if len(set(serials)) != len(serials):
        raise ConfigError("a serial number is listed twice")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_certificate.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(_authority_key_identifier(ca_certificate), critical=False)
    )
    for entry in revoked:
        if entry.reason not in REVOCATION_REASONS:
            raise ConfigError(
                f"unknown revocation reason {entry.reason!r}; use one of "
                + ", ".join(REVOCATION_REASONS)
            )
        try:
            item = (
                x509.RevokedCertificateBuilder()
                .serial_number(entry.serial)
                .revocation_date(entry.revoked_at)
            )
        except ValueError as e:
            raise ConfigError(f"cannot revoke serial {entry.serial:x}: {e}") from e
        if entry.reason != "unspecified":
            reason = x509.ReasonFlags(entry.reason)
            item = item.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(item.build())
    return _sign_tbs(builder.sign(_scratch_key(), hashes.SHA256()).tbs_certlist_bytes, ca_signer)


def _check_crl_profile(crl: x509.CertificateRevocationList) -> int:
    """Refuse CRLs outside our profile (complete, direct, numbered); returns the CRL number."""
    number = None
    for ext in crl.extensions:
        if isinstance(ext.value, x509.CRLNumber):
            number = ext.value.crl_number
        elif isinstance(ext.value, x509.DeltaCRLIndicator):
            raise IntegrityError("delta CRLs are not supported")
        elif isinstance(ext.value, x509.IssuingDistributionPoint):
            raise IntegrityError("partitioned CRLs (issuingDistributionPoint) are not supported")
        elif ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
            raise IntegrityError(f"CRL has an unknown critical extension {ext.oid.dotted_string}")
    if number is None:
        raise IntegrityError("CRL has no CRL number")
    if crl.next_update_utc is None:
        raise IntegrityError("CRL has no next update time")
    if crl.next_update_utc < crl.last_update_utc:
        raise IntegrityError("CRL's next update is before its this-update time")
    for revoked in crl:
        for ext in revoked.extensions:
            if isinstance(ext.value, x509.CertificateIssuer):
                raise IntegrityError("indirect CRLs (certificateIssuer) are not supported")
            if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
                raise IntegrityError("CRL entry has an unknown critical extension")
    return number


def _subject_key_id(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(certificate_ec_key(cert)).digest


def _crl_key_id(crl: x509.CertificateRevocationList) -> bytes | None:
    try:
        return crl.extensions.get_extension_for_class(
            x509.AuthorityKeyIdentifier
        ).value.key_identifier
    except x509.ExtensionNotFound:
        return None


def _authentic_crl(der: bytes, anchors: Sequence[x509.Certificate]) -> Crl:
    """Parse ``der``, check our CRL profile and its signature by one of ``anchors``."""
    if len(der) > DEFAULT_FORMAT_LIMITS.crl_bytes:
        raise IntegrityError(f"CRL larger than {DEFAULT_FORMAT_LIMITS.crl_bytes} bytes")
    try:
        crl = x509.load_der_x509_crl(der)
        number = _check_crl_profile(crl)
        key_id = _crl_key_id(crl)
        entries = tuple(
            RevokedEntry(r.serial_number, r.revocation_date_utc, _reason(r)) for r in crl
        )
    except ValueError as e:
        raise IntegrityError("not a well-formed DER X.509 CRL") from e
    candidates = []
    for anchor in anchors:
        if anchor.subject != crl.issuer or not _may_sign_crls(anchor):
            continue
        try:
            if key_id is not None and _subject_key_id(anchor) != key_id:
                continue
        except UntrustedCertificate:
            continue
        candidates.append(anchor)
    if not candidates:
        raise UntrustedCertificate("CRL is not issued by an installed ManufacturerRootCertificate")
    for anchor in candidates:
        try:
            valid = crl.is_signature_valid(anchor.public_key())  # type: ignore[arg-type]
        except (TypeError, ValueError, UnsupportedAlgorithm):
            valid = False
        if valid:
            return Crl(
                issuer=crl.issuer.rfc4514_string(),
                issuer_key_id=_spki_fingerprint(anchor),
                crl_number=number,
                this_update=crl.last_update_utc,
                next_update=crl.next_update_utc,  # type: ignore[arg-type]  # checked above
                revoked_serials=frozenset(entry.serial for entry in entries),
                entries=entries,
                expired=False,
                _token=_CRL_TOKEN,
            )
    raise BadSignature("CRL signature does not verify with the issuing root's key")


def _reason(revoked: x509.RevokedCertificate) -> str:
    try:
        flag = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return "unspecified"
    return str(flag.value)


def verify_crl(
    der: bytes,
    anchors: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    skew: dt.timedelta = CRL_CLOCK_SKEW,
) -> Crl:
    """Accept a CRL signed by one of ``anchors`` (the installed ManufacturerRootCertificates).

    Raises :class:`IntegrityError` (malformed, oversized, outside our profile),
    :class:`UntrustedCertificate` (no installed root issued it, or its thisUpdate lies more
    than ``skew`` in the future) or :class:`BadSignature` (altered).  A CRL past its
    nextUpdate is returned with ``expired`` set: an old CRL still revokes.
    """
    crl = _authentic_crl(der, anchors)
    if crl.this_update > now + skew:
        raise UntrustedCertificate(
            f"CRL is not valid yet: thisUpdate {crl.this_update.isoformat()} is in the future"
        )
    return _stamped(crl, now)


def verify_held_crl(der: bytes, anchors: Sequence[x509.Certificate], *, now: dt.datetime) -> Crl:
    """Re-read a CRL accepted earlier by :func:`verify_crl`: the same checks without the clock.

    A clock set back after a CRL was accepted must not make its revocations disappear.
    """
    return _stamped(_authentic_crl(der, anchors), now)


def _stamped(crl: Crl, now: dt.datetime) -> Crl:
    return replace(crl, expired=now > crl.next_update)


def check_crl_progress(held: Crl | None, new: Crl) -> None:
    """A charger never goes back to an older CRL (RFC 5280 5.2.3 CRLNumber).

    ``held`` is the CRL held for ``new``'s issuer (CRL numbers of different issuers are not
    ordered).  Raises :class:`RollbackRefused` when ``new`` is older than ``held``, or reuses
    its number with a different list; re-delivering the held CRL is fine.
    """
    if held is None:
        return
    if held.issuer_key_id != new.issuer_key_id:
        raise InvalidValue("CRLs of different issuers have no order; pass the CRL of new's issuer")
    if new.crl_number < held.crl_number:
        raise RollbackRefused(
            f"CRL number {new.crl_number} is older than the held CRL number {held.crl_number}"
        )
    if new.crl_number == held.crl_number and new.revoked_serials != held.revoked_serials:
        raise RollbackRefused(f"CRL number {new.crl_number} reused with a different list")
