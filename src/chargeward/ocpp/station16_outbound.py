"""The agent's OCPP 2.0.1 CALLs as a 1.6J station sends them: :class:`Outbound16`.

The one place where a 1.6 station's outgoing messages are translated (used by
:meth:`chargeward.ocpp.station16.Station16ChargePoint.call`): one function per 2.0.1 action
in ``_REQUESTS``; what 1.6 has no message for is logged and answered with :class:`NotSent`.

    >>> out = Outbound16("legacy", "CP-1", charging=lambda evse: False, connectors=1)
    >>> from ocpp.v201 import call
    >>> out.request(call.FirmwareStatusNotification(status="InvalidSignature", request_id=3))
    FirmwareStatusNotification(status='InstallationFailed')
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from chargeward.ocpp.v16_map import connector_status_to_16, legacy_firmware_status

LOG = logging.getLogger("chargeward.ocpp")
WHITEPAPER = "whitepaper"  # OCPP 1.6 Security Whitepaper: signed updates, PKI, logs
LEGACY = "legacy"  # plain OCPP 1.6J: UpdateFirmware / FirmwareStatusNotification only
KINDS = (WHITEPAPER, LEGACY)
ID_TAG_MAX = 20  # StartTransaction.idTag, StopTransaction.idTag
_STOP_REASONS_16 = frozenset(
    {
        "EmergencyStop",
        "EVDisconnected",
        "HardReset",
        "Local",
        "Other",
        "PowerLoss",
        "Reboot",
        "Remote",
        "SoftReset",
        "UnlockCommand",
        "DeAuthorized",
    }
)
_LOG_STATUSES_16 = frozenset(
    {
        "BadMessage",
        "Idle",
        "NotSupportedOperation",
        "PermissionDenied",
        "Uploaded",
        "UploadFailure",
        "Uploading",
    }
)


@dataclass(frozen=True)
class NotSent:
    """The result of an agent CALL that a 1.6 station does not send (logged instead)."""

    action: str
    status: str = "NotSent"


@dataclass
class Outbound16:
    """The agent's OCPP 2.0.1 CALLs as a 1.6 station of ``kind`` sends them, and the
    answers back in the shapes the agent reads (``.status``, ``.interval``).

    One per agent, kept across connections: the CSMS's transaction ids (StartTransaction's
    answer, needed by StopTransaction) and request ids for legacy updates.
    """

    kind: str
    station_id: str
    charging: Callable[[int], bool]  # a session is active on this connector
    connectors: int
    transactions: dict[str, int] = field(default_factory=dict)  # ours -> the CSMS's
    _last_legacy: str | None = None
    _request_id: int = 0

    def new_request_id(self, now: float) -> int:
        """A request id for a legacy UpdateFirmware (1.6 has none): increasing, from the
        clock so that it differs from those of earlier boots."""
        self._request_id = max(self._request_id + 1, int(now) % 2**31)
        return self._request_id

    def request(self, payload: Any) -> Any | None:
        """The 1.6 CALL for ``payload`` (a 2.0.1 call), or None when it is not sent."""
        translate = _REQUESTS.get(type(payload).__name__)
        sent = translate(self, payload) if translate is not None else None
        if sent is None:
            LOG.info(
                "%s: %s not sent on OCPP 1.6 (%s): %s",
                self.station_id,
                type(payload).__name__,
                self.kind,
                _brief(payload),
            )
        return sent

    def result(self, payload: Any, sent: Any, result: Any) -> Any:
        """The answer as the agent reads it (the 1.6 result: the same attribute names)."""
        if isinstance(sent, call16.StartTransaction) and result is not None:
            self.transactions[payload.transaction_info["transaction_id"]] = int(
                result.transaction_id
            )
        return result

    # -- one translation per 2.0.1 action ------------------------------------------------

    def _boot(self, p: call201.BootNotification) -> call16.BootNotification:
        station = p.charging_station
        return call16.BootNotification(
            charge_point_model=station["model"],
            charge_point_vendor=station["vendor_name"],
            charge_point_serial_number=station.get("serial_number"),
            firmware_version=station.get("firmware_version"),
        )

    def _status(self, p: call201.StatusNotification) -> call16.StatusNotification:
        status = connector_status_to_16(str(p.connector_status), charging=self.charging(p.evse_id))
        return call16.StatusNotification(
            connector_id=p.evse_id, error_code="NoError", status=status, timestamp=p.timestamp
        )

    def _firmware(self, p: call201.FirmwareStatusNotification) -> Any | None:
        if p.custom_data is not None:  # a note for a Chargeward CSMS: 1.6 has no customData
            return None
        status = str(p.status)
        if self.kind == WHITEPAPER:
            return call16.SignedFirmwareStatusNotification(status=status, request_id=p.request_id)
        legacy = legacy_firmware_status(status)
        if status == "InstallRebooting" and self._last_legacy == "Installing":
            legacy = None  # "Installing" again: it was said
        if legacy is None:
            return None
        self._last_legacy = legacy
        return call16.FirmwareStatusNotification(status=legacy)

    def _security_event(self, p: call201.SecurityEventNotification) -> Any | None:
        if self.kind != WHITEPAPER:
            return None  # in the security log only: plain 1.6 has no such message
        return call16.SecurityEventNotification(
            type=p.type, timestamp=p.timestamp, tech_info=p.tech_info
        )

    def _log_status(self, p: call201.LogStatusNotification) -> Any | None:
        if self.kind != WHITEPAPER or str(p.status) not in _LOG_STATUSES_16:
            return None  # AcceptedCanceled: 1.6 has no word for it
        return call16.LogStatusNotification(status=str(p.status), request_id=p.request_id)

    def _sign_certificate(self, p: call201.SignCertificate) -> Any | None:
        return call16.SignCertificate(csr=p.csr) if self.kind == WHITEPAPER else None

    def _heartbeat(self, p: call201.Heartbeat) -> call16.Heartbeat:
        return call16.Heartbeat()

    def _data_transfer(self, p: call201.DataTransfer) -> call16.DataTransfer:
        data = p.data if p.data is None or isinstance(p.data, str) else json.dumps(p.data)
        return call16.DataTransfer(vendor_id=p.vendor_id, message_id=p.message_id, data=data)

    def _transaction(self, p: call201.TransactionEvent) -> Any | None:
        ours = p.transaction_info["transaction_id"]
        id_tag = ((p.id_token or {}).get("id_token") or "")[:ID_TAG_MAX] or None
        if p.event_type == "Started":
            return call16.StartTransaction(
                connector_id=p.evse["id"],
                id_tag=id_tag or "unknown",
                meter_start=0,  # the reference agent meters nothing
                timestamp=p.timestamp,
            )
        if p.event_type == "Ended":
            theirs = self.transactions.pop(ours, None)
            if theirs is None:  # StartTransaction was refused: the CSMS knows no transaction
                return None
            reason = p.transaction_info.get("stopped_reason")
            return call16.StopTransaction(
                meter_stop=0,
                timestamp=p.timestamp,
                transaction_id=theirs,
                reason=reason if reason in _STOP_REASONS_16 else "Other",
                id_tag=id_tag,
            )
        return None  # Updated: no meter values to send


_REQUESTS: dict[str, Callable[[Outbound16, Any], Any | None]] = {
    "BootNotification": Outbound16._boot,
    "StatusNotification": Outbound16._status,
    "FirmwareStatusNotification": Outbound16._firmware,
    "SecurityEventNotification": Outbound16._security_event,
    "LogStatusNotification": Outbound16._log_status,
    "SignCertificate": Outbound16._sign_certificate,
    "Heartbeat": Outbound16._heartbeat,
    "DataTransfer": Outbound16._data_transfer,
    "TransactionEvent": Outbound16._transaction,
    # NotifyReport, PublishFirmwareStatusNotification: no 1.6 message (not sent, logged).
}


def _brief(payload: Any) -> str:
    status = getattr(payload, "status", None) or getattr(payload, "type", None)
    return str(status) if status is not None else "-"
