"""Verifying a release bundle: the only way to obtain a :class:`VerifiedBundle`.

Code that stores, offers or installs a release must hold a :class:`VerifiedBundle`, and must
get it from :func:`verify_bundle` and nowhere else: constructing one by hand skips every check
below.  The checks, in order (the first failure raises):

1. the tar holds only the expected regular files, within their size caps (:class:`BundleError`);
2. the manifest is strictly valid canonical JSON (:class:`BundleError`);
3. the signing certificate is a firmware-signing certificate issued directly by one of
   ``roots`` and valid now (:class:`UntrustedCertificate`, :class:`RevokedCertificate`);
4. each image's length and SHA-256 equal the manifest's (:class:`IntegrityError`);
5. each image's signature verifies with the certificate (:class:`BadSignature`);
6. each image's envelope is intact and its signed header agrees with the manifest on
   component, version, security version and hardware models (:class:`IntegrityError`);
7. each supply-chain attestation (SBOM, scan report, VEX) the manifest lists is present with
   the listed length and SHA-256, and none is unlisted (:class:`IntegrityError`).  What the
   documents say is judged elsewhere (:mod:`chargeward.supply`); here they are only bound to
   the release id.

    work = Path("work")
    verified = verify_bundle(Path("release.cwb"), [root], workdir=work)
    verified.manifest_sha256, verified.images[0].file
    # -> ('9f2c...', PosixPath('work/images/main.cwfw'))
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from chargeward.crypto.pki import (
    MAX_SIGNING_CERTIFICATE_CHARS,
    certificate_pem,
    load_certificates,
    verify_firmware_signing_certificate,
)
from chargeward.crypto.signature import Digest, verify_firmware_signature
from chargeward.errors import BadSignature, BundleError, ConfigError, Conflict, IntegrityError
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.model.firmware import ImageHeader
from chargeward.release.archive import (
    BundleMembers,
    copy_member,
    open_bundle,
    read_member,
    scan_members,
)
from chargeward.release.image import check_image
from chargeward.release.manifest import (
    CERTIFICATE_NAME,
    IMAGES_DIR,
    MANIFEST_NAME,
    Manifest,
    ManifestAttestation,
    ManifestImage,
)


@dataclass(frozen=True)
class VerifiedImage:
    """An extracted image whose digest, signature and header have been checked."""

    component: str
    file: Path
    sha256: str
    length: int
    signature: str
    header: ImageHeader


@dataclass(frozen=True)
class VerifiedBundle:
    """A release that passed :func:`verify_bundle`; obtain it from there only.

    ``manifest_sha256`` is the SHA-256 of ``manifest.json``, the release id.
    ``signing_certificate_pem`` is the single signing certificate re-encoded as PEM, ready
    for OCPP's ``UpdateFirmware.firmware.signingCertificate``.
    """

    manifest: Manifest
    manifest_sha256: str
    signing_certificate_pem: str
    images: tuple[VerifiedImage, ...]
    attestations: Mapping[str, bytes] = field(default_factory=dict)  # member name -> data

    @property
    def primary(self) -> VerifiedImage:
        """The image OCPP ``UpdateFirmware`` carries (:meth:`Manifest.primary`)."""
        component = self.manifest.primary.component
        return next(image for image in self.images if image.component == component)


def read_documents(bundle: Path) -> tuple[Manifest, bytes, dict[str, bytes]]:
    """The manifest, the signing certificate as stored and the supply-chain documents, each
    document checked against the digest the manifest lists; signatures are not checked.

    For showing a release (evidence packs): the structural checks of :func:`verify_bundle`,
    not its trust decision.
    """
    with open_bundle(bundle) as tar:
        members = scan_members(tar)
        manifest = _read_manifest(tar, members)
        _match_images(members, manifest)
        _match_attestations(members, manifest)
        certificate = read_member(
            tar, members.certificate, DEFAULT_FORMAT_LIMITS.archive_certificate_bytes
        )
        documents = {
            a.name: _read_attestation(tar, members.attestations[a.name], a)
            for a in manifest.attestations
        }
    return manifest, certificate, documents


def read_manifest(bundle: Path) -> Manifest:
    """Read the manifest of ``bundle`` without verifying anything it claims.

    The archive gets the same structural checks as in :func:`verify_bundle`; the result is
    only fit for display (``chargeward release show``).
    """
    with open_bundle(bundle) as tar:
        members = scan_members(tar)
        manifest = _read_manifest(tar, members)
        _match_images(members, manifest)
        _match_attestations(members, manifest)
        return manifest


def verify_bundle(
    bundle: Path,
    roots: list[x509.Certificate],
    *,
    workdir: Path,
    now: dt.datetime | None = None,
    revoked_serials: frozenset[int] = frozenset(),
    max_image_bytes: int = DEFAULT_FORMAT_LIMITS.bundle_image_bytes,
) -> VerifiedBundle:
    """Check ``bundle`` completely and extract it into ``workdir``.

    ``workdir`` is created if needed; the bundle's files are written as
    ``workdir/manifest.json``, ``workdir/signing-certificate.pem`` and
    ``workdir/images/<component>.cwfw`` and must not exist yet (:class:`Conflict`).  If any
    check fails, the files written so far are removed again.
    """
    created: list[Path] = []
    try:
        return _verify(bundle, roots, workdir, now, revoked_serials, max_image_bytes, created)
    except BaseException:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                if path.is_dir():
                    path.rmdir()
                else:
                    path.unlink()
        raise


def _verify(
    bundle: Path,
    roots: list[x509.Certificate],
    workdir: Path,
    now: dt.datetime | None,
    revoked_serials: frozenset[int],
    max_image_bytes: int,
    created: list[Path],
) -> VerifiedBundle:
    with open_bundle(bundle) as tar:
        members = scan_members(tar, max_image_bytes=max_image_bytes)
        manifest_raw = read_member(tar, members.manifest, DEFAULT_FORMAT_LIMITS.manifest_bytes)
        manifest = Manifest.from_json(manifest_raw)
        _match_images(members, manifest)
        _match_attestations(members, manifest)
        certificate = _signing_certificate(
            read_member(tar, members.certificate, DEFAULT_FORMAT_LIMITS.archive_certificate_bytes)
        )
        verify_firmware_signing_certificate(
            certificate, roots, now=now, revoked_serials=revoked_serials
        )
        images_dir = _prepare_workdir(workdir, created)
        for path, data in (
            (workdir / MANIFEST_NAME, manifest_raw),
            (workdir / CERTIFICATE_NAME, certificate_pem(certificate).encode("ascii")),
        ):
            _write_new(path, data)
            created.append(path)
        extracted: list[tuple[ManifestImage, Path, Digest]] = []
        for image in manifest.images:
            dest = images_dir / Path(image.path).name
            digest = copy_member(tar, members.images[image.path], dest)
            created.append(dest)
            extracted.append((image, dest, digest))
        attestations = {
            a.name: _read_attestation(tar, members.attestations[a.name], a)
            for a in manifest.attestations
        }
        for name, data in attestations.items():
            _write_new(workdir / name, data)
            created.append(workdir / name)
    verified = tuple(
        _verify_image(manifest, image, dest, digest, certificate)
        for image, dest, digest in extracted
    )
    return VerifiedBundle(
        manifest=manifest,
        manifest_sha256=hashlib.sha256(manifest_raw).hexdigest(),
        signing_certificate_pem=certificate_pem(certificate),
        images=verified,
        attestations=attestations,
    )


def _read_attestation(
    tar: tarfile.TarFile, member: tarfile.TarInfo, listed: ManifestAttestation
) -> bytes:
    data = read_member(tar, member, DEFAULT_FORMAT_LIMITS.attestation_bytes)
    if hashlib.sha256(data).hexdigest() != listed.sha256:
        raise IntegrityError(f"member {listed.name!r}: SHA-256 differs from the manifest")
    return data


def _match_attestations(members: BundleMembers, manifest: Manifest) -> None:
    listed = {a.name: a for a in manifest.attestations}
    unlisted = sorted(members.attestations.keys() - listed.keys())
    if unlisted:
        raise BundleError(f"member {unlisted[0]!r}: unexpected member, not listed in the manifest")
    missing = sorted(listed.keys() - members.attestations.keys())
    if missing:
        raise BundleError(f"member {missing[0]!r}: listed in the manifest but not in the bundle")
    for name, attestation in listed.items():
        size = members.attestations[name].size
        if size != attestation.length:
            raise IntegrityError(
                f"member {name!r}: {size} bytes, but the manifest says {attestation.length}"
            )


def _read_manifest(tar: tarfile.TarFile, members: BundleMembers) -> Manifest:
    return Manifest.from_json(
        read_member(tar, members.manifest, DEFAULT_FORMAT_LIMITS.manifest_bytes)
    )


def _match_images(members: BundleMembers, manifest: Manifest) -> None:
    listed = {image.path for image in manifest.images}
    unlisted = sorted(members.images.keys() - listed)
    if unlisted:
        raise BundleError(f"member {unlisted[0]!r}: unexpected member, not listed in the manifest")
    missing = sorted(listed - members.images.keys())
    if missing:
        raise BundleError(f"member {missing[0]!r}: listed in the manifest but not in the bundle")
    for image in manifest.images:
        size = members.images[image.path].size
        if size != image.length:
            raise IntegrityError(
                f"member {image.path!r}: {size} bytes, but the manifest says {image.length}"
            )


def _signing_certificate(pem: bytes) -> x509.Certificate:
    certificates = load_certificates(pem)
    if len(certificates) != 1:
        raise BundleError(
            f"member {CERTIFICATE_NAME!r}: holds {len(certificates)} certificates; "
            "expected exactly one"
        )
    certificate = certificates[0]
    if len(certificate_pem(certificate)) > MAX_SIGNING_CERTIFICATE_CHARS:
        raise BundleError(
            f"member {CERTIFICATE_NAME!r}: longer than the {MAX_SIGNING_CERTIFICATE_CHARS} "
            "characters OCPP allows"
        )
    return certificate


def _prepare_workdir(workdir: Path, created: list[Path]) -> Path:
    try:
        if not workdir.exists():
            workdir.mkdir(parents=True)
            created.append(workdir)
        images_dir = workdir / IMAGES_DIR
        if not images_dir.exists() and not images_dir.is_symlink():
            images_dir.mkdir()
            created.append(images_dir)
    except OSError as e:
        raise ConfigError(f"cannot prepare work directory {workdir}: {e.strerror}") from e
    if images_dir.is_symlink() or not images_dir.is_dir():
        raise ConfigError(f"{images_dir} exists and is not a plain directory")
    return images_dir


def _write_new(path: Path, data: bytes) -> None:
    try:
        with path.open("xb") as fh:
            fh.write(data)
    except FileExistsError as e:
        raise Conflict(f"{path} already exists; use an empty work directory") from e
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}") from e


def _verify_image(
    manifest: Manifest,
    image: ManifestImage,
    file: Path,
    digest: Digest,
    certificate: x509.Certificate,
) -> VerifiedImage:
    if digest.length != image.length:
        raise IntegrityError(
            f"{image.path}: {digest.length} bytes, but the manifest says {image.length}"
        )
    if digest.sha256 != image.sha256:
        raise IntegrityError(f"{image.path}: SHA-256 {digest.sha256} differs from the manifest")
    try:
        verify_firmware_signature(certificate, digest, image.signature)
    except BadSignature as e:
        raise BadSignature(f"{image.path}: {e}") from e
    try:
        header = check_image(file)
    except (BundleError, IntegrityError) as e:
        raise type(e)(f"{image.path}: {e}") from e
    expected = {
        "component": image.component,
        "version": manifest.version,
        "security_version": manifest.security_version,
        "hardware_models": manifest.hardware_models,
    }
    for name, value in expected.items():
        actual = getattr(header, name)
        if actual != value:
            raise IntegrityError(
                f"{image.path}: the signed image header has {name} {actual!r}, "
                f"but the manifest says {value!r}"
            )
    return VerifiedImage(
        component=image.component,
        file=file,
        sha256=digest.sha256,
        length=digest.length,
        signature=image.signature,
        header=header,
    )
