"""Station certificates in the station registry: which one is current, renewal, revocation and
the charger CA's CRL (security profile 3, OCPP A00/A02; ADR 0022).

Each station has one *current* certificate, named by its issuer (SHA-256 of the DER issuer
name) and serial number (RFC 5280 4.1.2.2): the one the factory registered, one an operator
registered, or the last renewal the station accepted.  Only it authenticates; another
charger-CA certificate with the same CN does not.  A renewal (SignCertificate, OCPP A02) is
*pending* from issue until the station answers CertificateSigned with Accepted or logs in with
it; then it becomes current and the old one is retired (listed as ``superseded``).  An operator
may revoke the current or pending certificate; revoked and retired certificates are listed in
the charger CA's CRL until they expire::

    problem = registry_problem(CertificateId.of(cert), registered, required=True)
    async with db.session() as s:
        await revoke(s, "CP-1", serial=None, reason="keyCompromise", actor="olga", now=now)
        der = await charger_ca_crl(s, ca_cert, ca_signer, now=now)

The decision (:func:`registry_problem`) is pure; the listener reads the facts with
:func:`registered` in the transaction that reads the station.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import re
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.crypto.keys import Signer
from chargeward.crypto.pki import CRL_VALIDITY, REVOCATION_REASONS, RevokedEntry, issue_crl
from chargeward.crypto.tls import issuer_name_hash
from chargeward.errors import Conflict, InvalidValue, NotFound
from chargeward.server.store.db import Database
from chargeward.server.store.tables import RevokedStationCertificate, Station

LOG = logging.getLogger("chargeward.csms.security")
SUPERSEDED = "superseded"
SERIAL_RE = re.compile(r"^[0-9a-f]{1,40}$")
CRL_NUMBER_TIME_BITS = 40  # CRL number = newest entry id << 40 | seconds (RFC 5280 5.2.3)


@dataclass(frozen=True)
class CertificateId:
    """One certificate: SHA-256 of its DER issuer name and its serial (hex, lower case)."""

    issuer: str
    serial: str

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertificateId:
        return cls(issuer_name_hash(cert), f"{cert.serial_number:x}")


def normalise_serial(serial: str) -> str:
    """A serial as the registry keeps it: lower-case hex without leading zeroes."""
    value = serial.strip().lower().removeprefix("0x")
    if not SERIAL_RE.fullmatch(value):
        raise InvalidValue("a certificate serial is 1-40 hexadecimal digits")
    return value.lstrip("0") or "0"


@dataclass(frozen=True)
class Registered:
    """What the registry holds about a station's certificates, for one presented certificate.

    ``current_issuer`` is None for a serial recorded before issuers were kept (it matches any
    issuer the handshake accepted, and is filled in at the next login).  ``revoked`` is the
    RFC 5280 reason the presented certificate is listed with, if it is.
    """

    current_serial: str | None = None
    current_issuer: str | None = None
    pending_serial: str | None = None
    pending_issuer: str | None = None
    revoked: str | None = None

    def is_current(self, cert: CertificateId) -> bool:
        return cert.serial == self.current_serial and self.current_issuer in (None, cert.issuer)

    def is_pending(self, cert: CertificateId) -> bool:
        return cert.serial == self.pending_serial and cert.issuer == self.pending_issuer


def registry_problem(cert: CertificateId, registered: Registered, *, required: bool) -> str | None:
    """Why ``cert`` (already shown to be a valid charger-CA client certificate of the station)
    may not log in as it, or None.

    ``required``: the station has security profile 3, so it must have a registered
    certificate; a profile-2 station without one authenticates by password alone.
    """
    if registered.revoked == SUPERSEDED:
        return f"certificate {cert.serial} was superseded by a renewal"
    if registered.revoked is not None:
        return f"certificate {cert.serial} is revoked ({registered.revoked})"
    if registered.is_current(cert) or registered.is_pending(cert):
        return None
    if registered.current_serial is None:
        if not required and registered.pending_serial is None:
            return None
        return "no station certificate is registered for this station"
    return (
        f"certificate {cert.serial} is not the registered certificate of this station "
        f"(registered: {registered.current_serial})"
    )


async def _listed(s: AsyncSession, cert: CertificateId) -> RevokedStationCertificate | None:
    row: RevokedStationCertificate | None = await s.scalar(
        select(RevokedStationCertificate).where(
            RevokedStationCertificate.issuer == cert.issuer,
            RevokedStationCertificate.serial == cert.serial,
        )
    )
    return row


async def registered(s: AsyncSession, row: Station, cert: CertificateId | None) -> Registered:
    """The registry's facts about ``row``'s certificates and the presented ``cert``."""
    listed = await _listed(s, cert) if cert is not None else None
    return Registered(
        row.certificate_serial,
        row.certificate_issuer,
        row.pending_certificate_serial,
        row.pending_certificate_issuer,
        listed.reason if listed is not None else None,
    )


# -- changes of the current certificate --------------------------------------------------------


async def _retire(
    s: AsyncSession, row: Station, *, reason: str, actor: str, now: dt.datetime
) -> str | None:
    """List ``row``'s current certificate as ``reason`` (unless listed already)."""
    if row.certificate_serial is None or row.certificate_issuer is None:
        return row.certificate_serial
    old = CertificateId(row.certificate_issuer, row.certificate_serial)
    await _list(s, row, old, row.certificate_expires_at, reason, now, actor)
    return old.serial


