"""A vendor's own signed firmware, as its maker shipped it (ADR 0041): the trust decision.

OCPP 2.0.1 L01: ``UpdateFirmware.firmware.signature`` is the base64 of an ECDSA or RSA
signature over the SHA-256 of the image, made with the key of ``signingCertificate``, which
a ManufacturerRootCertificate issued directly.  A charger of that maker checks exactly this;
Chargeward checks it before it stores the image, against the vendor root registered for the
image's model, and then sends signature and certificate unchanged.  Bytes in, a
:class:`VendorSignature` or one exception out; no I/O::

    checked = verify_vendor_image(digest, signature_b64, cert_pem, [vendor_root], now=now)
    checked.root_fingerprint  # the registered root that issued the signing certificate
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from chargeward.crypto import path
from chargeward.crypto.pki import (
    MAX_SIGNING_CERTIFICATE_CHARS,
    certificate_fingerprint,
    check_root_certificate,
    load_certificate,
)
from chargeward.crypto.signature import Digest, decode_signature
from chargeward.errors import BadSignature, UntrustedCertificate

_PREHASHED = utils.Prehashed(hashes.SHA256())


@dataclass(frozen=True)
class VendorSignature:
    """A vendor image whose signature verified under a registered vendor root."""

    signature: str  # base64, as shipped
    signing_certificate_pem: str  # as shipped
    certificate_fingerprint: str
    root_fingerprint: str


def vendor_root(pem: bytes | str, *, now: dt.datetime) -> x509.Certificate:
    """A vendor's manufacturer root: a self-signed CA certificate valid at ``now``
    (:class:`UntrustedCertificate` with the reason otherwise; ECDSA or RSA keys)."""
    cert = load_certificate(pem)
    check_root_certificate(cert, now=now)
    return cert


def _verify(key: object, der: bytes, digest: Digest) -> None:
    if isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(der, digest.raw, ec.ECDSA(_PREHASHED))
    elif isinstance(key, rsa.RSAPublicKey):
        key.verify(der, digest.raw, padding.PKCS1v15(), _PREHASHED)
    else:
        raise BadSignature("signing certificate holds neither an EC nor an RSA key")


def verify_vendor_image(
    digest: Digest,
    signature: str,
    signing_certificate_pem: str,
    roots: list[x509.Certificate],
    *,
    now: dt.datetime,
) -> VendorSignature:
    """Check a vendor image's OCPP signature and certificate against the vendor ``roots``.

    Raises :class:`UntrustedCertificate` (no root, not issued directly by one of ``roots``,
    expired or not yet valid: the reason is in the message) or :class:`BadSignature`.
    """
    if len(signing_certificate_pem) > MAX_SIGNING_CERTIFICATE_CHARS:
        raise UntrustedCertificate("signing certificate longer than OCPP allows")
    if not roots:
        raise UntrustedCertificate("no vendor root registered for the model")
    der = serialization.Encoding.DER
    verified = path.verify_path(
        signing_certificate_pem.encode(),
        [r.public_bytes(der) for r in roots],
        at=now,
        profile=path.VENDOR_SIGNING,
    )
    raw = decode_signature(signature)
    try:
        _verify(verified.leaf.public_key(), raw, digest)
    except InvalidSignature as e:
        raise BadSignature("firmware signature does not verify with the signing certificate") from e
    return VendorSignature(
        signature=signature,
        signing_certificate_pem=signing_certificate_pem,
        certificate_fingerprint=certificate_fingerprint(verified.leaf),
        root_fingerprint=certificate_fingerprint(verified.anchor),
    )
