"""The charger's trust decisions.  Nothing here talks to the network or writes to flash.

Two layers must agree before an image may be installed (DESIGN.md, "Trust model"):

1. :func:`verify_image` checks the OCPP firmware signature and the signed image header and
   returns a :class:`SignedImage`;
2. :func:`check_target` checks what the TUF repository lists for that image and returns a
   :class:`RepositoryApproval`.

Only :func:`accept_image` makes a :class:`VerifiedImage`, from both, and the installer only
accepts a :class:`VerifiedImage`: "install before verify" cannot be written.

    signed = verify_image(part, cert, sig, model="AC22", rollback_floor=1)
    path = target_path_for("AC22", signed.header)
    approval = check_target(updater.get_targetinfo(path), sha256=signed.sha256,
        length=signed.length, header=signed.header, model="AC22", customer=None,
        rollback_floor=1)
    image = accept_image(signed, approval)

:func:`find_security_updates` picks, from verified targets metadata, the security releases
this charger should be told about.  The repository's freshness decisions (time floor, expiry
by the charger's clock) are in :mod:`chargeward.agent.freshness`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from tuf.api.metadata import TargetFile

from chargeward.crypto import (
    Digest,
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
    MisuseError,
    RepositoryRefused,
    RollbackRefused,
)
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.model.firmware import ImageHeader, primary_component
from chargeward.model.targets import TargetCustom, firmware_target_path, tenant_path
from chargeward.release.image import CHUNK, MAGIC, read_header_from

_TOKEN = object()
# The first read holds the whole envelope header (magic, length, at most the format's limit).
_FIRST_READ = max(CHUNK, len(MAGIC) + 4 + DEFAULT_FORMAT_LIMITS.image_header_bytes)
_IN_FLIGHT = 4  # chunks queued for the whole-file digest


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
            raise MisuseError("SignedImage is only made by verify_image()")


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
            raise MisuseError("RepositoryApproval is only made by check_target()")


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
            raise MisuseError("VerifiedImage is only made by accept_image()")


def verify_signature(path: Path, cert: x509.Certificate, signature: str) -> tuple[str, int]:
    """Check the OCPP signature over the whole file; returns (sha256, length)."""
    digest = sha256_file(path)
    verify_firmware_signature(cert, digest, signature)
    return digest.sha256, digest.length


def verify_image(
    path: Path, cert: x509.Certificate, signature: str, *, model: str, rollback_floor: int
) -> SignedImage:
    """Layer 1: everything the OCPP signature and the signed image header must satisfy.

    Reads ``path`` once, in constant memory.  Raises BadSignature (signature),
    IntegrityError (image format or payload digest), IncompatibleImage (hardware model) or
    RollbackRefused (security version below the floor); the signature is judged first.
    """
    scan = _scan_image(path)
    verify_firmware_signature(cert, scan.file, signature)
    try:
        header = scan.checked_header()
    except BundleError as e:
        raise IntegrityError(f"signed file is not a valid firmware image: {e}") from e
    if model not in header.hardware_models:
        raise IncompatibleImage(
            f"image is for {', '.join(header.hardware_models)}, this charger is a {model}"
        )
    _check_floor(header.security_version, rollback_floor)
    return SignedImage(
        path, scan.file.sha256, scan.file.length, signature, certificate_pem(cert), header, _TOKEN
    )


@dataclass(frozen=True)
class _ImageScan:
    """One pass over an image file: its whole digest and what its envelope says."""

    file: Digest
    header: ImageHeader | None
    payload: Digest | None
    problem: BundleError | None

    def checked_header(self) -> ImageHeader:
        """The header, if the envelope parsed and the payload matches it (release.image rules).

        Raises BundleError (malformed envelope) or IntegrityError (payload length or digest).
        """
        if self.header is None or self.payload is None:
            raise self.problem or BundleError("not a Chargeward firmware image")
        if (self.payload.length, self.payload.sha256) != (
            self.header.payload_length,
            self.header.payload_sha256,
        ):
            raise IntegrityError("image payload does not match its header")
        return self.header


class _ThreadedSha256:
    """SHA-256 fed in order to its own thread, so that a second digest can run beside it.

    hashlib releases the GIL for large updates: on two cores the whole-file and the payload
    digest of an image take the time of one.  At most ``_IN_FLIGHT`` chunks wait for the
    thread, so memory stays constant.  Use as a context manager.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._slots = threading.Semaphore(_IN_FLIGHT)
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._error: Exception | None = None
        self._open = False
        self.length = 0

    def __enter__(self) -> _ThreadedSha256:
        self._thread.start()
        self._open = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            try:
                if self._error is None:
                    self._hash.update(data)
            except Exception as e:  # kept for digest(); the feeder must never block
                self._error = e
            finally:
                self._slots.release()

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._queue.put(None)
            self._thread.join()

    def update(self, data: bytes) -> None:
        self._slots.acquire()
        self.length += len(data)
        self._queue.put(data)

    def digest(self) -> Digest:
        self._close()
        if self._error is not None:
            raise self._error
        return Digest(self._hash.hexdigest(), self.length)


