"""The integration API's service (ADR 0042): the update orders an external CSMS should send,
and what it saw, fed into the same station reports the OCPP listener records.

    orders = await pending_orders(s, now=now)              # what to send now
    payloads = order_payloads(orders[0], location, retrieve_at)
    payloads["ocpp201"]["payload"]["requestId"]            # OCPP's own JSON names
    await record_event(s, "CP-1", event, actor="csms-glue", now=now)

Chargeward stays the decider: it creates each order in the campaign scheduler's transaction,
exactly as for a station it delivers to itself; the external CSMS only carries the request to
the station and the station's messages back.  Every event is checked before it counts: an
unknown station, a station Chargeward delivers to itself, a ``requestId`` that is not the
station's newest update or a status OCPP does not define is refused.  An event is keyed by the
``messageId`` the external CSMS gives it (the station's own OCPP message id is a good one): a
retried webhook is answered ``duplicate`` and changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from ocpp.charge_point import remove_nones, snake_to_camel_case
from ocpp.v16 import call as call16
from ocpp.v201 import call, datatypes
from sqlalchemy import desc, select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.campaign import machine
from chargeward.campaign.codec import run_from_row
from chargeward.errors import Conflict, InvalidValue
from chargeward.ocpp.base import ocpp_time, parse_ocpp_time
from chargeward.ocpp.csms16 import BOOT_REASON as BOOT_REASON_16
from chargeward.server.fleet import delivery, station_registry
from chargeward.server.rollout import campaign_runs, release_catalog, update_orders
from chargeward.server.stations import station_reports
from chargeward.server.store.integration_tables import IntegrationEvent, StationDelivery
from chargeward.server.store.tables import Campaign, CampaignStation, FirmwareUpdate, Release

# The station's answers to UpdateFirmware (OCPP 2.0.1 UpdateFirmwareStatusEnumType, the same
# for 1.6 SignedUpdateFirmware), and NotConnected: the external CSMS holds no connection to
# it, so the request never reached it (not counted against max_attempts).
UPDATE_ANSWERS = frozenset(
    {"Accepted", "Rejected", "AcceptedCanceled", "InvalidCertificate", "RevokedCertificate"}
) | {"NotConnected"}
FIRMWARE_STATUSES = machine.PROGRESS_STATUSES | machine.FAILED_STATUSES | {machine.IDLE}
BOOT_REASONS = frozenset(
    {
        "ApplicationReset",
        "FirmwareUpdate",
        "LocalReset",
        "PowerUp",
        "RemoteReset",
        "ScheduledReset",
        "Triggered",
        "Unknown",
        "Watchdog",
    }
)
CONNECTOR_STATUSES = frozenset({"Available", "Occupied", "Reserved", "Unavailable", "Faulted"})
TRANSACTION_EVENTS = frozenset({"Started", "Updated", "Ended"})
ACTIONS = (
    "UpdateFirmwareResponse",
    "FirmwareStatusNotification",
    "BootNotification",
    "SecurityEventNotification",
    "StatusNotification",
    "TransactionEvent",
)
MAX_TEXT = 255  # every string field of a payload (techInfo: OCPP's 255)


@dataclass(frozen=True)
class PendingOrder:
    """An update order waiting for the external CSMS to send it."""

    request_id: int
    transaction_id: str
    station_id: str
    sha256: str
    signature: str
    signing_certificate_pem: str
    campaign_id: int | None
    retries: int | None
    retry_interval: int | None
    install_at: dt.datetime | None


async def pending_orders(
    s: AsyncSession, *, station_id: str | None = None, campaign_id: int | None = None
) -> list[PendingOrder]:
    """Orders for externally delivered stations that no answer was reported for yet."""
    q = (
        select(FirmwareUpdate, CampaignStation)
        .join(StationDelivery, StationDelivery.station_id == FirmwareUpdate.station_id)
        .outerjoin(CampaignStation, CampaignStation.request_id == FirmwareUpdate.id)
        .where(
            StationDelivery.delivery == delivery.EXTERNAL,
            FirmwareUpdate.outcome == "pending",
            FirmwareUpdate.response_status.is_(None),
        )
        .order_by(FirmwareUpdate.id)
    )
    if station_id is not None:
        q = q.where(FirmwareUpdate.station_id == station_id)
    if campaign_id is not None:
        q = q.where(CampaignStation.campaign_id == campaign_id)
    orders = []
    for fu, run_row in (await s.execute(q)).all():
        image = await release_catalog.primary_image(s, fu.release_id)
        release = await s.get(Release, fu.release_id)
        assert release is not None  # the image was found through it
        retries = retry_interval = install_at = None
        if run_row is not None and (row := await s.get(Campaign, run_row.campaign_id)):
            spec = campaign_runs.stored_spec(row)
            retries, retry_interval = spec.retries, spec.retry_interval
            install_at = run_from_row(run_row.run).install_at
        orders.append(
            PendingOrder(
                fu.id,
                fu.transaction_id,
                fu.station_id,
                image.sha256,
                image.signature,
                release.signing_certificate_pem,
                run_row.campaign_id if run_row is not None else None,
                retries,
                retry_interval,
                install_at,
            )
        )
    return orders


def _json(payload: object) -> dict[str, Any]:
    """The ocpp library's own conversion: what it would put on the wire."""
    out = snake_to_camel_case(remove_nones(dataclasses.asdict(payload)))  # type: ignore[call-overload]
    assert isinstance(out, dict)
    return out


