"""Vendors' own signed firmware on the server (ADR 0041): vendor roots per model, and vendor
images kept as releases with their signature and certificate exactly as shipped.

* :func:`add_root` / :func:`list_roots` / :func:`remove_root`: a vendor's manufacturer root
  registered for one hardware model, audited (``vendor_root.add`` / ``vendor_root.remove``).
* :func:`store_vendor_release`: a vendor image whose OCPP signature verified
  (:func:`chargeward.crypto.vendor.verify_vendor_image`) under the roots of every model it is
  for.  It becomes an ordinary release (campaigns, approvals, TUF and dispatch need nothing
  new): one image, the vendor's signature in ``release_images.signature``, the vendor's
  certificate in ``releases.signing_certificate_pem``, the image bytes as a blob, and a
  ``vendor_releases`` row as its provenance marker.  Its ``manifest_json`` is a manifest the
  server writes to describe it (the release id is that manifest's SHA-256); nothing re-signs.

Each function takes the caller's session (one transaction).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.crypto.pki import certificate_fingerprint, certificate_pem, load_certificate
from chargeward.crypto.signature import Digest
from chargeward.crypto.vendor import VendorSignature, verify_vendor_image
from chargeward.errors import Conflict, NotFound, UntrustedCertificate
from chargeward.model.firmware import check_models
from chargeward.release.manifest import (
    SBOM_NAME,
    Manifest,
    ManifestAttestation,
    ManifestImage,
    format_created,
    image_path,
)
from chargeward.server.common.schemas import ReleaseView
from chargeward.server.rollout import release_catalog, supply_chain
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.tables import Release, ReleaseImage
from chargeward.server.store.vendor_tables import VendorRelease, VendorRoot

VENDOR_SUPPLIED = "vendor-supplied"
CHARGEWARD_BUILT = "chargeward"
MAX_ROOTS_PER_MODEL = 8  # a vendor rotating its root holds two; eight is plenty


@dataclass(frozen=True)
class VendorRootView:
    model: str
    fingerprint: str
    subject: str
    not_after: dt.datetime
    added_by: str
    added_at: dt.datetime
    certificate_pem: str


@dataclass(frozen=True)
class VendorImage:
    """What the operator uploaded: the image (a file, with its digest) as the vendor shipped
    it, its OCPP signature and signing certificate, and the release facts."""

    file: Path
    digest: Digest
    signature: str
    signing_certificate_pem: str
    models: tuple[str, ...]
    version: str
    security_version: int = 0
    component: str = "main"
    documents: Mapping[str, bytes] | None = None  # optional SBOM / scan report / VEX


def _view(row: VendorRoot) -> VendorRootView:
    return VendorRootView(
        model=row.model,
        fingerprint=row.fingerprint,
        subject=row.subject,
        not_after=row.not_after,
        added_by=row.added_by,
        added_at=row.added_at,
        certificate_pem=row.certificate_pem,
    )


async def add_root(
    s: AsyncSession, model: str, root: x509.Certificate, *, actor: str, now: dt.datetime
) -> VendorRootView:
    """Register ``root`` (checked by :func:`chargeward.crypto.vendor.vendor_root`) for ``model``."""
    (model,) = check_models([model])
    fingerprint = certificate_fingerprint(root)
    if await s.get(VendorRoot, (model, fingerprint)) is not None:
        raise Conflict(f"vendor root {fingerprint[:16]} is already registered for {model}")
    if len(await _roots(s, model)) >= MAX_ROOTS_PER_MODEL:
        raise Conflict(f"{model} already has {MAX_ROOTS_PER_MODEL} vendor roots")
    row = VendorRoot(
        model=model,
        fingerprint=fingerprint,
        certificate_pem=certificate_pem(root),
        subject=root.subject.rfc4514_string()[:300],
        not_after=root.not_valid_after_utc,
        added_by=actor,
        added_at=now,
    )
    s.add(row)
    await audit.record(
        s,
        actor=actor,
        action="vendor_root.add",
        target=f"model:{model}",
        details={"fingerprint": fingerprint, "subject": row.subject},
        now=now,
    )
    await s.flush()
    return _view(row)


async def _roots(s: AsyncSession, model: str) -> list[VendorRoot]:
    rows = await s.scalars(
        select(VendorRoot).where(VendorRoot.model == model).order_by(VendorRoot.added_at)
    )
    return list(rows.all())


async def list_roots(s: AsyncSession, model: str | None = None) -> list[VendorRootView]:
    query = select(VendorRoot).order_by(VendorRoot.model, VendorRoot.added_at)
    if model is not None:
        query = query.where(VendorRoot.model == model)
    return [_view(r) for r in (await s.scalars(query)).all()]


async def remove_root(
    s: AsyncSession, model: str, fingerprint: str, *, actor: str, now: dt.datetime
) -> None:
    """Unregister a root; releases it verified stay (they were verified when uploaded)."""
    row = await s.get(VendorRoot, (model, fingerprint))
    if row is None:
        raise NotFound(f"no vendor root {fingerprint[:16]} for {model}")
    await s.delete(row)
    await audit.record(
        s,
        actor=actor,
        action="vendor_root.remove",
        target=f"model:{model}",
        details={"fingerprint": fingerprint, "subject": row.subject},
        now=now,
    )
    await s.flush()


async def verify_for_models(
    s: AsyncSession, image: VendorImage, *, now: dt.datetime
) -> VendorSignature:
    """The image's signature checked under the roots registered for each of its models."""
    checked: VendorSignature | None = None
    for model in check_models(image.models):
        roots = [load_certificate(r.certificate_pem) for r in await _roots(s, model)]
        if not roots:
            raise UntrustedCertificate(f"no vendor root is registered for model {model}")
        try:
            checked = verify_vendor_image(
                image.digest, image.signature, image.signing_certificate_pem, roots, now=now
            )
        except UntrustedCertificate as e:
            raise type(e)(f"model {model}: {e}") from e
    assert checked is not None  # check_models refuses an empty list
    return checked


