"""X.509 for OCPP security profiles 2 and 3: the charger CA, station and CSMS certificates.

The charger CA issues station certificates (CN = serial number, O = organisation, clientAuth);
a CSMS server certificate has CN = its FQDN and a subjectAltName.  A station renews its
certificate with a PKCS#10 request (OCPP A02)::

    csr = build_csr(pair.private_pem, "CP-1", "ACME")                  # station
    key = check_csr(csr, "CP-1")                                        # CSMS
    cert = issue_station_certificate(ca_signer, ca, key, "CP-1", "ACME", days=365)
    leaf = verify_signed_chain(chain_pem, anchors, pending_key, "CP-1", now=now)  # station

    check_station_certificate(cert, [ca], "CP-1", now=now)   # the CSMS, at connection
    check_station_certificate(cert, [ca], "CP-2", now=now)
    # raises chargeward.errors.UntrustedCertificate: certificate CN 'CP-1' is not the
    # station identity

Every refusal is an :class:`~chargeward.errors.UntrustedCertificate` naming the reason.

Both ends of an OCPP connection use one TLS policy, :func:`restrict_to_ocpp_tls`::

    >>> ctx = restrict_to_ocpp_tls(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import secrets
import ssl
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chargeward.crypto.backends import backend_for
from chargeward.crypto.keys import Signer
from chargeward.crypto.path import STATION_CERTIFICATE, verify_path
from chargeward.crypto.pki import (
    _is_ca,
    _issue_leaf,
    _name,
    certificate_common_name,
    is_issued_by,
    issue_device_certificate,
    key_matches_certificate,
)
from chargeward.crypto.sealing import device_public_key
from chargeward.errors import ConfigError, IntegrityError, UntrustedCertificate

MIN_EC_BITS = 224  # OCPP 2.0.1 A00.FR.5xx: EC keys of at least 224 bits
MAX_CSR_CHARS = 5500  # SignCertificateRequest.csr
MAX_CHAIN_CHARS = 10000  # CertificateSignedRequest.certificateChain


# OCPP 2.0.1 part 2, A00: TLS_ECDHE_ECDSA_WITH_AES_{128,256}_GCM_SHA{256,384} and
# TLS_RSA_WITH_AES_{128,256}_GCM_SHA{256,384}, in OpenSSL's names.
OCPP_TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
    ]
)


def restrict_to_ocpp_tls(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """The TLS policy of both ends (OCPP 2.0.1 part 2, A00), applied to ``ctx``.

    TLS 1.2 or 1.3 only; for TLS 1.2 exactly :data:`OCPP_TLS12_CIPHERS` (no CBC, no
    ChaCha20); no compression (CRIME); no renegotiation.  TLS 1.3 keeps OpenSSL's AEAD
    suites: Python's ``ssl`` cannot restrict them, and OCPP lists suites for TLS 1.2 only.
    """
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(OCPP_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def issue_server_certificate(
    ca_signer: Signer,
    ca_certificate: x509.Certificate,
    subject_key: ec.EllipticCurvePublicKey,
    fqdn: str,
    organization: str,
    *,
    alt_names: Sequence[str] = (),
    days: int = 365,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """A CSMS TLS server certificate: CN = ``fqdn``, SAN = ``fqdn`` and ``alt_names``.

    An alt name that parses as an IP address becomes an IP SAN, anything else a DNS SAN.
    """
    now = now or _now()
    names: list[x509.GeneralName] = []
    for value in dict.fromkeys([fqdn, *alt_names]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            names.append(x509.DNSName(value))
    return _issue_leaf(
        ca_signer,
        ca_certificate,
        subject_key,
        _name(fqdn, organization),
        not_after=now + dt.timedelta(days=days),
        now=now,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        key_agreement=True,
        what="server",
        extensions=[x509.SubjectAlternativeName(names)],
    )


def issue_station_certificate(
    ca_signer: Signer,
    ca_certificate: x509.Certificate,
    station_key: ec.EllipticCurvePublicKey,
    serial_number: str,
    organization: str,
    *,
    days: int = 365,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """A ChargingStationCertificate (CN = serial number, clientAuth) under the charger CA."""
    now = now or _now()
    return issue_device_certificate(
        ca_signer,
        ca_certificate,
        station_key,
        serial_number,
        organization,
        not_after=now + dt.timedelta(days=days),
        now=now,
    )


def organization_of(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else ""


# -- certificate signing requests (OCPP A02) ------------------------------------------------


def _private_key(private_pem: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise IntegrityError("the stored device key is not a PEM private key") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IntegrityError("the stored device key is not an EC key")
    return key


def build_csr(private_pem: str, common_name: str, organization: str) -> str:
    """A PEM PKCS#10 request for the key in ``private_pem`` (CN = serial, O = organisation)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name, organization))
    csr = builder.sign(_private_key(private_pem), hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def check_csr(csr_pem: str, expected_cn: str) -> ec.EllipticCurvePublicKey:
    """Check a station's CSR; returns its public key.

    It must parse, carry a valid self-signature, hold an EC key of at least 224 bits and
    name exactly ``expected_cn`` (the identity of the connection it came over).
    """
    if len(csr_pem) > MAX_CSR_CHARS:
        raise UntrustedCertificate("CSR longer than 5500 characters")
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        valid = csr.is_signature_valid
        key = csr.public_key()
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise UntrustedCertificate("not a PEM PKCS#10 certificate signing request") from e
    if not valid:
        raise UntrustedCertificate("CSR signature does not verify")
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UntrustedCertificate("CSR key is not an EC key")
    if key.curve.key_size < MIN_EC_BITS:
        raise UntrustedCertificate(f"CSR key has {key.curve.key_size} bits (< {MIN_EC_BITS})")
    cn = names[0].value if len(names) == 1 else None
    if cn != expected_cn:
        raise UntrustedCertificate(f"CSR CN {cn!r} is not the station identity {expected_cn!r}")
    return key


# -- checks of presented certificates ---------------------------------------------------------


def _validity(cert: x509.Certificate, now: dt.datetime, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise UntrustedCertificate(f"{what} is not valid yet")
    if now > cert.not_valid_after_utc:
        raise UntrustedCertificate(
            f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )


def check_client_leaf(cert: x509.Certificate) -> None:
    """Is ``cert`` an end-entity certificate for TLS client authentication?

    basicConstraints must not say CA (RFC 5280 4.2.1.9: a station certificate must not be able
    to issue more certificates for its CN); keyUsage must be present with digitalSignature
    (4.2.1.3; the client signs the handshake, RFC 8446 4.4.3); extendedKeyUsage must be
    present with clientAuth (4.2.1.12: absent would mean any purpose).  OpenSSL's own purpose
    check at the handshake lets a leaf without keyUsage or extendedKeyUsage through.
    """
    try:
        extensions = cert.extensions
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    except ValueError as e:  # duplicate or malformed extensions
        raise UntrustedCertificate(f"certificate extensions are malformed: {e}") from e
    if constraints is not None and constraints.ca:
        raise UntrustedCertificate("certificate is a CA certificate (basicConstraints CA=true)")
    try:
        usage: x509.KeyUsage | None = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or not usage.digital_signature:
        raise UntrustedCertificate("certificate keyUsage lacks digitalSignature")
    try:
        eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise UntrustedCertificate(
            "certificate is not for client authentication (no clientAuth extended key usage)"
        ) from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise UntrustedCertificate("certificate is not for client authentication")


def issuer_name_hash(cert: x509.Certificate) -> str:
    """SHA-256 of the DER issuer name, hex: with the serial number it names one certificate
    (RFC 5280 4.1.2.2), as OCPP's CertificateHashData issuerNameHash does."""
    return hashlib.sha256(cert.issuer.public_bytes()).hexdigest()


def check_station_certificate(
    cert: x509.Certificate,
    cas: Sequence[x509.Certificate],
    station_id: str,
    *,
    now: dt.datetime,
) -> x509.Certificate:
    """Security profile 3: is ``cert`` a certificate of ``station_id`` at ``now``?

    It must be issued by one of ``cas`` (valid CA certificates), be valid, be a client leaf
    (:func:`check_client_leaf`) and have CN = ``station_id``.  Returns the issuing CA.  Whether
    it is the station's *current* certificate, and not revoked, is the server's decision
    (:mod:`chargeward.server.stations.station_security`).
    """
    issuer = next((ca for ca in cas if _is_ca(ca) and is_issued_by(cert, ca)), None)
    if issuer is None:
        raise UntrustedCertificate("certificate is not issued by the charger CA")
    _validity(issuer, now, "the charger CA certificate")
    _validity(cert, now, "certificate")
    check_client_leaf(cert)
    cn = certificate_common_name(cert)
    if cn != station_id:
        raise UntrustedCertificate(f"certificate CN {cn!r} is not the station identity")
    der = serialization.Encoding.DER  # RFC 5280 path: keyCertSign, critical extensions, names
    verify_path(
        cert.public_bytes(der), [issuer.public_bytes(der)], at=now, profile=STATION_CERTIFICATE
    )
    return issuer


def load_chain(chain_pem: str) -> list[x509.Certificate]:
    if len(chain_pem) > MAX_CHAIN_CHARS:
        raise UntrustedCertificate("certificate chain longer than 10000 characters")
    try:
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError as e:
        raise UntrustedCertificate("not a PEM certificate chain") from e
    if not chain:
        raise UntrustedCertificate("empty certificate chain")
    return chain


def verify_signed_chain(
    chain_pem: str,
    anchors: Sequence[x509.Certificate],
    private_pem: str,
    serial_number: str,
    *,
    now: dt.datetime,
) -> x509.Certificate:
    """The station's check of CertificateSigned (OCPP A02.FR.1x); returns the new leaf.

    ``chain_pem`` is leaf first.  The leaf must certify the key in ``private_pem`` (the key
    the station made for its CSR), name ``serial_number`` and chain, through the certificates
    sent with it, to one of ``anchors``: RFC 5280 path validation by
    :func:`chargeward.crypto.path.verify_path` (raises its
    :class:`~chargeward.errors.CertificatePathRefused`, an :class:`UntrustedCertificate`).
    """
    chain = load_chain(chain_pem)
    leaf = chain[0]
    if not key_matches_certificate(device_public_key(private_pem), leaf):
        raise UntrustedCertificate("the certificate does not certify the key of the request")
    _validity(leaf, now, "certificate")
    if certificate_common_name(leaf) != serial_number:
        raise UntrustedCertificate("the certificate CN is not this station's serial number")
    der = serialization.Encoding.DER
    verify_path(
        leaf.public_bytes(der),
        [a.public_bytes(der) for a in anchors],
        intermediates=[c.public_bytes(der) for c in chain[1:]],
        at=now,
        profile=STATION_CERTIFICATE,
    )
    return leaf


def issuers_of(
    cert: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    """The CA certificates among ``candidates`` whose key signed ``cert``."""
    return [c for c in candidates if _is_ca(c) and is_issued_by(cert, c)]


# -- keys for the ssl module -----------------------------------------------------------------


def encrypted_key_pem(private_pem: str) -> tuple[bytes, bytes]:
    """``private_pem`` re-encrypted under a fresh random password: (PEM, password).

    Python's ``ssl`` loads a client key only from a file; the file holds it encrypted, and
    the password lives only in this process.
    """
    password = secrets.token_bytes(32).hex().encode()
    pem = _private_key(private_pem).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    return pem, password


def check_tls_key_uri(uri: str) -> str:
    """The file path of a TLS server key URI (``ssl`` cannot use a PKCS#11 key)."""
    if backend_for(uri).key_file(uri) is None:
        raise ConfigError(
            "the TLS server key must be an encrypted PKCS#8 file (file:...); Python's TLS "
            "stack cannot use a PKCS#11 key: terminate TLS in a proxy that can"
        )
    return uri.removeprefix("file:")
