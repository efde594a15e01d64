"""The charger's trust decisions.  Nothing here talks to the network or writes to flash.

Two layers must agree before an image may be installed (DESIGN.md, "Trust model"):

1. :func:`verify_image` checks the OCPP firmware signature and the signed image header and
   returns a :class:`SignedImage`;
2. :func:`check_target` checks what the TUF repository lists for that image and returns a
   :class:`RepositoryApproval`.

Only :func:`accept_image` makes a :class:`VerifiedImage`, from both, and the installer only
accepts a :class:`VerifiedImage`: "install before verify" cannot be written.

    >>> signed = verify_image(part, cert, sig, model="AC22", rollback_floor=1)  # doctest: +SKIP
    >>> path = target_path_for("AC22", signed.header)                           # doctest: +SKIP
    >>> approval = check_target(updater.get_targetinfo(path), sha256=signed.sha256,
    ...     length=signed.length, header=signed.header, model="AC22", customer=None,
    ...     rollback_floor=1)                                                    # doctest: +SKIP
    >>> image = accept_image(signed, approval)                                   # doctest: +SKIP

:func:`find_security_updates` picks, from verified targets metadata, the security releases
this charger should be told about.  The repository's freshness decisions (time floor, expiry
by the charger's clock) are in :mod:`chargeward.agent.freshness`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from tuf.api.metadata import TargetFile

from chargeward.crypto import (
    certificate_pem,
    load_certificate,
    sha256_file,
    verify_firmware_signature,
    verify_firmware_signing_certificate,
)
from chargeward.errors import (
    BundleError,
    IncompatibleImage,
    IntegrityError,
    RepositoryRefused,
    RollbackRefused,
)
from chargeward.model.firmware import ImageHeader
from chargeward.model.targets import TargetCustom, firmware_target_path
from chargeward.release.image import check_image

_TOKEN = object()


@dataclass(frozen=True)
class SignedImage:
    """Layer 1 passed: OCPP signature, image format, hardware model, rollback floor."""

    path: Path
    sha256: str
    length: int
    signature: str
    signing_certificate: str
    header: ImageHeader
    _token: object

    def __post_init__(self) -> None:
        if self._token is not _TOKEN:
            raise TypeError("SignedImage is only made by verify_image()")


@dataclass(frozen=True)
class RepositoryApproval:
    """Layer 2 passed: the TUF repository lists exactly this file for this charger."""

    target_path: str
    sha256: str
    length: int
    custom: TargetCustom
    _token: object

    def __post_init__(self) -> None:
        if self._token is not _TOKEN:
            raise TypeError("RepositoryApproval is only made by check_target()")


@dataclass(frozen=True)
class VerifiedImage:
    """Every check passed; the only thing the installer writes to a slot."""

    path: Path
    sha256: str
    length: int
    signature: str
    signing_certificate: str
    header: ImageHeader
    repository: RepositoryApproval | None
    _token: object

    def __post_init__(self) -> None:
        if self._token is not _TOKEN:
            raise TypeError("VerifiedImage is only made by accept_image()")


def verify_signature(path: Path, cert: x509.Certificate, signature: str) -> tuple[str, int]:
    """Check the OCPP signature over the whole file; returns (sha256, length)."""
    digest = sha256_file(path)
    verify_firmware_signature(cert, digest, signature)
    return digest.sha256, digest.length


def verify_image(
    path: Path, cert: x509.Certificate, signature: str, *, model: str, rollback_floor: int
) -> SignedImage:
    """Layer 1: everything the OCPP signature and the signed image header must satisfy.

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
    _check_floor(header.security_version, rollback_floor)
    return SignedImage(path, sha256, length, signature, certificate_pem(cert), header, _TOKEN)


def _check_floor(security_version: int, rollback_floor: int) -> None:
    if security_version < rollback_floor:
        raise RollbackRefused(
            f"security version {security_version} is below the rollback floor {rollback_floor}"
        )


def target_path_for(model: str, header: ImageHeader) -> str:
    """The repository path that must list an image with ``header`` for a ``model`` charger."""
    try:
        return firmware_target_path(model, header.version, header.component)
    except BundleError as e:  # a model no repository can publish: nothing can be listed
        raise RepositoryRefused("not-listed", str(e)) from e


