"""CSMS side of OCPP 2.0.1: translate station messages into calls on a :class:`StationSink`.

Handlers only convert and validate; what to store and audit is the sink's business
(``chargeward.server.stations.csms`` implements it with the database services).  Requests to a
station (UpdateFirmware, certificate management) are methods of :class:`CsmsChargePoint`::

    answer = await cp.install_certificate("ManufacturerRootCertificate", pem)
    answer.status, answer.reason_code
    # -> ('Rejected', 'InvalidCertificate')

Station certificate renewal (A02) starts with ``await cp.trigger_message(
"SignChargingStationCertificate")``; the station's SignCertificate is decided by the sink
(:meth:`StationSink.check_csr`) and, once the answer is out, the signed chain is sent with
CertificateSigned.  Every command takes and returns plain values or small dataclasses.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

from ocpp.exceptions import SecurityError
from ocpp.routing import after, on
from ocpp.v201 import call, call_result, datatypes
from ocpp.v201.enums import Action, RegistrationStatusEnumType

from chargeward.crypto.pki import CertificateHashData
from chargeward.errors import Conflict, TransportError
from chargeward.ocpp.base import (
    VENDOR_ID,
    HardenedChargePoint,
    hash_data,
    int32,
    ocpp_time,
    parse_ocpp_time,
    utc_now,
)
from chargeward.ocpp.core_messages import (
    CoreMessages,
    CoreSink,
)
from chargeward.ocpp.csms_shared import CommandCalls, UpdateAvailable, VendorSink


@dataclass(frozen=True)
class BootInfo:
    reason: str
    model: str | None
    vendor: str | None
    firmware_version: str | None
    serial_number: str | None


class StationSink(CoreSink, VendorSink, Protocol):
    """What the CSMS does with what a station reports."""

    async def boot(self, station_id: str, info: BootInfo) -> None: ...
    async def heartbeat(self, station_id: str) -> None: ...
    async def connector_status(
        self, station_id: str, evse_id: int, connector_id: int, status: str
    ) -> None: ...
    async def firmware_status(
        self, station_id: str, status: str, request_id: int | None, note: str | None = None
    ) -> None:
        """A FirmwareStatusNotification; ``note``: what a Chargeward charger added (e.g. why
        it did not use a delta)."""
        ...

    async def log_status(self, station_id: str, status: str, request_id: int | None) -> None: ...
    async def publish_status(
        self, station_id: str, status: str, request_id: int | None, locations: list[str]
    ) -> None:
        """A Local Controller's PublishFirmwareStatusNotification (``locations`` once
        ``Published``)."""
        ...

    async def security_event(
        self, station_id: str, type: str, timestamp: dt.datetime, tech_info: str | None
    ) -> None: ...
    async def update_available(self, station_id: str, report: UpdateAvailable) -> None: ...
    async def owner_notification(self, station_id: str, notice: dict[str, Any]) -> None: ...
    async def transactions(self, station_id: str, active: dict[str, str]) -> None:
        """The transactions running now changed ({evse id: transaction id})."""
        ...

    async def check_csr(self, station_id: str, csr: str, certificate_type: str) -> SignAnswer:
        """Decide a SignCertificateRequest (OCPP A02) that came over this station's own
        connection."""
        ...

    async def sign_csr(self, station_id: str, csr: str) -> SignedChain:
        """Issue the certificate for an accepted CSR."""
        ...

    async def certificate_delivered(self, station_id: str, chain: SignedChain, status: str) -> None:
        """The station answered CertificateSigned with ``status``."""
        ...


@dataclass(frozen=True)
class SignAnswer:
    """The CSMS's answer to SignCertificateRequest; ``reason`` goes to logs and audit."""

    status: str  # Accepted | Rejected
    reason: str | None = None


@dataclass(frozen=True)
class SignedChain:
    """A station certificate issued for a CSR: the PEM chain (leaf first) and the leaf's
    serial (hex) and expiry."""

    chain_pem: str
    serial: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class FirmwareOrder:
    request_id: int
    location: str
    signature: str
    signing_certificate: str
    retrieve_at: dt.datetime
    install_at: dt.datetime | None = None
    retries: int | None = None
    retry_interval: int | None = None
    # OCPP customData (snake_case keys, with vendor_id): a vendor extension such as the delta
    # offer of chargeward.server.rollout.deltas; stations that do not know it ignore it.
    custom_data: dict[str, Any] | None = None


