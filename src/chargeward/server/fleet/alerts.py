"""Alerts for operators: firmware drift and security events, plus the security-event search.

An alert is keyed per station (``firmware_drift:main``, ``security_event:TamperDetected...``);
while one is not resolved, the same condition bumps its ``count`` instead of opening another.
Every alert opened, resolved or acknowledged writes an audit entry.

    await check_drift(s, station, reported={"main": "1.1"}, now=now)
    await list_alerts(s, state="open")
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import desc, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.campaign.waits import StageOverdue
from chargeward.errors import BundleError, Conflict, NotFound
from chargeward.limits import DEFAULT_SERVER_LIMITS

# The BootNotification firmwareVersion is component MAIN_COMPONENT.
from chargeward.model.firmware import MAIN_COMPONENT as MAIN_COMPONENT
from chargeward.model.reported import Brings, reports_release
from chargeward.server.auth import tenancy
from chargeward.server.common.schemas import AlertView, SecurityEventView
from chargeward.server.store.tables import Alert, FirmwareUpdate, Release, SecurityEvent, Station

# An update Chargeward sent explains a report if it is still pending, or finished this recently.
UPDATE_EXPLAINS_FOR = dt.timedelta(hours=24)
ALERT_STATES = ("open", "acknowledged", "resolved")

# Security events that raise an alert, with its severity.  The OCPP 2.0.1 appendix marks as
# critical (always pushed): SettingSystemTime, StartupOfTheDevice, ResetOrReboot,
# SecurityLogWasCleared, MemoryExhaustion, TamperDetectionActivated, FirmwareUpdated,
# MaintenanceLoginAccepted/Failed, and (2023-12 errata) InvalidFirmwareSignature and
# InvalidFirmwareSigningCertificate.  Of those, FirmwareUpdated, StartupOfTheDevice and
# ResetOrReboot are routine: the update flow and drift detection already judge them, so they are
# stored and searchable but raise no alert.  The authentication, TLS and message-integrity events
# the spec leaves non-critical signal an attack on the link and do raise one (as warnings).
SECURITY_EVENT_ALERTS: Mapping[str, str] = {
    "TamperDetectionActivated": "critical",
    "InvalidFirmwareSignature": "critical",
    "InvalidFirmwareSigningCertificate": "critical",
    "SecurityLogWasCleared": "critical",
    "InvalidCsmsCertificate": "critical",
    "SettingSystemTime": "warning",
    "MemoryExhaustion": "warning",
    "MaintenanceLoginAccepted": "warning",
    "MaintenanceLoginFailed": "warning",
    "FailedToAuthenticateAtCsms": "warning",
    "CsmsFailedToAuthenticate": "warning",
    "InvalidChargingStationCertificate": "warning",
    "InvalidTLSVersion": "warning",
    "InvalidTLSCipherSuite": "warning",
    "ReconfigurationOfSecurityParameters": "warning",
    "InvalidMessages": "warning",
    "AttemptedReplayAttacks": "warning",
}


def _view(a: Alert) -> AlertView:
    return AlertView(
        id=a.id,
        kind=a.kind,
        severity=a.severity,
        station_id=a.station_id,
        message=a.message,
        details=dict(a.details),
        state=a.state,
        count=a.count,
        created_at=a.created_at,
        last_seen_at=a.last_seen_at,
        acknowledged_by=a.acknowledged_by,
        acknowledged_at=a.acknowledged_at,
        resolved_at=a.resolved_at,
    )


# session.info: {station id: [(pending FirmwareUpdate, Brings: its release's version and
# declared reported versions)]}
PENDING_VERSIONS = "chargeward.pending_update_versions"
# Recent updates of a station read to explain a report the batch's prefetch did not.
EXPLAINS_CANDIDATES = 20
UNRESOLVED = "chargeward.unresolved_alerts"  # session.info: {station id: [open alerts]}


async def prefetch_unresolved(s: AsyncSession, station_ids: Sequence[str]) -> list[Alert]:
    """Load the unresolved alerts of ``station_ids`` in one query, for a batch of reports."""
    rows = (
        await s.scalars(
            select(Alert).where(
                Alert.station_id.in_(sorted(station_ids)), Alert.state != "resolved"
            )
        )
    ).all()
    cache: dict[str, list[Alert]] = {sid: [] for sid in station_ids}
    for row in rows:
        cache[row.station_id].append(row)
    s.info[UNRESOLVED] = cache
    return list(rows)


async def _unresolved(s: AsyncSession, station_id: str, key: str) -> Alert | None:
    cached = s.info.get(UNRESOLVED, {}).get(station_id)
    if cached is not None:  # the same rule as the query below, on the loaded rows
        mine = [a for a in cached if a.key == key and a.state != "resolved"]
        return max(mine, key=lambda a: a.id, default=None)
    q = (
        select(Alert)
        .where(Alert.station_id == station_id, Alert.key == key, Alert.state != "resolved")
        .order_by(desc(Alert.id))
        .limit(1)
    )
    return (await s.scalars(q)).first()


async def _raise(
    s: AsyncSession,
    *,
    kind: str,
    severity: str,
    station_id: str,
    key: str,
    message: str,
    details: dict[str, Any],
    now: dt.datetime,
    action: str = "alert.raise",
    transaction_id: str | None = None,
) -> Alert:
    """Open an alert; its one audit entry is ``action`` (with the alert id)."""
    row = Alert(
        kind=kind,
        severity=severity,
        station_id=station_id,
        key=key,
        message=message[:300],
        details=details,
        state="open",
        count=1,
        created_at=now,
        last_seen_at=now,
    )
    s.add(row)
    await s.flush()
    cached = s.info.get(UNRESOLVED, {}).get(station_id)
    if cached is not None:
        cached.append(row)
    await audit.record(
        s,
        actor=audit.SYSTEM,
        action=action,
        target=station_id,
        transaction_id=transaction_id,
        details={"alert_id": row.id, "kind": kind, "severity": severity, **details},
        now=now,
    )
    return row


async def _resolve(s: AsyncSession, row: Alert, reason: str, *, now: dt.datetime) -> None:
    row.state = "resolved"
    row.resolved_at = now
    await audit.record(
        s,
        actor=audit.SYSTEM,
        action="alert.resolve",
        target=row.station_id,
        details={"alert_id": row.id, "kind": row.kind, "reason": reason},
        now=now,
    )


# -- firmware drift -------------------------------------------------------------------------


async def _update_explains(
    s: AsyncSession, station: Station, component: str, version: str, now: dt.datetime
) -> FirmwareUpdate | None:
    """The update Chargeward sent that brought ``version``: pending, or succeeded recently.

    Component ``main`` (the BootNotification firmwareVersion) is the release version, so
    any update explains it, whichever image of a multi-image release OCPP carried, and the
    station may report it as its release declares for its model (:func:`reports_release`,
    ADR 0037).
    """
    any_image = component == MAIN_COMPONENT
    model = station.model if any_image else None  # a declaration is about firmwareVersion

    def explains(update: FirmwareUpdate, brings: Brings) -> bool:
        return (
            (any_image or update.component == component)
            and reports_release(brings, model, version)
            and update.outcome in ("pending", "succeeded")
            and update.updated_at >= now - UPDATE_EXPLAINS_FOR
        )

    prefetched: list[tuple[FirmwareUpdate, Brings]] = s.info.get(PENDING_VERSIONS, {}).get(
        station.id, []
    )
    for update, brings in sorted(
        prefetched, key=lambda uv: -uv[0].id
    ):  # prefetched for a batch of reports: the usual case, a boot after our own update
        if explains(update, brings):
            return update
    q = (
        select(FirmwareUpdate, Release.version, Release.reported_versions)
        .join(Release, Release.id == FirmwareUpdate.release_id)
        .where(
            FirmwareUpdate.station_id == station.id,
            true() if any_image else FirmwareUpdate.component == component,
            Release.version == version if model is None else true(),
            FirmwareUpdate.outcome.in_(("pending", "succeeded")),
            FirmwareUpdate.updated_at >= now - UPDATE_EXPLAINS_FOR,
        )
        .order_by(desc(FirmwareUpdate.id))
        .limit(EXPLAINS_CANDIDATES)
    )
    for update, release_version, declared in (await s.execute(q)).all():
        if explains(update, Brings(release_version, declared)):
            return update
    return None


async def check_drift(
    s: AsyncSession, station: Station, reported: Mapping[str, str], *, now: dt.datetime
) -> None:
    """Compare what ``station`` reports with what it should run; raise or resolve drift alerts.

    The caller has stored ``reported`` on the station already.  A component without an expected
    version adopts its first report; a report brought by an update Chargeward sent becomes the
    expected version (a campaign may set it earlier).
    """
    expected = dict(station.expected_firmware or {})
    changed = False
    for component, version in sorted(reported.items()):
        key = f"firmware_drift:{component}"
        want = expected.get(component)
        if want is None:
            expected[component] = version
            changed = True
            continue
        open_alert = await _unresolved(s, station.id, key)
        if version == want:
            if open_alert is not None:
                await _resolve(s, open_alert, f"reports the expected {version} again", now=now)
            continue
        update = await _update_explains(s, station, component, version, now)
        if update is not None:
            expected[component] = version
            changed = True
            await audit.record(
                s,
                actor=audit.SYSTEM,
                action="station.expected_firmware",
                target=station.id,
                transaction_id=update.transaction_id,
                details={"component": component, "from": want, "to": version},
                now=now,
            )
            if open_alert is not None:
                await _resolve(s, open_alert, f"update to {version} installed", now=now)
            continue
        if open_alert is not None:
            if open_alert.details.get("reported") == version:
                open_alert.count += 1
                open_alert.last_seen_at = now
                continue
            await _resolve(s, open_alert, f"superseded: now reports {version}", now=now)
        details = {"component": component, "expected": want, "reported": version}
        await _raise(
            s,
            kind="firmware_drift",
            severity="critical",
            station_id=station.id,
            key=key,
            message=(
                f"{station.id} runs {component} {version}, expected {want}, "
                "and no update from Chargeward explains it"
            ),
            details=details,
            now=now,
            action="station.firmware_drift",
        )
    if changed:
        station.expected_firmware = expected


# -- security events ------------------------------------------------------------------------


async def on_security_event(
    s: AsyncSession,
    station_id: str,
    *,
    type: str,
    tech_info: str | None,
    timestamp: dt.datetime,
    now: dt.datetime,
    transaction_id: str | None = None,
) -> None:
    """Raise an alert for a security event in :data:`SECURITY_EVENT_ALERTS`.

    Repeats while the alert is still open (not yet acknowledged) are counted on it; after an
    acknowledgement the next one opens a new alert.
    """
    severity = SECURITY_EVENT_ALERTS.get(type)
    if severity is None:
        return
    key = f"security_event:{type}"[:100]
    row = await _unresolved(s, station_id, key)
    if row is not None and row.state == "open":
        row.count += 1
        row.last_seen_at = now
        return
    await _raise(
        s,
        kind="security_event",
        severity=severity,
        station_id=station_id,
        key=key,
        message=f"{station_id} reported {type}" + (f": {tech_info}" if tech_info else ""),
        details={"type": type, "tech_info": tech_info, "timestamp": timestamp.isoformat()},
        now=now,
        transaction_id=transaction_id,
    )


async def search_security_events(
    s: AsyncSession,
    *,
    station_id: str | None = None,
    type: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    critical: bool = False,
    limit: int = 100,
    offset: int = 0,
    customer: str | None = None,
) -> list[SecurityEventView]:
    """Stored SecurityEventNotifications, newest first; times filter the station's timestamp."""
    most = DEFAULT_SERVER_LIMITS.page_rows
    if not 1 <= limit <= most or offset < 0:
        raise BundleError(f"limit must be 1-{most} and offset at least 0")
    q = select(SecurityEvent).order_by(desc(SecurityEvent.timestamp), desc(SecurityEvent.id))
    if station_id is not None:
        q = q.where(SecurityEvent.station_id == station_id)
    if type is not None:
        q = q.where(SecurityEvent.type == type)
    if since is not None:
        q = q.where(SecurityEvent.timestamp >= since)
    if until is not None:
        q = q.where(SecurityEvent.timestamp <= until)
    if critical:
        q = q.where(SecurityEvent.type.in_(sorted(SECURITY_EVENT_ALERTS)))
    if customer is not None:
        q = q.where(SecurityEvent.station_id.in_(tenancy.stations_of(customer)))
    rows = (await s.scalars(q.limit(limit).offset(offset))).all()
    return [event_view(e) for e in rows]


