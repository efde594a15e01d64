"""How each station gets its UpdateFirmware (ADR 0042): ``ocpp`` (Chargeward is its CSMS) or
``external`` (the operator's own CSMS sends what ``GET /api/v1/integration/pending`` lists).

    await set_delivery(s, "CP-1", "external", actor="alice", now=now)
    await external_among(s, ["CP-1", "CP-2"])   # {"CP-1"}
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.errors import InvalidValue
from chargeward.server.fleet.station_registry import find_station
from chargeward.server.store.integration_tables import StationDelivery

OCPP = "ocpp"
EXTERNAL = "external"
DELIVERIES = (OCPP, EXTERNAL)


async def delivery_of(s: AsyncSession, station_id: str) -> str:
    row = await s.get(StationDelivery, station_id)
    return row.delivery if row is not None else OCPP


async def external_among(s: AsyncSession, station_ids: Iterable[str]) -> set[str]:
    """Those of ``station_ids`` an external CSMS delivers to."""
    ids = sorted(set(station_ids))
    if not ids:
        return set()
    found = await s.scalars(
        select(StationDelivery.station_id).where(
            StationDelivery.station_id.in_(ids), StationDelivery.delivery == EXTERNAL
        )
    )
    return set(found.all())


async def set_delivery(
    s: AsyncSession, station_id: str, delivery: str, *, actor: str, now: dt.datetime
) -> str:
    """Mark how ``station_id`` is delivered; audited.  Returns the delivery."""
    if delivery not in DELIVERIES:
        raise InvalidValue(f"delivery must be one of {', '.join(DELIVERIES)}, not {delivery!r}")
    await find_station(s, station_id)
    row = await s.get(StationDelivery, station_id)
    before = row.delivery if row is not None else OCPP
    if row is None:
        s.add(StationDelivery(station_id=station_id, delivery=delivery, updated_at=now))
    else:
        row.delivery, row.updated_at = delivery, now
    await audit.record(
        s,
        actor=actor,
        action="station.delivery_set",
        target=station_id,
        details={"delivery": delivery, "before": before},
        now=now,
    )
    return delivery