def order_payloads(
    order: PendingOrder, location: str, retrieve_at: dt.datetime
) -> dict[str, dict[str, Any]]:
    """UpdateFirmware (2.0.1) and SignedUpdateFirmware (1.6) for ``order``, as the OCPP
    listener would send them (``chargeward.ocpp.csms``, ``csms16``)."""
    install = ocpp_time(order.install_at) if order.install_at else None
    firmware = datatypes.FirmwareType(
        location=location,
        retrieve_date_time=ocpp_time(retrieve_at),
        install_date_time=install,
        signing_certificate=order.signing_certificate_pem,
        signature=order.signature,
    )
    v201 = call.UpdateFirmware(
        request_id=order.request_id,
        firmware=firmware,
        retries=order.retries,
        retry_interval=order.retry_interval,
    )
    v16 = call16.SignedUpdateFirmware(
        request_id=order.request_id,
        firmware=remove_nones(dataclasses.asdict(firmware)),
        retries=order.retries,
        retry_interval=order.retry_interval,
    )
    return {
        "ocpp201": {"action": "UpdateFirmware", "payload": _json(v201)},
        "ocpp16": {"action": "SignedUpdateFirmware", "payload": _json(v16)},
    }


@dataclass(frozen=True)
class StationEvent:
    """What the external CSMS saw: ``action`` (:data:`ACTIONS`) and OCPP's payload."""

    message_id: str
    action: str
    payload: dict[str, Any]
    request_id: int | None = None  # UpdateFirmwareResponse: the request it answers