def event_view(e: SecurityEvent) -> SecurityEventView:
    return SecurityEventView(
        id=e.id,
        station_id=e.station_id,
        type=e.type,
        timestamp=e.timestamp,
        tech_info=e.tech_info,
        received_at=e.received_at,
        critical=e.type in SECURITY_EVENT_ALERTS,
    )


# -- station identity -----------------------------------------------------------------------

IDENTITY_VALUES = 10  # distinct claimed values kept on an identity alert


async def identity_mismatch(
    s: AsyncSession,
    station_id: str,
    *,
    field: str,
    registered: str | None,
    reported: str,
    conflict: str | None,
    now: dt.datetime,
) -> None:
    """A BootNotification claims a model, vendor or serial number the registry does not hold
    (or another station's serial number).  The registry is unchanged (ADR 0027); the alert
    stays until an operator acknowledges it: an honest report later does not clear it.

    One unresolved alert per station and field: every later claim, whatever its value, is
    counted on it (``count``, ``reported``/``conflict``: the last claim, ``values``: the first
    :data:`IDENTITY_VALUES` distinct values) and writes no audit entry.
    """
    key = f"identity:{field}"
    row = await _unresolved(s, station_id, key)
    if row is not None:
        values = list(row.details.get("values") or [row.details.get("reported")])
        if reported not in values and len(values) < IDENTITY_VALUES:
            values.append(reported)
        # a new dict: the JSON column is not mutation-tracked
        row.details = {**row.details, "reported": reported, "conflict": conflict, "values": values}
        row.count += 1
        row.last_seen_at = now
        return
    claim = f"another station's ({conflict}) serial number" if conflict else f"{field} {reported}"
    await _raise(
        s,
        kind="station_identity",
        severity="critical",
        station_id=station_id,
        key=key,
        message=f"{station_id} reports {claim}; the registry says {registered}",
        details={
            "field": field,
            "registered": registered,
            "reported": reported,
            "conflict": conflict,
            "values": [reported],
        },
        now=now,
        action="station.identity_mismatch",
    )