@dataclass(frozen=True)
class CertificateAnswer:
    """A station's InstallCertificate (M05) or DeleteCertificate (M04) response."""

    status: str
    reason_code: str | None = None
    additional_info: str | None = None


@dataclass(frozen=True)
class InstalledCertificateId:
    """One certificate a station reported in GetInstalledCertificateIdsResponse (M03)."""

    certificate_type: str
    hash_data: CertificateHashData


@dataclass(frozen=True)
class InstalledCertificates:
    status: str  # Accepted or NotFound
    certificates: tuple[InstalledCertificateId, ...] = ()


@dataclass(frozen=True)
class LogRequest:
    """One GetLog (OCPP N01): the station uploads the log to ``remote_location``."""

    request_id: int
    log_type: str  # SecurityLog | DiagnosticsLog
    remote_location: str
    oldest: dt.datetime | None = None
    latest: dt.datetime | None = None
    retries: int | None = None
    retry_interval: int | None = None


@dataclass(frozen=True)
class LogAnswer:
    """A station's GetLogResponse: Accepted, Rejected or AcceptedCanceled, and the file name."""

    status: str
    filename: str | None = None
    reason_code: str | None = None
    additional_info: str | None = None


def _answer(result: Any) -> CertificateAnswer:
    info = result.status_info or {}
    return CertificateAnswer(
        str(result.status), info.get("reason_code"), info.get("additional_info")
    )