def _manifest(image: VendorImage, checked: VendorSignature, now: dt.datetime) -> Manifest:
    documents = image.documents or {}
    return Manifest(
        version=image.version,
        security_version=image.security_version,
        hardware_models=image.models,
        created=format_created(now),
        notes=f"{VENDOR_SUPPLIED}: signed under vendor root {checked.root_fingerprint[:16]}",
        images=(
            ManifestImage(
                component=image.component,
                path=image_path(image.component),
                sha256=image.digest.sha256,
                length=image.digest.length,
                signature=checked.signature,
            ),
        ),
        attestations=tuple(ManifestAttestation.of(n, d) for n, d in sorted(documents.items())),
    )


async def store_vendor_release(
    s: AsyncSession,
    image: VendorImage,
    blobs: BlobStore,
    *,
    actor: str,
    now: dt.datetime,
) -> ReleaseView:
    """Verify and keep a vendor image as a release (see the module docstring)."""
    checked = await verify_for_models(s, image, now=now)
    same = await s.scalar(
        select(ReleaseImage.release_id)
        .join(VendorRelease, VendorRelease.release_id == ReleaseImage.release_id)
        .where(ReleaseImage.sha256 == image.digest.sha256)
        .limit(1)
    )
    if same is not None:
        raise Conflict(f"this vendor image was already uploaded as release {same[:12]}")
    manifest = _manifest(image, checked, now)
    release_id = manifest.release_id
    if await s.get(Release, release_id) is not None:
        raise Conflict(f"release {release_id[:12]} was already uploaded")
    blobs.put(image.file, image.digest.sha256, image.digest.length)  # byte for byte
    s.add(
        Release(
            id=release_id,
            version=manifest.version,
            security_version=manifest.security_version,
            hardware_models={"models": list(manifest.hardware_models)},
            signing_certificate_pem=checked.signing_certificate_pem,  # as shipped
            manifest_json=manifest.to_json().decode(),
            uploaded_by=actor,
            uploaded_at=now,
            release_class=manifest.release_class,
            customer=None,
        )
    )
    await s.flush()
    s.add(
        VendorRelease(
            release_id=release_id,
            root_fingerprint=checked.root_fingerprint,
            certificate_fingerprint=checked.certificate_fingerprint,
        )
    )
    documents = dict(image.documents or {})
    supply = await supply_chain.store_documents(
        s, release_id, manifest, documents, actor=actor, now=now
    )
    s.add(
        ReleaseImage(
            release_id=release_id,
            component=image.component,
            sha256=image.digest.sha256,
            length=image.digest.length,
            signature=checked.signature,  # as shipped: never re-signed
        )
    )
    await audit.record(
        s,
        actor=actor,
        action="release.upload",
        target=release_id,
        details={
            "version": manifest.version,
            "security_version": manifest.security_version,
            "hardware_models": list(manifest.hardware_models),
            "images": {image.component: image.digest.sha256},
            "created": manifest.created,
            "provenance": VENDOR_SUPPLIED,
            "vendor_root": checked.root_fingerprint,
            "signing_certificate": checked.certificate_fingerprint,
            **supply,
            **({} if SBOM_NAME in documents else {"sbom": "missing"}),
        },
        now=now,
    )
    await s.flush()
    return await release_catalog.release_view(s, release_id)