# -- listing and acknowledging ---------------------------------------------------------------


async def list_alerts(
    s: AsyncSession,
    *,
    state: str | None = None,
    station_id: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    offset: int = 0,
    customer: str | None = None,
) -> list[AlertView]:
    """Alerts newest first; ``state`` ``active`` means open or acknowledged."""
    if state is not None and state not in (*ALERT_STATES, "active"):
        raise BundleError(f"state must be one of {', '.join((*ALERT_STATES, 'active'))}")
    most = DEFAULT_SERVER_LIMITS.page_rows
    if not 1 <= limit <= most or offset < 0:
        raise BundleError(f"limit must be 1-{most} and offset at least 0")
    q = select(Alert).order_by(desc(Alert.id))
    if state == "active":
        q = q.where(Alert.state != "resolved")
    elif state is not None:
        q = q.where(Alert.state == state)
    if station_id is not None:
        q = q.where(Alert.station_id == station_id)
    if kind is not None:
        q = q.where(Alert.kind == kind)
    if customer is not None:
        q = q.where(Alert.station_id.in_(tenancy.stations_of(customer)))
    return [_view(a) for a in (await s.scalars(q.limit(limit).offset(offset))).all()]


async def acknowledge(
    s: AsyncSession, alert_id: int, *, actor: str, note: str | None, now: dt.datetime
) -> AlertView:
    row = await s.get(Alert, alert_id)
    if row is None:
        raise NotFound(f"no alert {alert_id}")
    if row.state != "open":
        raise Conflict(f"alert {alert_id} is {row.state}, not open")
    row.state = "acknowledged"
    row.acknowledged_by = actor[:100]
    row.acknowledged_at = now
    await audit.record(
        s,
        actor=actor,
        action="alert.acknowledge",
        target=row.station_id,
        details={"alert_id": alert_id, "kind": row.kind, "note": note},
        now=now,
    )
    return _view(row)


