"""The release catalogue: stored releases, their files, publication and the dispatchable image.

Each function takes the caller's session (one transaction).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.errors import Conflict, NotFound
from chargeward.model.firmware import primary_component
from chargeward.model.reported import ReportedVersions, from_json
from chargeward.release.bundle import VerifiedBundle
from chargeward.server.common.schemas import (
    ReleaseDeltaView,
    ReleaseFilesView,
    ReleaseImageView,
    ReleaseView,
    ReportedVersionsView,
)
from chargeward.server.rollout import deltas, supply_chain
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.tables import (
    Proposal,
    Release,
    ReleaseImage,
)
from chargeward.server.store.vendor_tables import VendorRelease


async def store_release(
    s: AsyncSession,
    bundle: VerifiedBundle,
    blobs: BlobStore,
    *,
    actor: str,
    now: dt.datetime,
    bundle_sha256: str | None = None,
    reported: ReportedVersions | None = None,
) -> ReleaseView:
    """Keep a verified bundle: images into the blob store, the release and its supply-chain
    documents in the database (``bundle_sha256``: the digest of the file as uploaded;
    ``reported``: how its stations report its version, ADR 0037, checked against its models)."""
    release_id = bundle.manifest_sha256
    if await s.get(Release, release_id) is not None:
        raise Conflict(f"release {release_id[:12]} was already uploaded")
    m = bundle.manifest
    reported = reported or ReportedVersions()
    reported.check_models(m.hardware_models)
    for image in bundle.images:
        blobs.put(image.file, image.sha256, image.length)
    s.add(
        Release(
            id=release_id,
            version=m.version,
            security_version=m.security_version,
            hardware_models={"models": list(m.hardware_models)},
            signing_certificate_pem=bundle.signing_certificate_pem,
            manifest_json=m.to_json().decode(),
            uploaded_by=actor,
            uploaded_at=now,
            release_class=m.release_class,
            customer=m.customer,
            bundle_sha256=bundle_sha256,
            reported_versions=reported.to_json(),
        )
    )
    await s.flush()
    supply = await supply_chain.store_documents(
        s, release_id, m, bundle.attestations, actor=actor, now=now
    )
    for image in bundle.images:
        s.add(
            ReleaseImage(
                release_id=release_id,
                component=image.component,
                sha256=image.sha256,
                length=image.length,
                signature=image.signature,
            )
        )
    await audit.record(
        s,
        actor=actor,
        action="release.upload",
        target=release_id,
        details={
            "version": m.version,
            "security_version": m.security_version,
            "hardware_models": list(m.hardware_models),
            "images": {i.component: i.sha256 for i in bundle.images},
            "created": m.created,
            "bundle_sha256": bundle_sha256,
            **({"reported_versions": reported.document()} if reported else {}),
            **supply,
        },
        now=now,
    )
    await s.flush()
    return await release_view(s, release_id)


async def set_reported_versions(
    s: AsyncSession, release_id: str, reported: ReportedVersions, *, actor: str, now: dt.datetime
) -> ReleaseView:
    """Replace how the release's stations report its version (ADR 0037), e.g. for a release
    uploaded before its stations were seen booting with a vendor string.  Audited with the
    old and the new declaration; reports already received are not judged again."""
    row = await find_release(s, release_id)
    reported.check_models(tuple(row.hardware_models["models"]))
    old = from_json(row.reported_versions or "{}")
    row.reported_versions = reported.to_json()
    await audit.record(
        s,
        actor=actor,
        action="release.reported_versions",
        target=row.id,
        details={"version": row.version, "from": old.document(), "to": reported.document()},
        now=now,
    )
    await s.flush()
    return await release_view(s, row.id)


async def find_release(s: AsyncSession, release_id: str) -> Release:
    row = await s.get(Release, release_id)
    if row is None and len(release_id) < 64:
        matches = (
            await s.scalars(select(Release).where(Release.id.startswith(release_id)).limit(2))
        ).all()
        if len(matches) > 1:
            raise Conflict(f"release id prefix {release_id!r} is ambiguous")
        row = matches[0] if matches else None
    if row is None:
        raise NotFound(f"no release {release_id!r}")
    return row


async def release_view(s: AsyncSession, release_id: str) -> ReleaseView:
    row = await find_release(s, release_id)
    images = (
        await s.scalars(
            select(ReleaseImage)
            .where(ReleaseImage.release_id == row.id)
            .order_by(ReleaseImage.component)
        )
    ).all()
    state, targets_version = await publication(s, row.id)
    documents = await supply_chain.documents_of(s, row.id)
    return ReleaseView(
        id=row.id,
        version=row.version,
        security_version=row.security_version,
        hardware_models=list(row.hardware_models["models"]),
        uploaded_by=row.uploaded_by,
        uploaded_at=row.uploaded_at,
        release_class=row.release_class,
        customer=row.customer,
        state=state,
        targets_version=targets_version,
        bundle_sha256=row.bundle_sha256,
        provenance=(
            "vendor-supplied" if await s.get(VendorRelease, row.id) is not None else "chargeward"
        ),
        documents={name: d.sha256 for name, d in sorted(documents.items())},
        reported_versions={
            model: ReportedVersionsView(**entry)
            for model, entry in from_json(row.reported_versions or "{}").document().items()
        },
        deltas=[
            ReleaseDeltaView(
                component=d.component,
                from_version=d.from_version,
                from_sha256=d.from_sha256,
                from_length=d.from_length,
                sha256=d.sha256,
                length=d.length,
            )
            for d in await deltas.release_deltas(s, row.id)
        ],
        images=[
            ReleaseImageView(
                component=i.component, sha256=i.sha256, length=i.length, signature=i.signature
            )
            for i in images
        ],
    )


async def release_files(s: AsyncSession, release_id: str) -> ReleaseFilesView:
    """The manifest and signing certificate of a release, as uploaded."""
    row = await find_release(s, release_id)
    return ReleaseFilesView(
        release_id=row.id,
        manifest=row.manifest_json,
        signing_certificate=row.signing_certificate_pem,
    )


async def publication(s: AsyncSession, release_id: str) -> tuple[str, int | None]:
    """("published", targets version) or ("pending", None) for a release."""
    row = (
        await s.scalars(
            select(Proposal)
            .where(Proposal.release_id == release_id, Proposal.state == "published")
            .limit(1)
        )
    ).first()
    return ("published", row.targets_version) if row is not None else ("pending", None)


async def require_published_release(s: AsyncSession, release: Release) -> None:
    state, _ = await publication(s, release.id)
    if state != "published":
        raise Conflict(
            f"release {release.version} is not published: it needs approval "
            "(`chargeward release approve`) and `chargeward release publish` first"
        )


async def list_releases(s: AsyncSession) -> list[ReleaseView]:
    ids = (await s.scalars(select(Release.id).order_by(Release.uploaded_at))).all()
    return [await release_view(s, i) for i in ids]


DISPATCHABLE = "chargeward.dispatchable"  # session.info: {(release id, published?): rows}


async def dispatchable(
    s: AsyncSession, release_id: str, require_published: bool
) -> tuple[Release, ReleaseImage]:
    """The release and its primary image (the one UpdateFirmware sends), checked once per session (a
    campaign tick dispatches the same release to hundreds of stations in one session)."""
    cache: dict[tuple[str, bool], tuple[Release, ReleaseImage]] = s.info.setdefault(
        DISPATCHABLE, {}
    )
    if (release_id, require_published) in cache:
        return cache[release_id, require_published]
    release = await find_release(s, release_id)
    if require_published:
        await require_published_release(s, release)
    images = {
        i.component: i
        for i in await s.scalars(select(ReleaseImage).where(ReleaseImage.release_id == release.id))
    }
    if not images:
        raise NotFound(f"release {release.version} has no image")
    # OCPP carries one image, the primary; the reference agent takes the rest from TUF.
    image = images[primary_component(images)]
    cache[release_id, require_published] = release, image
    return release, image


async def primary_image(s: AsyncSession, release_id: str) -> ReleaseImage:
    """The image UpdateFirmware sends for ``release_id`` (its primary component)."""
    return (await dispatchable(s, release_id, False))[1]