async def _station(s: AsyncSession, station_id: str, *, lock: bool = False) -> Station:
    row = await s.get(Station, station_id, with_for_update=lock)
    if row is None:
        raise NotFound(f"no station {station_id!r}")
    return row


def set_current(row: Station, cert: x509.Certificate) -> None:
    """Make ``cert`` ``row``'s current certificate (a new station: nothing to retire)."""
    ident = CertificateId.of(cert)
    row.certificate_serial, row.certificate_issuer = ident.serial, ident.issuer
    row.certificate_expires_at = cert.not_valid_after_utc


async def register_certificate(
    s: AsyncSession, station_id: str, cert: x509.Certificate, *, actor: str, now: dt.datetime
) -> str | None:
    """Make ``cert`` (checked by the caller) the current certificate of ``station_id``; the
    previous one is retired.  Refuses a listed certificate.  Returns the retired serial."""
    ident = CertificateId.of(cert)
    listed = await _listed(s, ident)
    if listed is not None:
        raise Conflict(f"certificate {ident.serial} is revoked ({listed.reason})")
    row = await _station(s, station_id, lock=True)
    retired = None
    if row.certificate_serial != ident.serial or row.certificate_issuer != ident.issuer:
        retired = await _retire(s, row, reason=SUPERSEDED, actor=actor, now=now)
    set_current(row, cert)
    if row.pending_certificate_serial == ident.serial:
        _clear_pending(row)
    await audit.record(
        s,
        actor=actor,
        action="station.certificate_registered",
        target=station_id,
        details={"serial": ident.serial, "issuer_name_hash": ident.issuer, "retired": retired},
        now=now,
    )
    return retired


def _clear_pending(row: Station) -> None:
    row.pending_certificate_serial = row.pending_certificate_issuer = None
    row.pending_certificate_expires_at = None


async def record_pending(
    s: AsyncSession, station_id: str, cert: x509.Certificate, *, now: dt.datetime
) -> None:
    """A certificate was issued for the station's CSR (OCPP A02): it is pending until the
    station accepts it.  A renewal issued earlier and never accepted is retired."""
    row = await _station(s, station_id, lock=True)
    if row.pending_certificate_serial is not None and row.pending_certificate_issuer is not None:
        await _list(s, row, _pending(row), row.pending_certificate_expires_at, SUPERSEDED, now)
    ident = CertificateId.of(cert)
    row.pending_certificate_serial, row.pending_certificate_issuer = ident.serial, ident.issuer
    row.pending_certificate_expires_at = cert.not_valid_after_utc


def _pending(row: Station) -> CertificateId:
    assert row.pending_certificate_serial is not None
    assert row.pending_certificate_issuer is not None
    return CertificateId(row.pending_certificate_issuer, row.pending_certificate_serial)


async def _list(
    s: AsyncSession,
    row: Station,
    cert: CertificateId,
    expires_at: dt.datetime | None,
    reason: str,
    now: dt.datetime,
    actor: str = audit.SYSTEM,
) -> None:
    if await _listed(s, cert) is None:
        s.add(
            RevokedStationCertificate(
                station_id=row.id,
                issuer=cert.issuer,
                serial=cert.serial,
                expires_at=expires_at,
                reason=reason,
                revoked_at=now,
                revoked_by=actor,
            )
        )