async def campaign_paused(
    s: AsyncSession, campaign_id: int, name: str, reason: str, *, now: dt.datetime
) -> Alert:
    """A campaign's error gate paused it: an operator must look before it goes on."""
    return await _raise(
        s,
        kind="campaign_paused",
        severity="critical",
        station_id=f"campaign:{campaign_id}",
        key=f"campaign_paused:{campaign_id}",
        message=f"campaign {name} paused: {reason}",
        details={"campaign_id": campaign_id, "name": name, "reason": reason},
        now=now,
    )


async def campaign_station_skipped(
    s: AsyncSession, campaign_id: int, name: str, station_id: str, reason: str, *, now: dt.datetime
) -> Alert:
    """A campaign stopped waiting for a station deferred (charging) past its ``max_deferral``:
    its session may have ended unreported.  The station is not updated until an operator
    retries it."""
    return await _raise(
        s,
        kind="campaign_station_skipped",
        severity="warning",
        station_id=station_id,
        key=f"campaign_skipped:{campaign_id}",
        message=f"campaign {name}: {station_id} {reason}",
        details={"campaign_id": campaign_id, "name": name, "reason": reason},
        now=now,
    )


def _stage_overdue_key(campaign_id: int, stage: int) -> str:
    return f"campaign_stage_overdue:{campaign_id}:{stage}"


