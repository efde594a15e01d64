"""REST API for certificates on stations (OCPP M03-M05), as an ``APIRouter``.

    POST   /api/v1/stations/{station_id}/certificates   InstallCertificate (audited)
    GET    /api/v1/stations/{station_id}/certificates   GetInstalledCertificateIds
    DELETE /api/v1/stations/{station_id}/certificates   DeleteCertificate (audited; the hash
                                                        data as GET reported it, in the query)

Every route needs the operator bearer token of :mod:`chargeward.server.http.api`, which includes
this router.  The station must be connected (409 otherwise).

    $ curl -H "Authorization: Bearer $TOKEN" $API/api/v1/stations/CP-1/certificates
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from chargeward.crypto.pki import CertificateHashData
from chargeward.errors import Conflict, TransportError
from chargeward.ocpp.csms import CertificateAnswer, CsmsChargePoint
from chargeward.server.http.api import Operator
from chargeward.server.state import ServerState
from chargeward.server.stations import certificates

router = APIRouter(tags=["certificates"])
HEX = r"^[0-9A-Fa-f]+$"


class CertificateInstall(BaseModel):
    certificate_type: certificates.CertificateType
    certificate_pem: str = Field(min_length=1, max_length=certificates.MAX_CERTIFICATE_CHARS)


class CertificateCommandResult(BaseModel):
    transaction_id: str
    station_response: str  # Accepted/Rejected/Failed/NotFound, NoResponse or CallError
    reason_code: str | None = None
    additional_info: str | None = None


class InstalledCertificateView(BaseModel):
    certificate_type: str
    hash_algorithm: str
    issuer_name_hash: str
    issuer_key_hash: str
    serial_number: str


class InstalledCertificatesView(BaseModel):
    station_id: str
    station_response: str  # Accepted or NotFound (OCPP M03.FR.02)
    certificates: list[InstalledCertificateView]


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.chargeward
    return state


async def _connected(state: ServerState, station_id: str) -> CsmsChargePoint:
    async with state.db.session() as s:
        await certificates.require_station(s, station_id)
    cp = await state.station(station_id)
    if cp is None:
        raise Conflict(f"station {station_id} is not connected")
    return cp


async def _finish(
    state: ServerState, order: certificates.CertificateOrder, answer: CertificateAnswer
) -> CertificateCommandResult:
    await state.db.write(lambda s: certificates.record_answer(s, order, answer, now=state.clock()))
    return CertificateCommandResult(
        transaction_id=order.transaction_id,
        station_response=answer.status,
        reason_code=answer.reason_code,
        additional_info=answer.additional_info,
    )


def _failure(e: TransportError | Conflict) -> CertificateAnswer:
    status = "NoResponse" if isinstance(e, TransportError) else "CallError"
    return CertificateAnswer(status, None, str(e)[:512])


@router.post("/api/v1/stations/{station_id}/certificates", response_model=CertificateCommandResult)
async def install_certificate(
    station_id: str, body: CertificateInstall, request: Request, who: Operator
) -> CertificateCommandResult:
    state = _state(request)
    cp = await _connected(state, station_id)
    order = await state.db.write(
        lambda s: certificates.begin_install(
            s,
            station_id,
            body.certificate_type,
            body.certificate_pem,
            trusted_roots=state.manufacturer_roots(),
            actor=who,
            now=state.clock(),
        )
    )
    try:
        answer = await cp.install_certificate(body.certificate_type, body.certificate_pem)
    except (TransportError, Conflict) as e:
        answer = _failure(e)
    return await _finish(state, order, answer)


@router.get("/api/v1/stations/{station_id}/certificates", response_model=InstalledCertificatesView)
async def list_certificates(
    station_id: str,
    request: Request,
    _: Operator,
    certificate_type: Annotated[list[str] | None, Query()] = None,
) -> InstalledCertificatesView:
    cp = await _connected(_state(request), station_id)
    found = await cp.get_installed_certificate_ids(certificate_type or None)
    return InstalledCertificatesView(
        station_id=station_id,
        station_response=found.status,
        certificates=[
            InstalledCertificateView(certificate_type=c.certificate_type, **vars(c.hash_data))
            for c in found.certificates
        ],
    )


@router.delete(
    "/api/v1/stations/{station_id}/certificates", response_model=CertificateCommandResult
)
async def delete_certificate(
    station_id: str,
    request: Request,
    who: Operator,
    issuer_name_hash: Annotated[str, Query(max_length=128, pattern=HEX)],
    issuer_key_hash: Annotated[str, Query(max_length=128, pattern=HEX)],
    serial_number: Annotated[str, Query(max_length=40, pattern=HEX)],
    hash_algorithm: Annotated[str, Query(pattern=r"^SHA(256|384|512)$")] = "SHA256",
) -> CertificateCommandResult:
    state = _state(request)
    cp = await _connected(state, station_id)
    hash_data = CertificateHashData(
        hash_algorithm, issuer_name_hash, issuer_key_hash, serial_number
    )
    order = await state.db.write(
        lambda s: certificates.begin_delete(s, station_id, hash_data, actor=who, now=state.clock())
    )
    try:
        answer = await cp.delete_certificate(hash_data)
    except (TransportError, Conflict) as e:
        answer = _failure(e)
    return await _finish(state, order, answer)