def check_target(
    info: TargetFile | None,
    *,
    sha256: str,
    length: int,
    header: ImageHeader,
    model: str,
    customer: str | None,
    rollback_floor: int,
) -> RepositoryApproval:
    """Layer 2: the verified TUF target for an image must list it for this very charger.

    ``info`` is what ``Updater.get_targetinfo(target_path_for(model, header))`` returned;
    ``sha256`` and ``length`` describe the downloaded file.  Raises RepositoryRefused with
    reason ``not-listed``, ``length``, ``hash``, ``repository`` (malformed or disagreeing
    custom fields), ``wrong-model`` or ``wrong-customer``, or RollbackRefused.
    """
    path = target_path_for(model, header)
    if info is None or info.path != path:
        raise RepositoryRefused("not-listed", f"the repository does not list {path}")
    if info.length != length:
        raise RepositoryRefused(
            "length", f"{path}: the repository lists {info.length} bytes, downloaded {length}"
        )
    listed = info.hashes.get("sha256")
    if listed is None:
        raise RepositoryRefused("repository", f"{path}: the repository lists no sha256")
    if listed != sha256:
        raise RepositoryRefused("hash", f"{path}: sha256 {sha256} differs from the listed {listed}")
    try:
        custom = TargetCustom.from_dict(info.custom)
    except BundleError as e:
        raise RepositoryRefused("repository", f"{path}: {e}") from e
    if model not in custom.models:
        raise RepositoryRefused(
            "wrong-model", f"{path} is for {', '.join(custom.models)}, this charger is a {model}"
        )
    if custom.customer is not None and custom.customer != customer:
        raise RepositoryRefused(
            "wrong-customer", f"{path} is locked to customer {custom.customer!r}"
        )
    signed = (header.version, header.security_version, header.component)
    listed_fields = (custom.version, custom.security_version, custom.component)
    if listed_fields != signed:
        raise RepositoryRefused(
            "repository",
            f"{path}: the repository lists version/security version/component {listed_fields},"
            f" the signed image says {signed}",
        )
    _check_floor(custom.security_version, rollback_floor)
    return RepositoryApproval(path, sha256, length, custom, _TOKEN)


def accept_image(image: SignedImage, approval: RepositoryApproval | None) -> VerifiedImage:
    """Join both layers into the one thing that may be installed.

    ``approval`` is None only on a charger that holds no TUF root (layer 1 alone, as any OCPP
    2.0.1 station); otherwise it must be the approval of this very file.
    """
    if approval is not None and (approval.sha256, approval.length) != (image.sha256, image.length):
        raise RepositoryRefused("hash", f"{approval.target_path}: the approval is for another file")
    return VerifiedImage(
        image.path,
        image.sha256,
        image.length,
        image.signature,
        image.signing_certificate,
        image.header,
        approval,
        _TOKEN,
    )


@dataclass(frozen=True)
class SecurityUpdate:
    """A security release the repository lists for this charger, newer than what it runs."""

    target: str
    version: str
    security_version: int

    def report(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "version": self.version,
            "security_version": self.security_version,
        }


def find_security_updates(
    targets: Mapping[str, TargetFile],
    *,
    model: str,
    customer: str | None,
    running_security_version: int,
) -> list[SecurityUpdate]:
    """Security releases in ``targets`` (verified metadata) for this model and customer.

    Only targets at their canonical path whose signed custom fields say release class
    ``security``, list ``model``, allow ``customer`` and raise the security version qualify;
    malformed entries are skipped.  Sorted by security version, then path.
    """
    found: list[SecurityUpdate] = []
    for path, info in targets.items():
        try:
            custom = TargetCustom.from_dict(info.custom)
            canonical = firmware_target_path(model, custom.version, custom.component)
        except BundleError:
            continue
        if (
            path == canonical
            and custom.release_class == "security"
            and model in custom.models
            and custom.customer in (None, customer)
            and custom.security_version > running_security_version
        ):
            found.append(SecurityUpdate(path, custom.version, custom.security_version))
    return sorted(found, key=lambda u: (u.security_version, u.target))


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