async def stage_overdue_raised(s: AsyncSession, campaign_id: int, stage: int) -> bool:
    """Whether ``stage`` of the campaign was reported overdue already (open, acknowledged or
    resolved): a stage is reported once, and a resumed campaign is not paused again for it."""
    found = await s.scalar(
        select(Alert.id)
        .where(
            Alert.station_id == f"campaign:{campaign_id}",
            Alert.key == _stage_overdue_key(campaign_id, stage),
        )
        .limit(1)
    )
    return found is not None


async def campaign_stage_overdue(
    s: AsyncSession, campaign_id: int, name: str, overdue: StageOverdue, *, now: dt.datetime
) -> Alert:
    """A campaign's stage ran past its ``stage_deadline`` without passing its success gate:
    the message counts why its stations wait (offline, outside their window, the site's
    availability floor, ...); ``paused`` says whether the campaign was paused for it."""
    action = "; the campaign is paused" if overdue.paused else ""
    return await _raise(
        s,
        kind="campaign_stage_overdue",
        severity="critical" if overdue.paused else "warning",
        station_id=f"campaign:{campaign_id}",
        key=_stage_overdue_key(campaign_id, overdue.stage),
        message=f"campaign {name}{action}: {overdue.text}",
        details={
            "campaign_id": campaign_id,
            "name": name,
            "stage": overdue.stage,
            "stage_started_at": overdue.started_at.isoformat(),
            "succeeded": overdue.succeeded,
            "needed": overdue.needed,
            "stations": overdue.stations,
            "waiting": {code: len(ids) for code, ids in sorted(overdue.waiting.items())},
            "waiting_stations": {
                code: list(ids[:20]) for code, ids in sorted(overdue.waiting.items())
            },
            "paused": overdue.paused,
        },
        now=now,
    )
