"""The charger's trust decisions.  Nothing here talks to the network or writes to flash.

A :class:`VerifiedImage` can only be produced by :func:`verify_image`, and the installer only
accepts a :class:`VerifiedImage`: "install before verify" cannot be written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from chargeward.crypto import (
    certificate_pem,
    load_certificate,
    sha256_file,
    verify_firmware_signature,
    verify_firmware_signing_certificate,
)
from chargeward.errors import BundleError, IncompatibleImage, IntegrityError, RollbackRefused
from chargeward.model.firmware import ImageHeader
from chargeward.release.image import check_image

_TOKEN = object()


def check_signing_certificate(
    pem: str, anchors: list[x509.Certificate], now: dt.datetime
) -> x509.Certificate:
    """OCPP L01: the signing certificate must chain to an installed ManufacturerRootCertificate.

    Raises UntrustedCertificate or RevokedCertificate.
    """
    cert = load_certificate(pem)
    verify_firmware_signing_certificate(cert, anchors, now=now)
    return cert


@dataclass(frozen=True)
class VerifiedImage:
    path: Path
    sha256: str
    length: int
    signature: str
    signing_certificate: str
    header: ImageHeader
    _token: object

    def __post_init__(self) -> None:
        if self._token is not _TOKEN:
            raise TypeError("VerifiedImage is only made by verify_image()")


def verify_signature(path: Path, cert: x509.Certificate, signature: str) -> tuple[str, int]:
    """Check the OCPP signature over the whole file; returns (sha256, length)."""
    digest = sha256_file(path)
    verify_firmware_signature(cert, digest, signature)
    return digest.sha256, digest.length


def verify_image(
    path: Path, cert: x509.Certificate, signature: str, *, model: str, rollback_floor: int
) -> VerifiedImage:
    """Everything that must hold before an image may be written to a slot.

    Raises BadSignature (signature), IntegrityError/BundleError (image format), IncompatibleImage
    (hardware model) or RollbackRefused (security version below the floor).
    """
    sha256, length = verify_signature(path, cert, signature)
    try:
        header = check_image(path)
    except BundleError as e:
        raise IntegrityError(f"signed file is not a valid firmware image: {e}") from e
    if model not in header.hardware_models:
        raise IncompatibleImage(
            f"image is for {', '.join(header.hardware_models)}, this charger is a {model}"
        )
    if header.security_version < rollback_floor:
        raise RollbackRefused(
            f"security version {header.security_version} is below the rollback floor "
            f"{rollback_floor}"
        )
    return VerifiedImage(path, sha256, length, signature, certificate_pem(cert), header, _TOKEN)


def secure_boot_check(
    image: Path, signature: str, signing_certificate: str, anchors: list[x509.Certificate]
) -> ImageHeader:
    """The bootloader's check of a slot: origin (certificate), signature and contents.

    Validity periods are not checked at boot: the certificate was valid when the image was
    installed, and a charger must not stop booting the day a certificate expires.
    """
    cert = load_certificate(signing_certificate)
    verify_firmware_signing_certificate(
        cert, anchors, now=cert.not_valid_before_utc + dt.timedelta(seconds=1)
    )
    verify_signature(image, cert, signature)
    return check_image(image)
