"""Attacks with station certificates at the OCPP listener (security profile 3, mutual TLS).

Every connection is a real TLS websocket on 127.0.0.1 against the real listener with the real
server TLS context (:func:`tests.support.tls.running_csms`); the REST API runs in-process on
the same database with operator accounts (:func:`tests.support.accounts_api.accounts_api`).
Each station is registered as the factory registers it (``POST /api/v1/stations/import``
with its device certificate), so the server knows which certificate is the station's.  Each
refusal is checked for its reason (the listener's log of refusals and the audit entry), the
station's record is unchanged by it, and the station's current certificate still gets in.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from websockets.asyncio.client import connect

from chargeward.crypto import certificate_pem, load_certificate, station_passwords
from chargeward.crypto.pki import verify_crl
from chargeward.crypto.sealing import generate_device_key_pair
from chargeward.crypto.tls import build_csr
from chargeward.server.stations.station_import import StationImport, import_stations
from chargeward.server.stations.station_security import (
    renew_certificate,
    security_view,
    set_profile,
    solicit_csr,
)
from tests.support.accounts_api import accounts_api
from tests.support.fleet import Pki
from tests.support.station_certs import LEAVES, odd_leaf, station_files
from tests.support.tls import (
    SUBPROTOCOLS,
    Csms,
    StationCert,
    TlsPki,
    now,
    provision_charger,
    running_agent,
    running_csms,
    try_connect,
)

pytestmark = pytest.mark.timeout(60)

PASSWORD = "station-cert-attack-password-01"
REFUSED = "client certificate refused: "


async def _import(csms: Csms, station_id: str, device: StationCert) -> None:
    """Register ``station_id`` as the factory does, with ``device`` as its certificate, and
    make it a profile-3 station."""
    item = StationImport(
        station_id=station_id,
        serial_number=station_id,
        model="AC22",
        vendor="ACME",
        customer=None,
        password_hash=station_passwords.hash_station_secret(PASSWORD),
        device_certificate_pem=certificate_pem(device.cert),
    )
    async with csms.db.session() as s:
        await import_stations(s, [item], actor="factory", now=now())
    async with csms.db.session() as s:
        await set_profile(s, station_id, 3, actor="test", now=now())


async def _record(csms: Csms, station_id: str) -> dict[str, Any]:
    """The station's record and audit trail, without refusals (which a refusal adds) and
    without what any connection changes (connected, last seen)."""
    state = await csms.station_state(station_id)
    state["audit"] = [a for a in state["audit"] if a[0] != "station.connection_refused"]
    async with csms.db.session() as s:
        security = vars(await security_view(s, station_id))
    state["security"] = {k: v for k, v in security.items() if k != "connected"}
    return state


async def _refusals(csms: Csms, station_id: str) -> list[str]:
    trail = await csms.audit(station_id)
    return [d["reason"] for a, d in trail if a == "station.connection_refused"]


def _serial(cert: x509.Certificate) -> str:
    return f"{cert.serial_number:x}"


async def test_another_charger_ca_certificate_with_the_right_cn_is_refused(
    tmp_path: Path, tls_pki: TlsPki
) -> None:
    """A genuine charger-CA certificate naming the station, but not the one it was given (a
    second certificate for the same CN, e.g. issued to an attacker's box)."""
    sid = "CP-TWIN"
    own = tls_pki.station_cert(sid, name="twin-own")
    twin = tls_pki.station_cert(sid, name="twin-other")
    assert (
        own.cert.subject == twin.cert.subject and own.cert.serial_number != twin.cert.serial_number
    )
    async with running_csms(tmp_path / "srv", tls_pki) as csms:
        await _import(csms, sid, own)
        url = csms.url + sid
        assert await try_connect(url, ssl_context=tls_pki.client_context(own)) == 101
        before = await _record(csms, sid)
        assert await try_connect(url, ssl_context=tls_pki.client_context(twin)) == 401
        reason = (
            f"{REFUSED}certificate {_serial(twin.cert)} is not the registered certificate "
            f"of this station (registered: {_serial(own.cert)})"
        )
        assert csms.listener.refusals == [(sid, reason)]
        assert await _refusals(csms, sid) == [reason]
        assert await _record(csms, sid) == before
        assert await try_connect(url, ssl_context=tls_pki.client_context(own)) == 101


async def test_old_certificate_is_refused_after_renewal(
    tmp_path: Path, pki: Pki, factory_bundle: Path, tls_pki: TlsPki
) -> None:
    """The reference charger renews its factory certificate (OCPP A02); a copy of the old
    certificate and key (a charger's flash dump, a returned unit) no longer gets in."""
    sid = "CP-RENEW"
    state = provision_charger(
        tmp_path / "chargers", pki, factory_bundle, tls_pki, sid, PASSWORD, certificate=True
    )
    factory = StationCert(
        load_certificate(state.device_certificate_path.read_bytes()),
        "",
        tls_pki.dir / f"{sid}.pem",
        tls_pki.dir / f"{sid}.key",
    )
    async with running_csms(tmp_path / "srv", tls_pki) as csms:
        await _import(csms, sid, factory)
        old = _serial(factory.cert)
        async with running_agent(state, csms.url):
            await csms.wait(lambda: csms.registry.get(sid), "the charger to connect")
            assert csms.listener.connection_serials[sid] == old
            assert await renew_certificate(csms.db, csms.registry, sid, actor="olga") == "Accepted"
            await csms.wait(
                lambda: (
                    csms.listener.connection_serials.get(sid) not in (None, old)
                    and csms.registry.get(sid)
                ),
                "the charger to connect with its renewed certificate",
            )
        new = load_certificate(state.device_certificate_path.read_bytes())
        assert csms.listener.connection_serials[sid] == _serial(new)
        async with csms.db.session() as s:
            assert (await security_view(s, sid)).certificate_serial == _serial(new)
        before = await _record(csms, sid)
        url = csms.url + sid
        assert await try_connect(url, ssl_context=tls_pki.client_context(factory)) == 401
        reason = f"{REFUSED}certificate {old} was superseded by a renewal"
        assert csms.listener.refusals == [(sid, reason)]
        assert await _refusals(csms, sid) == [reason]
        assert await _record(csms, sid) == before
        # The renewed certificate (the charger's new key) still gets in.
        key = state.credential_store().load().device_key_pem
        assert key is not None
        current = station_files(tmp_path / "renewed", new, key)
        assert await try_connect(url, ssl_context=tls_pki.client_context(current)) == 101


async def test_revoked_certificate_is_refused_and_listed_in_the_crl(
    tmp_path: Path, tls_pki: TlsPki
) -> None:
    """An operator revokes a stolen station certificate: its live session ends, it never
    gets in again, and the charger CA's CRL served to operators lists it."""
    sid = "CP-REVOKE"
    stolen = tls_pki.station_cert(sid, name="revoke-stolen")
    serial = _serial(stolen.cert)
    data = tmp_path / "srv"
    async with running_csms(data, tls_pki) as csms, accounts_api(data) as env:
        env.clock.now = now()  # the server's clock, in the test PKI's lifetime
        env.state.registry = csms.registry
        env.state.charger_ca = tls_pki.charger_ca()
        await _import(csms, sid, stolen)
        url, ctx = csms.url + sid, tls_pki.client_context(stolen)
        olga = await env.login(await env.add_user("olga", "operator"))
        audrey = await env.login(await env.add_user("audrey", "auditor"))
        api = await env.client()
        revoke = f"/api/v1/stations/{sid}/certificate-revocations"
        body = {"reason": "keyCompromise"}
        async with connect(url, ssl=ctx, subprotocols=SUBPROTOCOLS, open_timeout=5) as ws:
            await csms.wait(lambda: csms.registry.get(sid), "the station to connect")
            # An auditor may read but not revoke.
            r = await api.post(revoke, json=body, headers=env.bearer(audrey))
            assert r.status_code == 403, r.text
            assert "stations:write" in r.json()["error"]["message"]
            r = await api.post(revoke, json=body, headers=env.bearer(olga))
            assert r.status_code == 201, r.text
            assert r.json()["serial"] == serial and r.json()["reason"] == "keyCompromise"
            # The session opened with the certificate ends at once (policy violation).
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code == 1008
        await csms.wait(lambda: csms.registry.get(sid) is None, "the session to end")
        revoked = [(a, d) for a, d in await csms.audit(sid) if a == "station.certificate_revoked"]
        assert [d["serial"] for _, d in revoked] == [serial]
        assert revoked[0][1]["reason"] == "keyCompromise"
        # Revoking it twice is a clear conflict, and changes nothing.
        again = await api.post(revoke, json=body, headers=env.bearer(olga))
        assert again.status_code == 409 and "already revoked" in again.text
        before = await _record(csms, sid)
        assert await try_connect(url, ssl_context=ctx) == 401
        reason = f"{REFUSED}certificate {serial} is revoked (keyCompromise)"
        assert csms.listener.refusals == [(sid, reason)]
        assert await _refusals(csms, sid) == [reason]
        assert await _record(csms, sid) == before
        # The CRL, signed by the charger CA key, lists it with its reason.
        r = await api.get("/api/v1/charger-ca/crl", headers=env.bearer(audrey))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/pkix-crl"
        crl = verify_crl(r.content, [tls_pki.ca], now=env.clock.now)
        assert [(f"{e.serial:x}", e.reason) for e in crl.entries] == [(serial, "keyCompromise")]
        audit_rows = await csms.audit(sid)
        by = [a for a in audit_rows if a[0] == "station.certificate_revoked"]
        assert (
            by
            and by[0][1]["issuer_name_hash"]
            == hashlib.sha256(stolen.cert.issuer.public_bytes()).hexdigest()
        )


class _Thief(ChargePoint):
    """A station impersonator that keeps the chain CertificateSigned brings and never
    answers it, so the server keeps the renewal pending."""

    def __init__(self, station_id: str, ws: Any) -> None:
        super().__init__(station_id, ws, 5)
        self.chain: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @on("CertificateSigned")
    async def on_certificate_signed(
        self, certificate_chain: str, **_: Any
    ) -> call_result.CertificateSigned:
        self.chain.set_result(certificate_chain)
        await asyncio.Event().wait()  # never answers; the connection is closed under it
        raise AssertionError("unreachable")


async def _renew_as_thief(url: str, ssl_context: Any, station_id: str, key_pem: str) -> str:
    """Log in with the stolen certificate, ask for a certificate for the thief's own key
    (SignCertificate, OCPP A02), take the chain and hang up before answering."""
    csr = build_csr(key_pem, station_id, "ACME")
    async with connect(url, ssl=ssl_context, subprotocols=SUBPROTOCOLS, open_timeout=5) as ws:
        thief = _Thief(station_id, ws)
        reader = asyncio.create_task(thief.start())
        try:
            await thief.call(
                call.BootNotification(
                    charging_station={"model": "AC22", "vendor_name": "ACME"}, reason="PowerUp"
                )
            )
            answer = await thief.call(
                call.SignCertificate(csr=csr, certificate_type="ChargingStationCertificate")
            )
            assert answer.status == "Accepted"
            return await asyncio.wait_for(thief.chain, 10)
        finally:
            reader.cancel()


async def test_renewal_requested_with_a_stolen_key_dies_with_the_revoked_certificate(
    tmp_path: Path, tls_pki: TlsPki
) -> None:
    """A thief with the station's key asks for a renewal for a key of its own and keeps it
    pending; the operator then revokes the station's certificate for keyCompromise.  The
    renewal is revoked with it (ADR 0022): logging in with it is refused, it does not
    become current, and the CRL lists both."""
    sid = "CP-PENDING"
    stolen = tls_pki.station_cert(sid, name="pending-stolen")
    data = tmp_path / "srv"
    async with running_csms(data, tls_pki) as csms, accounts_api(data) as env:
        env.clock.now = now()
        env.state.registry = csms.registry
        env.state.charger_ca = tls_pki.charger_ca()
        await _import(csms, sid, stolen)
        url = csms.url + sid
        pair = generate_device_key_pair()
        async with csms.db.session() as s:  # the renewal loop asked the station for a CSR (A02)
            await solicit_csr(s, sid, now=now())
        chain = await _renew_as_thief(url, tls_pki.client_context(stolen), sid, pair.private_pem)
        renewal = load_certificate(chain.encode())
        pending = _serial(renewal)

        async def pending_serial() -> str | None:
            async with csms.db.session() as s:
                return (await security_view(s, sid)).pending_certificate_serial

        assert await pending_serial() == pending
        olga = await env.login(await env.add_user("olga", "operator"))
        api = await env.client()
        r = await api.post(
            f"/api/v1/stations/{sid}/certificate-revocations",
            json={"reason": "keyCompromise"},
            headers=env.bearer(olga),
        )
        assert r.status_code == 201, r.text
        assert r.json()["serial"] == _serial(stolen.cert)
        before = await _record(csms, sid)
        thief = station_files(tmp_path / "thief", renewal, pair.private_pem)
        assert await try_connect(url, ssl_context=tls_pki.client_context(thief)) == 401
        reason = f"{REFUSED}certificate {pending} is revoked (keyCompromise)"
        assert csms.listener.refusals == [(sid, reason)]
        assert await _refusals(csms, sid) == [reason]
        assert await _record(csms, sid) == before
        assert r.json()["pending_serial"] == pending
        assert await pending_serial() is None
        revoked = [d for a, d in await csms.audit(sid) if a == "station.certificate_revoked"]
        assert [(d["serial"], d["reason"]) for d in revoked] == [
            (_serial(stolen.cert), "keyCompromise"),
            (pending, "keyCompromise"),
        ]
        async with csms.db.session() as s:
            assert (await security_view(s, sid)).certificate_serial == _serial(stolen.cert)
        r = await api.get("/api/v1/charger-ca/crl", headers=env.bearer(olga))
        assert r.status_code == 200, r.text
        crl = verify_crl(r.content, [tls_pki.ca], now=env.clock.now)
        assert sorted((f"{e.serial:x}", e.reason) for e in crl.entries) == sorted(
            [(_serial(stolen.cert), "keyCompromise"), (pending, "keyCompromise")]
        )


# -- leaves of the wrong kind -----------------------------------------------------------------


@pytest.mark.parametrize("kind", list(LEAVES))
async def test_leaf_of_the_wrong_kind_is_refused(
    tmp_path: Path, tls_pki: TlsPki, kind: str
) -> None:
    """Charger-CA certificates naming the station that are not station certificates: the
    leaf's own extensions are checked before anything else is trusted."""
    sid = "CP-LEAF"
    leaf, problem = LEAVES[kind]
    own = tls_pki.station_cert(sid, name=f"leaf-own-{kind.replace(' ', '-')}")
    odd = odd_leaf(tls_pki, sid, leaf, f"leaf-odd-{kind.replace(' ', '-')}")
    async with running_csms(tmp_path / "srv", tls_pki) as csms:
        await _import(csms, sid, own)
        url = csms.url + sid
        before = await _record(csms, sid)
        assert await try_connect(url, ssl_context=tls_pki.client_context(odd)) == 401
        assert csms.listener.refusals == [(sid, REFUSED + problem)]
        assert await _refusals(csms, sid) == [REFUSED + problem]
        assert await _record(csms, sid) == before
        assert await try_connect(url, ssl_context=tls_pki.client_context(own)) == 101
