"""Server services: every read and write the API and the OCPP handlers need.

Routes and protocol handlers call these; none of them builds a query itself.  Each function
takes the caller's session (one transaction) and, where time matters, ``now``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, desc, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.campaign import machine
from chargeward.errors import Conflict, NotFound
from chargeward.model.firmware import primary_component
from chargeward.release.bundle import VerifiedBundle
from chargeward.server import (
    alerts,
    campaigns,
    deltas,
    fleet,
    link_budget,
    passwords,
    supply_chain,
    tokens,
)
from chargeward.server.appends import queue_insert
from chargeward.server.blobs import BlobStore
from chargeward.server.schemas import (
    BootView,
    DownloadsView,
    FirmwareStatusView,
    ReleaseDeltaView,
    ReleaseFilesView,
    ReleaseImageView,
    ReleaseView,
    StationDetail,
    StationSummary,
    UpdateView,
)
from chargeward.server.tables import (
    BootEvent,
    FirmwareStatusEvent,
    FirmwareUpdate,
    Proposal,
    Release,
    ReleaseImage,
    SecurityEvent,
    Station,
)

LOG = logging.getLogger("chargeward.server")

# OCPP identifierString for the station identity in the URL: <= 48 characters, no ':'.
STATION_ID_RE = re.compile(r"^[A-Za-z0-9*_=+|@.-]{1,48}$")
FAILED_STATUSES = frozenset(
    {"DownloadFailed", "InstallationFailed", "InstallVerificationFailed", "InvalidSignature"}
)


def station_actor(station_id: str) -> str:
    return f"station:{station_id}"


def check_station_id(station_id: str) -> str:
    if not STATION_ID_RE.fullmatch(station_id):
        raise ValueError(
            "station id must be 1-48 characters of letters, digits and * _ = + | @ . -"
        )
    return station_id


async def _station(s: AsyncSession, station_id: str) -> Station:
    row = await s.get(Station, station_id)
    if row is None:
        raise NotFound(f"no station {station_id!r}")
    return row


# -- stations -------------------------------------------------------------------------------


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
    password = password or passwords.generate_password()
    s.add(
        Station(
            id=station_id,
            password_hash=passwords.hash_station_secret(password),
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
    s: AsyncSession, station_id: str, connected: bool, *, now: dt.datetime
) -> bool:
    """Record a (dis)connection; returns whether the station has ever booted (B01)."""
    row = await _station(s, station_id)
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
    row = await _station(s, station_id)
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
    row = await _station(s, station_id)
    previous = row.firmware_version
    row.firmware_version = firmware_version
    await _check_identity(
        s, row, {"model": model, "vendor": vendor, "serial_number": serial_number}, now=now
    )
    row.last_boot_reason = reason
    row.last_seen = now
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
    update = await _latest_open_update(s, station_id) if reason == "FirmwareUpdate" else None
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
    await campaigns.on_station_event(s, station_id, machine.Boot(now, reason, versions))


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
    row = await _station(s, station_id)
    row.connector_status = {**row.connector_status, f"{evse_id}/{connector_id}": status}
    row.last_seen = now
    if status == "Faulted":  # unhealthy: fails a station soaking a new image
        await campaigns.on_station_event(
            s, station_id, machine.Fault(now, "connector_faulted", f"{evse_id}/{connector_id}")
        )


async def record_transactions(
    s: AsyncSession, station_id: str, active: dict[str, str], *, now: dt.datetime
) -> None:
    """Store the transactions running now ({evse id: transaction id}, OCPP E01)."""
    row = await _station(s, station_id)
    was_charging = bool(row.active_transactions)
    row.active_transactions = dict(active)
    row.last_seen = now
    if bool(active) != was_charging:  # deadlines stop while charging (OCPP L01.FR.06)
        await campaigns.on_station_event(s, station_id, machine.Charging(now, bool(active)))


OPEN_UPDATES = "chargeward.open_updates"  # session.info: {station id: [pending updates]}


async def _latest_open_update(s: AsyncSession, station_id: str) -> FirmwareUpdate | None:
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
        await campaigns.prefetch_runs(s, [st.id for st in stations if st.campaign_id is not None])
    if keys.requests:
        q = select(FirmwareUpdate).where(FirmwareUpdate.id.in_(sorted(keys.requests)))
        keep.extend((await s.scalars(q)).all())
    if keys.open_updates:
        with_version = (
            select(FirmwareUpdate, Release.version)
            .join(Release, Release.id == FirmwareUpdate.release_id)
            .where(
                FirmwareUpdate.station_id.in_(sorted(keys.open_updates)),
                FirmwareUpdate.outcome == "pending",
            )
        )
        pending: dict[str, list[FirmwareUpdate]] = {sid: [] for sid in keys.open_updates}
        versions: dict[str, list[tuple[FirmwareUpdate, str]]] = {
            sid: [] for sid in keys.open_updates
        }
        for u, version in (await s.execute(with_version)).all():
            pending[u.station_id].append(u)
            versions[u.station_id].append((u, version))
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
    if request_id is not None:
        await campaigns.on_station_event(
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


# What a station writes to the audit log is budgeted per station and window (ADR 0027): the
# first ``budget`` reports of a kind in a window are stored and audited; the rest are only
# counted, and one summary entry per window says how many of which type were suppressed.
# SecurityEventNotification: ``station.security_events_suppressed`` (per event type).
SECURITY_EVENT_BUDGET = 20
SECURITY_EVENT_WINDOW = dt.timedelta(minutes=10)
# BootNotification: ``station.boots_suppressed`` (per boot reason).  A charger boots a few
# times a day; even a boot loop takes a minute or so per boot.
BOOT_BUDGET = 10
# Refused SignCertificate requests: ``station.certificates_refused_suppressed`` (per reason).
# Only refusals use it: a CSR the CSMS asked for is signed whatever the budget says.
CSR_REFUSAL_BUDGET = 5
_SUMMARY_TYPES = 20  # distinct types named in a summary; more are counted as "(other)"
_TYPE_CHARS = 60  # a type as named in a summary (OCPP event types are at most 50)


@dataclass
class _EventWindow:
    started_at: dt.datetime
    used: int = 0
    suppressed: dict[str, int] | None = None


@dataclass(frozen=True)
class SuppressedEvents:
    station_id: str
    window_started_at: dt.datetime
    types: dict[str, int]
    action: str = "station.security_events_suppressed"
    budget: int = SECURITY_EVENT_BUDGET


class StationWriteBudget:
    """Per-station windows of this process (a station's connection lives in one) for one
    kind of report: security events, boots, refused CSRs (ADR 0027)."""

    def __init__(
        self,
        budget: int = SECURITY_EVENT_BUDGET,
        window: dt.timedelta = SECURITY_EVENT_WINDOW,
        *,
        action: str = "station.security_events_suppressed",
    ) -> None:
        self.budget = budget
        self.window = window
        self.action = action  # the summary's audit action
        self._windows: dict[str, _EventWindow] = {}

    def admit(
        self, station_id: str, type: str, now: dt.datetime
    ) -> tuple[bool, SuppressedEvents | None]:
        """Whether this event is stored, and the summary of a window it closed (if any)."""
        closed: SuppressedEvents | None = None
        w = self._windows.get(station_id)
        if w is None or now - w.started_at >= self.window:
            closed = self.close(station_id)
            w = self._windows[station_id] = _EventWindow(now)
        if w.used < self.budget:
            w.used += 1
            return True, closed
        counts = w.suppressed if w.suppressed is not None else {}
        w.suppressed = counts
        key = type[:_TYPE_CHARS]
        key = key if key in counts or len(counts) < _SUMMARY_TYPES else "(other)"
        counts[key] = counts.get(key, 0) + 1
        return False, closed

    def close(self, station_id: str) -> SuppressedEvents | None:
        """The summary of what the station's window suppressed so far (then reset), if any.

        Called when a window ends and when the station disconnects; a reconnect keeps the
        window and what it used, so reconnecting does not buy a fresh budget.
        """
        w = self._windows.get(station_id)
        if w is None or not w.suppressed:
            return None
        summary = SuppressedEvents(
            station_id, w.started_at, dict(w.suppressed), self.action, self.budget
        )
        w.suppressed = None
        return summary


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
    if not admitted:  # over budget: counted only; a critical type still reaches its alert
        if alerts.SECURITY_EVENT_ALERTS.get(type) == "critical":
            await alerts.on_security_event(
                s, station_id, type=type, tech_info=tech_info, timestamp=timestamp, now=now
            )
            await campaigns.on_station_event(
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
    update = await _latest_open_update(s, station_id)
    await audit.record(
        s,
        actor=station_actor(station_id),
        action="station.security_event",
        target=station_id,
        transaction_id=update.transaction_id if update else None,
        details={"type": type, "tech_info": tech_info, "timestamp": timestamp.isoformat()},
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
    await campaigns.on_station_event(s, station_id, fault)


ROLLED_BACK_EVENT = "FirmwareUpdateRolledBack"  # the agent fell back to its old slot


async def list_stations(
    s: AsyncSession, filters: fleet.StationFilter | None = None
) -> list[StationSummary]:
    """Stations with their registry fields, optionally filtered (see ``fleet.StationFilter``)."""
    return await fleet.list_stations(s, filters)


async def station_detail(
    s: AsyncSession, station_id: str, *, limit: int = 50, now: dt.datetime | None = None
) -> StationDetail:
    row = await _station(s, station_id)
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
        updates=[await _update_view(s, u) for u in updates],
        downloads=DownloadsView(**await link_budget.station_usage(s, station_id)),
    )


# -- releases -------------------------------------------------------------------------------


async def store_release(
    s: AsyncSession,
    bundle: VerifiedBundle,
    blobs: BlobStore,
    *,
    actor: str,
    now: dt.datetime,
    bundle_sha256: str | None = None,
) -> ReleaseView:
    """Keep a verified bundle: images into the blob store, the release and its supply-chain
    documents in the database (``bundle_sha256``: the digest of the file as uploaded)."""
    release_id = bundle.manifest_sha256
    if await s.get(Release, release_id) is not None:
        raise Conflict(f"release {release_id[:12]} was already uploaded")
    m = bundle.manifest
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
            **supply,
        },
        now=now,
    )
    await s.flush()
    return await release_view(s, release_id)


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
        documents={name: d.sha256 for name, d in sorted(documents.items())},
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


# -- firmware updates -----------------------------------------------------------------------


_DISPATCHABLE = "chargeward.dispatchable"  # session.info: {(release id, published?): rows}


async def _dispatchable(
    s: AsyncSession, release_id: str, require_published: bool
) -> tuple[Release, ReleaseImage]:
    """The release and its primary image (the one UpdateFirmware sends), checked once per session (a
    campaign tick dispatches the same release to hundreds of stations in one session)."""
    cache: dict[tuple[str, bool], tuple[Release, ReleaseImage]] = s.info.setdefault(
        _DISPATCHABLE, {}
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
    return (await _dispatchable(s, release_id, False))[1]


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
    station = await _station(s, station_id)
    release, image = await _dispatchable(s, release_id, require_published)
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
    if await _latest_open_update(s, station_id) is not None:
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
    # Refused, or never delivered or answered (NotConnected, NoResponse, Error:...): this
    # request is over, so a campaign may send another within its attempts.
    if response not in machine.ACCEPTED_RESPONSES:
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
    await campaigns.on_station_event(
        s, row.station_id, machine.Response(now, response), request_id=request_id
    )


async def _update_view(s: AsyncSession, row: FirmwareUpdate) -> UpdateView:
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
    return await _update_view(s, row)


# -- API tokens -----------------------------------------------------------------------------


async def create_token(
    s: AsyncSession, name: str, *, actor: str, now: dt.datetime, role: str = "admin"
) -> str:
    """A token acting as ``name`` with ``role`` (see :mod:`chargeward.server.tokens`)."""
    return await tokens.create_service_token(s, name, role, actor=actor, now=now)
