"""What a station reports that a firmware service keeps for an operator to see, and nothing
decides on (ADR 0035): the last MeterValues per EVSE, NotifyEvent entries within a cap and an
age, the last complete NotifyReport device model.  Never audited; bounded per station.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward.limits import DEFAULT_SERVER_LIMITS, ServerLimits
from chargeward.server.fleet.station_registry import (
    find_station,
    touch,
)
from chargeward.server.store.tables import (
    StationEvent,
)


async def record_meter_values(
    s: AsyncSession,
    station_id: str,
    *,
    evse_id: int,
    timestamp: dt.datetime,
    sampled: list[dict[str, Any]],
    now: dt.datetime,
    limits: ServerLimits = DEFAULT_SERVER_LIMITS,
) -> None:
    """Keep the newest meter value of ``evse_id`` (an older one than kept is ignored); at most
    ``limits.meter_evses`` EVSEs and ``limits.meter_samples`` sampled values."""
    row = await find_station(s, station_id)
    row.last_seen = now
    kept = dict(row.meter_values)
    key = str(evse_id)
    old = kept.get(key)
    if old is not None and old.get("timestamp", "") > timestamp.isoformat():
        return
    if old is None and len(kept) >= limits.meter_evses:
        return  # more EVSEs than a charger has: the first ones reported are kept
    kept[key] = {
        "timestamp": timestamp.isoformat(),
        "sampled_value": sampled[: limits.meter_samples],
        "received_at": now.isoformat(),
    }
    row.meter_values = kept


async def record_station_events(
    s: AsyncSession,
    station_id: str,
    events: list[dict[str, Any]],
    *,
    now: dt.datetime,
    limits: ServerLimits = DEFAULT_SERVER_LIMITS,
) -> None:
    """Store NotifyEvent entries (``EventReport`` fields), then prune the station's rows to the
    newest ``limits.station_events`` within ``limits.station_event_age``."""
    await touch(s, station_id, now=now)
    for e in events[-limits.station_events :]:
        s.add(StationEvent(station_id=station_id, received_at=now, **e))
    newest = (
        select(StationEvent.id)
        .where(StationEvent.station_id == station_id)
        .order_by(StationEvent.id.desc())
        .limit(limits.station_events)
    )
    await s.execute(
        delete(StationEvent)
        .where(
            StationEvent.station_id == station_id,
            or_(
                StationEvent.received_at < now - limits.station_event_age,
                StationEvent.id.not_in(newest.scalar_subquery()),
            ),
        )
        .execution_options(synchronize_session=False)
    )


async def record_device_model(
    s: AsyncSession, station_id: str, model: dict[str, Any], *, now: dt.datetime
) -> None:
    """Keep a complete (assembled, bounded) NotifyReport as the station's device model."""
    row = await find_station(s, station_id)
    row.last_seen = now
    row.device_model = {**model, "received_at": now.isoformat()}


async def core_reports(
    s: AsyncSession, station_id: str, *, limit: int = 100, now: dt.datetime
) -> dict[str, Any]:
    """What the core messages left for an operator: last meter values per EVSE, the newest
    events (within the retention age) and the device model."""
    row = await find_station(s, station_id)
    age = DEFAULT_SERVER_LIMITS.station_event_age
    events = (
        await s.scalars(
            select(StationEvent)
            .where(StationEvent.station_id == station_id, StationEvent.received_at >= now - age)
            .order_by(StationEvent.id.desc())
            .limit(limit)
        )
    ).all()
    return {
        "station_id": station_id,
        "meter_values": dict(row.meter_values),
        "events": [
            {
                "event_id": e.event_id,
                "timestamp": e.timestamp.isoformat(),
                "trigger": e.trigger,
                "notification_type": e.notification_type,
                "component": e.component,
                "variable": e.variable,
                "actual_value": e.actual_value,
                "tech_code": e.tech_code,
                "tech_info": e.tech_info,
                "cleared": e.cleared,
                "received_at": e.received_at.isoformat(),
            }
            for e in events
        ],
        "device_model": row.device_model,
    }
