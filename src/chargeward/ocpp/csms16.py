"""CSMS side of OCPP 1.6J: the same sink and the same commands as the 2.0.1 charge point.

:class:`Csms16ChargePoint` is a thin adapter (ADR 0039).  Its public command methods have the
signatures and return values of :class:`~chargeward.ocpp.csms.CsmsChargePoint`'s, so the update,
certificate, log and password logic of the server runs unchanged for a 1.6 station; each
translates to the Security Whitepaper's message (``chargeward.ocpp.v16_map`` holds the name
tables)::

    await cp.update_firmware(order)                  # SignedUpdateFirmware
    await cp.trigger_message("SignChargingStationCertificate")  # ExtendedTriggerMessage
    await cp.set_variable("SecurityCtrlr", "BasicAuthPassword", pw)  # ChangeConfiguration
    await cp.get_base_report(1, "FullInventory")     # Conflict: 1.6 has no such message

Plain UpdateFirmware (no signature: the charger cannot check the image's origin) goes only to
a station an operator marked ``legacy_firmware_update`` and that never showed whitepaper
support (:meth:`Station16Sink.update_mode`).  A 1.6 BootNotification has no reason: it is
reported as ``Unknown`` and the server decides from the version whether it is the boot after an
update (``station_reports.record_boot``).
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ocpp.exceptions import NotImplementedError as NotImplementedError_
from ocpp.exceptions import NotSupportedError, OCPPError, SecurityError
from ocpp.routing import after, on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action

from chargeward.crypto.pki import CertificateHashData
from chargeward.errors import Conflict, InvalidValue, TransportError
from chargeward.ocpp import v16_map
from chargeward.ocpp.base import (
    HardenedChargePoint16,
    hash_data,
    int32,
    ocpp_time,
    parse_ocpp_time,
    utc_now,
)
from chargeward.ocpp.core_messages import MeterReading
from chargeward.ocpp.csms import (
    BootInfo,
    CertificateAnswer,
    FirmwareOrder,
    InstalledCertificateId,
    InstalledCertificates,
    LogAnswer,
    LogRequest,
    StationSink,
)
from chargeward.ocpp.csms_shared import CommandCalls

LOG = logging.getLogger("chargeward.csms")
OCPP_VERSION = "1.6"
BOOT_REASON = "Unknown"  # a 1.6 BootNotification says no reason (2.0.1's BootReasonEnumType)
# UpdateFirmware's answer when a station refused SignedUpdateFirmware (response_status, 30 chars)
SIGNED_UNSUPPORTED = "SignedUpdateUnsupported"
LEGACY_CONSEQUENCE = (
    "the charger then cannot verify the firmware's origin or integrity itself: Chargeward's "
    "guarantees stop at the signed, access-controlled download"
)
UNSUPPORTED_REASON = (
    "station does not support signed firmware update (SignedUpdateFirmware answered {error}); "
    "mark it legacy (PATCH /api/v1/stations/{{id}} legacy_firmware_update) to send plain "
    "UpdateFirmware, with the consequence that " + LEGACY_CONSEQUENCE
)
PASSWORD_VARIABLE = ("SecurityCtrlr", "BasicAuthPassword")
PASSWORD_KEY = "AuthorizationKey"  # noqa: S105 (a key name) the whitepaper's configuration key for it
STATION_CERTIFICATE = "ChargingStationCertificate"
# 2.0.1 certificate types -> the whitepaper's (InstallCertificate, GetInstalledCertificateIds)
_CERTIFICATE_TYPES = {
    "CSMSRootCertificate": "CentralSystemRootCertificate",
    "ManufacturerRootCertificate": "ManufacturerRootCertificate",
}
# idTagInfo.status: the server's Authorize answer (2.0.1 names) in 1.6's words
_ID_TAG_STATUS = {"Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"}
CHARGING_MARK = "status:"  # an active session known only from a Charging-like status


@dataclass(frozen=True)
class UpdateMode:
    """What decides SignedUpdateFirmware or plain UpdateFirmware for a 1.6 station."""

    legacy: bool  # the operator's mark (stations.legacy_firmware_update)
    signed_support: bool | None  # shown by the station; None: not known yet


class Station16Sink(StationSink, Protocol):
    """A :class:`~chargeward.ocpp.csms.StationSink` that also keeps what a 1.6 station showed."""

    async def update_mode(self, station_id: str) -> UpdateMode: ...
    async def signed_update_evidence(self, station_id: str, supported: bool, why: str) -> None:
        """The station showed (``supported``) or denied whitepaper support; ``why`` is audited."""
        ...

    async def open_legacy_request(self, station_id: str) -> int | None:
        """The pending update of a station marked legacy (its statuses name no requestId)."""
        ...


def _new_transaction_id() -> int:
    return secrets.randbelow(2**31 - 1) + 1


class Csms16ChargePoint(CommandCalls, HardenedChargePoint16):
    """One connected OCPP 1.6J station, seen from the CSMS."""

    sink: Station16Sink

    def __init__(
        self,
        station_id: str,
        connection: Any,
        sink: Station16Sink,
        *,
        heartbeat_interval: int = 300,
        response_timeout: float = 30,
        new_transaction_id: Callable[[], int] = _new_transaction_id,
    ) -> None:
        super().__init__(station_id, connection, response_timeout=response_timeout)
        self.sink = sink
        self.heartbeat_interval = heartbeat_interval
        self.booted = False
        self.active_transactions: dict[int, str] = {}  # connector id -> transaction id
        self._new_transaction_id = new_transaction_id
        self._legacy_request: int | None = None  # the last plain UpdateFirmware's requestId
        self._signed_shown = False  # evidence of whitepaper support recorded on this connection
        self._csrs: dict[str, str] = {}  # accepted CSRs by message id

    def _require_boot(self) -> None:
        # As OCPP 2.0.1 B02.FR.09 (1.6 section 4.2.1): nothing before an accepted boot.
        if not self.booted:
            raise SecurityError(description="BootNotification has not been accepted yet")

    async def _shows_signed_support(self, why: str) -> None:
        if not self._signed_shown:
            self._signed_shown = True
            await self.sink.signed_update_evidence(self.id, True, why)

    async def _report_transactions(self, before: dict[int, str]) -> None:
        if self.active_transactions != before:
            active = {str(c): t for c, t in self.active_transactions.items()}
            await self.sink.transactions(self.id, active)

    # -- what the station reports ----------------------------------------------------------------

    @on(Action.boot_notification)
    async def on_boot_notification(
        self,
        charge_point_model: str,
        charge_point_vendor: str,
        firmware_version: str | None = None,
        charge_point_serial_number: str | None = None,
        charge_box_serial_number: str | None = None,
        **_: Any,
    ) -> call_result.BootNotification:
        serial = charge_point_serial_number or charge_box_serial_number
        info = BootInfo(
            BOOT_REASON, charge_point_model, charge_point_vendor, firmware_version, serial
        )
        await self.sink.boot(self.id, info)
        self.active_transactions = {}  # none survives a reboot
        self.booted = True
        return call_result.BootNotification(
            current_time=ocpp_time(utc_now()), interval=self.heartbeat_interval, status="Accepted"
        )

    @on(Action.heartbeat)
    async def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        self._require_boot()
        await self.sink.heartbeat(self.id)
        return call_result.Heartbeat(current_time=ocpp_time(utc_now()))

    @on(Action.status_notification)
    async def on_status_notification(
        self, connector_id: int, status: str, timestamp: str | None = None, **_: Any
    ) -> call_result.StatusNotification:
        self._require_boot()
        if timestamp is not None:
            parse_ocpp_time(timestamp)
        connector = int32(connector_id)
        if connector == 0:  # the charge point itself, not a connector (1.6 section 7.7)
            return call_result.StatusNotification()
        # A 1.6 connector is an EVSE of one connector in 2.0.1's terms.
        await self.sink.connector_status(
            self.id, connector, 1, v16_map.connector_status_from_16(status)
        )
        before = dict(self.active_transactions)
        if status in v16_map.CHARGING_16:  # a car charges, whether or not its start came
            self.active_transactions.setdefault(connector, f"{CHARGING_MARK}{connector}")
            await self._report_transactions(before)
        elif status == "Available":  # the sink closed any session there too
            self.active_transactions.pop(connector, None)
        return call_result.StatusNotification()

    async def _id_tag_status(self) -> str:
        status = await self.sink.authorize(self.id, "IdTag")  # 1.6 idTags have no type
        return status if status in _ID_TAG_STATUS else "Invalid"

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str, **_: Any) -> call_result.Authorize:
        self._require_boot()
        return call_result.Authorize(id_tag_info={"status": await self._id_tag_status()})

    @on(Action.start_transaction)
    async def on_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: Any
    ) -> call_result.StartTransaction:
        self._require_boot()
        parse_ocpp_time(timestamp)
        status = await self._id_tag_status()
        tx = self._new_transaction_id()
        if status == "Accepted":
            before = dict(self.active_transactions)
            self.active_transactions[int32(connector_id)] = str(tx)
            await self._report_transactions(before)
        return call_result.StartTransaction(transaction_id=tx, id_tag_info={"status": status})

    @on(Action.stop_transaction)
    async def on_stop_transaction(
        self, transaction_id: int, timestamp: str, id_tag: str | None = None, **_: Any
    ) -> call_result.StopTransaction:
        self._require_boot()
        parse_ocpp_time(timestamp)
        before, tx = dict(self.active_transactions), str(transaction_id)
        self.active_transactions = {c: t for c, t in before.items() if t != tx}
        await self._report_transactions(before)
        info = {"status": await self._id_tag_status()} if id_tag is not None else None
        return call_result.StopTransaction(id_tag_info=info)

    @on(Action.meter_values)
    async def on_meter_values(
        self, connector_id: int, meter_value: list[dict[str, Any]], **_: Any
    ) -> call_result.MeterValues:
        self._require_boot()
        readings = [(parse_ocpp_time(m["timestamp"]), m) for m in meter_value]
        when, newest = max(readings, key=lambda r: r[0])  # the schema asks for one at least
        sampled = tuple(_sampled(v) for v in newest.get("sampled_value", []))
        await self.sink.meter_values(self.id, MeterReading(int32(connector_id), when, sampled))
        return call_result.MeterValues()

    @on(Action.data_transfer)
    async def on_data_transfer(
        self, vendor_id: str, message_id: str | None = None, data: Any = None, **_: Any
    ) -> call_result.DataTransfer:
        status = await self.vendor_message(vendor_id, message_id, data)
        return call_result.DataTransfer(status=status)

    @on(Action.firmware_status_notification)
    async def on_firmware_status(
        self, status: str, **_: Any
    ) -> call_result.FirmwareStatusNotification:
        """A legacy station's status names no request: the one this adapter sent, else the
        pending update of a station marked legacy."""
        self._require_boot()
        request = None
        if status != "Idle":  # Idle names no request (as in 2.0.1)
            request = self._legacy_request or await self.sink.open_legacy_request(self.id)
        await self.sink.firmware_status(self.id, status, request, "OCPP 1.6 without requestId")
        return call_result.FirmwareStatusNotification()

    @on(Action.signed_firmware_status_notification)
    async def on_signed_firmware_status(
        self, status: str, request_id: int | None = None, **_: Any
    ) -> call_result.SignedFirmwareStatusNotification:
        self._require_boot()
        await self._shows_signed_support("sent SignedFirmwareStatusNotification")
        request = None if request_id is None else int32(request_id)
        await self.sink.firmware_status(self.id, v16_map.signed_firmware_status(status), request)
        return call_result.SignedFirmwareStatusNotification()

    @on(Action.security_event_notification)
    async def on_security_event(
        self, type: str, timestamp: str, tech_info: str | None = None, **_: Any
    ) -> call_result.SecurityEventNotification:
        # Before boot too, as in 2.0.1: a quarantined charger only sends these.
        await self.sink.security_event(self.id, type, parse_ocpp_time(timestamp), tech_info)
        await self._shows_signed_support("sent SecurityEventNotification")
        return call_result.SecurityEventNotification()

    @on(Action.log_status_notification)
    async def on_log_status(
        self, status: str, request_id: int | None = None, **_: Any
    ) -> call_result.LogStatusNotification:
        self._require_boot()
        request = None if request_id is None else int32(request_id)
        await self.sink.log_status(self.id, status, request)
        return call_result.LogStatusNotification()

    @on(Action.diagnostics_status_notification)
    async def on_diagnostics_status(self, **_: Any) -> call_result.DiagnosticsStatusNotification:
        self._require_boot()  # acknowledged: Chargeward sends no GetDiagnostics (GetLog instead)
        return call_result.DiagnosticsStatusNotification()

    @on(Action.sign_certificate)
    async def on_sign_certificate(
        self, csr: str, call_unique_id: str, **_: Any
    ) -> call_result.SignCertificate:
        self._require_boot()
        answer = await self.sink.check_csr(self.id, csr, STATION_CERTIFICATE)
        if answer.status == "Accepted":
            self._csrs[call_unique_id] = csr
        return call_result.SignCertificate(status=answer.status)  # 1.6: no statusInfo

    @after(Action.sign_certificate)
    async def after_sign_certificate(self, call_unique_id: str, **_: Any) -> None:
        csr = self._csrs.pop(call_unique_id, None)
        if csr is None:
            return
        chain = await self.sink.sign_csr(self.id, csr)
        try:
            status = await self.certificate_signed(chain.chain_pem, STATION_CERTIFICATE)
        except (TransportError, Conflict) as e:
            status = f"not delivered: {e}"
        await self.sink.certificate_delivered(self.id, chain, status)

    # -- commands: CsmsChargePoint's, same signatures ---------------------------------------------

    async def update_firmware(self, order: FirmwareOrder) -> str:
        """SignedUpdateFirmware; plain UpdateFirmware only to a station marked legacy that
        never showed whitepaper support.  Returns the station's status, or
        :data:`SIGNED_UNSUPPORTED` when it refused SignedUpdateFirmware as not implemented."""
        mode = await self.sink.update_mode(self.id)
        if mode.legacy and mode.signed_support is not True and not self._signed_shown:
            await self.call(
                call.UpdateFirmware(
                    # The signature and certificate for a charger that can use them (the
                    # reference agent's legacy kind); others download the URL as it is.
                    location=v16_map.legacy_location(
                        order.location, order.signature, order.signing_certificate
                    ),
                    retrieve_date=ocpp_time(order.retrieve_at),
                    retries=order.retries,
                    retry_interval=order.retry_interval,
                ),
                suppress=False,
            )
            self._legacy_request = order.request_id
            return "Accepted"  # UpdateFirmware.conf has no status
        firmware = {
            "location": order.location,
            "retrieve_date_time": ocpp_time(order.retrieve_at),
            "install_date_time": ocpp_time(order.install_at) if order.install_at else None,
            "signing_certificate": order.signing_certificate,
            "signature": order.signature,
        }
        request = call.SignedUpdateFirmware(
            request_id=order.request_id,
            firmware={k: v for k, v in firmware.items() if v is not None},
            retries=order.retries,
            retry_interval=order.retry_interval,
        )
        try:
            result = await self.call(request, suppress=False)
        except (NotImplementedError_, NotSupportedError) as e:
            why = UNSUPPORTED_REASON.format(error=type(e).__name__)
            LOG.warning("%s: UpdateFirmware %d: %s", self.id, order.request_id, why)
            await self.sink.signed_update_evidence(self.id, False, why)
            return SIGNED_UNSUPPORTED
        except OCPPError:  # any other CALLERROR: it knows the message
            await self._shows_signed_support("answered SignedUpdateFirmware")
            raise
        await self._shows_signed_support("answered SignedUpdateFirmware")
        return str(result.status)

    async def certificate_signed(self, chain_pem: str, certificate_type: str) -> str:
        """CertificateSigned (whitepaper A02); only the station's own certificate."""
        if certificate_type != STATION_CERTIFICATE:
            raise Conflict(f"OCPP 1.6 CertificateSigned carries no {certificate_type}")
        result = await self._request(call.CertificateSigned(certificate_chain=chain_pem))
        return str(result.status)

    async def trigger_message(self, requested_message: str) -> str:
        """TriggerMessage, or ExtendedTriggerMessage for what only the whitepaper can
        trigger (a log status, a certificate signing request)."""
        try:
            name = v16_map.trigger_to_16(requested_message)
        except InvalidValue as e:
            raise Conflict(str(e)) from e
        if name in v16_map.EXTENDED_ONLY:
            result = await self._request(call.ExtendedTriggerMessage(requested_message=name))
        else:
            result = await self._request(call.TriggerMessage(requested_message=name))
        return str(result.status)

    async def set_variable(self, component: str, variable: str, value: str) -> str:
        """The station password (whitepaper ``AuthorizationKey``) with ChangeConfiguration;
        returns Accepted, Rejected, RebootRequired or NotSupported."""
        if (component, variable) != PASSWORD_VARIABLE:
            raise Conflict(f"OCPP 1.6 has no variable {component}.{variable}")
        result = await self._request(call.ChangeConfiguration(key=PASSWORD_KEY, value=value))
        return str(result.status)

    async def publish_firmware(
        self, location: str, checksum: str, request_id: int, *, retries: int, retry_interval: int
    ) -> str:
        raise Conflict(f"station {self.id} speaks OCPP 1.6, which has no PublishFirmware")

    async def unpublish_firmware(self, checksum: str) -> str:
        raise Conflict(f"station {self.id} speaks OCPP 1.6, which has no UnpublishFirmware")

    async def get_base_report(self, request_id: int, report_base: str) -> str:
        raise Conflict(f"station {self.id} speaks OCPP 1.6, which has no GetBaseReport")

    async def install_certificate(
        self, certificate_type: str, certificate_pem: str
    ) -> CertificateAnswer:
        """InstallCertificate (whitepaper M05): CSMS and manufacturer roots only."""
        kind = _CERTIFICATE_TYPES.get(certificate_type)
        if kind is None:
            raise Conflict(f"OCPP 1.6 cannot install a {certificate_type}")
        result = await self._request(
            call.InstallCertificate(certificate_type=kind, certificate=certificate_pem)
        )
        return CertificateAnswer(str(result.status))

    async def get_installed_certificate_ids(
        self, certificate_types: list[str] | None = None
    ) -> InstalledCertificates:
        """GetInstalledCertificateIds, once per 1.6 certificate type asked for (1.6 asks
        for one type at a time)."""
        wanted = list(_CERTIFICATE_TYPES) if certificate_types is None else certificate_types
        found: list[InstalledCertificateId] = []
        for ours in wanted:
            kind = _CERTIFICATE_TYPES.get(ours)
            if kind is None:
                continue
            result = await self._request(call.GetInstalledCertificateIds(certificate_type=kind))
            for d in result.certificate_hash_data or []:
                found.append(InstalledCertificateId(ours, hash_data(d)))
        return InstalledCertificates("Accepted" if found else "NotFound", tuple(found))

    async def delete_certificate(self, hash_data: CertificateHashData) -> CertificateAnswer:
        """DeleteCertificate (whitepaper M04); Accepted, Failed or NotFound."""
        result = await self._request(
            call.DeleteCertificate(
                certificate_hash_data={
                    "hash_algorithm": hash_data.hash_algorithm,
                    "issuer_name_hash": hash_data.issuer_name_hash,
                    "issuer_key_hash": hash_data.issuer_key_hash,
                    "serial_number": hash_data.serial_number,
                }
            )
        )
        return CertificateAnswer(str(result.status))

    async def get_log(self, request: LogRequest) -> LogAnswer:
        """GetLog (whitepaper N01); its LogStatusNotifications follow."""
        log = {
            "remote_location": request.remote_location,
            "oldest_timestamp": ocpp_time(request.oldest) if request.oldest else None,
            "latest_timestamp": ocpp_time(request.latest) if request.latest else None,
        }
        result = await self._request(
            call.GetLog(
                log={k: v for k, v in log.items() if v is not None},
                log_type=request.log_type,
                request_id=request.request_id,
                retries=request.retries,
                retry_interval=request.retry_interval,
            )
        )
        return LogAnswer(str(result.status), result.filename)


def _sampled(v: dict[str, Any]) -> dict[str, Any]:
    """A 1.6 sampledValue as the 2.0.1 reading keeps it (1.6 sends the value as a string)."""
    raw = str(v.get("value"))[:50]
    try:
        value: Any = float(raw)
    except ValueError:
        value = raw
    if isinstance(value, float) and not math.isfinite(value):  # no JSON number: kept as sent
        value = raw
    found = {"value": value, **{k: v.get(k) for k in ("measurand", "unit", "phase", "context")}}
    found["location"] = v.get("location")
    return {k: x for k, x in found.items() if x is not None}
