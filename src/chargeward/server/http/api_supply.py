"""REST API for a release's supply-chain documents and the fleet exposure query.

    GET  /api/v1/releases/{release_id}/documents          names and digests
    GET  /api/v1/releases/{release_id}/documents/{name}   the document as stored
    PUT  /api/v1/releases/{release_id}/provenance         add the DSSE provenance (verified)
    POST /api/v1/exposure                                  body: one OSV advisory (JSON)

The exposure answer lists the stations running a package the advisory affects (``affected``),
those it may affect because a range could not be evaluated (``indeterminate``, fail closed),
those whose exposed packages the release's VEX or accepted risks cover (``accepted``, each
package with the statement), and those whose running release has no SBOM here (``unknown``).
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from chargeward.errors import BundleError
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.server.http.api import Operator
from chargeward.server.rollout.exposure import ExposedStation, exposure
from chargeward.server.rollout.release_catalog import find_release
from chargeward.server.rollout.supply_chain import (
    add_provenance,
    document,
    documents_of,
)
from chargeward.server.state import ServerState
from chargeward.server.store.tables import ReleaseDocument
from chargeward.supply.advisories import parse_advisory

router = APIRouter(tags=["supply chain"])
_JSON_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.chargeward
    return state


async def _body(request: Request, limit: int, what: str) -> bytes:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise BundleError(f"{what} is larger than {limit} bytes")
    return bytes(data)


class DocumentOut(BaseModel):
    name: str
    sha256: str
    length: int
    added_by: str
    added_at: dt.datetime


@router.get("/api/v1/releases/{release_id}/documents", response_model=list[DocumentOut])
async def list_documents(release_id: str, request: Request, _: Operator) -> list[DocumentOut]:
    async with _state(request).db.snapshot() as s:
        release = await find_release(s, release_id)
        rows = await documents_of(s, release.id)
        return [_document(r) for r in sorted(rows.values(), key=lambda r: r.name)]


def _document(row: ReleaseDocument) -> DocumentOut:
    return DocumentOut(
        name=row.name,
        sha256=row.sha256,
        length=len(row.data),
        added_by=row.added_by,
        added_at=row.added_at,
    )


@router.get("/api/v1/releases/{release_id}/documents/{name}")
async def get_document(release_id: str, name: str, request: Request, _: Operator) -> Response:
    async with _state(request).db.snapshot() as s:
        release = await find_release(s, release_id)
        row = await document(s, release.id, name)
        data, sha256 = row.data, row.sha256  # read before the snapshot rolls back
    return Response(data, media_type="application/json", headers={"ETag": f'"{sha256}"'})


@router.put(
    "/api/v1/releases/{release_id}/provenance",
    response_model=DocumentOut,
    status_code=201,
    openapi_extra=_JSON_BODY,
)
async def put_provenance(release_id: str, request: Request, who: Operator) -> DocumentOut:
    state = _state(request)
    envelope = await _body(request, state.limits.provenance_bytes, "provenance")
    async with state.db.session() as s:
        release = await find_release(s, release_id)
        row = await add_provenance(
            s, release, envelope, actor=who, now=state.clock(), limits=state.limits
        )
        return _document(row)


class PackageOut(BaseModel):
    name: str
    version: str
    purl: str
    status: str
    reason: str
    accepted: str | None = None  # the release's VEX statement or accepted risk covering it


class ExposedStationOut(BaseModel):
    station_id: str
    model: str | None
    site_id: str | None
    firmware_version: str | None
    releases: list[str]
    status: str
    packages: list[PackageOut]


class ExposureOut(BaseModel):
    advisory: str
    aliases: list[str]
    stations_checked: int
    releases_matched: int
    affected: list[ExposedStationOut]
    indeterminate: list[ExposedStationOut]
    unknown: list[str]
    accepted: list[ExposedStationOut] = []


def _station(x: ExposedStation) -> ExposedStationOut:
    return ExposedStationOut(
        station_id=x.station_id,
        model=x.model,
        site_id=x.site_id,
        firmware_version=x.firmware_version,
        releases=x.releases,
        status=x.status,
        packages=[
            PackageOut(
                name=p.name,
                version=p.version,
                purl=p.purl,
                status=p.status,
                reason=p.reason,
                accepted=p.accepted,
            )
            for p in x.packages
        ],
    )


@router.post("/api/v1/exposure", response_model=ExposureOut, openapi_extra=_JSON_BODY)
async def post_exposure(request: Request, _: Operator) -> ExposureOut:
    raw = await _body(request, DEFAULT_FORMAT_LIMITS.advisory_bytes, "advisory")
    advisory = parse_advisory(raw, "advisory")
    state = _state(request)
    async with state.db.snapshot() as s:
        report = await exposure(s, advisory, now=state.clock())
    return ExposureOut(
        advisory=report.advisory,
        aliases=list(report.aliases),
        stations_checked=report.stations_checked,
        releases_matched=report.releases_matched,
        affected=[_station(x) for x in report.affected],
        indeterminate=[_station(x) for x in report.indeterminate],
        unknown=report.unknown,
        accepted=[_station(x) for x in report.accepted],
    )
