"""REST API for an external CSMS that keeps the chargers' connections (ADR 0042).

    PUT  /api/v1/integration/stations/{id}/delivery   {"delivery": "external"|"ocpp"}; audited
    GET  /api/v1/integration/pending[?campaign=ID]     every order to send now
    GET  /api/v1/integration/stations/{id}/update      the station's order (404: none)
    POST /api/v1/integration/stations/{id}/events      what the station said; audited

Orders carry OCPP's own request parameters (``ocpp201``: UpdateFirmware, ``ocpp16``:
SignedUpdateFirmware) with a freshly signed download location; events are recorded through
the station reports (:mod:`chargeward.server.stations.integration`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from chargeward.errors import NotFound
from chargeward.server.common import urls
from chargeward.server.common.schemas import MAX_ROW_ID
from chargeward.server.fleet import delivery
from chargeward.server.http.api import Operator
from chargeward.server.rollout import link_budget
from chargeward.server.state import ServerState
from chargeward.server.stations import integration

router = APIRouter(tags=["integration"])


class DeliveryBody(BaseModel):
    delivery: str


class EventBody(BaseModel):
    """One event: ``messageId`` (the retry key), ``action``, OCPP's ``payload``."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    message_id: str = Field(alias="messageId", min_length=1, max_length=64)
    action: str = Field(max_length=40)
    request_id: int | None = Field(default=None, alias="requestId", ge=0, lt=2**31)
    payload: dict[str, Any]


async def _view(state: ServerState, order: integration.PendingOrder) -> dict[str, Any]:
    now = state.clock()
    expires = now + urls.DOWNLOAD_URL_TTL
    location = state.public_url + urls.signed_path(
        state.url_key, order.sha256, order.station_id, int(expires.timestamp()), order.request_id
    )
    budget = await state.budgets.get(state.db, order.station_id)
    return {
        "stationId": order.station_id,
        "requestId": order.request_id,
        "transactionId": order.transaction_id,
        "campaignId": order.campaign_id,
        "locationExpiresAt": expires.isoformat(),
        **integration.order_payloads(order, location, link_budget.retrieve_at(budget, now)),
    }


@router.put("/api/v1/integration/stations/{station_id}/delivery")
async def put_delivery(
    station_id: str, body: DeliveryBody, request: Request, who: Operator
) -> dict[str, str]:
    state: ServerState = request.app.state.chargeward
    done = await state.db.write(
        lambda s: delivery.set_delivery(s, station_id, body.delivery, actor=who, now=state.clock())
    )
    return {"stationId": station_id, "delivery": done}


@router.get("/api/v1/integration/pending")
async def get_pending(
    request: Request,
    _: Operator,
    campaign: Annotated[int | None, Query(ge=0, le=MAX_ROW_ID)] = None,
) -> list[dict[str, Any]]:
    state: ServerState = request.app.state.chargeward
    async with state.db.snapshot() as s:
        orders = await integration.pending_orders(s, campaign_id=campaign)
    return [await _view(state, o) for o in orders]


@router.get("/api/v1/integration/stations/{station_id}/update")
async def get_station_update(station_id: str, request: Request, _: Operator) -> dict[str, Any]:
    state: ServerState = request.app.state.chargeward
    async with state.db.snapshot() as s:
        orders = await integration.pending_orders(s, station_id=station_id)
    if not orders:
        raise NotFound(f"no update order waiting for station {station_id!r}")
    return await _view(state, orders[-1])


@router.post("/api/v1/integration/stations/{station_id}/events")
async def post_event(
    station_id: str, body: EventBody, request: Request, who: Operator
) -> dict[str, Any]:
    state: ServerState = request.app.state.chargeward
    event = integration.StationEvent(body.message_id, body.action, body.payload, body.request_id)
    recorded = await state.db.write(
        lambda s: integration.record_event(s, station_id, event, actor=who, now=state.clock())
    )
    return {"messageId": body.message_id, "duplicate": not recorded}
