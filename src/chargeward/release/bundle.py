"""Release bundles: build one from a firmware payload, verify one before trusting it.

A bundle (``.cwb``) is an uncompressed POSIX tar holding exactly::

    images/<component>.cwfw    the CWFW envelope around each firmware payload (1-16 components)
    manifest.json              canonical JSON: release metadata, image digests and signatures,
                               and the digests of the supply-chain documents below
    signing-certificate.pem    the firmware-signing certificate
    sbom.cdx.json              optional: CycloneDX 1.6 SBOM of the release
    vulnerability-report.json  optional: the offline vulnerability gate's report
    vex.openvex.json           optional: OpenVEX statements for the accepted findings

The image signature is the OCPP 2.0.1 one: ECDSA P-256 over the SHA-256 of the whole
``.cwfw`` file, DER, base64.  Building::

    manifest = build_bundle(
        Path("firmware.bin"), Path("acme-1.2.0.cwb"),
        version="1.2.0", security_version=3, hardware_models=["AC22"],
        signer=load_signer("file:signing.key", passphrase_from_env()),
        signing_certificate=load_certificate_file(Path("signing.pem")),
    )
    manifest.release_id
    # -> '9f2c...'

and checking, which is the only way to get a :class:`VerifiedBundle`::

    verified = verify_bundle(Path("acme-1.2.0.cwb"), [root], workdir=tmp)

Reproducibility: with ``SOURCE_DATE_EPOCH`` set (or ``now`` given) everything in the bundle is
determined by its inputs - members sorted, owner 0/0, mode 0644, every mtime equal to
``created`` - except the ECDSA signature, which is randomised; two builds of the same
payload differ only in the manifest's ``signature`` field.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509

from chargeward.crypto.keys import Signer
from chargeward.crypto.pki import (
    MAX_SIGNING_CERTIFICATE_CHARS,
    certificate_pem,
    check_signing_certificate,
    key_matches_certificate,
)
from chargeward.crypto.signature import (
    sign_firmware_digest,
    verify_firmware_signature,
)
from chargeward.errors import (
    BadSignature,
    BundleError,
    ConfigError,
    IntegrityError,
    TransportError,
    UntrustedCertificate,
)
from chargeward.fileio import new_file, refuse_existing
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.model.firmware import (
    check_component,
    check_models,
    check_security_version,
    check_version,
)
from chargeward.model.targets import check_customer, check_release_class
from chargeward.release.archive import write_bundle_tar
from chargeward.release.image import EnvelopeStream, image_header
from chargeward.release.manifest import (
    ATTESTATION_NAMES,
    CERTIFICATE_NAME,
    MANIFEST_NAME,
    SBOM_NAME,
    SCAN_REPORT_NAME,
    VEX_NAME,
    Manifest,
    ManifestAttestation,
    ManifestImage,
    check_notes,
    format_created,
    image_path,
)
from chargeward.release.verify import VerifiedBundle, VerifiedImage, read_manifest, verify_bundle

SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"

__all__ = [
    "ATTESTATION_NAMES",
    "SBOM_NAME",
    "SCAN_REPORT_NAME",
    "VEX_NAME",
    "Manifest",
    "ManifestImage",
    "VerifiedBundle",
    "VerifiedImage",
    "build_bundle",
    "read_manifest",
    "verify_bundle",
]


def _created(now: dt.datetime | None) -> dt.datetime:
    if now is not None:
        if now.tzinfo is None:
            raise ConfigError("now must be a timezone-aware datetime")
        return now.astimezone(dt.UTC).replace(microsecond=0)
    epoch = os.environ.get(SOURCE_DATE_EPOCH)
    if epoch is not None:
        if not epoch.isdigit():
            raise ConfigError(
                f"{SOURCE_DATE_EPOCH} must be whole seconds since 1970, got {epoch!r}"
            )
        try:
            return dt.datetime.fromtimestamp(int(epoch), dt.UTC)
        except (OverflowError, OSError, ValueError) as e:
            raise ConfigError(f"{SOURCE_DATE_EPOCH}={epoch} is out of range") from e
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _check_signing_pair(
    signer: Signer, certificate: x509.Certificate, now: dt.datetime | None
) -> str:
    subject = certificate.subject.rfc4514_string()
    if not key_matches_certificate(signer.public_key(), certificate):
        raise ConfigError(
            f"signing key {signer.uri} does not match the signing certificate ({subject})"
        )
    try:
        check_signing_certificate(certificate, now=now)
    except UntrustedCertificate as e:
        raise ConfigError(f"certificate {subject} cannot sign firmware: {e}") from e
    pem = certificate_pem(certificate)
    if len(pem) > MAX_SIGNING_CERTIFICATE_CHARS:
        raise ConfigError(
            f"certificate {subject} is longer than the {MAX_SIGNING_CERTIFICATE_CHARS} "
            "characters OCPP allows"
        )
    return pem


def _check_payload(payload: Path) -> None:
    try:
        size = payload.stat().st_size
    except OSError as e:
        raise ConfigError(f"cannot read firmware payload {payload}: {e.strerror}") from e
    if not payload.is_file():
        raise ConfigError(f"firmware payload {payload} is not a regular file")
    if size == 0:
        raise BundleError(f"firmware payload {payload} is empty")


def _images_of(payload: Path | Mapping[str, Path], component: str) -> dict[str, Path]:
    images = {component: payload} if isinstance(payload, Path) else dict(payload)
    if not 1 <= len(images) <= DEFAULT_FORMAT_LIMITS.release_images:
        raise BundleError(
            f"a release holds 1-{DEFAULT_FORMAT_LIMITS.release_images} images, got {len(images)}"
        )
    for name, path in images.items():
        check_component(name)
        _check_payload(path)
    return images


def _check_attestations(attestations: Mapping[str, bytes]) -> tuple[ManifestAttestation, ...]:
    return tuple(ManifestAttestation.of(name, data) for name, data in attestations.items())


def build_bundle(
    payload: Path | Mapping[str, Path],
    out: Path,
    *,
    version: str,
    security_version: int,
    hardware_models: list[str],
    signer: Signer,
    signing_certificate: x509.Certificate,
    component: str = "main",
    notes: str = "",
    now: dt.datetime | None = None,
    release_class: str = "feature",
    customer: str | None = None,
    attestations: Mapping[str, bytes] | None = None,
) -> Manifest:
    """Pack, sign and write a release bundle to the new file ``out``; returns its manifest.

    ``payload`` is one firmware file (the image of ``component``) or, for a multi-image
    release, a mapping of component name to firmware file; each image is signed on its own.
    ``attestations`` maps supply-chain document names (:data:`SBOM_NAME`,
    :data:`SCAN_REPORT_NAME`, :data:`VEX_NAME`) to their bytes: they are packed beside the
    images and listed with their digests in the manifest, so the release id covers them.
    ``created`` is ``now`` if given, else ``$SOURCE_DATE_EPOCH`` if set, else the clock.
    Raises :class:`BundleError` for invalid release metadata, :class:`ConfigError` if the
    key does not match the certificate or the certificate cannot sign firmware, and
    :class:`Conflict` if ``out`` exists (it is never overwritten).
    """
    check_version(version)
    check_security_version(security_version)
    models = check_models(hardware_models)
    check_notes(notes)
    check_release_class(release_class)
    check_customer(customer)
    listed = _check_attestations(attestations or {})
    refuse_existing(out)
    pem = _check_signing_pair(signer, signing_certificate, now)
    images = _images_of(payload, component)
    created = _created(now)
    envelopes: dict[str, tuple[Path, int, bytes]] = {}
    for name, path in images.items():
        try:
            header, prefix = image_header(
                path,
                component=name,
                version=version,
                security_version=security_version,
                hardware_models=list(models),
            )
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from e
        envelopes[name] = (path, len(prefix) + header.payload_length, prefix)
    streams: dict[str, EnvelopeStream] = {}
    made: list[Manifest] = []

    def signed(name: str) -> ManifestImage:
        path, size, _ = envelopes[name]
        digest = streams[name].digest()
        if digest.length != size:
            raise IntegrityError(f"{path} changed while the bundle was built")
        signature = sign_firmware_digest(signer, digest)
        try:
            verify_firmware_signature(signing_certificate, digest, signature)
        except BadSignature as e:
            raise BadSignature(f"signing key {signer.uri} produced an invalid signature") from e
        return ManifestImage(
            component=name,
            path=image_path(name),
            sha256=digest.sha256,
            length=digest.length,
            signature=signature,
        )

    def manifest_json() -> bytes:
        # Called after the images went into the tar: their digests are known now.
        made.append(
            Manifest(
                version=version,
                security_version=security_version,
                hardware_models=models,
                created=format_created(created),
                notes=notes,
                release_class=release_class,
                customer=customer,
                images=tuple(signed(name) for name in sorted(envelopes)),
                attestations=listed,
            )
        )
        return made[0].to_json()

    try:
        with contextlib.ExitStack() as stack, new_file(out) as fh:
            for name, (path, _, prefix) in envelopes.items():
                streams[name] = EnvelopeStream(prefix, stack.enter_context(path.open("rb")))
            write_bundle_tar(
                fh,
                streams={
                    image_path(name): (envelopes[name][1], stream)  # type: ignore[misc]
                    for name, stream in streams.items()
                },
                blobs={
                    MANIFEST_NAME: manifest_json,
                    CERTIFICATE_NAME: pem.encode(),
                    **dict(attestations or {}),
                },
                mtime=int(created.timestamp()),
            )
    except OSError as e:
        raise TransportError(f"cannot write {out}: {e.strerror}") from e
    return made[0]
