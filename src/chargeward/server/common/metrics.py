"""Prometheus metrics of one server process, served at ``GET /metrics`` (operator token).

    $ curl -H "Authorization: Bearer $TOKEN" $API/metrics
    chargeward_stations_connected 3.0
    chargeward_ocpp_messages_total{action="Heartbeat",direction="received"} 42.0
    ...

Each server has its own :class:`Metrics` (its own collector registry), so several servers in
one process (tests) do not mix their numbers.  OCPP frames are counted by
:class:`MeteredChargePoint`, HTTP requests by :class:`HttpMetrics` (labelled with the route
template, never the raw path, and one of a fixed set of methods and statuses, to keep the label
set small).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Response
from ocpp.v16.enums import Action as Action16
from ocpp.v201.enums import Action, FirmwareStatusEnumType
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chargeward.ocpp.csms import CsmsChargePoint, StationSink
from chargeward.ocpp.csms16 import Csms16ChargePoint, Station16Sink

_FRAME_KIND = {3: "CallResult", 4: "CallError"}
# HTTP label values come from a fixed set: any other method token is "other" (5,000 random
# methods once made 5,092 series, kept for the life of the process; issue 26).
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def http_labels(method: str, route: object, status: int) -> tuple[str, str, str]:
    """(method, route template, status) as labelled: each from a bounded set."""
    template = getattr(route, "path", None)
    return (
        method if method in HTTP_METHODS else "other",
        template if isinstance(template, str) else "unmatched",
        str(status) if 100 <= status <= 599 else "other",
    )


# Both protocols' action names (OCPP 1.6J stations connect too, ADR 0039): a bounded set.
_ACTIONS = frozenset(a.value for a in Action) | frozenset(a.value for a in Action16)
_FIRMWARE_STATUS_ACTIONS = ("FirmwareStatusNotification", "SignedFirmwareStatusNotification")
_STATUSES = frozenset(s.value for s in FirmwareStatusEnumType)


class Metrics:
    """The counters and gauges of one server."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.stations_connected = Gauge(
            "chargeward_stations_connected", "Stations connected to this node", registry=r
        )
        self.ocpp_messages = Counter(
            "chargeward_ocpp_messages",
            "OCPP frames by direction and action (CallResult/CallError for responses)",
            ["direction", "action"],
            registry=r,
        )
        self.firmware_statuses = Counter(
            "chargeward_firmware_status_notifications",
            "FirmwareStatusNotification received, by status (Installed, InstallationFailed...)",
            ["status"],
            registry=r,
        )
        self.auth_failures = Counter(
            "chargeward_station_auth_failures", "Station connections refused at login", registry=r
        )
        self.leader = Gauge(
            "chargeward_leader", "1 while this node runs the cluster's background jobs", registry=r
        )
        self.node = Gauge(
            "chargeward_node_info",
            "This node's id and database backend",
            ["node_id", "backend"],
            registry=r,
        )
        self.leader_job_runs = Counter(
            "chargeward_leader_job_runs",
            "Rounds of leader-only background jobs",
            ["job"],
            registry=r,
        )
        self.remote_commands = Counter(
            "chargeward_remote_commands",
            "Station commands relayed through the database to another node, by outcome",
            ["method", "outcome"],
            registry=r,
        )
        self.http_requests = Counter(
            "chargeward_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_seconds = Counter(
            "chargeward_http_request_seconds", "Time spent answering HTTP requests", registry=r
        )

    def count_stations(self, connected: Callable[[], int]) -> None:
        self.stations_connected.set_function(lambda: float(connected()))

    def ocpp_frame(self, direction: str, raw: Any) -> None:
        """Count one OCPP-J frame; malformed ones count as action ``invalid``.

        Labels are OCPP 2.0.1 and 1.6J names only (``unknown`` for any other action or
        status): what a station sends must not add label sets, each kept for the life of the
        process.
        """
        try:
            msg = json.loads(raw)
            kind = msg[0]
            if kind == 2:
                action = msg[2] if isinstance(msg[2], str) and msg[2] in _ACTIONS else "unknown"
                body = msg[3] if action in _FIRMWARE_STATUS_ACTIONS else None
            else:
                action, body = _FRAME_KIND[kind], None
        except (ValueError, TypeError, LookupError, RecursionError):
            self.ocpp_messages.labels(direction, "invalid").inc()
            return
        self.ocpp_messages.labels(direction, action).inc()
        if body is not None:
            status = body.get("status") if isinstance(body, dict) else None
            known = isinstance(status, str) and status in _STATUSES
            self.firmware_statuses.labels(status if known else "unknown").inc()

    def render(self) -> bytes:
        return _generate_latest(self.registry)

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)


class Metered:
    """Counts every frame a charge point receives and sends (mixed into both protocols')."""

    metrics: Metrics

    async def route_message(self, raw_msg: Any) -> None:
        self.metrics.ocpp_frame("received", raw_msg)
        await super().route_message(raw_msg)  # type: ignore[misc]

    async def _send(self, message: Any) -> None:
        self.metrics.ocpp_frame("sent", message)
        await super()._send(message)  # type: ignore[misc]


class MeteredChargePoint(Metered, CsmsChargePoint):
    """A :class:`CsmsChargePoint` that counts every frame in and out."""

    def __init__(
        self, station_id: str, connection: Any, sink: StationSink, *, metrics: Metrics, **kw: Any
    ) -> None:
        super().__init__(station_id, connection, sink, **kw)
        self.metrics = metrics


class MeteredChargePoint16(Metered, Csms16ChargePoint):
    """A :class:`Csms16ChargePoint` (OCPP 1.6J) that counts every frame in and out."""

    def __init__(
        self, station_id: str, connection: Any, sink: Station16Sink, *, metrics: Metrics, **kw: Any
    ) -> None:
        super().__init__(station_id, connection, sink, **kw)
        self.metrics = metrics


class HttpMetrics:
    """ASGI middleware counting requests by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.monotonic()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            labels = http_labels(scope["method"], scope.get("route"), status)
            self.metrics.http_requests.labels(*labels).inc()
            self.metrics.http_seconds.inc(time.monotonic() - start)


def instrument(app: FastAPI, metrics: Metrics, operator: Callable[..., Any]) -> None:
    """Add ``GET /metrics`` (``operator``: the API's operator-token dependency) and request
    counting to ``app``."""

    router = APIRouter()

    @router.get("/metrics", include_in_schema=False, dependencies=[Depends(operator)])
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
    app.add_middleware(HttpMetrics, metrics=metrics)


__all__ = ["HttpMetrics", "MeteredChargePoint", "MeteredChargePoint16", "Metrics", "instrument"]
