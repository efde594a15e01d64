"""Station reports: boots, status notifications, firmware status, security events, views.

What the OCPP handlers record for a station (each call one transaction, prefetched in batches by
:mod:`chargeward.server.stations.group_commit`), and the station views the API shows.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.campaign import machine
from chargeward.model.reported import Brings, reports_release
from chargeward.ocpp.csms16 import BOOT_REASON as BOOT_REASON_16
from chargeward.ocpp.csms16 import OCPP_VERSION as OCPP_16
from chargeward.ocpp.security_events import chargeward_event
from chargeward.server.common.schemas import (
    BootView,
    DownloadsView,
    FirmwareStatusView,
    StationDetail,
    StationSummary,
)
from chargeward.server.fleet import alerts, fleet
from chargeward.server.fleet.station_registry import (
    OPEN_UPDATES,
    find_station,
    latest_open_update,
    station_actor,
    touch,
)
from chargeward.server.rollout import campaign_runs, link_budget
from chargeward.server.rollout.update_orders import update_row_view
from chargeward.server.stations.write_budget import SuppressedEvents
from chargeward.server.store.tables import (
    BootEvent,
    FirmwareStatusEvent,
    FirmwareUpdate,
    Release,
    SecurityEvent,
    Station,
)
from chargeward.storage.appends import queue_insert

LOG = logging.getLogger("chargeward.server")

FAILED_STATUSES = frozenset(
    {"DownloadFailed", "InstallationFailed", "InstallVerificationFailed", "InvalidSignature"}
)


async def record_boot(
    s: AsyncSession,
    station_id: str,
    *,
    reason: str,
    firmware_version: str | None,
    model: str | None,
    vendor: str | None,
    serial_number: str | None,
    now: dt.datetime,
    admitted: bool = True,
    closed: SuppressedEvents | None = None,
) -> None:
    """Store and audit a BootNotification.

    ``admitted`` False: the station is over its boot budget (ADR 0027, the listener's
    :class:`StationWriteBudget`); the boot only moves ``last_seen`` and is counted in the
    window's ``station.boots_suppressed`` summary (``closed``: the summary of a window the
    boot ended).  What it reports waits for a boot within a budget.
    """
    if closed is not None:
        await record_suppressed_events(s, closed, now=now)
    if not admitted:
        await touch(s, station_id, now=now)
        return
    row = await find_station(s, station_id)
    previous = row.firmware_version
    row.firmware_version = firmware_version
    await _check_identity(
        s, row, {"model": model, "vendor": vendor, "serial_number": serial_number}, now=now
    )
    row.last_boot_reason = reason
    row.last_seen = now
    if row.active_transactions:  # OCPP 2.0.1: no session survives a reboot unreported
        await _close_sessions(
            s, row, {}, f"BootNotification ({reason}): the station rebooted", now=now
        )
    queue_insert(
        s,
        BootEvent,
        {
            "station_id": station_id,
            "reason": reason,
            "firmware_version": firmware_version,
            "model": model,
            "vendor": vendor,
            "received_at": now,
        },
    )
    # Only a boot after an update belongs to the update's transaction (one query fewer for
    # every other boot: a storm of them follows each outage).
    update = await latest_open_update(s, station_id) if reason == "FirmwareUpdate" else None
    if reason == BOOT_REASON_16 and row.ocpp_version == OCPP_16:
        reason, update = await _boot_16(s, row, firmware_version)
    await audit.record(
        s,
        actor=station_actor(station_id),
        action="station.boot",
        target=station_id,
        transaction_id=update.transaction_id if update else None,
        details={
            "reason": reason,
            "firmware_version": firmware_version,
            "previous_version": previous,
        },
        now=now,
    )
    if firmware_version:
        await fleet.record_reported_firmware(
            s, row, {alerts.MAIN_COMPONENT: firmware_version}, now=now
        )
    versions = dict(row.reported_firmware or {})
    await campaign_runs.on_station_event(s, station_id, machine.Boot(now, reason, versions))


async def _boot_16(
    s: AsyncSession, row: Station, firmware_version: str | None
) -> tuple[str, FirmwareUpdate | None]:
    """A 1.6 BootNotification says no reason (ADR 0039): it is the boot after an update when
    the station has one open and reports that release's version; campaigns then see reason
    ``FirmwareUpdate`` (and soak).  Any other stays ``Unknown``."""
    update = await latest_open_update(s, row.id)
    release = await s.get(Release, update.release_id) if update is not None else None
    if release is not None and reports_release(release, row.model, firmware_version):
        return "FirmwareUpdate", update
    return BOOT_REASON_16, None


_IDENTITY_LENGTHS = {"model": 20, "vendor": 50, "serial_number": 25}


async def _check_identity(
    s: AsyncSession, row: Station, reported: dict[str, str | None], *, now: dt.datetime
) -> None:
    """The registry is the authority on what a station is (ADR 0027).

    A reported model, vendor or serial number fills a registry field that has no value yet
    (the first boot of a station registered without it); one that differs from the registry,
    or a serial number another station is registered with, changes nothing and raises a
    ``station_identity`` alert (its audit entry ``station.identity_mismatch``).
    """
    for field, value in reported.items():
        if not value:
            continue
        value = value[: _IDENTITY_LENGTHS[field]]
        registered = getattr(row, field)
        if registered == value:
            continue
        conflict = None
        if field == "serial_number":
            conflict = (
                await s.scalars(
                    select(Station.id)
                    .where(Station.serial_number == value, Station.id != row.id)
                    .limit(1)
                )
            ).first()
        if registered is None and conflict is None:
            setattr(row, field, value)
            continue
        await alerts.identity_mismatch(
            s,
            row.id,
            field=field,
            registered=registered,
            reported=value,
            conflict=conflict,
            now=now,
        )


async def record_connector_status(
    s: AsyncSession,
    station_id: str,
    *,
    evse_id: int,
    connector_id: int,
    status: str,
    now: dt.datetime,
) -> None:
    row = await find_station(s, station_id)
    row.connector_status = {**row.connector_status, f"{evse_id}/{connector_id}": status}
    row.last_seen = now
    evse = str(evse_id)
    if status == "Available" and evse in row.active_transactions and _evse_free(row, evse):
        left = {e: t for e, t in row.active_transactions.items() if e != evse}
        await _close_sessions(
            s, row, left, f"EVSE {evse_id}: every connector reports Available", now=now
        )
    if status == "Faulted":  # unhealthy: fails a station soaking a new image
        await campaign_runs.on_station_event(
            s, station_id, machine.Fault(now, "connector_faulted", f"{evse_id}/{connector_id}")
        )


def _evse_free(row: Station, evse: str) -> bool:
    """Every connector of ``evse`` the station reported is ``Available``: no car is plugged
    in, so no session runs there (OCPP 2.0.1 ConnectorStatusEnumType)."""
    mine = [v for k, v in row.connector_status.items() if k.split("/")[0] == evse]
    return bool(mine) and all(v == "Available" for v in mine)


async def _close_sessions(
    s: AsyncSession, row: Station, left: dict[str, Any], why: str, *, now: dt.datetime
) -> None:
    """Forget sessions whose end the station never reported (a TransactionEvent(Ended) lost
    with a connection or a node): the station's own state says they are over.  Without this a
    station stays "charging" for ever, and campaigns defer it until their ``max_deferral``."""
    closed = {e: t for e, t in row.active_transactions.items() if e not in left}
    row.active_transactions = dict(left)
    LOG.info("%s: session(s) %s closed by reconciliation: %s", row.id, closed, why)
    await audit.record(
        s,
        actor=audit.SYSTEM,
        action="station.sessions_reconciled",
        target=row.id,
        details={"closed": closed, "reason": why},
        now=now,
    )
    if not left:  # deadlines run again (OCPP L01.FR.06), as after a reported end
        await campaign_runs.on_station_event(s, row.id, machine.Charging(now, False))


async def record_transactions(
    s: AsyncSession, station_id: str, active: dict[str, str], *, now: dt.datetime
) -> None:
    """Store the transactions running now ({evse id: transaction id}, OCPP E01)."""
    row = await find_station(s, station_id)
    was_charging = bool(row.active_transactions)
    row.active_transactions = dict(active)
    row.last_seen = now
    if bool(active) != was_charging:  # deadlines stop while charging (OCPP L01.FR.06)
        await campaign_runs.on_station_event(s, station_id, machine.Charging(now, bool(active)))


@dataclass(frozen=True)
class ReportKeys:
    """What a batch of station reports will read, so it can be loaded in a few queries."""

    stations: frozenset[str] = frozenset()
    requests: frozenset[int] = frozenset()  # FirmwareUpdate ids (OCPP requestId)
    open_updates: frozenset[str] = frozenset()  # stations whose pending update is looked up
    alerts: frozenset[str] = frozenset()  # stations whose unresolved alerts are looked up


async def prefetch_reports(s: AsyncSession, keys: ReportKeys) -> list[object]:
    """Load what the reports of a group-commit batch read: their stations, the updates their
    requestIds name, pending updates, unresolved alerts and live campaign runs.  Afterwards
    the reports' own reads come from the session's identity map and caches, so the batch's
    writes reach the database together at commit (one executemany per table), not one by one.

    Returns the loaded rows: the identity map holds unchanged rows weakly, so the caller keeps
    the list for the batch.
    """
    keep: list[object] = []
    if keys.stations:
        stations = (
            await s.scalars(select(Station).where(Station.id.in_(sorted(keys.stations))))
        ).all()
        keep.extend(stations)
        await campaign_runs.prefetch_runs(
            s, [st.id for st in stations if st.campaign_id is not None]
        )
    if keys.requests:
        q = select(FirmwareUpdate).where(FirmwareUpdate.id.in_(sorted(keys.requests)))
        keep.extend((await s.scalars(q)).all())
    if keys.open_updates:
        with_version = (
            select(FirmwareUpdate, Release.version, Release.reported_versions)
            .join(Release, Release.id == FirmwareUpdate.release_id)
            .where(
                FirmwareUpdate.station_id.in_(sorted(keys.open_updates)),
                FirmwareUpdate.outcome == "pending",
            )
        )
        pending: dict[str, list[FirmwareUpdate]] = {sid: [] for sid in keys.open_updates}
        versions: dict[str, list[tuple[FirmwareUpdate, Brings]]] = {
            sid: [] for sid in keys.open_updates
        }
        for u, version, declared in (await s.execute(with_version)).all():
            pending[u.station_id].append(u)
            versions[u.station_id].append((u, Brings(version, declared)))
            keep.append(u)
        s.info[OPEN_UPDATES] = pending
        s.info[alerts.PENDING_VERSIONS] = versions  # what explains a new version (drift)
    if keys.alerts:
        keep.extend(await alerts.prefetch_unresolved(s, sorted(keys.alerts)))
    return keep


async def record_firmware_status(
    s: AsyncSession,
    station_id: str,
    *,
    status: str,
    request_id: int | None,
    now: dt.datetime,
    note: str | None = None,
) -> None:
    """Store a FirmwareStatusNotification and advance the update it belongs to (``note``:
    what the charger added, kept in the audit entry)."""
    await touch(s, station_id, now=now)
    update = None
    if request_id is not None:
        update = await s.get(FirmwareUpdate, request_id)
        if update is not None and update.station_id != station_id:
            update = None  # a station cannot report on another station's request
    if update is not None:
        update.last_status = status
        update.updated_at = now
        if status == "Installed":
            update.outcome = "succeeded"
        elif status in FAILED_STATUSES:
            update.outcome = "failed"
        elif status in machine.PROGRESS_STATUSES and update.outcome == "timed_out":
            update.outcome = "pending"  # given up on too early: the station works on it
    tid = update.transaction_id if update else None
    queue_insert(
        s,
        FirmwareStatusEvent,
        {
            "station_id": station_id,
            "request_id": request_id,
            "transaction_id": tid,
            "status": status,
            "received_at": now,
        },
    )
    await audit.record(
        s,
        actor=station_actor(station_id),
        action="station.firmware_status",
        target=station_id,
        transaction_id=tid,
        details={"status": status, "request_id": request_id, **({"note": note} if note else {})},
        now=now,
    )
    if request_id is not None or status == machine.IDLE:  # Idle names no request
        await campaign_runs.on_station_event(
            s, station_id, machine.Status(now, status), request_id=request_id
        )


async def record_owner_notification(
    s: AsyncSession, station_id: str, notice: dict[str, Any], *, now: dt.datetime
) -> None:
    """A charger's notice for its owner (tamper quarantine): kept in the audit log."""
    await touch(s, station_id, now=now)
    LOG.warning("%s: owner notification: %s", station_id, notice.get("message", notice))
    await audit.record(
        s,
        actor=station_actor(station_id),
        action="station.owner_notification",
        target=station_id,
        details={k: str(v)[:512] for k, v in notice.items()},
        now=now,
    )


