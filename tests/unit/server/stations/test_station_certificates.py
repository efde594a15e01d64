"""Station certificates in the registry (server.station_certificates, ADR 0022): the pure
acceptance rule, the leaf check, renewal, revocation and the charger CA's CRL, on SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from chargeward.crypto.pki import verify_crl
from chargeward.crypto.tls import check_client_leaf, issuer_name_hash
from chargeward.errors import Conflict, NotFound, UntrustedCertificate
from chargeward.server.fleet import station_registry
from chargeward.server.stations import station_certificates
from chargeward.server.stations.station_certificates import (
    CertificateId,
    Registered,
    charger_ca_crl,
    normalise_serial,
    record_delivered,
    record_login,
    record_pending,
    register_certificate,
    registry_problem,
    revoke,
)
from chargeward.server.stations.station_security import security_view, set_profile
from chargeward.server.store.db import Database
from chargeward.server.store.tables import RevokedStationCertificate, Station
from tests.support.station_certs import LEAVES, odd_leaf
from tests.support.tls import TlsPki

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
A, B, C = (
    CertificateId("i" * 64, "a1"),
    CertificateId("i" * 64, "b2"),
    CertificateId("j" * 64, "a1"),
)


@pytest.mark.parametrize(
    ("cert", "registered", "required", "problem"),
    [
        (A, Registered("a1", "i" * 64), True, None),
        (B, Registered("a1", "i" * 64, "b2", "i" * 64), True, None),  # the pending renewal
        (A, Registered("a1", None), True, None),  # recorded before issuers were kept
        (C, Registered("a1", "i" * 64), True, "certificate a1 is not the registered certificate"),
        (B, Registered("a1", "i" * 64), True, "certificate b2 is not the registered certificate"),
        (A, Registered("a1", "i" * 64, revoked="keyCompromise"), True, "is revoked (keyCompro"),
        (A, Registered("a1", "i" * 64, revoked="superseded"), True, "superseded by a renewal"),
        (A, Registered(), True, "no station certificate is registered"),
        (A, Registered(), False, None),  # profile 2 without one: the password decides
        (B, Registered("a1", "i" * 64), False, "certificate b2 is not the registered"),
    ],
)
def test_registry_problem(
    cert: CertificateId, registered: Registered, required: bool, problem: str | None
) -> None:
    found = registry_problem(cert, registered, required=required)
    assert found == problem if problem is None else found is not None and problem in found


@pytest.mark.parametrize("kind", list(LEAVES))
def test_leaf_checks(tls_pki: TlsPki, kind: str) -> None:
    leaf, problem = LEAVES[kind]
    with pytest.raises(UntrustedCertificate, match=problem.replace("(", r"\(").replace(")", r"\)")):
        check_client_leaf(odd_leaf(tls_pki, "CP-U", leaf, f"unit-{kind.replace(' ', '-')}").cert)
    check_client_leaf(tls_pki.station_cert("CP-U", name="unit-good").cert)


@pytest.mark.parametrize("bad", ["", "xyz", "0x", "1" * 41, "-1"])
def test_serials_are_hex(bad: str) -> None:
    with pytest.raises(ValueError, match="hexadecimal"):
        normalise_serial(bad)
    assert normalise_serial("0x00AB") == "ab"


async def _station(db: Database, sid: str) -> None:
    async with db.session() as s:
        await station_registry.register_station(s, sid, actor="test", password="p" * 20, now=NOW)


async def _row(db: Database, sid: str) -> Station:
    async with db.session() as s:
        row = await s.get(Station, sid)
        assert row is not None
        return row


async def _listed(db: Database) -> list[tuple[str, str, str]]:
    async with db.session() as s:
        rows = await s.scalars(
            select(RevokedStationCertificate).order_by(RevokedStationCertificate.id)
        )
        return [(r.station_id, r.serial, r.reason) for r in rows]


async def test_profile_3_needs_a_registered_certificate(db: Database, tls_pki: TlsPki) -> None:
    await _station(db, "CP-P3")
    with pytest.raises(Conflict, match="no registered station certificate"):
        async with db.session() as s:
            await set_profile(s, "CP-P3", 3, actor="olga", now=NOW)
    cert = tls_pki.station_cert("CP-P3", name="unit-p3").cert
    async with db.session() as s:
        await register_certificate(s, "CP-P3", cert, actor="olga", now=NOW)
        await set_profile(s, "CP-P3", 3, actor="olga", now=NOW)
        view = await security_view(s, "CP-P3")
    assert (view.certificate_serial, view.certificate_issuer_name_hash) == (
        f"{cert.serial_number:x}",
        issuer_name_hash(cert),
    )


async def test_renewal_accepted_rejected_or_confirmed_by_login(
    db: Database, tls_pki: TlsPki
) -> None:
    sid = "CP-RN"
    await _station(db, sid)
    first, second, third, fourth = (
        tls_pki.station_cert(sid, name=f"unit-rn-{i}").cert for i in range(4)
    )
    ids = [CertificateId.of(c) for c in (first, second, third, fourth)]
    async with db.session() as s:
        await register_certificate(s, sid, first, actor="factory", now=NOW)
    # Accepted: current, and the first is retired.
    async with db.session() as s:
        await record_pending(s, sid, second, now=NOW)
    assert (await _row(db, sid)).certificate_serial == ids[0].serial  # not before it is accepted
    async with db.session() as s:
        await record_delivered(s, sid, ids[1].serial, "Accepted", now=NOW)
    row = await _row(db, sid)
    assert (row.certificate_serial, row.pending_certificate_serial) == (ids[1].serial, None)
    assert await _listed(db) == [(sid, ids[0].serial, "superseded")]
    # Rejected: the issued certificate is retired at once, the current one stays.
    async with db.session() as s:
        await record_pending(s, sid, third, now=NOW)
        await s.flush()
        await record_delivered(s, sid, ids[2].serial, "Rejected", now=NOW)
    assert (await _row(db, sid)).certificate_serial == ids[1].serial
    assert (await _listed(db))[-1] == (sid, ids[2].serial, "superseded")
    # No answer, then a login with the new certificate: that confirms it.
    async with db.session() as s:
        await record_pending(s, sid, fourth, now=NOW)
    await record_login(db, sid, ids[3], NOW)
    assert (await _row(db, sid)).certificate_serial == ids[3].serial
    async with db.session() as s:  # the late CertificateSigned answer changes nothing more
        await record_delivered(s, sid, ids[3].serial, "Accepted", now=NOW)
    retired = [serial for _, serial, _ in await _listed(db)]
    assert retired == [ids[0].serial, ids[2].serial, ids[1].serial]


async def test_revocation_rules_and_crl(db: Database, tls_pki: TlsPki, tmp_path: Path) -> None:
    await _station(db, "CP-R1")
    await _station(db, "CP-R2")
    mine = tls_pki.station_cert("CP-R1", name="unit-r1").cert
    theirs = tls_pki.station_cert("CP-R2", name="unit-r2").cert
    async with db.session() as s:
        await register_certificate(s, "CP-R1", mine, actor="factory", now=NOW)
        await register_certificate(s, "CP-R2", theirs, actor="factory", now=NOW)
    ca = tls_pki.charger_ca()
    assert ca.issuer is not None
    async with db.session() as s:
        empty = await charger_ca_crl(s, ca.issuer, tls_pki.ca_signer, now=NOW)
    assert verify_crl(empty, [tls_pki.ca], now=NOW).entries == ()
    # Another station's certificate cannot be revoked through this one (tenancy).
    with pytest.raises(NotFound, match="not a certificate of station CP-R1"):
        async with db.session() as s:
            await revoke(
                s, "CP-R1", serial=f"{theirs.serial_number:x}", reason="keyCompromise",
                actor="olga", now=NOW,
            )  # fmt: skip
    with pytest.raises(ValueError, match="unknown revocation reason"):
        async with db.session() as s:
            await revoke(s, "CP-R1", serial=None, reason="superseded", actor="olga", now=NOW)
    later = NOW + dt.timedelta(seconds=1)
    async with db.session() as s:
        done = await revoke(
            s, "CP-R1", serial=None, reason="keyCompromise", actor="olga", now=later
        )
    assert done.serial == f"{mine.serial_number:x}" and done.revoked_by == "olga"
    with pytest.raises(Conflict, match="already revoked"):
        async with db.session() as s:
            await revoke(s, "CP-R1", serial=None, reason="keyCompromise", actor="olga", now=later)
    with pytest.raises(Conflict, match="is revoked"):  # it can never be registered again
        async with db.session() as s:
            await register_certificate(s, "CP-R1", mine, actor="olga", now=later)
    async with db.session() as s:
        crl = verify_crl(
            await charger_ca_crl(s, ca.issuer, tls_pki.ca_signer, now=later),
            [tls_pki.ca],
            now=later,
        )
    assert [(e.serial, e.reason) for e in crl.entries] == [(mine.serial_number, "keyCompromise")]
    assert crl.crl_number > verify_crl(empty, [tls_pki.ca], now=NOW).crl_number
    # Once the certificate has expired for longer than a CRL period, it leaves the CRL.
    gone = mine.not_valid_after_utc + station_certificates.CRL_VALIDITY + dt.timedelta(days=1)
    async with db.session() as s:
        old = verify_crl(
            await charger_ca_crl(s, ca.issuer, tls_pki.ca_signer, now=gone), [tls_pki.ca], now=gone
        )
    assert old.entries == () and old.crl_number > crl.crl_number
