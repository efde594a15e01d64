"""Binary deltas for a new release, from the releases the fleet actually runs.

When a release is uploaded, the server looks at the stations it can go to (its hardware
models, and its customer when it is locked to one), takes the firmware versions they report
(at most :data:`MAX_BASES`, the most common first), and for each version whose release it
holds makes a delta from that release's primary image to the new one
(:mod:`chargeward.release.delta`).  The delta is a blob like an image, and a target in the
release's TUF proposal (:func:`chargeward.publish.targets.release_targets`), so the approvers'
threshold signature covers it.

A delta is transport, never trust: the charger rebuilds the image from its running slot and
installs only what matches the image's own target and OCPP signature; a delta that does not
rebuild it is dropped and the full image downloaded.

An UpdateFirmware to a station that runs a version with a delta offers it in the firmware's
``customData`` (:class:`DeltaOffer`); a charger that does not know the extension downloads
``location`` as always.

    made = await make_release_deltas(db, blobs, release_id, workdir)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.errors import ChargewardError
from chargeward.model.firmware import primary_component
from chargeward.model.targets import delta_target_path, tenant_path
from chargeward.ocpp.base import VENDOR_ID
from chargeward.publish.targets import DeltaFacts
from chargeward.release.delta import make_delta
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Release, ReleaseDelta, ReleaseImage, Station

LOG = logging.getLogger("chargeward.deltas")
MAX_BASES = 4  # deltas per release: the most common running versions


@dataclass(frozen=True)
class DeltaOffer:
    """The delta a station may fetch instead of the full image: where, and its TUF target."""

    sha256: str
    length: int
    from_sha256: str
    target: str  # TUF target path (the charger checks the delta against it)


def custom_data(offer: DeltaOffer, location: str) -> dict[str, Any]:
    """UpdateFirmware's ``customData`` offering ``offer`` at ``location`` (snake_case: the
    OCPP layer writes it in camelCase, ``fromSha256``)."""
    return {
        "vendor_id": VENDOR_ID,
        "delta": {
            "location": location,
            "sha256": offer.sha256,
            "length": offer.length,
            "from_sha256": offer.from_sha256,
            "target": offer.target,
        },
    }


@dataclass(frozen=True)
class _Base:
    version: str
    image: ReleaseImage


async def _fleet_bases(s: AsyncSession, release: Release, image: ReleaseImage) -> list[_Base]:
    models = list(release.hardware_models["models"])
    q = (
        select(Station.firmware_version, func.count())
        .where(
            Station.model.in_(models),
            Station.firmware_version.is_not(None),
            Station.firmware_version != release.version,
        )
        .group_by(Station.firmware_version)
        .order_by(func.count().desc(), Station.firmware_version)
    )
    if release.customer is not None:
        q = q.where(Station.customer == release.customer)
    bases: list[_Base] = []
    for version, _ in (await s.execute(q)).all():
        rows = await s.scalars(
            select(ReleaseImage)
            .join(Release, Release.id == ReleaseImage.release_id)
            .where(Release.version == version, ReleaseImage.component == image.component)
            .order_by(Release.uploaded_at.desc())
            .limit(1)
        )
        base = rows.first()
        if base is not None and base.sha256 != image.sha256:
            bases.append(_Base(str(version), base))
        if len(bases) == MAX_BASES:
            break
    return bases


async def make_release_deltas(
    db: Database,
    blobs: BlobStore,
    release_id: str,
    workdir: Path,
    *,
    actor: str,
    now: dt.datetime,
) -> list[DeltaFacts]:
    """Make and keep the deltas of release ``release_id`` (see the module docstring).

    A delta that cannot be made is logged and skipped: the release goes out as full images.
    """
    async with db.session() as s:
        release = await s.get(Release, release_id)
        if release is None:
            return []
        images = list(
            (
                await s.scalars(select(ReleaseImage).where(ReleaseImage.release_id == release_id))
            ).all()
        )
        primary = primary_component(i.component for i in images)
        image = next(i for i in images if i.component == primary)
        bases = await _fleet_bases(s, release, image)
    made: list[DeltaFacts] = []
    for base in bases:
        if not blobs.has(base.image.sha256):
            continue
        with tempfile.TemporaryDirectory(prefix="delta-", dir=workdir) as tmp:
            out = Path(tmp) / "delta.cwdl"
            try:
                info = await asyncio.to_thread(
                    make_delta, blobs.path(base.image.sha256), blobs.path(image.sha256), out
                )
            except (ChargewardError, OSError) as e:
                LOG.warning("release %s: no delta from %s: %s", release_id[:12], base.version, e)
                continue
            blobs.put(out, info.sha256, info.length)
        made.append(
            DeltaFacts(
                component=image.component,
                from_version=base.version,
                from_sha256=base.image.sha256,
                from_length=base.image.length,
                sha256=info.sha256,
                length=info.length,
            )
        )
    if not made:
        return made
    async with db.session() as s:
        s.add_all(ReleaseDelta(release_id=release_id, **asdict(d)) for d in made)
        await audit.record(
            s,
            actor=actor,
            action="release.deltas",
            target=release_id,
            details={
                "deltas": [
                    {"from": d.from_version, "sha256": d.sha256, "length": d.length} for d in made
                ],
                "image_length": image.length,
            },
            now=now,
        )
    return made


async def release_deltas(s: AsyncSession, release_id: str) -> list[DeltaFacts]:
    rows = await s.scalars(
        select(ReleaseDelta)
        .where(ReleaseDelta.release_id == release_id)
        .order_by(ReleaseDelta.component, ReleaseDelta.from_version)
    )
    return [DeltaFacts(**{f.name: getattr(r, f.name) for f in fields(DeltaFacts)}) for r in rows]


async def offer_for(
    s: AsyncSession, release: Release, image: ReleaseImage, station: Station
) -> DeltaOffer | None:
    """The delta for ``station`` to ``image`` of ``release``, if it runs a version that has one."""
    if station.firmware_version is None or station.model is None:
        return None
    row = await s.get(ReleaseDelta, (release.id, image.component, station.firmware_version))
    if row is None:
        return None
    target = tenant_path(
        release.customer,
        delta_target_path(station.model, release.version, image.component, row.from_version),
    )
    return DeltaOffer(row.sha256, row.length, row.from_sha256, target)
