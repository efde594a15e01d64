"""Station security: profiles, station certificates (OCPP A02) and BasicAuthPassword rotation.

Who may connect how (:func:`admit`) is a pure decision; the listener
(:mod:`chargeward.server.stations.csms`) gathers the facts.  Renewal and rotation talk to a
connected station through its :class:`~chargeward.ocpp.csms.CsmsChargePoint`::

    await rotate_password(db, registry, "CP-1", actor="alice")
    # -> RotationResult(status='Accepted', transaction_id='...')
    await renew_certificate(db, registry, "CP-1", actor="alice")
    # -> 'Accepted'
    soon = dt.timedelta(days=30)
    await renew_expiring_certificates(db, registry, within=soon)
    # -> ['CP-7']

A password rotation never locks a station out: the new hash is stored as *pending* before
SetVariables goes out and both hashes authenticate until the station answers Accepted or logs
in with the new password; only then is the old hash dropped (OCPP A01).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography import x509
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.crypto import station_passwords
from chargeward.crypto.keys import Signer
from chargeward.crypto.pki import certificate_pem
from chargeward.crypto.tls import (
    check_csr,
    check_station_certificate,
    issue_station_certificate,
    organization_of,
)
from chargeward.errors import Conflict, InvalidValue, NotFound, TransportError, UntrustedCertificate
from chargeward.ocpp.csms import SignAnswer, SignedChain
from chargeward.server.auth import passwords
from chargeward.server.stations import station_certificates
from chargeward.server.store.db import Database, LeadershipLost
from chargeward.server.store.tables import Station

if TYPE_CHECKING:
    from chargeward.server.stations.csms import Registry

LOG = logging.getLogger("chargeward.csms.security")
PROFILES = (1, 2, 3)
STATION_CERTIFICATE = "ChargingStationCertificate"
PASSWORD_VARIABLE = ("SecurityCtrlr", "BasicAuthPassword")
SIGN_TRIGGER = "SignChargingStationCertificate"
WRONG_PASSWORD = "unknown station or wrong password"  # noqa: S105 (a message)
Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- who may connect ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Presented:
    """What a connection attempt showed: transport, certificate verdict, password verdict."""

    tls: bool
    certificate: x509.Certificate | None = None
    certificate_problem: str | None = None  # why the presented certificate is refused
    password_ok: bool = False


def admit(profile: int, seen: Presented, *, allow_profile_1: bool) -> str | None:
    """None when a station configured for ``profile`` may connect so, else the reason."""
    if not seen.tls:
        if profile != 1:
            return f"security profile {profile} requires TLS (wss://), got plain ws"
        if not allow_profile_1:
            return "security profile 1 (no TLS) is not enabled on this server"
    if seen.certificate_problem is not None:
        return f"client certificate refused: {seen.certificate_problem}"
    if profile == 3:
        # OCPP A00: a profile-3 station authenticates with its certificate; Basic is ignored.
        return (
            None
            if seen.certificate is not None
            else "security profile 3 requires a client certificate"
        )
    return None if seen.password_ok else WRONG_PASSWORD


def certificate_problem(
    cert: x509.Certificate, cas: list[x509.Certificate], station_id: str, now: dt.datetime
) -> str | None:
    try:
        check_station_certificate(cert, cas, station_id, now=now)
    except UntrustedCertificate as e:
        return str(e)
    return None


@dataclass(frozen=True)
class StationAuth:
    profile: int
    password_hash: str
    pending_password_hash: str | None
    certificates: station_certificates.Registered = field(
        default_factory=station_certificates.Registered
    )


async def station_auth(
    s: AsyncSession, station_id: str, presented: station_certificates.CertificateId | None = None
) -> StationAuth | None:
    """What the registry says about ``station_id``; with ``presented`` (the certificate of the
    connection) also whether that certificate is revoked or retired."""
    row = await s.get(Station, station_id)
    if row is None:
        return None
    return StationAuth(
        row.security_profile,
        row.password_hash,
        row.pending_password_hash,
        await station_certificates.registered(s, row, presented),
    )


async def _rehash(db: Database, station_id: str, old_hash: str, password: str) -> None:
    """Store ``password`` again at the station-secret cost (e.g. after a factory import)."""
    new_hash = await asyncio.to_thread(station_passwords.hash_station_secret, password)
    async with db.session() as s:
        row = await s.get(Station, station_id)
        if row is not None and row.password_hash == old_hash:
            row.password_hash = new_hash


async def check_password(
    db: Database,
    station_id: str,
    password: str,
    auth: StationAuth | None,
    recent: passwords.RecentLogins | None = None,
) -> bool:
    """Check ``password`` against the current and a pending hash (argon2, off the loop).

    ``auth`` is what :func:`station_auth` read for the station (None: unknown station; the
    check still costs one argon2 verification).  Logging in with the pending password
    confirms the rotation: the old hash is dropped.  ``recent``: logins verified a short
    while ago, which a reconnect with the same password and stored hash does not repeat.
    """
    current = auth.password_hash if auth is not None else None
    if recent is not None and current is not None and recent.seen(station_id, current, password):
        return True  # verified against this very hash minutes ago (a reconnect)
    if await asyncio.to_thread(station_passwords.verify_station_secret, current, password):
        if current is not None and station_passwords.station_secret_needs_rehash(current):
            await _rehash(db, station_id, current, password)
        elif current is not None and recent is not None:
            recent.remember(station_id, current, password)
        return True
    if auth is None or auth.pending_password_hash is None:
        return False
    pending = auth.pending_password_hash
    if not await asyncio.to_thread(station_passwords.verify_station_secret, pending, password):
        return False
    async with db.session() as s:
        row = await s.get(Station, station_id)
        if row is not None and row.pending_password_hash == pending:
            row.password_hash, row.pending_password_hash = pending, None
            await audit.record(
                s,
                actor=audit.SYSTEM,
                action="station.password_rotated",
                target=station_id,
                details={"confirmed_by": "login with the new password"},
            )
    LOG.info("%s: logged in with the new BasicAuthPassword; the old one is dropped", station_id)
    return True


async def audit_refusal(db: Database, station_id: str, reason: str, now: dt.datetime) -> None:
    """Audit a refused certificate of a known station (an InvalidChargingStationCertificate)."""
    async with db.session() as s:
        if await s.get(Station, station_id) is None:
            return
        await audit.record(
            s,
            actor=audit.SYSTEM,
            action="station.connection_refused",
            target=station_id,
            details={"reason": reason, "security_event": "InvalidChargingStationCertificate"},
            now=now,
        )


# -- profiles and the operator's view ---------------------------------------------------------


@dataclass(frozen=True)
class SecurityView:
    station_id: str
    security_profile: int
    certificate_serial: str | None
    certificate_expires_at: dt.datetime | None
    password_rotation_pending: bool
    connected: bool
    certificate_issuer_name_hash: str | None = None
    pending_certificate_serial: str | None = None


async def _row(s: AsyncSession, station_id: str) -> Station:
    row = await s.get(Station, station_id)
    if row is None:
        raise NotFound(f"no station {station_id!r}")
    return row


def _view(row: Station) -> SecurityView:
    return SecurityView(
        row.id,
        row.security_profile,
        row.certificate_serial,
        row.certificate_expires_at,
        row.pending_password_hash is not None,
        row.connected,
        row.certificate_issuer,
        row.pending_certificate_serial,
    )


async def security_view(s: AsyncSession, station_id: str) -> SecurityView:
    return _view(await _row(s, station_id))


async def set_profile(
    s: AsyncSession, station_id: str, profile: int, *, actor: str, now: dt.datetime
) -> SecurityView:
    if profile not in PROFILES:
        raise InvalidValue("security profile must be 1, 2 or 3")
    row = await _row(s, station_id)
    if profile == 3 and row.certificate_serial is None and row.security_profile != 3:
        # Profile 3 accepts only the registered certificate (ADR 0022): without one the
        # station could not connect at all.
        raise Conflict(
            f"station {station_id} has no registered station certificate: import it from the "
            "factory, register it, or renew it over security profile 2 (OCPP A02) first"
        )
    old, row.security_profile = row.security_profile, profile
    await audit.record(
        s,
        actor=actor,
        action="station.security_profile_set",
        target=station_id,
        details={"from": old, "to": profile},
        now=now,
    )
    return _view(row)


# -- BasicAuthPassword rotation ----------------------------------------------------------------


@dataclass(frozen=True)
class RotationResult:
    status: str  # the station's SetVariableStatus
    transaction_id: str


async def rotate_password(
    db: Database, registry: Registry, station_id: str, *, actor: str, clock: Clock = _utc_now
) -> RotationResult:
    """Give a connected station a new BasicAuthPassword (SetVariables, OCPP B05/A01).

    Raises :class:`TransportError` when the answer is lost: the rotation stays pending and
    both passwords keep working until the station logs in with the new one.
    """
    cp = registry.get(station_id)
    if cp is None:
        raise Conflict(f"station {station_id} is not connected")
    password = station_passwords.generate_password()
    new_hash = await asyncio.to_thread(station_passwords.hash_station_secret, password)
    tid = audit.new_transaction_id()
    async with db.session() as s:
        row = await _row(s, station_id)
        if row.security_profile == 3:
            raise Conflict(f"station {station_id} uses security profile 3 (no password)")
        row.pending_password_hash = new_hash
        await audit.record(
            s,
            actor=actor,
            action="station.password_rotation_started",
            target=station_id,
            transaction_id=tid,
            now=clock(),
        )
    try:
        status = await cp.set_variable(*PASSWORD_VARIABLE, password)
    except TransportError as e:
        raise TransportError(
            f"{e}; the new password stays pending: both passwords work until {station_id} "
            "logs in with the new one"
        ) from e
    async with db.session() as s:
        row = await _row(s, station_id)
        if status == "Accepted":
            if row.pending_password_hash == new_hash:
                row.password_hash, row.pending_password_hash = new_hash, None
            action = "station.password_rotated"
        else:
            if row.pending_password_hash == new_hash:
                row.pending_password_hash = None
            action = "station.password_rotation_rejected"
        await audit.record(
            s,
            actor=actor,
            action=action,
            target=station_id,
            transaction_id=tid,
            details={"status": status},
            now=clock(),
        )
    return RotationResult(status, tid)


# -- station certificates (OCPP A02) -----------------------------------------------------------


@dataclass(frozen=True)
class ChargerCa:
    """The CA of station certificates; without a signer the CSMS only checks certificates."""

    certificates: tuple[x509.Certificate, ...]
    signer: Signer | None = None
    days: int = 365

    @property
    def issuer(self) -> x509.Certificate | None:
        """The CA certificate matching the signer (the one that signs renewals)."""
        if self.signer is None:
            return None
        public = self.signer.public_key().public_numbers()
        for cert in self.certificates:
            key = cert.public_key()
            if hasattr(key, "public_numbers") and key.public_numbers() == public:
                return cert
        return None


def decide_csr(
    ca: ChargerCa | None, station_id: str, csr: str, certificate_type: str
) -> SignAnswer:
    """OCPP A02.FR.xx: answer a SignCertificateRequest (pure)."""
    if certificate_type != STATION_CERTIFICATE:
        return SignAnswer("Rejected", f"only {STATION_CERTIFICATE} requests are signed")
    if ca is None or ca.issuer is None:
        return SignAnswer("Rejected", "this server holds no charger CA key")
    try:
        check_csr(csr, station_id)
    except UntrustedCertificate as e:
        return SignAnswer("Rejected", str(e))
    return SignAnswer("Accepted")


async def sign_csr(
    db: Database, ca: ChargerCa, station_id: str, csr: str, *, now: dt.datetime
) -> SignedChain:
    """Issue the certificate for an accepted CSR and audit it."""
    issuer = ca.issuer
    assert ca.signer is not None  # decide_csr accepted it
    assert issuer is not None
    key = check_csr(csr, station_id)
    cert = await asyncio.to_thread(
        issue_station_certificate,
        ca.signer,
        issuer,
        key,
        station_id,
        organization_of(issuer),
        days=ca.days,
        now=now,
    )
    issued = SignedChain(
        certificate_pem(cert) + certificate_pem(issuer),
        f"{cert.serial_number:x}",
        cert.not_valid_after_utc,
    )
    async with db.session() as s:
        # Pending until the station accepts it or logs in with it (ADR 0022).
        await station_certificates.record_pending(s, station_id, cert, now=now)
        await audit.record(
            s,
            actor=audit.SYSTEM,
            action="station.certificate_issued",
            target=station_id,
            details={"serial": issued.serial, "expires_at": issued.expires_at.isoformat()},
            now=now,
        )
    return issued


CSR_REQUEST_VALID = dt.timedelta(hours=1)  # how long a TriggerMessage's request stays open
UNSOLICITED = "the CSMS did not ask this station for a certificate"


async def solicit_csr(s: AsyncSession, station_id: str, *, now: dt.datetime) -> None:
    """Record that the CSMS asks ``station_id`` for one CSR (before TriggerMessage goes out)."""
    (await _row(s, station_id)).certificate_requested_at = now


async def claim_csr_request(db: Database, station_id: str, *, now: dt.datetime) -> bool:
    """Consume the station's open CSR request: True for the first CSR of a request made
    within :data:`CSR_REQUEST_VALID`, False otherwise (unsolicited or a second CSR)."""
    async with db.session() as s:
        claimed = await s.execute(
            update(Station)
            .where(
                Station.id == station_id,
                Station.certificate_requested_at.is_not(None),
                Station.certificate_requested_at >= now - CSR_REQUEST_VALID,
            )
            .values(certificate_requested_at=None)
        )
        return getattr(claimed, "rowcount", 0) == 1


async def audit_csr_refused(db: Database, station_id: str, reason: str, now: dt.datetime) -> None:
    async with db.session() as s:
        await audit.record(
            s,
            actor=audit.SYSTEM,
            action="station.certificate_refused",
            target=station_id,
            details={"reason": reason},
            now=now,
        )


async def record_certificate_delivered(
    db: Database, station_id: str, issued: SignedChain, status: str, now: dt.datetime
) -> None:
    async with db.session() as s:
        await station_certificates.record_delivered(s, station_id, issued.serial, status, now=now)
        await audit.record(
            s,
            actor=audit.SYSTEM,
            action="station.certificate_delivered",
            target=station_id,
            details={"serial": issued.serial, "status": status},
            now=now,
        )


async def renew_certificate(
    db: Database, registry: Registry, station_id: str, *, actor: str, clock: Clock = _utc_now
) -> str:
    """Ask a connected station to renew its certificate: TriggerMessage (OCPP A02)."""
    cp = registry.get(station_id)
    if cp is None:
        raise Conflict(f"station {station_id} is not connected")
    async with db.session() as s:
        await solicit_csr(s, station_id, now=clock())
        await audit.record(
            s,
            actor=actor,
            action="station.certificate_renewal_requested",
            target=station_id,
            now=clock(),
        )
    return await cp.trigger_message(SIGN_TRIGGER)


async def renew_expiring_certificates(
    db: Database, registry: Registry, *, within: dt.timedelta, clock: Clock = _utc_now
) -> list[str]:
    """One pass: trigger A02 for connected profile-3 stations whose certificate expires soon.

    Returns the stations asked; a station that does not answer is tried again next pass.
    """
    horizon = clock() + within
    async with db.session() as s:
        rows = await s.execute(
            select(Station.id).where(
                Station.security_profile == 3,
                Station.certificate_expires_at.is_not(None),
                Station.certificate_expires_at <= horizon,
            )
        )
        due = [sid for (sid,) in rows if registry.get(sid) is not None]
    asked = []
    for station_id in due:
        try:
            status = await renew_certificate(
                db, registry, station_id, actor=audit.SYSTEM, clock=clock
            )
        except (Conflict, TransportError) as e:
            LOG.warning("%s: certificate renewal not started: %s", station_id, e)
            continue
        LOG.info("%s: certificate expires before %s; renewal %s", station_id, horizon, status)
        asked.append(station_id)
    return asked


async def renew_certificates_forever(
    db: Database,
    registry: Registry,
    *,
    within: dt.timedelta,
    interval: float,
    clock: Clock = _utc_now,
) -> None:
    """:func:`renew_expiring_certificates` every ``interval`` seconds (problems are logged)."""
    while True:
        try:
            await renew_expiring_certificates(db, registry, within=within, clock=clock)
        except LeadershipLost:  # another node leads: its own pass takes over
            raise
        except Exception:  # a database hiccup must not end renewals for good
            LOG.exception("certificate renewal pass failed")
        await asyncio.sleep(interval)
