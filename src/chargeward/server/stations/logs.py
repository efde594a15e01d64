"""Logs from stations (OCPP N01): GetLog requests, one-time upload URLs, uploads, statuses.

Each GetLog gets its own upload URL ``<public URL>/api/v1/log-uploads/<token>``: a random
256-bit token bound to one station and one requestId, valid for :data:`UPLOAD_TTL` and for
one upload.  Only its SHA-256 is stored, so the database alone cannot forge uploads::

    async with db.session() as s:
        order = await begin_request(s, "CP-1", "SecurityLog", oldest=None, latest=None,
                                    actor="alice", now=now)
    url = public_url + UPLOAD_PATH + order.token

The request, the station's answer, every LogStatusNotification and the upload are audited
under the request's transaction id.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.errors import NotFound, UploadRefused
from chargeward.server.common.schemas import LogView
from chargeward.server.fleet.station_registry import station_actor
from chargeward.server.store.tables import LogStatusEvent, Station, StationLog

LOG = logging.getLogger("chargeward.server.logs")
LogType = Literal["SecurityLog", "DiagnosticsLog"]
UPLOAD_PATH = "/api/v1/log-uploads/"
UPLOAD_TTL = dt.timedelta(hours=1)
FAILED_STATUSES = frozenset(
    {"BadMessage", "NotSupportedOperation", "PermissionDenied", "UploadFailure"}
)
ANONYMOUS = "anonymous"  # who calls the upload URL is known only by the token


@dataclass(frozen=True)
class LogOrder:
    """What the OCPP layer needs to send one GetLog; ``token`` exists only here."""

    request_id: int
    transaction_id: str
    station_id: str
    log_type: str
    oldest: dt.datetime | None
    latest: dt.datetime | None
    token: str
    expires_at: dt.datetime


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def require_station(s: AsyncSession, station_id: str) -> None:
    if await s.get(Station, station_id) is None:
        raise NotFound(f"no station {station_id!r}")


async def begin_request(
    s: AsyncSession,
    station_id: str,
    log_type: LogType,
    *,
    oldest: dt.datetime | None,
    latest: dt.datetime | None,
    actor: str,
    now: dt.datetime,
    ttl: dt.timedelta = UPLOAD_TTL,
) -> LogOrder:
    """Record and audit a GetLog before it is sent; the order carries a fresh upload token."""
    await require_station(s, station_id)
    token = secrets.token_urlsafe(32)  # 256 bits
    row = StationLog(
        transaction_id=audit.new_transaction_id(),
        station_id=station_id,
        log_type=log_type,
        oldest=oldest,
        latest=latest,
        requested_by=actor,
        token_sha256=token_digest(token),
        token_expires_at=now + ttl,
        created_at=now,
        updated_at=now,
    )
    s.add(row)
    await s.flush()
    await audit.record(
        s,
        actor=actor,
        action="log.requested",
        target=station_id,
        transaction_id=row.transaction_id,
        details={
            "request_id": row.id,
            "log_type": log_type,
            "oldest": oldest.isoformat() if oldest else None,
            "latest": latest.isoformat() if latest else None,
            "upload_expires_at": row.token_expires_at.isoformat(),
        },
        now=now,
    )
    return LogOrder(
        row.id, row.transaction_id, station_id, log_type, oldest, latest, token, now + ttl
    )


async def _row(s: AsyncSession, request_id: int) -> StationLog:
    row = await s.get(StationLog, request_id)
    if row is None:
        raise NotFound(f"no log request {request_id}")
    return row


async def record_response(
    s: AsyncSession, request_id: int, status: str, filename: str | None, *, now: dt.datetime
) -> None:
    """Store and audit the station's GetLogResponse."""
    row = await _row(s, request_id)
    row.response_status = status[:30]
    row.filename = filename[:255] if filename else None
    row.updated_at = now
    await audit.record(
        s,
        actor=station_actor(row.station_id),
        action="log.response",
        target=row.station_id,
        transaction_id=row.transaction_id,
        details={"request_id": request_id, "status": status, "filename": filename},
        now=now,
    )


async def record_status(
    s: AsyncSession, station_id: str, *, status: str, request_id: int | None, now: dt.datetime
) -> None:
    """Store a LogStatusNotification and advance the request it belongs to."""
    row = await s.get(StationLog, request_id) if request_id is not None else None
    if row is not None and row.station_id != station_id:
        row = None  # a station cannot report on another station's request
    if row is not None:
        row.last_status = status
        row.updated_at = now
    s.add(
        LogStatusEvent(station_id=station_id, request_id=request_id, status=status, received_at=now)
    )
    await audit.record(
        s,
        actor=station_actor(station_id),
        action="station.log_status",
        target=station_id,
        transaction_id=row.transaction_id if row else None,
        details={"status": status, "request_id": request_id},
        now=now,
    )