class CsmsChargePoint(CommandCalls, CoreMessages, HardenedChargePoint):
    """One connected station, seen from the CSMS."""

    sink: StationSink

    def __init__(
        self,
        station_id: str,
        connection: Any,
        sink: StationSink,
        *,
        heartbeat_interval: int = 300,
        response_timeout: float = 30,
    ) -> None:
        super().__init__(station_id, connection, response_timeout=response_timeout)
        self.sink = sink
        self.heartbeat_interval = heartbeat_interval
        self.booted = False
        # Transactions running now (evse id -> transaction id), from TransactionEvent (E01).
        self.active_transactions: dict[int, str] = {}
        # Connector statuses of the EVSEs with a transaction (evse -> connector -> status).
        self._connectors: dict[int, dict[int, str]] = {}
        self._csrs: dict[str, tuple[str, str]] = {}  # accepted CSRs by message id

    def _require_boot(self) -> None:
        # OCPP 2.0.1 B02.FR.09: before BootNotification is accepted the CSMS refuses other calls.
        if not self.booted:
            raise SecurityError(description="BootNotification has not been accepted yet")

    @on(Action.boot_notification)
    async def on_boot_notification(
        self, charging_station: dict[str, Any], reason: str, **_: Any
    ) -> call_result.BootNotification:
        await self.sink.boot(
            self.id,
            BootInfo(
                reason=reason,
                model=charging_station.get("model"),
                vendor=charging_station.get("vendor_name"),
                firmware_version=charging_station.get("firmware_version"),
                serial_number=charging_station.get("serial_number"),
            ),
        )
        self.active_transactions, self._connectors = {}, {}  # none survives a reboot
        self.booted = True
        return call_result.BootNotification(
            current_time=ocpp_time(utc_now()),
            interval=self.heartbeat_interval,
            status=RegistrationStatusEnumType.accepted,
        )

    @on(Action.heartbeat)
    async def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        self._require_boot()
        await self.sink.heartbeat(self.id)
        return call_result.Heartbeat(current_time=ocpp_time(utc_now()))

    @on(Action.status_notification)
    async def on_status_notification(
        self, timestamp: str, connector_status: str, evse_id: int, connector_id: int, **_: Any
    ) -> call_result.StatusNotification:
        self._require_boot()
        parse_ocpp_time(timestamp)
        await self.sink.connector_status(self.id, evse_id, connector_id, connector_status)
        if evse_id in self.active_transactions:  # its end may be lost: watch its connectors
            connectors = self._connectors.setdefault(evse_id, {})
            connectors[connector_id] = connector_status
            if all(v == "Available" for v in connectors.values()):  # the sink closed it too
                del self.active_transactions[evse_id], self._connectors[evse_id]
        return call_result.StatusNotification()

    @on(Action.firmware_status_notification)
    async def on_firmware_status(
        self,
        status: str,
        request_id: int | None = None,
        custom_data: dict[str, Any] | None = None,
        **_: Any,
    ) -> call_result.FirmwareStatusNotification:
        self._require_boot()
        note = None
        if custom_data and custom_data.get("vendor_id") == VENDOR_ID:
            fallback = custom_data.get("delta_fallback")
            note = f"delta not used: {fallback[:200]}" if isinstance(fallback, str) else None
        await self.sink.firmware_status(self.id, status, _request_id(request_id), note)
        return call_result.FirmwareStatusNotification()

    @on(Action.publish_firmware_status_notification)
    async def on_publish_firmware_status(
        self,
        status: str,
        location: list[str] | None = None,
        request_id: int | None = None,
        **_: Any,
    ) -> call_result.PublishFirmwareStatusNotification:
        self._require_boot()
        locations = [u for u in location or [] if isinstance(u, str)]
        await self.sink.publish_status(self.id, status, _request_id(request_id), locations)
        return call_result.PublishFirmwareStatusNotification()

    @on(Action.security_event_notification)
    async def on_security_event(
        self, type: str, timestamp: str, tech_info: str | None = None, **_: Any
    ) -> call_result.SecurityEventNotification:
        # Security events are accepted before boot: a quarantined charger only sends these.
        await self.sink.security_event(self.id, type, parse_ocpp_time(timestamp), tech_info)
        return call_result.SecurityEventNotification()

    @on(Action.log_status_notification)
    async def on_log_status(
        self, status: str, request_id: int | None = None, **_: Any
    ) -> call_result.LogStatusNotification:
        self._require_boot()
        await self.sink.log_status(self.id, status, _request_id(request_id))
        return call_result.LogStatusNotification()

    @on(Action.data_transfer)
    async def on_data_transfer(
        self, vendor_id: str, message_id: str | None = None, data: Any = None, **_: Any
    ) -> call_result.DataTransfer:
        """Vendor messages (:meth:`CommandCalls.vendor_message`)."""
        return call_result.DataTransfer(
            status=await self.vendor_message(vendor_id, message_id, data)
        )

    @on(Action.transaction_event)
    async def on_transaction_event(
        self,
        event_type: str,
        timestamp: str,
        transaction_info: dict[str, Any],
        evse: dict[str, Any] | None = None,
        **_: Any,
    ) -> call_result.TransactionEvent:
        self._require_boot()
        parse_ocpp_time(timestamp)
        tx = str(transaction_info["transaction_id"])
        before = dict(self.active_transactions)
        if event_type == "Ended":
            self.active_transactions = {
                e: t for e, t in self.active_transactions.items() if t != tx
            }
        elif evse is not None:
            self.active_transactions[int(evse["id"])] = tx
        if self.active_transactions != before:
            await self.sink.transactions(
                self.id, {str(e): t for e, t in self.active_transactions.items()}
            )
        return call_result.TransactionEvent()

    # -- security (OCPP A01, A02) ----------------------------------------------------------------

    @on(Action.sign_certificate)
    async def on_sign_certificate(
        self, csr: str, call_unique_id: str, certificate_type: str | None = None, **_: Any
    ) -> call_result.SignCertificate:
        self._require_boot()
        kind = certificate_type or "ChargingStationCertificate"
        answer = await self.sink.check_csr(self.id, csr, kind)
        if answer.status == "Accepted":
            self._csrs[call_unique_id] = (csr, kind)
        info = (
            datatypes.StatusInfoType(reason_code="InvalidCSR", additional_info=answer.reason[:512])
            if answer.reason
            else None
        )
        return call_result.SignCertificate(status=answer.status, status_info=info)

    @after(Action.sign_certificate)
    async def after_sign_certificate(self, call_unique_id: str, **_: Any) -> None:
        accepted = self._csrs.pop(call_unique_id, None)
        if accepted is None:
            return
        csr, kind = accepted
        chain = await self.sink.sign_csr(self.id, csr)
        try:
            status = await self.certificate_signed(chain.chain_pem, kind)
        except (TransportError, Conflict) as e:
            status = f"not delivered: {e}"
        await self.sink.certificate_delivered(self.id, chain, status)

    async def certificate_signed(self, chain_pem: str, certificate_type: str) -> str:
        """Send CertificateSigned (OCPP A02); returns the station's status."""
        result = await self._request(
            call.CertificateSigned(certificate_chain=chain_pem, certificate_type=certificate_type)
        )
        return str(result.status)

    async def trigger_message(self, requested_message: str) -> str:
        """Send TriggerMessage; returns Accepted, Rejected or NotImplemented."""
        result = await self._request(call.TriggerMessage(requested_message=requested_message))
        return str(result.status)

    async def set_variable(self, component: str, variable: str, value: str) -> str:
        """Send SetVariables with one entry (OCPP B05); returns its attributeStatus."""
        result = await self._request(
            call.SetVariables(
                set_variable_data=[
                    datatypes.SetVariableDataType(
                        attribute_value=value,
                        component=datatypes.ComponentType(name=component),
                        variable=datatypes.VariableType(name=variable),
                    )
                ]
            )
        )
        return str(result.set_variable_result[0]["attribute_status"])

    async def update_firmware(self, order: FirmwareOrder) -> str:
        """Send UpdateFirmware; returns the station's response status."""
        firmware = datatypes.FirmwareType(
            location=order.location,
            retrieve_date_time=ocpp_time(order.retrieve_at),
            install_date_time=ocpp_time(order.install_at) if order.install_at else None,
            signing_certificate=order.signing_certificate,
            signature=order.signature,
        )
        result = await self.call(
            call.UpdateFirmware(
                request_id=order.request_id,
                firmware=firmware,
                retries=order.retries,
                retry_interval=order.retry_interval,
                custom_data=order.custom_data,
            ),
            suppress=False,
        )
        return str(result.status)

    async def publish_firmware(
        self, location: str, checksum: str, request_id: int, *, retries: int, retry_interval: int
    ) -> str:
        """Send PublishFirmware to a Local Controller; returns its status."""
        result = await self.call(
            call.PublishFirmware(
                location=location,
                checksum=checksum,
                request_id=request_id,
                retries=retries,
                retry_interval=retry_interval,
            ),
            suppress=False,
        )
        return str(result.status)

    async def unpublish_firmware(self, checksum: str) -> str:
        """Send UnpublishFirmware; returns ``Unpublished``, ``NoFirmware`` or
        ``DownloadOngoing``."""
        result = await self.call(call.UnpublishFirmware(checksum=checksum), suppress=False)
        return str(result.status)

    async def install_certificate(
        self, certificate_type: str, certificate_pem: str
    ) -> CertificateAnswer:
        """Send InstallCertificate (OCPP M05); returns the station's answer."""
        result = await self._request(
            call.InstallCertificate(certificate_type=certificate_type, certificate=certificate_pem)
        )
        return _answer(result)

    async def get_installed_certificate_ids(
        self, certificate_types: list[str] | None = None
    ) -> InstalledCertificates:
        """Send GetInstalledCertificateIds (OCPP M03); None asks for every type."""
        result = await self._request(
            call.GetInstalledCertificateIds(certificate_type=certificate_types)
        )
        chain = result.certificate_hash_data_chain or []
        return InstalledCertificates(
            str(result.status),
            tuple(
                InstalledCertificateId(c["certificate_type"], hash_data(c["certificate_hash_data"]))
                for c in chain
            ),
        )

    async def get_log(self, request: LogRequest) -> LogAnswer:
        """Send GetLog (OCPP N01); returns the station's answer.  The upload and its
        LogStatusNotifications follow."""
        result = await self._request(
            call.GetLog(
                log=datatypes.LogParametersType(
                    remote_location=request.remote_location,
                    oldest_timestamp=ocpp_time(request.oldest) if request.oldest else None,
                    latest_timestamp=ocpp_time(request.latest) if request.latest else None,
                ),
                log_type=request.log_type,
                request_id=request.request_id,
                retries=request.retries,
                retry_interval=request.retry_interval,
            )
        )
        info = result.status_info or {}
        return LogAnswer(
            str(result.status),
            result.filename,
            info.get("reason_code"),
            info.get("additional_info"),
        )

    async def delete_certificate(self, hash_data: CertificateHashData) -> CertificateAnswer:
        """Send DeleteCertificate (OCPP M04) with hash data as the station reported it
        (M04.FR.07: the same hash algorithm)."""
        result = await self._request(
            call.DeleteCertificate(
                certificate_hash_data=datatypes.CertificateHashDataType(
                    hash_algorithm=hash_data.hash_algorithm,
                    issuer_name_hash=hash_data.issuer_name_hash,
                    issuer_key_hash=hash_data.issuer_key_hash,
                    serial_number=hash_data.serial_number,
                )
            )
        )
        return _answer(result)


def _request_id(value: int | None) -> int | None:
    """A requestId, which names a row: a 32-bit OCPP ``integer`` or absent."""
    return None if value is None else int32(value)
