"""Core OCPP 2.0.1 messages a firmware service still answers, so that no charger is blocked
by it (ADR 0035): Authorize, MeterValues (J01), NotifyEvent (N07), NotifyReport (B07/B08).
What each keeps is the sink's (``server.stations.sink``); the charge point parses and bounds
the strings.  :class:`CoreMessages` is a part of :class:`~chargeward.ocpp.csms.CsmsChargePoint`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

from ocpp.routing import on
from ocpp.v201 import call, call_result, datatypes
from ocpp.v201.enums import Action

from chargeward.ocpp.base import int32, parse_ocpp_time


class CoreSink(Protocol):
    """What the core messages report (a part of ``csms.StationSink``)."""

    async def authorize(self, station_id: str, id_token_type: str) -> str:
        """The ``idTokenInfo.status`` for an Authorize: the server's configured answer
        (Chargeward manages no id tokens)."""
        ...

    async def meter_values(self, station_id: str, reading: MeterReading) -> None:
        """The last MeterValues of an EVSE (kept, not billed)."""
        ...

    async def events(self, station_id: str, events: list[EventReport]) -> None:
        """NotifyEvent entries (kept within a per-station cap and age)."""
        ...

    async def device_model(self, station_id: str, part: DeviceModelPart) -> None:
        """One part of a NotifyReport; the sink assembles the parts of a requestId."""
        ...


@dataclass(frozen=True)
class MeterReading:
    """The newest ``meterValue`` of a MeterValues message (OCPP J01): its sampled values as
    ``{"value", "measurand", "unit", "phase", "context", "location"}`` (absent keys omitted)."""

    evse_id: int
    timestamp: dt.datetime
    sampled: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class EventReport:
    """One ``eventData`` of a NotifyEvent (OCPP N07); strings cut to the column sizes."""

    event_id: int
    timestamp: dt.datetime
    trigger: str
    notification_type: str
    component: str
    variable: str
    actual_value: str
    tech_code: str | None = None
    tech_info: str | None = None
    cleared: bool = False


@dataclass(frozen=True)
class DeviceModelPart:
    """One NotifyReport message (OCPP B07/B08): ``variables`` as ``{"component", "evse",
    "connector", "variable", "instance", "attributes": {type: value}}``."""

    request_id: int
    seq_no: int
    tbc: bool
    generated_at: dt.datetime
    variables: tuple[dict[str, Any], ...]


class CoreMessages:
    """The handlers of the core messages; the charge point provides ``id``, ``sink``,
    ``_request`` and ``_require_boot`` (B02.FR.09: nothing before an accepted
    BootNotification)."""

    id: str
    sink: CoreSink

    def _require_boot(self) -> None: ...

    async def _request(self, payload: Any) -> Any: ...

    async def get_base_report(self, request_id: int, report_base: str) -> str:
        """Send GetBaseReport (OCPP B07): ``Accepted`` (its NotifyReport parts follow and
        :meth:`on_notify_report` keeps them), ``Rejected``, ``NotSupported`` or
        ``EmptyResultSet``."""
        result = await self._request(
            call.GetBaseReport(request_id=request_id, report_base=report_base)
        )
        return str(result.status)

    @on(Action.authorize)
    async def on_authorize(self, id_token: dict[str, Any], **_: Any) -> call_result.Authorize:
        self._require_boot()
        status = await self.sink.authorize(self.id, str(id_token.get("type", "")))
        return call_result.Authorize(id_token_info=datatypes.IdTokenInfoType(status=status))

    @on(Action.meter_values)
    async def on_meter_values(
        self, evse_id: int, meter_value: list[dict[str, Any]], **_: Any
    ) -> call_result.MeterValues:
        self._require_boot()
        readings = [(parse_ocpp_time(m["timestamp"]), m) for m in meter_value]
        when, newest = max(readings, key=lambda r: r[0])  # the schema asks for one at least
        sampled = tuple(_sampled(v) for v in newest.get("sampled_value", []))
        await self.sink.meter_values(self.id, MeterReading(int32(evse_id), when, sampled))
        return call_result.MeterValues()

    @on(Action.notify_event)
    async def on_notify_event(
        self, event_data: list[dict[str, Any]], **_: Any
    ) -> call_result.NotifyEvent:
        self._require_boot()
        await self.sink.events(self.id, [_event(e) for e in event_data])
        return call_result.NotifyEvent()

    @on(Action.notify_report)
    async def on_notify_report(
        self,
        request_id: int,
        generated_at: str,
        seq_no: int,
        report_data: list[dict[str, Any]] | None = None,
        tbc: bool | None = None,
        **_: Any,
    ) -> call_result.NotifyReport:
        self._require_boot()
        part = DeviceModelPart(
            int32(request_id),
            int32(seq_no),
            bool(tbc),
            parse_ocpp_time(generated_at),
            tuple(_report_variable(r) for r in report_data or []),
        )
        await self.sink.device_model(self.id, part)
        return call_result.NotifyReport()


def _text(value: object, chars: int) -> str:
    """A station's string as stored: at most ``chars``, UTF-8 without NUL (PostgreSQL)."""
    s = str(value)[:chars].replace("\x00", "")
    return s.encode("utf-8", "replace").decode("utf-8")


def _maybe(value: object, chars: int) -> str | None:
    return None if value is None else _text(value, chars)


def _sampled(v: dict[str, Any]) -> dict[str, Any]:
    unit = (v.get("unit_of_measure") or {}).get("unit")
    found = {
        "value": v.get("value"),
        "measurand": _maybe(v.get("measurand"), 50),
        "unit": _maybe(unit, 20),
        "phase": _maybe(v.get("phase"), 10),
        "context": _maybe(v.get("context"), 30),
        "location": _maybe(v.get("location"), 10),
    }
    return {k: x for k, x in found.items() if x is not None}


def _event(e: dict[str, Any]) -> EventReport:
    return EventReport(
        event_id=int32(e["event_id"]),
        timestamp=parse_ocpp_time(e["timestamp"]),
        trigger=_text(e["trigger"], 20),
        notification_type=_text(e["event_notification_type"], 30),
        component=_text(e["component"]["name"], 50),
        variable=_text(e["variable"]["name"], 50),
        actual_value=_text(e["actual_value"], 2500),
        tech_code=_maybe(e.get("tech_code"), 50),
        tech_info=_maybe(e.get("tech_info"), 500),
        cleared=bool(e.get("cleared", False)),
    )


def _report_variable(r: dict[str, Any]) -> dict[str, Any]:
    component, variable = r["component"], r["variable"]
    evse = component.get("evse") or {}
    return {
        "component": _text(component["name"], 50),
        "evse": evse.get("id"),
        "connector": evse.get("connector_id"),
        "variable": _text(variable["name"], 50),
        "instance": _maybe(variable.get("instance") or component.get("instance"), 50),
        "attributes": {
            _text(a.get("type", "Actual"), 10): _maybe(a.get("value"), 2500)
            for a in r.get("variable_attribute", [])[:4]  # Actual, Target, MinSet, MaxSet
        },
    }