def _scan_image(path: Path) -> _ImageScan:
    """Read ``path`` once: SHA-256 of the whole file, the CWFW header and the payload digest.

    A malformed envelope is recorded, not raised, so that the caller judges the signature
    first; the header is the one in the very bytes the signature covers.
    """
    with path.open("rb") as fh, _ThreadedSha256() as whole:
        first = fh.read(_FIRST_READ)
        whole.update(first)
        header: ImageHeader | None = None
        problem: BundleError | None = None
        try:
            header, offset = read_header_from(io.BytesIO(first))
        except BundleError as e:
            problem = e
        except (ValueError, RecursionError) as e:  # e.g. integers or nesting json refuses
            problem = BundleError(f"image header is malformed: {type(e).__name__}")
        if header is None:
            while chunk := fh.read(CHUNK):
                whole.update(chunk)
            return _ImageScan(whole.digest(), None, None, problem)
        payload = hashlib.sha256(memoryview(first)[offset:])
        length = len(first) - offset
        while chunk := fh.read(CHUNK):
            whole.update(chunk)
            payload.update(chunk)
            length += len(chunk)
        return _ImageScan(whole.digest(), header, Digest(payload.hexdigest(), length), None)


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
    # listed publicly, or (a release locked to this charger's customer) in its tenant role
    if info is None or info.path not in (path, tenant_path(customer, path)):
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

    One target per release (its primary image: the other components of a multi-image
    release come with it).  Only targets at their canonical path whose signed custom fields say
    release class
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
            path in (canonical, tenant_path(customer, canonical))
            and custom.component == primary_component(custom.components or [custom.component])
            and custom.release_class == "security"
            and model in custom.models
            and custom.customer in (None, customer)
            and custom.security_version > running_security_version
        ):
            found.append(SecurityUpdate(path, custom.version, custom.security_version))
    return sorted(found, key=lambda u: (u.security_version, u.target))


def secure_boot_check(
    image: Path,
    signature: str,
    signing_certificate: str,
    anchors: list[x509.Certificate],
    *,
    revoked_serials: frozenset[int],
) -> ImageHeader:
    """The bootloader's check of a slot: origin (certificate), signature and contents.

    Validity periods are not checked at boot: the certificate was valid when the image was
    installed, and a charger must not stop booting the day a certificate expires.
    Revocation is: ``revoked_serials`` are those of the CRLs the charger holds
    (:func:`chargeward.agent.certificates.boot_revocations`), and an image whose signing
    certificate was revoked (e.g. keyCompromise) does not run, however it reached the slot.
    Raises :class:`~chargeward.errors.RevokedCertificate` for it.
    """
    cert = load_certificate(signing_certificate)
    verify_firmware_signing_certificate(
        cert,
        anchors,
        now=cert.not_valid_before_utc + dt.timedelta(seconds=1),
        revoked_serials=revoked_serials,
    )
    scan = _scan_image(image)
    verify_firmware_signature(cert, scan.file, signature)
    return scan.checked_header()
