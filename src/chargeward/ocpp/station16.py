"""Charger side of OCPP 1.6J: a thin adapter over the 2.0.1 :class:`StationController`.

Two kinds of 1.6 station: ``whitepaper`` and ``legacy``.  Requests from the CSMS are
translated to the controller calls the 2.0.1 charge point makes (:mod:`chargeward.ocpp.station`),
and the agent's CALLs, all written as OCPP 2.0.1 payloads, are translated to 1.6 in one place,
:class:`~chargeward.ocpp.station16_outbound.Outbound16` (used by
:meth:`Station16ChargePoint.call`).  No update, certificate or log logic lives here: only
names, shapes and the 1.6 vocabulary (``v16_map``).

A legacy station (plain UpdateFirmware) gets no signature in the request; it still installs
only an image whose signing certificate chains to its manufacturer root and whose signature
holds, because it goes through the same pipeline.  The CSMS gives both in the location's
fragment (:func:`~chargeward.ocpp.v16_map.legacy_location`), never sent to the server::

    url = legacy_location("https://cdn/fw.cwfw", signature_b64, signing_certificate_pem)
    split_legacy_location(url)  # -> ("https://cdn/fw.cwfw", signature_b64, pem)

Without them the update is refused (InstallationFailed): an image whose origin is not checked
is never installed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ocpp.routing import after, on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action
from ocpp.v201 import call as call201
from websockets.exceptions import ConnectionClosed

from chargeward.errors import InvalidValue
from chargeward.ocpp.base import HardenedChargePoint16, hash_data, unhandled_action
from chargeward.ocpp.station import TRIGGERABLE, CertificateResult, StationController
from chargeward.ocpp.station16_outbound import LEGACY, NotSent, Outbound16
from chargeward.ocpp.v16_map import split_legacy_location, trigger_from_16

LOG = logging.getLogger("chargeward.ocpp")

CERTIFICATE_TYPE_FROM_16 = {  # InstallCertificate / GetInstalledCertificateIds
    "CentralSystemRootCertificate": "CSMSRootCertificate",
    "ManufacturerRootCertificate": "ManufacturerRootCertificate",
}
RESET_FROM_16 = {"Hard": "Immediate", "Soft": "OnIdle"}


@dataclass(frozen=True)
class ConfigurationKey:
    """A 1.6 configuration key: the 2.0.1 device-model variable behind it."""

    component: str
    variable: str
    readable: bool = True  # False: write-only, never returned (AuthorizationKey)
    writable: bool = False


CONFIGURATION = {  # the keys a 1.6 CSMS reads and sets: GetConfiguration, ChangeConfiguration
    "HeartbeatInterval": ConfigurationKey("OCPPCommCtrlr", "HeartbeatInterval", writable=True),
    "WebSocketPingInterval": ConfigurationKey(
        "OCPPCommCtrlr", "WebSocketPingInterval", writable=True
    ),
    "SecurityProfile": ConfigurationKey("SecurityCtrlr", "SecurityProfile"),
    # Security Whitepaper 1.6: the Basic auth password, write-only.
    "AuthorizationKey": ConfigurationKey(
        "SecurityCtrlr", "BasicAuthPassword", readable=False, writable=True
    ),
}
NUMBER_OF_CONNECTORS = "NumberOfConnectors"
_SET_STATUS_TO_16 = {"Accepted": "Accepted", "Rejected": "Rejected"}


class Station16ChargePoint(HardenedChargePoint16):
    """A 1.6J station: CSMS requests become the 2.0.1 controller's calls, and
    :meth:`call` takes the agent's 2.0.1 payloads (:class:`Outbound16`)."""

    def __init__(
        self,
        station_id: str,
        connection: Any,
        controller: StationController,
        outbound: Outbound16,
        *,
        clock: Callable[[], float],
        response_timeout: float = 30,
    ) -> None:
        super().__init__(station_id, connection, response_timeout=response_timeout)
        self.controller = controller
        self.outbound = outbound
        self._clock = clock
        self._statuses: dict[str, tuple[int, str]] = {}  # per CALL: request id, our answer
        self._certificate_results: dict[str, CertificateResult] = {}
        self._reset: tuple[str, str] = ("Immediate", "Rejected")

    @property
    def legacy(self) -> bool:
        return self.outbound.kind == LEGACY

    def _whitepaper_only(self, action: str) -> None:
        """A legacy station does not know the whitepaper's messages: NotSupported."""
        if self.legacy:
            raise unhandled_action(action, "1.6")

    async def call(
        self,
        payload: Any,
        suppress: bool = True,
        unique_id: Any = None,
        skip_schema_validation: bool = False,
    ) -> Any:
        """Send the agent's 2.0.1 ``payload`` as this station's 1.6 CALL; a payload 1.6
        does not send gives :class:`NotSent`."""
        sent = self.outbound.request(payload)
        if sent is None:
            return NotSent(type(payload).__name__)
        result = await super().call(sent, suppress, unique_id, skip_schema_validation)
        return self.outbound.result(payload, sent, result)

    # -- firmware --------------------------------------------------------------------------

    @on(Action.signed_update_firmware)
    def on_signed_update_firmware(
        self,
        request_id: int,
        firmware: dict[str, Any],
        call_unique_id: str,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> call_result.SignedUpdateFirmware:
        self._whitepaper_only(Action.signed_update_firmware.value)
        # The firmware keys are 2.0.1's (location, retrieveDateTime, signingCertificate ...).
        status = self.controller.update_firmware(request_id, firmware, retries, retry_interval)
        self._statuses[call_unique_id] = (request_id, status)
        return call_result.SignedUpdateFirmware(status=status)

    @after(Action.signed_update_firmware)
    async def after_signed_update_firmware(self, call_unique_id: str, **_: Any) -> None:
        taken = self._statuses.pop(call_unique_id, None)
        if taken is not None:
            await self.controller.after_update_firmware(*taken)

    @on(Action.update_firmware)
    def on_update_firmware(
        self,
        location: str,
        retrieve_date: str,
        call_unique_id: str,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> call_result.UpdateFirmware:
        # A whitepaper station installs only signed updates, and UpdateFirmware.conf has no
        # status to refuse one with: NotSupported tells the CSMS to use SignedUpdateFirmware.
        if not self.legacy:
            raise unhandled_action(Action.update_firmware.value, "1.6")
        base, signature, certificate = split_legacy_location(location)
        firmware: dict[str, Any] = {"location": base, "retrieve_date_time": retrieve_date}
        if signature is not None and certificate is not None:
            firmware |= {"signature": signature, "signing_certificate": certificate}
        request_id = self.outbound.new_request_id(self._clock())
        status = self.controller.update_firmware(request_id, firmware, retries, retry_interval)
        self._statuses[call_unique_id] = (request_id, status)
        return call_result.UpdateFirmware()

    @after(Action.update_firmware)
    async def after_update_firmware(self, call_unique_id: str, **_: Any) -> None:
        taken = self._statuses.pop(call_unique_id, None)
        if taken is None:
            return
        request_id, status = taken
        await self.controller.after_update_firmware(request_id, status)
        if status in ("Accepted", "AcceptedCanceled"):
            return
        # Refused (no or an untrusted signing certificate, a bad location): the answer could
        # not say so, a FirmwareStatusNotification does (InvalidSignature: InstallationFailed).
        failed = "InvalidSignature" if status.endswith("Certificate") else "InstallationFailed"
        try:
            await self.call(
                call201.FirmwareStatusNotification(status=failed, request_id=request_id)
            )
        except (TimeoutError, ConnectionClosed) as e:
            LOG.warning("%s: refused update not reported: %s", self.id, e)

    # -- TriggerMessage, ExtendedTriggerMessage, Reset --------------------------------------

    def _trigger(self, requested: str) -> str:
        try:
            what = trigger_from_16(requested)
        except InvalidValue:
            return "NotImplemented"
        if what not in TRIGGERABLE:
            return "NotImplemented"  # e.g. MeterValues: the agent meters nothing
        status = self.controller.trigger_status(what)
        self._statuses[f"trigger:{what}"] = (0, status)
        return status

    async def _after_trigger(self, requested: str) -> None:
        try:
            what = trigger_from_16(requested)
        except InvalidValue:
            return
        taken = self._statuses.pop(f"trigger:{what}", None)
        if taken is not None and taken[1] == "Accepted":
            await self.controller.trigger(what)

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, **_: Any) -> call_result.TriggerMessage:
        return call_result.TriggerMessage(status=self._trigger(requested_message))

    @after(Action.trigger_message)
    async def after_trigger_message(self, requested_message: str, **_: Any) -> None:
        await self._after_trigger(requested_message)

    @on(Action.extended_trigger_message)
    def on_extended_trigger_message(
        self, requested_message: str, **_: Any
    ) -> call_result.ExtendedTriggerMessage:
        self._whitepaper_only(Action.extended_trigger_message.value)
        return call_result.ExtendedTriggerMessage(status=self._trigger(requested_message))

    @after(Action.extended_trigger_message)
    async def after_extended_trigger_message(self, requested_message: str, **_: Any) -> None:
        await self._after_trigger(requested_message)

    @on(Action.reset)
    def on_reset(self, type: str, **_: Any) -> call_result.Reset:
        ours = RESET_FROM_16[type]
        self._reset = (ours, self.controller.reset(ours))
        # Scheduled (an install is being written): 1.6 has no such answer, and none follows.
        return call_result.Reset(status="Accepted" if self._reset[1] == "Accepted" else "Rejected")

    @after(Action.reset)
    async def after_reset(self, **_: Any) -> None:
        await self.controller.after_reset(*self._reset)

    # -- configuration (the 2.0.1 device model behind it) ----------------------------------

    @on(Action.change_configuration)
    def on_change_configuration(
        self, key: str, value: str, **_: Any
    ) -> call_result.ChangeConfiguration:
        known = CONFIGURATION.get(key)
        if known is None:
            status = "Rejected" if key == NUMBER_OF_CONNECTORS else "NotSupported"
        elif not known.writable:
            status = "Rejected"
        else:
            result = self.controller.set_variable(
                {"name": known.component}, {"name": known.variable}, "Actual", value
            )
            status = _SET_STATUS_TO_16.get(result, "NotSupported")
        return call_result.ChangeConfiguration(status=status)

    @on(Action.get_configuration)
    def on_get_configuration(
        self, key: list[str] | None = None, **_: Any
    ) -> call_result.GetConfiguration:
        wanted = key or [*CONFIGURATION, NUMBER_OF_CONNECTORS]
        found, unknown = [], []
        for name in wanted:
            value = self._configuration_value(name)
            if value is None:
                if key:  # asked for by name: say it is not known (write-only included)
                    unknown.append(name)
                continue
            known = CONFIGURATION.get(name)
            readonly = known is None or not known.writable
            found.append({"key": name, "readonly": readonly, "value": value})
        return call_result.GetConfiguration(
            configuration_key=found or None, unknown_key=unknown or None
        )

    def _configuration_value(self, name: str) -> str | None:
        if name == NUMBER_OF_CONNECTORS:
            return str(self.outbound.connectors)
        known = CONFIGURATION.get(name)
        if known is None or not known.readable:
            return None
        status, value = self.controller.get_variable(
            {"name": known.component}, {"name": known.variable}, "Actual"
        )
        return value if status == "Accepted" else None

    # -- certificates (Security Whitepaper: A02, M03, M04, M05 of 2.0.1) --------------------

    @on(Action.certificate_signed)
    def on_certificate_signed(
        self, certificate_chain: str, call_unique_id: str, **_: Any
    ) -> call_result.CertificateSigned:
        self._whitepaper_only(Action.certificate_signed.value)
        result = self.controller.certificate_signed(certificate_chain, None)
        self._certificate_results[call_unique_id] = result
        return call_result.CertificateSigned(status=result.status)

    @after(Action.certificate_signed)
    async def after_certificate_signed(self, call_unique_id: str, **_: Any) -> None:
        result = self._certificate_results.pop(call_unique_id, None)
        if result is not None:
            await self.controller.after_certificate_signed(result)

    @on(Action.install_certificate)
    def on_install_certificate(
        self, certificate_type: str, certificate: str, call_unique_id: str, **_: Any
    ) -> call_result.InstallCertificate:
        self._whitepaper_only(Action.install_certificate.value)
        result = self.controller.install_certificate(
            CERTIFICATE_TYPE_FROM_16[certificate_type], certificate
        )
        self._certificate_results[call_unique_id] = result
        return call_result.InstallCertificate(status=result.status)

    @after(Action.install_certificate)
    async def after_install_certificate(self, call_unique_id: str, **_: Any) -> None:
        await self._after_certificate_change(call_unique_id)

    @on(Action.get_installed_certificate_ids)
    def on_get_installed_certificate_ids(
        self, certificate_type: str, **_: Any
    ) -> call_result.GetInstalledCertificateIds:
        self._whitepaper_only(Action.get_installed_certificate_ids.value)
        found = self.controller.installed_certificates([CERTIFICATE_TYPE_FROM_16[certificate_type]])
        if not found:
            return call_result.GetInstalledCertificateIds(status="NotFound")
        hashes = [
            {
                "hash_algorithm": c.hash_data.hash_algorithm,
                "issuer_name_hash": c.hash_data.issuer_name_hash,
                "issuer_key_hash": c.hash_data.issuer_key_hash,
                "serial_number": c.hash_data.serial_number,
            }
            for c in found
        ]
        return call_result.GetInstalledCertificateIds(
            status="Accepted", certificate_hash_data=hashes
        )

    @on(Action.delete_certificate)
    def on_delete_certificate(
        self, certificate_hash_data: dict[str, Any], call_unique_id: str, **_: Any
    ) -> call_result.DeleteCertificate:
        self._whitepaper_only(Action.delete_certificate.value)
        result = self.controller.delete_certificate(hash_data(certificate_hash_data))
        self._certificate_results[call_unique_id] = result
        return call_result.DeleteCertificate(status=result.status)

    @after(Action.delete_certificate)
    async def after_delete_certificate(self, call_unique_id: str, **_: Any) -> None:
        await self._after_certificate_change(call_unique_id)

    async def _after_certificate_change(self, call_unique_id: str) -> None:
        result = self._certificate_results.pop(call_unique_id, None)
        if result is not None:
            await self.controller.after_certificate_change(result)

    # -- logs (GetLog / LogStatusNotification) -----------------------------------------------

    @on(Action.get_log)
    def on_get_log(
        self,
        log: dict[str, Any],
        log_type: str,
        request_id: int,
        call_unique_id: str,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> call_result.GetLog:
        self._whitepaper_only(Action.get_log.value)
        status, filename = self.controller.get_log(
            log_type, request_id, log, retries, retry_interval
        )
        self._statuses[call_unique_id] = (request_id, status)
        return call_result.GetLog(status=status, filename=filename)

    @after(Action.get_log)
    async def after_get_log(self, call_unique_id: str, **_: Any) -> None:
        taken = self._statuses.pop(call_unique_id, None)
        if taken is not None:
            await self.controller.after_get_log(*taken)


class Quarantine16ChargePoint(Station16ChargePoint):
    """A 1.6 station in tamper quarantine (as :class:`~chargeward.ocpp.station.
    QuarantineChargePoint`): every request but the firmware update is refused with a
    ``SecurityError`` CALLERROR."""

    async def route_message(self, raw_msg: Any) -> None:
        allowed = Action.update_firmware if self.legacy else Action.signed_update_firmware
        try:
            msg = json.loads(raw_msg)
        except (ValueError, TypeError, RecursionError):  # refused as such by route_message
            msg = None
        if (
            isinstance(msg, list)
            and len(msg) == 4
            and msg[0] == 2
            and isinstance(msg[1], str)
            and msg[2] != allowed.value
        ):
            await self._send(
                json.dumps([4, msg[1], "SecurityError", "charger is in tamper quarantine", {}])
            )
            return
        await super().route_message(raw_msg)
