"""REST API for stations provisioned at the factory, as an ``APIRouter``.

    POST /api/v1/stations/import   register a factory batch (audited; all or none)

The body is the ``stations`` list of a factory registration file
(``chargeward factory provision``): public data and argon2id password hashes only.  Anything
else where a hash belongs is refused with 422.  Needs the operator bearer token of
:mod:`chargeward.server.http.api`.

    $ chargeward station import out/registration.json
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from chargeward.limits import DEFAULT_SERVER_LIMITS
from chargeward.server.http.api import Operator
from chargeward.server.state import ServerState
from chargeward.server.stations import station_import
from chargeward.server.stations.certificates import MAX_CERTIFICATE_CHARS

router = APIRouter(tags=["stations"])


class StationImportItem(BaseModel):
    station_id: str = Field(min_length=1, max_length=48)
    serial_number: str = Field(min_length=1, max_length=25)
    model: str = Field(min_length=1, max_length=20)
    vendor: str = Field(min_length=1, max_length=50)
    customer: str | None = Field(default=None, max_length=64)
    password_hash: str = Field(min_length=1, max_length=200)
    device_certificate_pem: str = Field(min_length=1, max_length=MAX_CERTIFICATE_CHARS)


class StationImportRequest(BaseModel):
    stations: list[StationImportItem] = Field(max_length=DEFAULT_SERVER_LIMITS.import_stations)


class StationImportResult(BaseModel):
    imported: int
    station_ids: list[str]


@router.post("/api/v1/stations/import", response_model=StationImportResult, status_code=201)
async def import_stations(
    body: StationImportRequest, request: Request, who: Operator
) -> StationImportResult:
    state: ServerState = request.app.state.chargeward
    items = [station_import.StationImport(**item.model_dump()) for item in body.stations]
    ids = await state.db.write(
        lambda s: station_import.import_stations(
            s, items, actor=who, now=state.clock(), limits=state.limits
        )
    )
    return StationImportResult(imported=len(ids), station_ids=ids)
