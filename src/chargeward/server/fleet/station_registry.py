"""The station registry: station ids, registration, connection state and open updates.

The lowest station queries, shared by the station reports (:mod:`chargeward.server.stations`)
and the rollout (:mod:`chargeward.server.rollout`).  Each function takes the caller's session
(one transaction) and, where time matters, ``now``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import cast

from sqlalchemy import Table, bindparam, desc, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.crypto import station_passwords
from chargeward.errors import Conflict, InvalidValue, NotFound
from chargeward.server.store.cluster_tables import StationPresence
from chargeward.server.store.tables import FirmwareUpdate, Station

# OCPP identifierString for the station identity in the URL: <= 48 characters, no ':'.
STATION_ID_RE = re.compile(r"^[A-Za-z0-9*_=+|@.-]{1,48}$")


def station_actor(station_id: str) -> str:
    return f"station:{station_id}"


def check_station_id(station_id: str) -> str:
    if not STATION_ID_RE.fullmatch(station_id):
        raise InvalidValue(
            "station id must be 1-48 characters of letters, digits and * _ = + | @ . -"
        )
    return station_id


async def find_station(s: AsyncSession, station_id: str) -> Station:
    row = await s.get(Station, station_id)
    if row is None:
        raise NotFound(f"no station {station_id!r}")
    return row


async def register_station(
    s: AsyncSession,
    station_id: str,
    *,
    actor: str,
    model: str | None = None,
    password: str | None = None,
    now: dt.datetime,
) -> str:
    """Register a station; returns its Basic-auth password (shown once, stored hashed)."""
    check_station_id(station_id)
    if await s.get(Station, station_id) is not None:
        raise Conflict(f"station {station_id!r} is already registered")
    password = password or station_passwords.generate_password()
    s.add(
        Station(
            id=station_id,
            password_hash=station_passwords.hash_station_secret(password),
            model=model,
            connected=False,
            connector_status={},
            created_at=now,
        )
    )
    await audit.record(
        s,
        actor=actor,
        action="station.register",
        target=station_id,
        details={"model": model},
        now=now,
    )
    return password


async def password_hash(s: AsyncSession, station_id: str) -> str | None:
    row = await s.get(Station, station_id)
    return row.password_hash if row else None


async def set_connected(
    s: AsyncSession,
    station_id: str,
    connected: bool,
    *,
    now: dt.datetime,
    node_id: str | None = None,
) -> bool:
    """Record a (dis)connection; returns whether the station has ever booted (B01).

    ``node_id`` (a cluster node recording a disconnection): not if another node holds the
    station now.  The station's row is locked first, then presence is read afresh: a node
    that took the station over records its presence before it records the connection, so
    either this sees that presence, or the takeover's "connected" is written after this
    and wins.  (Checked before, outside this transaction, a station back from a reboot on
    another node within milliseconds was left recorded as disconnected.)"""
    if not connected and node_id is not None:
        locked = await s.scalar(
            select(Station)
            .where(Station.id == station_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        elsewhere = await s.scalar(
            select(StationPresence.node_id)
            .where(StationPresence.station_id == station_id, StationPresence.node_id != node_id)
            .limit(1)
        )
        if locked is not None and elsewhere is not None:
            return locked.last_boot_reason is not None
    row = await find_station(s, station_id)
    row.connected = connected
    row.last_seen = now
    await audit.record(
        s,
        actor=station_actor(station_id),
        action="station.connect" if connected else "station.disconnect",
        target=station_id,
        now=now,
    )
    return row.last_boot_reason is not None


async def touch(s: AsyncSession, station_id: str, *, now: dt.datetime) -> None:
    row = await find_station(s, station_id)
    row.last_seen = now


async def touch_many(s: AsyncSession, seen: dict[str, dt.datetime]) -> None:
    """Set ``last_seen`` of many stations in one statement (executemany)."""
    if not seen:
        return
    table = cast(Table, Station.__table__)
    statement = (
        update(table).where(table.c.id == bindparam("station")).values(last_seen=bindparam("seen"))
    )
    conn = await s.connection()  # Core executemany; an unknown id just matches no row
    await conn.execute(statement, [{"station": k, "seen": v} for k, v in seen.items()])


OPEN_UPDATES = "chargeward.open_updates"  # session.info: {station id: [pending updates]}


async def latest_open_update(s: AsyncSession, station_id: str) -> FirmwareUpdate | None:
    cached = s.info.get(OPEN_UPDATES, {}).get(station_id)
    if cached is not None:  # prefetched for a group-commit batch (prefetch_reports)
        pending = [u for u in cached if u.outcome == "pending"]
        return max(pending, key=lambda u: u.id, default=None)
    q = (
        select(FirmwareUpdate)
        .where(FirmwareUpdate.station_id == station_id, FirmwareUpdate.outcome == "pending")
        .order_by(desc(FirmwareUpdate.id))
        .limit(1)
    )
    return (await s.scalars(q)).first()