async def record_suppressed_events(
    s: AsyncSession, summary: SuppressedEvents, *, now: dt.datetime
) -> None:
    await audit.record(
        s,
        actor=station_actor(summary.station_id),
        action=summary.action,
        target=summary.station_id,
        details={
            "suppressed": sum(summary.types.values()),
            "types": summary.types,
            "window_started_at": summary.window_started_at.isoformat(),
            "budget": summary.budget,
        },
        now=now,
    )


async def record_security_event(
    s: AsyncSession,
    station_id: str,
    *,
    type: str,
    timestamp: dt.datetime,
    tech_info: str | None,
    now: dt.datetime,
    admitted: bool = True,
    closed: SuppressedEvents | None = None,
) -> None:
    await touch(s, station_id, now=now)
    if closed is not None:
        await record_suppressed_events(s, closed, now=now)
    # A Chargeward agent sends its own events as OCPP-listed types with the name first in
    # techInfo; older agents sent the name as the type.  Both are stored under the name.
    sent_as = type
    type, tech_info = chargeward_event(type, tech_info)
    if not admitted:  # over budget: counted only; a critical type still reaches its alert
        if alerts.SECURITY_EVENT_ALERTS.get(type) == "critical":
            await alerts.on_security_event(
                s, station_id, type=type, tech_info=tech_info, timestamp=timestamp, now=now
            )
            await campaign_runs.on_station_event(
                s, station_id, machine.Fault(now, "security_event", type)
            )
        return
    s.add(
        SecurityEvent(
            station_id=station_id,
            type=type,
            timestamp=timestamp,
            tech_info=tech_info,
            received_at=now,
        )
    )
    update = await latest_open_update(s, station_id)
    await audit.record(
        s,
        actor=station_actor(station_id),
        action="station.security_event",
        target=station_id,
        transaction_id=update.transaction_id if update else None,
        details={
            "type": type,
            "tech_info": tech_info,
            "timestamp": timestamp.isoformat(),
            **({"ocpp_type": sent_as} if sent_as != type else {}),
        },
        now=now,
    )
    await alerts.on_security_event(
        s,
        station_id,
        type=type,
        tech_info=tech_info,
        timestamp=timestamp,
        now=now,
        transaction_id=update.transaction_id if update else None,
    )
    if type == ROLLED_BACK_EVENT:
        fault = machine.Fault(now, "rolled_back", (tech_info or "")[:200])
    elif alerts.SECURITY_EVENT_ALERTS.get(type) == "critical":
        fault = machine.Fault(now, "security_event", type)
    else:
        return
    await campaign_runs.on_station_event(s, station_id, fault)