def _text(payload: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = payload.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise InvalidValue(f"payload.{name} must be a string of 1 to {MAX_TEXT} characters")
    return value


def _int(payload: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    value = payload.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
        raise InvalidValue(f"payload.{name} must be a non-negative integer")
    return value


def _one_of(value: str | None, allowed: frozenset[str], name: str) -> str:
    if value not in allowed:
        raise InvalidValue(f"{name} {value!r} is not one of {', '.join(sorted(allowed))}")
    return value


async def _newest_update(s: AsyncSession, station_id: str, request_id: int) -> FirmwareUpdate:
    """The station's newest update, which ``request_id`` must name."""
    newest = (
        await s.scalars(
            select(FirmwareUpdate)
            .where(FirmwareUpdate.station_id == station_id)
            .order_by(desc(FirmwareUpdate.id))
            .limit(1)
        )
    ).first()
    if newest is None or newest.id != request_id:
        open_one = f"its open request is {newest.id}" if newest is not None else "it has none"
        raise Conflict(f"requestId {request_id} is not station {station_id}'s update: {open_one}")
    return newest


async def record_event(
    s: AsyncSession, station_id: str, event: StationEvent, *, actor: str, now: dt.datetime
) -> bool:
    """Check and record one event; False for a retry of one already recorded."""
    station = await station_registry.find_station(s, station_id)
    if await delivery.delivery_of(s, station_id) != delivery.EXTERNAL:
        raise Conflict(f"station {station_id} is delivered by Chargeward over OCPP, not externally")
    seen = await s.get(IntegrationEvent, (station_id, event.message_id))
    if seen is not None:
        if seen.action != event.action:
            raise Conflict(f"messageId {event.message_id!r} was {seen.action}, not {event.action}")
        return False
    _one_of(event.action, frozenset(ACTIONS), "action")
    if not station.connected:  # the external CSMS holds it: the planner sees it online
        await station_registry.set_connected(s, station_id, True, now=now)
    await _apply(s, station_id, event, now)
    s.add(
        IntegrationEvent(
            station_id=station_id,
            message_id=event.message_id,
            action=event.action,
            received_at=now,
        )
    )
    await audit.record(
        s,
        actor=actor,
        action="integration.event",
        target=station_id,
        details={"action": event.action, "message_id": event.message_id},
        now=now,
    )
    return True


async def _apply(s: AsyncSession, sid: str, event: StationEvent, now: dt.datetime) -> None:
    p = event.payload
    if event.action == "UpdateFirmwareResponse":
        if event.request_id is None:
            raise InvalidValue("requestId is required with UpdateFirmwareResponse")
        status = _one_of(_text(p, "status"), UPDATE_ANSWERS, "status")
        update = await _newest_update(s, sid, event.request_id)
        if update.response_status is not None:
            raise Conflict(f"request {update.id} was answered already: {update.response_status}")
        await update_orders.set_update_response(s, update.id, status, now=now)
    elif event.action == "FirmwareStatusNotification":
        status = _one_of(_text(p, "status"), FIRMWARE_STATUSES, "status")
        request_id = _int(p, "requestId", required=status != machine.IDLE)
        if request_id is not None:
            await _newest_update(s, sid, request_id)
        await station_reports.record_firmware_status(
            s, sid, status=status, request_id=request_id, now=now
        )
    elif event.action == "BootNotification":
        await _boot(s, sid, p, now)
    elif event.action == "SecurityEventNotification":
        await station_reports.record_security_event(
            s,
            sid,
            type=_text(p, "type") or "",
            timestamp=_time(p),
            tech_info=_text(p, "techInfo", required=False),
            now=now,
        )
    elif event.action == "StatusNotification":
        await station_reports.record_connector_status(
            s,
            sid,
            evse_id=_int(p, "evseId") or 0,
            connector_id=_int(p, "connectorId") or 0,
            status=_one_of(_text(p, "connectorStatus"), CONNECTOR_STATUSES, "connectorStatus"),
            now=now,
        )
    else:  # TransactionEvent
        await _transaction(s, sid, p, now)


def _time(p: dict[str, Any]) -> dt.datetime:
    try:
        return parse_ocpp_time(_text(p, "timestamp") or "")
    except ValueError as e:
        raise InvalidValue("payload.timestamp must be an ISO 8601 date-time") from e


async def _boot(s: AsyncSession, sid: str, p: dict[str, Any], now: dt.datetime) -> None:
    """BootNotification, OCPP 2.0.1 (``reason``, ``chargingStation``) or 1.6 (flat, no
    reason: the update decides, as for a 1.6 station on the listener)."""
    station = p.get("chargingStation")
    if isinstance(station, dict):
        reason = _one_of(_text(p, "reason"), BOOT_REASONS, "reason")
        model, vendor = _text(station, "model"), _text(station, "vendorName")
        version = _text(station, "firmwareVersion", required=False)
        serial = _text(station, "serialNumber", required=False)
    elif station is None and "chargePointModel" in p:
        reason = BOOT_REASON_16
        model, vendor = _text(p, "chargePointModel"), _text(p, "chargePointVendor")
        version = _text(p, "firmwareVersion", required=False)
        serial = _text(p, "chargePointSerialNumber", required=False)
    else:
        raise InvalidValue("payload must be a BootNotification of OCPP 2.0.1 or 1.6")
    await station_reports.record_boot(
        s,
        sid,
        reason=reason,
        firmware_version=version,
        model=model,
        vendor=vendor,
        serial_number=serial,
        now=now,
    )


async def _transaction(s: AsyncSession, sid: str, p: dict[str, Any], now: dt.datetime) -> None:
    """TransactionEvent (OCPP 2.0.1 E01): the station's running transactions, for deferral."""
    kind = _one_of(_text(p, "eventType"), TRANSACTION_EVENTS, "eventType")
    _time(p)
    info = p.get("transactionInfo")
    if not isinstance(info, dict):
        raise InvalidValue("payload.transactionInfo is required")
    tx = _text(info, "transactionId") or ""
    evse = p.get("evse")
    active = dict((await station_registry.find_station(s, sid)).active_transactions)
    before = dict(active)
    if kind == "Ended":
        active = {e: t for e, t in active.items() if t != tx}
    elif isinstance(evse, dict):
        active[str(_int(evse, "id"))] = tx
    if active != before:
        await station_reports.record_transactions(s, sid, active, now=now)
