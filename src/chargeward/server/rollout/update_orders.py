"""Firmware update orders: create one, record the station's answer, show it.

:mod:`chargeward.server.rollout.updates` sends the order over OCPP.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.campaign import machine
from chargeward.errors import Conflict, NotFound
from chargeward.server.common.schemas import (
    UpdateView,
)
from chargeward.server.fleet import alerts
from chargeward.server.fleet.station_registry import (
    OPEN_UPDATES,
    find_station,
    latest_open_update,
    station_actor,
)
from chargeward.server.rollout import campaign_runs, deltas
from chargeward.server.rollout.release_catalog import dispatchable
from chargeward.server.store.tables import (
    FirmwareUpdate,
    Release,
)


@dataclass(frozen=True)
class UpdateOrder:
    """What the OCPP layer needs to send one UpdateFirmware."""

    request_id: int
    transaction_id: str
    station_id: str
    sha256: str
    signature: str
    signing_certificate_pem: str
    delta: deltas.DeltaOffer | None = None  # for a station running a version with a delta


async def create_update(
    s: AsyncSession,
    station_id: str,
    release_id: str,
    *,
    actor: str,
    now: dt.datetime,
    require_published: bool = True,
) -> UpdateOrder:
    """Record an UpdateFirmware for a station; with a TUF repository, only published releases."""
    station = await find_station(s, station_id)
    release, image = await dispatchable(s, release_id, require_published)
    models = release.hardware_models["models"]
    if station.model and station.model not in models:
        raise Conflict(
            f"release {release.version} is for {', '.join(models)}, "
            f"station {station_id} is a {station.model}"
        )
    if release.customer is not None and station.customer != release.customer:
        # The customer lock the charger checks against the TUF listing, kept here too:
        # a station without the reference agent would install whatever it is sent.
        raise Conflict(
            f"release {release.version} is locked to customer {release.customer}, "
            f"station {station_id} belongs to {station.customer or 'no customer'}"
        )
    if await latest_open_update(s, station_id) is not None:
        raise Conflict(f"station {station_id} has an update in progress")
    tid = audit.new_transaction_id()
    row = FirmwareUpdate(
        transaction_id=tid,
        station_id=station_id,
        release_id=release.id,
        component=image.component,
        requested_by=actor,
        outcome="pending",
        created_at=now,
        updated_at=now,
    )
    s.add(row)
    for key in (OPEN_UPDATES, alerts.PENDING_VERSIONS):  # prefetched: no longer the whole story
        s.info.pop(key, None)
    await s.flush()
    offer = await deltas.offer_for(s, release, image, station)
    await audit.record(
        s,
        actor=actor,
        action="firmware.update_requested",
        target=station_id,
        transaction_id=tid,
        details={
            "release_id": release.id,
            "version": release.version,
            "request_id": row.id,
            "sha256": image.sha256,
            **({"delta_sha256": offer.sha256, "delta_length": offer.length} if offer else {}),
        },
        now=now,
    )
    return UpdateOrder(
        row.id,
        tid,
        station_id,
        image.sha256,
        image.signature,
        release.signing_certificate_pem,
        offer,
    )


async def set_update_response(
    s: AsyncSession, request_id: int, response: str, *, now: dt.datetime
) -> None:
    row = await s.get(FirmwareUpdate, request_id)
    if row is None:
        raise NotFound(f"no firmware update {request_id}")
    row.response_status = response
    row.updated_at = now
    # Refused, or never delivered (NotConnected, NotDelivered, Error:...): this request is
    # over, so a campaign may send another within its attempts.  Unanswered (NoResponse) it
    # may still be at work on the station: open until the station says (machine, confirm).
    if response not in machine.ACCEPTED_RESPONSES | machine.UNANSWERED_RESPONSES:
        row.outcome = "failed"
    await audit.record(
        s,
        actor=station_actor(row.station_id),
        action="firmware.update_response",
        target=row.station_id,
        transaction_id=row.transaction_id,
        details={"status": response, "request_id": request_id},
        now=now,
    )
    await campaign_runs.on_station_event(
        s, row.station_id, machine.Response(now, response), request_id=request_id
    )


async def update_row_view(s: AsyncSession, row: FirmwareUpdate) -> UpdateView:
    version = (await s.scalar(select(Release.version).where(Release.id == row.release_id))) or ""
    return UpdateView(
        request_id=row.id,
        transaction_id=row.transaction_id,
        station_id=row.station_id,
        release_id=row.release_id,
        version=version,
        response_status=row.response_status,
        last_status=row.last_status,
        outcome=row.outcome,
        requested_by=row.requested_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def update_view(s: AsyncSession, transaction_id: str) -> UpdateView:
    row = (
        await s.scalars(
            select(FirmwareUpdate).where(FirmwareUpdate.transaction_id == transaction_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"no firmware update {transaction_id!r}")
    return await update_row_view(s, row)
