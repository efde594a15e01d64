"""Charger side of OCPP 2.0.1: CSMS requests become calls on a :class:`StationController`.

Responses are decided synchronously in ``@on`` handlers; work that sends further messages
(the L01 status sequence, triggered notifications) starts in ``@after`` handlers so the
receive loop is never blocked by our own outgoing calls.
"""

from __future__ import annotations

from typing import Any, Protocol

from ocpp.routing import after, on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action, MessageTriggerEnumType, TriggerMessageStatusEnumType

from chargeward.ocpp.base import HardenedChargePoint


class StationController(Protocol):
    def update_firmware(
        self,
        request_id: int,
        firmware: dict[str, Any],
        retries: int | None,
        retry_interval: int | None,
    ) -> str:
        """Decide the UpdateFirmware response status."""
        ...

    async def after_update_firmware(self, request_id: int, status: str) -> None: ...

    async def trigger(self, what: str) -> None: ...

    def reset(self, type: str) -> str: ...

    async def after_reset(self, type: str, status: str) -> None: ...


TRIGGERABLE = {
    MessageTriggerEnumType.firmware_status_notification,
    MessageTriggerEnumType.heartbeat,
    MessageTriggerEnumType.boot_notification,
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

    @on(Action.update_firmware)
    def on_update_firmware(
        self,
        request_id: int,
        firmware: dict[str, Any],
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> call_result.UpdateFirmware:
        status = self.controller.update_firmware(request_id, firmware, retries, retry_interval)
        self._responses[request_id] = status
        return call_result.UpdateFirmware(status=status)

    @after(Action.update_firmware)
    async def after_update_firmware(self, request_id: int, **_: Any) -> None:
        await self.controller.after_update_firmware(
            request_id, self._responses.pop(request_id, "Rejected")
        )

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, **_: Any) -> call_result.TriggerMessage:
        if requested_message in TRIGGERABLE:
            return call_result.TriggerMessage(status=TriggerMessageStatusEnumType.accepted)
        return call_result.TriggerMessage(status=TriggerMessageStatusEnumType.not_implemented)

    @after(Action.trigger_message)
    async def after_trigger_message(self, requested_message: str, **_: Any) -> None:
        if requested_message in TRIGGERABLE:
            await self.controller.trigger(requested_message)

    @on(Action.reset)
    def on_reset(self, type: str, **_: Any) -> call_result.Reset:
        self._reset_status = self.controller.reset(type)
        return call_result.Reset(status=self._reset_status)

    @after(Action.reset)
    async def after_reset(self, type: str, **_: Any) -> None:
        await self.controller.after_reset(type, self._reset_status)