ROLLED_BACK_EVENT = "FirmwareUpdateRolledBack"  # the agent fell back to its old slot


async def list_stations(
    s: AsyncSession, filters: fleet.StationFilter | None = None
) -> list[StationSummary]:
    """Stations with their registry fields, optionally filtered (see ``fleet.StationFilter``)."""
    return await fleet.list_stations(s, filters)


async def station_detail(
    s: AsyncSession, station_id: str, *, limit: int = 50, now: dt.datetime | None = None
) -> StationDetail:
    row = await find_station(s, station_id)
    fs = (
        await s.scalars(
            select(FirmwareStatusEvent)
            .where(FirmwareStatusEvent.station_id == station_id)
            .order_by(FirmwareStatusEvent.id)
            .limit(limit)
        )
    ).all()
    se = (
        await s.scalars(
            select(SecurityEvent)
            .where(SecurityEvent.station_id == station_id)
            .order_by(SecurityEvent.id)
            .limit(limit)
        )
    ).all()
    boots = (
        await s.scalars(
            select(BootEvent)
            .where(BootEvent.station_id == station_id)
            .order_by(BootEvent.id)
            .limit(limit)
        )
    ).all()
    updates = (
        await s.scalars(
            select(FirmwareUpdate)
            .where(FirmwareUpdate.station_id == station_id)
            .order_by(FirmwareUpdate.id)
            .limit(limit)
        )
    ).all()
    summary = (await fleet.summaries(s, [row]))[0]
    support = await fleet.support_report(
        s,
        today=now.date() if now else dt.datetime.now(dt.UTC).date(),
        within_days=180,
        station_id=station_id,
    )
    return StationDetail(
        **summary.model_dump(),
        connector_status=dict(row.connector_status),
        available_update=row.available_update,
        alerts=await alerts.list_alerts(s, station_id=station_id, state="active"),
        support=support[0] if support else None,
        logs=f"/api/v1/stations/{station_id}/logs",
        firmware_statuses=[
            FirmwareStatusView(
                status=e.status,
                request_id=e.request_id,
                transaction_id=e.transaction_id,
                received_at=e.received_at,
            )
            for e in fs
        ],
        security_events=[alerts.event_view(e) for e in se],
        boots=[
            BootView(
                reason=b.reason, firmware_version=b.firmware_version, received_at=b.received_at
            )
            for b in boots
        ],
        updates=[await update_row_view(s, u) for u in updates],
        downloads=DownloadsView(**await link_budget.station_usage(s, station_id)),
    )