async def _promote(s: AsyncSession, row: Station, *, confirmed_by: str, now: dt.datetime) -> None:
    """The pending certificate becomes current; the old current one is retired."""
    new = _pending(row)
    retired = await _retire(s, row, reason=SUPERSEDED, actor=audit.SYSTEM, now=now)
    row.certificate_serial, row.certificate_issuer = new.serial, new.issuer
    row.certificate_expires_at = row.pending_certificate_expires_at
    _clear_pending(row)
    await audit.record(
        s,
        actor=audit.SYSTEM,
        action="station.certificate_replaced",
        target=row.id,
        details={"serial": new.serial, "retired": retired, "confirmed_by": confirmed_by},
        now=now,
    )
    LOG.info("%s: station certificate %s is current, %s retired", row.id, new.serial, retired)


async def record_delivered(
    s: AsyncSession, station_id: str, serial: str, status: str, *, now: dt.datetime
) -> None:
    """The station's answer to CertificateSigned for ``serial``.

    Accepted: the certificate becomes current (if a login with it did not make it so
    already).  Rejected: it is retired, never to be used.  No answer: it stays pending, and a
    login with it confirms it.
    """
    row = await s.get(Station, station_id, with_for_update=True)
    if row is None or row.pending_certificate_serial != serial:
        return
    if status == "Accepted":
        await _promote(s, row, confirmed_by="CertificateSigned Accepted", now=now)
    elif status == "Rejected":
        await _list(s, row, _pending(row), row.pending_certificate_expires_at, SUPERSEDED, now)
        _clear_pending(row)


def needs_login_write(cert: CertificateId, registered: Registered) -> bool:
    """Does a login with ``cert`` change the registry (a pending certificate confirmed, or the
    issuer of a serial recorded before issuers were kept)?  Most logins write nothing."""
    return registered.is_pending(cert) or (
        cert.serial == registered.current_serial and registered.current_issuer is None
    )


async def record_login(
    db: Database, station_id: str, cert: CertificateId, now: dt.datetime
) -> None:
    """A station logged in with ``cert``: confirm it if it was pending (OCPP A02: the station
    uses the new certificate), or complete a serial recorded without its issuer."""
    async with db.session() as s:
        row = await s.get(Station, station_id, with_for_update=True)
        if row is None:
            return
        if row.pending_certificate_serial == cert.serial and (
            row.pending_certificate_issuer == cert.issuer
        ):
            await _promote(s, row, confirmed_by="login with the new certificate", now=now)
        elif row.certificate_serial == cert.serial and row.certificate_issuer is None:
            row.certificate_issuer = cert.issuer


# -- revocation and the CRL ------------------------------------------------------------------


@dataclass(frozen=True)
class Revocation:
    station_id: str
    serial: str
    issuer_name_hash: str
    reason: str
    revoked_at: dt.datetime
    revoked_by: str
    pending_serial: str | None = None  # the pending renewal revoked with the current one


