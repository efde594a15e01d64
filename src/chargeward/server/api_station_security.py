"""REST API for station security (OCPP security profiles, A01, A02), as an ``APIRouter``.

    GET  /api/v1/stations/{station_id}/security              profile, certificate, rotation
    PUT  /api/v1/stations/{station_id}/security-profile      {"security_profile": 1|2|3}
    POST /api/v1/stations/{station_id}/password-rotation     SetVariables BasicAuthPassword
    POST /api/v1/stations/{station_id}/certificate-renewal   TriggerMessage (A02)

Commands need a connected station (409 otherwise); a lost answer is 502, and for a password
rotation both passwords keep working until the station logs in with the new one.  Every
change is audited.

    $ curl -X POST -H "Authorization: Bearer $TOKEN" \\
          $API/api/v1/stations/CP-1/password-rotation
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from chargeward.server import station_security
from chargeward.server.api import Operator
from chargeward.server.state import ServerState

router = APIRouter(tags=["station security"])


class StationSecurityView(BaseModel):
    station_id: str
    security_profile: int
    certificate_serial: str | None
    certificate_expires_at: dt.datetime | None
    password_rotation_pending: bool
    connected: bool


class ProfileChange(BaseModel):
    security_profile: int = Field(ge=1, le=3)


class RotationView(BaseModel):
    transaction_id: str
    station_response: str  # the SetVariableStatus: Accepted, Rejected, ...


class RenewalView(BaseModel):
    station_response: str  # TriggerMessage status: Accepted, Rejected, NotImplemented


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.chargeward
    return state


def _view(v: station_security.SecurityView) -> StationSecurityView:
    return StationSecurityView(
        station_id=v.station_id,
        security_profile=v.security_profile,
        certificate_serial=v.certificate_serial,
        certificate_expires_at=v.certificate_expires_at,
        password_rotation_pending=v.password_rotation_pending,
        connected=v.connected,
    )


@router.get("/api/v1/stations/{station_id}/security", response_model=StationSecurityView)
async def get_security(station_id: str, request: Request, _: Operator) -> StationSecurityView:
    async with _state(request).db.session() as s:
        return _view(await station_security.security_view(s, station_id))


@router.put("/api/v1/stations/{station_id}/security-profile", response_model=StationSecurityView)
async def set_security_profile(
    station_id: str, body: ProfileChange, request: Request, who: Operator
) -> StationSecurityView:
    state = _state(request)
    async with state.db.session() as s:
        view = await station_security.set_profile(
            s, station_id, body.security_profile, actor=who, now=state.clock()
        )
    return _view(view)


@router.post("/api/v1/stations/{station_id}/password-rotation", response_model=RotationView)
async def rotate_password(station_id: str, request: Request, who: Operator) -> RotationView:
    state = _state(request)
    result = await station_security.rotate_password(
        state.db, state.registry, station_id, actor=who, clock=state.clock
    )
    return RotationView(transaction_id=result.transaction_id, station_response=result.status)


@router.post("/api/v1/stations/{station_id}/certificate-renewal", response_model=RenewalView)
async def renew_certificate(station_id: str, request: Request, who: Operator) -> RenewalView:
    state = _state(request)
    status = await station_security.renew_certificate(
        state.db, state.registry, station_id, actor=who, clock=state.clock
    )
    return RenewalView(station_response=status)
