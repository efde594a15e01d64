"""Charger side of OCPP 2.0.1: CSMS requests become calls on a :class:`StationController`.

Responses are decided synchronously in ``@on`` handlers; work that sends further messages
(the L01 status sequence, triggered notifications, security events after a change of the
certificate store) starts in ``@after`` handlers so the receive loop is never blocked by our
own outgoing calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from ocpp.exceptions import OccurrenceConstraintViolationError
from ocpp.routing import after, on
from ocpp.v201 import call_result, datatypes
from ocpp.v201.enums import (
    Action,
    GetInstalledCertificateStatusEnumType,
    MessageTriggerEnumType,
    TriggerMessageStatusEnumType,
)

from chargeward.crypto.pki import CertificateHashData
from chargeward.ocpp.base import HardenedChargePoint, hash_data

REASON_CODE_MAX = 20  # StatusInfoType.reasonCode
ADDITIONAL_INFO_MAX = 512  # StatusInfoType.additionalInfo


@dataclass(frozen=True)
class CertificateResult:
    """The station's answer to InstallCertificate (M05) or DeleteCertificate (M04).

    ``security_event`` is the techInfo of a security event to send once the answer is out,
    or None; ``event_type`` its type, None when the trust store changed (the charger's
    ``ReconfigurationOfSecurityParameters``).
    """

    status: str
    reason_code: str | None = None
    additional_info: str | None = None
    security_event: str | None = None
    event_type: str | None = None

    def status_info(self) -> datatypes.StatusInfoType | None:
        if self.reason_code is None:
            return None
        return datatypes.StatusInfoType(
            reason_code=self.reason_code[:REASON_CODE_MAX],
            additional_info=(self.additional_info or "")[:ADDITIONAL_INFO_MAX] or None,
        )


@dataclass(frozen=True)
class InstalledCertificate:
    """One entry of GetInstalledCertificateIdsResponse.certificateHashDataChain (M03)."""

    certificate_type: str
    hash_data: CertificateHashData


class StationController(Protocol):
    def update_firmware(
        self,
        request_id: int,
        firmware: dict[str, Any],
        retries: int | None,
        retry_interval: int | None,
        custom_data: dict[str, Any] | None = None,
    ) -> str:
        """Decide the UpdateFirmware response status (``custom_data``: the request's
        customData, keys in snake_case, e.g. a delta offer)."""
        ...

    async def after_update_firmware(self, request_id: int, status: str) -> None: ...

    def trigger_status(self, what: str) -> str:
        """Decide the TriggerMessage response for a triggerable message: ``Accepted`` or
        ``Rejected`` (e.g. BootNotification once the boot was accepted, OCPP F06.FR.17)."""
        ...

    async def trigger(self, what: str) -> None: ...

    def reset(self, type: str) -> str: ...

    async def after_reset(self, type: str, status: str) -> None: ...

    def install_certificate(self, certificate_type: str, certificate: str) -> CertificateResult:
        """Decide and carry out InstallCertificate (OCPP M05)."""
        ...

    def installed_certificates(
        self, certificate_types: list[str] | None
    ) -> list[InstalledCertificate]:
        """Installed certificates of ``certificate_types`` (None: every type; OCPP M03)."""
        ...

    def delete_certificate(self, hash_data: CertificateHashData) -> CertificateResult:
        """Decide and carry out DeleteCertificate (OCPP M04)."""
        ...

    async def after_certificate_change(self, result: CertificateResult) -> None:
        """Runs after an Install/DeleteCertificate answer was sent (e.g. a security event)."""
        ...

    def get_log(
        self,
        log_type: str,
        request_id: int,
        log: dict[str, Any],
        retries: int | None,
        retry_interval: int | None,
    ) -> tuple[str, str | None]:
        """Decide the GetLog response (OCPP N01): (status, filename)."""
        ...

    async def after_get_log(self, request_id: int, status: str) -> None:
        """Runs after the GetLog answer was sent: the upload and its LogStatusNotifications."""
        ...

    def publish_firmware(
        self, location: str, checksum: str, request_id: int, retries: int, retry_interval: int
    ) -> str:
        """PublishFirmware (L03): ``Accepted`` by a Local Controller, ``Rejected`` otherwise."""
        ...

    async def after_publish_firmware(self, checksum: str, status: str) -> None: ...

    def unpublish_firmware(self, checksum: str) -> str:
        """UnpublishFirmware (L04): ``Unpublished``, ``NoFirmware`` or ``DownloadOngoing``."""
        ...

    def set_variable(
        self, component: dict[str, Any], variable: dict[str, Any], attribute_type: str, value: str
    ) -> str:
        """Decide and carry out one SetVariables entry (OCPP B05); a SetVariableStatus."""
        ...

    def get_variable(
        self, component: dict[str, Any], variable: dict[str, Any], attribute_type: str
    ) -> tuple[str, str | None]:
        """One GetVariables entry (OCPP B06): (GetVariableStatus, value or None)."""
        ...

    def report(
        self,
        report_base: str | None,
        component_variable: list[dict[str, Any]] | None = None,
        criteria: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """The reportData of a GetBaseReport (B07) or, ``report_base`` None, a GetReport (B08)."""
        ...

    async def send_report(self, request_id: int, data: list[dict[str, Any]]) -> None:
        """Send ``data`` as the NotifyReport messages of ``request_id``."""
        ...

    def certificate_signed(
        self, certificate_chain: str, certificate_type: str | None
    ) -> CertificateResult:
        """Check and install a signed station certificate (OCPP A02)."""
        ...

    async def after_certificate_signed(self, result: CertificateResult) -> None:
        """Runs after the CertificateSigned answer was sent (e.g. reconnect with it)."""
        ...


ITEMS_PER_MESSAGE = 50  # DeviceDataCtrlr.ItemsPerMessage: GetReport, GetVariables, SetVariables


def _check_items(items: list[Any]) -> None:
    """More entries than ItemsPerMessage: refused as a whole (OCPP B05, B06)."""
    if len(items) > ITEMS_PER_MESSAGE:
        raise OccurrenceConstraintViolationError(
            description=f"at most {ITEMS_PER_MESSAGE} entries per message"
        )


TRIGGERABLE = {
    MessageTriggerEnumType.firmware_status_notification,
    MessageTriggerEnumType.heartbeat,
    MessageTriggerEnumType.status_notification,  # the CSMS reconciles sessions (OCPP F06)
    MessageTriggerEnumType.boot_notification,
    MessageTriggerEnumType.sign_charging_station_certificate,  # OCPP A02
}


class StationChargePoint(HardenedChargePoint):
    def __init__(
        self,
        station_id: str,
        connection: Any,
        controller: StationController,
        *,
        response_timeout: float = 30,
    ) -> None:
        super().__init__(station_id, connection, response_timeout=response_timeout)
        self.controller = controller
        self._responses: dict[int, str] = {}
        self._reset_status = "Rejected"
        self._trigger_statuses: dict[str, str] = {}  # TriggerMessage answers, per message
        self._certificate_results: dict[str, CertificateResult] = {}
        self._log_responses: dict[int, str] = {}
        self._publish_responses: dict[str, str] = {}
        self._reports: dict[int, list[dict[str, Any]]] = {}  # GetBaseReport/GetReport data

    @on(Action.update_firmware)
    def on_update_firmware(
        self,
        request_id: int,
        firmware: dict[str, Any],
        retries: int | None = None,
        retry_interval: int | None = None,
        custom_data: dict[str, Any] | None = None,
        **_: Any,
    ) -> call_result.UpdateFirmware:
        status = self.controller.update_firmware(
            request_id, firmware, retries, retry_interval, custom_data
        )
        self._responses[request_id] = status
        return call_result.UpdateFirmware(status=status)

    @after(Action.update_firmware)
    async def after_update_firmware(self, request_id: int, **_: Any) -> None:
        await self.controller.after_update_firmware(
            request_id, self._responses.pop(request_id, "Rejected")
        )

    @on(Action.publish_firmware)
    def on_publish_firmware(
        self,
        location: str,
        checksum: str,
        request_id: int,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> call_result.PublishFirmware:
        status = self.controller.publish_firmware(
            location, checksum, request_id, retries or 0, retry_interval or 30
        )
        self._publish_responses[checksum] = status
        return call_result.PublishFirmware(status=status)

    @after(Action.publish_firmware)
    async def after_publish_firmware(self, checksum: str, **_: Any) -> None:
        await self.controller.after_publish_firmware(
            checksum, self._publish_responses.pop(checksum, "Rejected")
        )

    @on(Action.unpublish_firmware)
    def on_unpublish_firmware(self, checksum: str, **_: Any) -> call_result.UnpublishFirmware:
        return call_result.UnpublishFirmware(status=self.controller.unpublish_firmware(checksum))

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, **_: Any) -> call_result.TriggerMessage:
        if requested_message in TRIGGERABLE:
            status = self.controller.trigger_status(requested_message)
            self._trigger_statuses[requested_message] = status
            return call_result.TriggerMessage(status=status)
        return call_result.TriggerMessage(status=TriggerMessageStatusEnumType.not_implemented)

    @after(Action.trigger_message)
    async def after_trigger_message(self, requested_message: str, **_: Any) -> None:
        if self._trigger_statuses.pop(requested_message, None) == "Accepted":
            await self.controller.trigger(requested_message)

    @on(Action.reset)
    def on_reset(self, type: str, **_: Any) -> call_result.Reset:
        self._reset_status = self.controller.reset(type)
        return call_result.Reset(status=self._reset_status)

    @after(Action.reset)
    async def after_reset(self, type: str, **_: Any) -> None:
        await self.controller.after_reset(type, self._reset_status)

    @on(Action.set_variables)
    def on_set_variables(
        self, set_variable_data: list[dict[str, Any]], **_: Any
    ) -> call_result.SetVariables:
        _check_items(set_variable_data)
        results = []
        for item in set_variable_data:  # OCPP B05.FR.01: one result per requested variable
            attribute = item.get("attribute_type", "Actual")
            status = self.controller.set_variable(
                item["component"], item["variable"], attribute, item["attribute_value"]
            )
            results.append(
                {
                    "attribute_status": status,
                    "component": item["component"],
                    "variable": item["variable"],
                    "attribute_type": attribute,
                }
            )
        return call_result.SetVariables(set_variable_result=results)

    @on(Action.get_variables)
    def on_get_variables(
        self, get_variable_data: list[dict[str, Any]], **_: Any
    ) -> call_result.GetVariables:
        _check_items(get_variable_data)
        results = []
        for item in get_variable_data:  # OCPP B06.FR.01: one result per requested variable
            attribute = item.get("attribute_type", "Actual")
            status, value = self.controller.get_variable(
                item["component"], item["variable"], attribute
            )
            results.append(
                {
                    "attribute_status": status,
                    "attribute_type": attribute,
                    "attribute_value": value,
                    "component": item["component"],
                    "variable": item["variable"],
                }
            )
        return call_result.GetVariables(get_variable_result=results)

    @on(Action.get_base_report)
    def on_get_base_report(
        self, request_id: int, report_base: str, **_: Any
    ) -> call_result.GetBaseReport:
        data = self.controller.report(report_base)
        return self._report_answer(request_id, data, call_result.GetBaseReport)

    @after(Action.get_base_report)
    async def after_get_base_report(self, request_id: int, **_: Any) -> None:
        await self._send_report(request_id)

    @on(Action.get_report)
    def on_get_report(
        self,
        request_id: int,
        component_variable: list[dict[str, Any]] | None = None,
        component_criteria: list[str] | None = None,
        **_: Any,
    ) -> call_result.GetReport:
        data = self.controller.report(None, component_variable, component_criteria)
        return self._report_answer(request_id, data, call_result.GetReport)

    @after(Action.get_report)
    async def after_get_report(self, request_id: int, **_: Any) -> None:
        await self._send_report(request_id)

    def _report_answer(self, request_id: int, data: list[dict[str, Any]], kind: Any) -> Any:
        """Accepted with NotifyReport messages to follow, or EmptyResultSet (B07,
        B08: nothing matches, no NotifyReport)."""
        if not data:
            return kind(status="EmptyResultSet")
        self._reports[request_id] = data
        return kind(status="Accepted")

    async def _send_report(self, request_id: int) -> None:
        data = self._reports.pop(request_id, None)
        if data:
            await self.controller.send_report(request_id, data)

    # -- station certificate (OCPP A02) -------------------------------------------------------

    @on(Action.certificate_signed)
    def on_certificate_signed(
        self,
        certificate_chain: str,
        call_unique_id: str,
        certificate_type: str | None = None,
        **_: Any,
    ) -> call_result.CertificateSigned:
        result = self.controller.certificate_signed(certificate_chain, certificate_type)
        self._certificate_results[call_unique_id] = result
        return call_result.CertificateSigned(status=result.status, status_info=result.status_info())

    @after(Action.certificate_signed)
    async def after_certificate_signed(self, call_unique_id: str, **_: Any) -> None:
        result = self._certificate_results.pop(call_unique_id, None)
        if result is not None:
            await self.controller.after_certificate_signed(result)

    # -- certificate management (OCPP M03, M04, M05) ------------------------------------------

    @on(Action.install_certificate)
    def on_install_certificate(
        self, certificate_type: str, certificate: str, call_unique_id: str, **_: Any
    ) -> call_result.InstallCertificate:
        # OCPP M05.FR.01: attempt the installation and answer Accepted, Rejected or Failed.
        result = self.controller.install_certificate(certificate_type, certificate)
        self._certificate_results[call_unique_id] = result
        return call_result.InstallCertificate(
            status=result.status, status_info=result.status_info()
        )

    @after(Action.install_certificate)
    async def after_install_certificate(self, call_unique_id: str, **_: Any) -> None:
        await self._after_certificate_change(call_unique_id)

    @on(Action.get_installed_certificate_ids)
    def on_get_installed_certificate_ids(
        self, certificate_type: list[str] | None = None, **_: Any
    ) -> call_result.GetInstalledCertificateIds:
        found = self.controller.installed_certificates(certificate_type or None)
        if not found:  # OCPP M03.FR.02
            return call_result.GetInstalledCertificateIds(
                status=GetInstalledCertificateStatusEnumType.notFound
            )
        chain = [  # OCPP M03.FR.03, M03.FR.04: hash data of every matching certificate
            datatypes.CertificateHashDataChainType(
                certificate_type=c.certificate_type,
                certificate_hash_data=datatypes.CertificateHashDataType(
                    hash_algorithm=c.hash_data.hash_algorithm,
                    issuer_name_hash=c.hash_data.issuer_name_hash,
                    issuer_key_hash=c.hash_data.issuer_key_hash,
                    serial_number=c.hash_data.serial_number,
                ),
            )
            for c in found
        ]
        return call_result.GetInstalledCertificateIds(
            status=GetInstalledCertificateStatusEnumType.accepted,
            certificate_hash_data_chain=chain,
        )

    @on(Action.delete_certificate)
    def on_delete_certificate(
        self, certificate_hash_data: dict[str, Any], call_unique_id: str, **_: Any
    ) -> call_result.DeleteCertificate:
        # OCPP M04.FR.01: always answer, Accepted, Failed or NotFound.
        result = self.controller.delete_certificate(hash_data(certificate_hash_data))
        self._certificate_results[call_unique_id] = result
        return call_result.DeleteCertificate(status=result.status, status_info=result.status_info())

    @after(Action.delete_certificate)
    async def after_delete_certificate(self, call_unique_id: str, **_: Any) -> None:
        await self._after_certificate_change(call_unique_id)

    async def _after_certificate_change(self, call_unique_id: str) -> None:
        result = self._certificate_results.pop(call_unique_id, None)
        if result is not None:
            await self.controller.after_certificate_change(result)

    # -- logs (OCPP N01) ------------------------------------------------------------------------

    @on(Action.get_log)
    def on_get_log(
        self,
        log: dict[str, Any],
        log_type: str,
        request_id: int,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> call_result.GetLog:
        status, filename = self.controller.get_log(
            log_type, request_id, log, retries, retry_interval
        )
        self._log_responses[request_id] = status
        return call_result.GetLog(status=status, filename=filename)

    @after(Action.get_log)
    async def after_get_log(self, request_id: int, **_: Any) -> None:
        await self.controller.after_get_log(
            request_id, self._log_responses.pop(request_id, "Rejected")
        )


class QuarantineChargePoint(StationChargePoint):
    """A charger in tamper quarantine (UK SCP Regulations Schedule 1 para 3(4)(b)).

    It connects only to notify; every request from the CSMS but ``UpdateFirmware`` (a
    validated update is the only way out) is refused with a ``SecurityError`` CALLERROR.
    """

    ALLOWED = frozenset({Action.update_firmware.value})

    async def route_message(self, raw_msg: Any) -> None:
        try:
            msg = json.loads(raw_msg)
        except (ValueError, TypeError, RecursionError):  # refused as such by route_message
            msg = None
        if (
            isinstance(msg, list)
            and len(msg) == 4
            and msg[0] == 2
            and isinstance(msg[1], str)
            and msg[2] not in self.ALLOWED
        ):
            await self._send(
                json.dumps([4, msg[1], "SecurityError", "charger is in tamper quarantine", {}])
            )
            return
        await super().route_message(raw_msg)
