"""REST API for station security (OCPP security profiles, A01, A02), as an ``APIRouter``.

    GET  /api/v1/stations/{station_id}/security              profile, certificate, rotation
    PUT  /api/v1/stations/{station_id}/security-profile      {"security_profile": 1|2|3}
    POST /api/v1/stations/{station_id}/password-rotation     SetVariables BasicAuthPassword
    POST /api/v1/stations/{station_id}/certificate-renewal   TriggerMessage (A02)
    PUT  /api/v1/stations/{station_id}/certificate           {"certificate_pem": ...}
    POST /api/v1/stations/{station_id}/certificate-revocations  {"reason": ..., "serial"?}
    GET  /api/v1/charger-ca/crl[?format=pem]                 the charger CA's CRL (DER)

Commands need a connected station (409 otherwise); a lost answer is 502, and for a password
rotation both passwords keep working until the station logs in with the new one.  Every
change is audited.  A station with security profile 3 logs in only with its registered
certificate (ADR 0022): the factory's, one registered here, or its last accepted renewal.
Revoking it ends a session it opened on this server; the CRL lists revoked and retired
certificates, signed by the charger CA key.

    $ curl -X POST -H "Authorization: Bearer $TOKEN" \\
          $API/api/v1/stations/CP-1/password-rotation
    $ curl -X POST -H "Authorization: Bearer $TOKEN" -d '{"reason": "keyCompromise"}' \\
          $API/api/v1/stations/CP-1/certificate-revocations
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import textwrap
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from chargeward.crypto.pki import load_certificate
from chargeward.errors import Conflict, UntrustedCertificate
from chargeward.server.http.api import Operator
from chargeward.server.state import ServerState
from chargeward.server.stations import station_certificates, station_security

LOG = logging.getLogger("chargeward.csms.security")
MAX_CERTIFICATE_CHARS = 5500  # OCPP's limit for one PEM certificate
REVOKED = 1008  # websocket close code: policy violation (RFC 6455 7.4.1)

router = APIRouter(tags=["station security"])


class StationSecurityView(BaseModel):
    station_id: str
    security_profile: int
    certificate_serial: str | None
    certificate_expires_at: dt.datetime | None
    password_rotation_pending: bool
    connected: bool
    certificate_issuer_name_hash: str | None = None  # SHA-256 of the DER issuer name
    pending_certificate_serial: str | None = None  # a renewal the station has not accepted yet


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
        certificate_issuer_name_hash=v.certificate_issuer_name_hash,
        pending_certificate_serial=v.pending_certificate_serial,
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
    view = await state.db.write(
        lambda s: station_security.set_profile(
            s, station_id, body.security_profile, actor=who, now=state.clock()
        )
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


# -- the registered certificate, revocation and the CRL (ADR 0022) -----------------------------

RevocationReason = Literal[
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "cessationOfOperation",
    "privilegeWithdrawn",
]


class CertificateRegistration(BaseModel):
    certificate_pem: str = Field(min_length=1, max_length=MAX_CERTIFICATE_CHARS)


class RevocationRequest(BaseModel):
    reason: RevocationReason  # RFC 5280 5.3.1; superseded is the server's own, at renewal
    serial: str | None = Field(
        default=None,
        pattern=r"^(0x)?[0-9A-Fa-f]{1,40}$",
        description="hex serial; default: the station's current certificate",
    )


class RevocationView(BaseModel):
    station_id: str
    serial: str
    issuer_name_hash: str
    reason: str
    revoked_at: dt.datetime
    revoked_by: str
    session_closed: bool  # a session opened with it on this server was ended
    pending_serial: str | None = None  # the pending renewal revoked with it (ADR 0022)


def _charger_ca(state: ServerState) -> station_security.ChargerCa:
    if state.charger_ca is None:
        raise Conflict("this server has no charger CA (chargeward server --charger-ca)")
    return state.charger_ca


@router.put("/api/v1/stations/{station_id}/certificate", response_model=StationSecurityView)
async def register_certificate(
    station_id: str, body: CertificateRegistration, request: Request, who: Operator
) -> StationSecurityView:
    """Make a certificate issued outside OCPP A02 the station's current one (audited)."""
    state = _state(request)
    ca = _charger_ca(state)
    cert = load_certificate(body.certificate_pem)
    problem = station_security.certificate_problem(
        cert, list(ca.certificates), station_id, state.clock()
    )
    if problem is not None:
        raise UntrustedCertificate(f"not a station certificate of {station_id}: {problem}")
    await state.db.write(
        lambda s: station_certificates.register_certificate(
            s, station_id, cert, actor=who, now=state.clock()
        )
    )
    async with state.db.session() as s:
        return _view(await station_security.security_view(s, station_id))


@router.post(
    "/api/v1/stations/{station_id}/certificate-revocations",
    response_model=RevocationView,
    status_code=201,
)
async def revoke_certificate(
    station_id: str, body: RevocationRequest, request: Request, who: Operator
) -> RevocationView:
    """Revoke the station's current (or pending) certificate; end a session it opened."""
    state = _state(request)
    done = await state.db.write(
        lambda s: station_certificates.revoke(
            s, station_id, serial=body.serial, reason=body.reason, actor=who, now=state.clock()
        )
    )
    LOG.warning(
        "%s: station certificate %s revoked (%s) by %s", station_id, done.serial, done.reason, who
    )
    closed = False
    cp = state.registry.get(station_id)
    if cp is not None and state.registry.certificate_serials.get(station_id) in (
        done.serial,
        done.pending_serial,
    ):
        await cp._connection.close(REVOKED, "station certificate revoked")
        closed = True
    return RevocationView(**vars(done), session_closed=closed)


@router.get(
    "/api/v1/charger-ca/crl",
    response_class=Response,
    responses={200: {"content": {"application/pkix-crl": {}, "application/x-pem-file": {}}}},
)
async def charger_ca_crl(
    request: Request,
    _: Operator,
    format: Annotated[Literal["der", "pem"], Query()] = "der",
) -> Response:
    """The charger CA's CRL (RFC 5280), signed by its key: revoked and retired station
    certificates, e.g. for a TLS proxy in front of the OCPP listener."""
    state = _state(request)
    ca = _charger_ca(state)
    issuer = ca.issuer
    if ca.signer is None or issuer is None:
        raise Conflict(
            "this server holds no charger CA key (--charger-ca-key): it cannot sign a CRL"
        )
    async with state.db.session() as s:
        der = await station_certificates.charger_ca_crl(s, issuer, ca.signer, now=state.clock())
    if format == "pem":
        return Response(crl_pem(der), media_type="application/x-pem-file")
    return Response(der, media_type="application/pkix-crl")


def crl_pem(der: bytes) -> str:
    """``der`` in PEM armour (RFC 7468 5: "X509 CRL")."""
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode("ascii"), 64))
    return f"-----BEGIN X509 CRL-----\n{body}\n-----END X509 CRL-----\n"
