"""OCPP security profiles 1-3 on the real listener with real TLS on 127.0.0.1: who gets in,
and every refusal with its reason (logged, and audited for certificates of known stations)."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest

from chargeward.errors import ConfigError
from chargeward.server.stations.tls import OcppSecurity, listener_security
from tests.support.fleet import basic
from tests.support.tls import TlsPki, now, running_csms, try_connect

PASSWORD = "profile-test-password-0123"


async def test_profile_2_tls_versions_ciphers_and_passwords(
    tmp_path: Path, tls_pki: TlsPki
) -> None:
    async with running_csms(tmp_path / "srv", tls_pki) as csms:
        await csms.add_station("CP-2", PASSWORD, 2)
        url = csms.url + "CP-2"
        good = basic("CP-2", PASSWORD)
        # TLS 1.3 and TLS 1.2 with an OCPP cipher suite get in with the right password.
        assert await try_connect(url, ssl_context=tls_pki.client_context(), auth=good) == 101
        tls12 = tls_pki.client_context(
            maximum=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES256-GCM-SHA384"
        )
        assert await try_connect(url, ssl_context=tls12, auth=good) == 101
        # Old TLS versions: the server ends the handshake (the client could speak them).
        for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            ctx = tls_pki.client_context(minimum=old, maximum=old)
            seen = await try_connect(url, ssl_context=ctx, auth=good)
            assert isinstance(seen, str), seen
            assert any(w in seen.lower() for w in ("version", "reset", "protocol")), seen
        # TLS 1.2 with suites OCPP does not list (CBC, CHACHA20): no shared cipher.
        for suite in ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"):
            ctx = tls_pki.client_context(maximum=ssl.TLSVersion.TLSv1_2, ciphers=suite)
            seen = await try_connect(url, ssl_context=ctx, auth=good)
            assert isinstance(seen, str), (suite, seen)
            assert any(w in seen.lower() for w in ("handshake", "reset", "cipher")), seen
        # A wrong password, no password, another station's name: 401, reasons logged.
        ctx = tls_pki.client_context()
        assert await try_connect(url, ssl_context=ctx, auth=basic("CP-2", "x" * 20)) == 401
        assert await try_connect(url, ssl_context=ctx) == 401
        assert await try_connect(url, ssl_context=ctx, auth=basic("CP-9", PASSWORD)) == 401
        assert [r for _, r in csms.listener.refusals] == [
            "unknown station or wrong password",
            "no credentials",
            "username differs from station identity",
        ]


async def test_profile_3_needs_a_valid_certificate_with_its_identity(
    tmp_path: Path, tls_pki: TlsPki
) -> None:
    other = TlsPki.create(tmp_path / "other-pki")
    good = tls_pki.station_cert("CP-3")
    expired = tls_pki.station_cert("CP-3", days=2, at=now() - dt.timedelta(days=10), name="old")
    wrong_cn = tls_pki.station_cert("CP-OTHER")
    foreign = other.station_cert("CP-3")  # right CN, unknown CA
    async with running_csms(tmp_path / "srv", tls_pki) as csms:
        await csms.add_station("CP-3", PASSWORD, 3, good.cert)
        url = csms.url + "CP-3"
        ctx = tls_pki.client_context
        assert await try_connect(url, ssl_context=ctx(good)) == 101  # Basic is not needed
        # An unknown CA: the TLS handshake refuses it (the HTTP upgrade is never read).
        for tls_max in (None, ssl.TLSVersion.TLSv1_2):
            client = tls_pki.client_context(foreign, maximum=tls_max)
            unknown = await try_connect(url, ssl_context=client)
            assert isinstance(unknown, str), unknown
        assert csms.listener.refusals == []
        # Expired, wrong CN, no certificate (even with the right password): 401 with reasons.
        assert await try_connect(url, ssl_context=ctx(expired)) == 401
        assert await try_connect(url, ssl_context=ctx(wrong_cn)) == 401
        assert await try_connect(url, ssl_context=ctx(), auth=basic("CP-3", PASSWORD)) == 401
        reasons = [r for _, r in csms.listener.refusals]
        assert reasons[0].startswith("client certificate refused: certificate expired on")
        assert reasons[1] == (
            "client certificate refused: certificate CN 'CP-OTHER' is not the station identity"
        )
        assert reasons[2] == "security profile 3 requires a client certificate"
        refused = [d for a, d in await csms.audit("CP-3") if a == "station.connection_refused"]
        assert [d["reason"] for d in refused] == reasons
        assert refused[0]["security_event"] == "InvalidChargingStationCertificate"
        # The registered certificate is unchanged by the refusals.
        from chargeward.server.stations.station_security import security_view

        async with csms.db.session() as s:
            view = await security_view(s, "CP-3")
        assert view.certificate_serial == f"{good.cert.serial_number:x}"
        assert view.certificate_expires_at == good.cert.not_valid_after_utc


async def test_plain_ws_only_for_profile_1_and_only_in_a_lab(
    tmp_path: Path, tls_pki: TlsPki
) -> None:
    async with running_csms(tmp_path / "lab", tls_pki, tls=False, allow_profile_1=True) as lab:
        await lab.add_station("CP-1", PASSWORD, 1)
        await lab.add_station("CP-2", PASSWORD, 2)
        assert await try_connect(lab.url + "CP-1", auth=basic("CP-1", PASSWORD)) == 101
        assert await try_connect(lab.url + "CP-2", auth=basic("CP-2", PASSWORD)) == 401
        assert lab.listener.refusals == [
            ("CP-2", "security profile 2 requires TLS (wss://), got plain ws")
        ]
    async with running_csms(tmp_path / "plain", tls_pki, tls=False) as plain:
        await plain.add_station("CP-1", PASSWORD, 1)
        assert await try_connect(plain.url + "CP-1", auth=basic("CP-1", PASSWORD)) == 401
        assert plain.listener.refusals == [
            ("CP-1", "security profile 1 (no TLS) is not enabled on this server")
        ]
    # The server does not even start without TLS unless the lab option is given.
    with pytest.raises(ConfigError, match="--allow-insecure-profile-1"):
        listener_security(OcppSecurity(), lambda: b"")
    ctx, _ = listener_security(OcppSecurity(allow_profile_1=True), lambda: b"")
    assert ctx is None