async def revoke(
    s: AsyncSession,
    station_id: str,
    *,
    serial: str | None,
    reason: str,
    actor: str,
    now: dt.datetime,
) -> Revocation:
    """Revoke the station's current certificate, or its pending one (``serial``), for
    ``reason`` (RFC 5280 5.3.1).  Audited.  Raises :class:`NotFound` for a serial that is not
    one of the station's and :class:`Conflict` for one already revoked or retired.

    Revoking the current certificate revokes a pending renewal with it, for the same reason:
    whoever held the current key may have asked for it (OCPP A02), and a login with it would
    otherwise make it current (ADR 0022)."""
    if reason not in REVOCATION_REASONS or reason == SUPERSEDED:
        allowed = [r for r in REVOCATION_REASONS if r != SUPERSEDED]
        raise InvalidValue(f"unknown revocation reason {reason!r}; use one of {', '.join(allowed)}")
    row = await _station(s, station_id, lock=True)
    wanted = normalise_serial(serial) if serial is not None else row.certificate_serial
    if wanted is None:
        raise Conflict(f"station {station_id} has no registered station certificate")
    if wanted == row.certificate_serial:
        if row.certificate_issuer is None:
            raise Conflict(
                f"the issuer of certificate {wanted} is not known yet (it is recorded at the "
                "station's next login); revoke it after that"
            )
        cert, expires = CertificateId(row.certificate_issuer, wanted), row.certificate_expires_at
    elif wanted == row.pending_certificate_serial:
        cert, expires = _pending(row), row.pending_certificate_expires_at
    else:
        old = await s.scalar(
            select(RevokedStationCertificate).where(
                RevokedStationCertificate.station_id == station_id,
                RevokedStationCertificate.serial == wanted,
            )
        )
        if old is None:
            raise NotFound(f"certificate {wanted} is not a certificate of station {station_id}")
        raise Conflict(f"certificate {wanted} is already revoked ({old.reason})")
    listed = await _listed(s, cert)
    if listed is not None:
        raise Conflict(f"certificate {wanted} is already revoked ({listed.reason})")
    await _list(s, row, cert, expires, reason, now, actor)
    await _audit_revoked(s, station_id, cert, reason, actor, now)
    pending = None
    if row.pending_certificate_serial is not None and row.pending_certificate_issuer is not None:
        renewal = _pending(row)
        if renewal != cert:
            await _list(s, row, renewal, row.pending_certificate_expires_at, reason, now, actor)
            await _audit_revoked(s, station_id, renewal, reason, actor, now, with_=cert.serial)
            pending = renewal.serial
    _clear_pending(row)
    return Revocation(station_id, cert.serial, cert.issuer, reason, now, actor, pending)


async def _audit_revoked(
    s: AsyncSession,
    station_id: str,
    cert: CertificateId,
    reason: str,
    actor: str,
    now: dt.datetime,
    *,
    with_: str | None = None,
) -> None:
    details = {"serial": cert.serial, "issuer_name_hash": cert.issuer, "reason": reason}
    if with_ is not None:
        details["revoked_with"] = with_  # the pending renewal of a revoked current certificate
    await audit.record(
        s,
        actor=actor,
        action="station.certificate_revoked",
        target=station_id,
        details=details,
        now=now,
    )


async def charger_ca_crl(
    s: AsyncSession,
    ca_certificate: x509.Certificate,
    ca_signer: Signer,
    *,
    now: dt.datetime,
    validity: dt.timedelta = CRL_VALIDITY,
) -> bytes:
    """A DER CRL of the charger CA: every revoked or retired certificate it issued that has
    not expired (an expired one stays for one more CRL period, RFC 5280 5: it must appear on
    one CRL issued after it expired).  Signed through ``ca_signer`` (``file:`` or ``pkcs11:``).

    The CRL number is the newest entry's id shifted left by 40 bits plus the seconds since
    the epoch: it grows with every new entry and with time, the same on every server of a
    cluster without a counter of its own, and two CRLs with one number list the same.
    """
    this_update = now.replace(microsecond=0)
    issuer = issuer_name_hash_of_subject(ca_certificate)
    rows = (
        await s.scalars(
            select(RevokedStationCertificate)
            .where(
                RevokedStationCertificate.issuer == issuer,
                or_(
                    RevokedStationCertificate.expires_at.is_(None),
                    RevokedStationCertificate.expires_at >= this_update - validity,
                ),
            )
            .order_by(RevokedStationCertificate.id)
        )
    ).all()
    newest = await s.scalar(
        select(func.max(RevokedStationCertificate.id)).where(
            RevokedStationCertificate.issuer == issuer
        )
    )
    number = ((newest or 0) << CRL_NUMBER_TIME_BITS) | int(this_update.timestamp())
    entries = [RevokedEntry(int(r.serial, 16), r.revoked_at, r.reason) for r in rows]
    return await asyncio.to_thread(
        issue_crl,
        ca_certificate,
        ca_signer,
        entries,
        crl_number=number,
        this_update=this_update,
        next_update=this_update + validity,
    )


def issuer_name_hash_of_subject(ca_certificate: x509.Certificate) -> str:
    """The issuer name hash of the certificates ``ca_certificate`` issues."""
    return hashlib.sha256(ca_certificate.subject.public_bytes()).hexdigest()