async def _by_token(s: AsyncSession, token: str) -> StationLog | None:
    q = select(StationLog).where(StationLog.token_sha256 == token_digest(token))
    return (await s.scalars(q)).first()


def _refusal(row: StationLog | None, now: dt.datetime) -> UploadRefused | None:
    if row is None:
        return UploadRefused(404, "unknown")
    if row.token_used_at is not None:
        return UploadRefused(410, "used")
    if row.token_expires_at <= now:
        return UploadRefused(410, "expired")
    return None


async def _audit_refusal(
    s: AsyncSession, row: StationLog, refusal: UploadRefused, now: dt.datetime
) -> None:
    await audit.record(
        s,
        actor=ANONYMOUS,
        action="log.upload_refused",
        target=row.station_id,
        transaction_id=row.transaction_id,
        details={"request_id": row.id, "reason": refusal.reason},
        now=now,
    )


async def check_upload(s: AsyncSession, token: str, *, now: dt.datetime) -> UploadRefused | None:
    """Why an upload with ``token`` is refused (audited), or None if it may start."""
    row = await _by_token(s, token)
    refusal = _refusal(row, now)
    if refusal is not None:
        if row is None:
            LOG.warning("log upload with an unknown token refused")
        else:
            await _audit_refusal(s, row, refusal, now)
    return refusal


async def claim_upload(
    s: AsyncSession,
    token: str,
    *,
    sha256: str,
    length: int,
    filename: str | None,
    now: dt.datetime,
) -> LogView:
    """Use up ``token`` for an upload of ``sha256`` (in the blob store once the caller commits).

    Raises :class:`UploadRefused` if the token is unknown, used or expired: the claim is one
    conditional UPDATE, so two uploads racing with one token cannot both win.
    """
    digest = token_digest(token)
    claimed = cast(
        CursorResult[Any],
        await s.execute(
            update(StationLog)
            .where(
                StationLog.token_sha256 == digest,
                StationLog.token_used_at.is_(None),
                StationLog.token_expires_at > now,
            )
            .values(token_used_at=now)
            .execution_options(synchronize_session=False)
        ),
    )
    row = await _by_token(s, token)
    if claimed.rowcount != 1 or row is None:
        raise _refusal(row, now) or UploadRefused(410, "used")
    await s.refresh(row)
    row.sha256 = sha256
    row.length = length
    row.uploaded_at = now
    row.updated_at = now
    if filename and not row.filename:
        row.filename = filename[:255]
    await audit.record(
        s,
        actor=station_actor(row.station_id),
        action="log.uploaded",
        target=row.station_id,
        transaction_id=row.transaction_id,
        details={
            "request_id": row.id,
            "log_type": row.log_type,
            "sha256": sha256,
            "length": length,
            "filename": filename,
        },
        now=now,
    )
    return (await _records(s, [row]))[0]


async def _records(s: AsyncSession, rows: list[StationLog]) -> list[LogView]:
    statuses: dict[tuple[str, int | None], list[str]] = {}
    if rows:
        events = await s.scalars(
            select(LogStatusEvent)
            .where(LogStatusEvent.request_id.in_([r.id for r in rows]))
            .order_by(LogStatusEvent.id)
        )
        for e in events:
            statuses.setdefault((e.station_id, e.request_id), []).append(e.status)
    return [
        LogView(
            request_id=r.id,
            transaction_id=r.transaction_id,
            station_id=r.station_id,
            log_type=r.log_type,
            oldest=r.oldest,
            latest=r.latest,
            requested_by=r.requested_by,
            response_status=r.response_status,
            filename=r.filename,
            last_status=r.last_status,
            statuses=statuses.get((r.station_id, r.id), []),
            sha256=r.sha256,
            length=r.length,
            uploaded_at=r.uploaded_at,
            upload_expires_at=r.token_expires_at,
            created_at=r.created_at,
        )
        for r in rows
    ]


async def list_logs(s: AsyncSession, station_id: str, *, limit: int = 100) -> list[LogView]:
    """The station's newest log requests first, with every status reported for each."""
    await require_station(s, station_id)
    rows = (
        await s.scalars(
            select(StationLog)
            .where(StationLog.station_id == station_id)
            .order_by(StationLog.id.desc())
            .limit(limit)
        )
    ).all()
    return await _records(s, list(rows))


async def uploaded_log(s: AsyncSession, station_id: str, request_id: int) -> LogView:
    """The log request ``request_id`` of ``station_id``; NotFound unless its file arrived."""
    row = await s.get(StationLog, request_id)
    if row is None or row.station_id != station_id:
        raise NotFound(f"no log request {request_id} for station {station_id!r}")
    if row.sha256 is None:
        raise NotFound(f"log request {request_id}: nothing uploaded (yet)")
    return (await _records(s, [row]))[0]
