"""Attacks on the charger's end of TLS: a CSMS impostor or a downgraded server on 127.0.0.1.

Every handshake is real, made with the charger's own context
(:func:`chargeward.agent.tls.client_context` of a provisioned charger) against a bare TLS
server (:func:`tests.support.tls.tls_server`) or the real OCPP listener.  Each refusal is
checked for its reason, and each refusing server is first shown to work for a client that
accepts what it offers, so no test passes because a server is broken.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from chargeward.agent import tls as station_tls
from chargeward.agent.state import StateDir
from chargeward.crypto.tls import OCPP_TLS12_CIPHERS
from chargeward.server.stations.tls import TlsFiles, server_context
from tests.support.fleet import TEST_PASSPHRASE, Pki
from tests.support.tls import (
    TlsPki,
    now,
    provision_charger,
    running_agent,
    running_csms,
    station_connection,
    tls_server,
)

pytestmark = pytest.mark.timeout(30)

STATION = "CP-TLS"
PASSWORD = "agent-tls-test-password-0123"
OCPP_SUITES = frozenset(OCPP_TLS12_CIPHERS.split(":"))
# OpenSSL's X509_V_ERR_* codes, as in ssl.SSLCertVerificationError.verify_code
UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
CERT_NOT_YET_VALID = 9
CERT_HAS_EXPIRED = 10
HOSTNAME_MISMATCH = 62
IP_ADDRESS_MISMATCH = 64


@pytest.fixture
def charger(tmp_path: Path, pki: Pki, factory_bundle: Path, tls_pki: TlsPki) -> StateDir:
    """A profile-2 charger whose only CSMS root is ``tls_pki``'s."""
    return provision_charger(
        tmp_path, pki, factory_bundle, tls_pki, STATION, PASSWORD, certificate=False
    )


@dataclass(frozen=True)
class Negotiated:
    version: str | None
    cipher: str
    compression: str | None


async def handshake(ctx: ssl.SSLContext, port: int, host: str = "127.0.0.1") -> Negotiated:
    """A TLS handshake with 127.0.0.1:``port`` as asyncio (and so the agent) makes it,
    asking for ``host``: what was negotiated (or the handshake's error, raised)."""
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname=host, ssl_handshake_timeout=5
        ),
        5,
    )
    try:
        tls: ssl.SSLObject = writer.get_extra_info("ssl_object")
        cipher = tls.cipher()
        assert cipher is not None
        return Negotiated(tls.version(), cipher[0], tls.compression())
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 5)


async def refused_certificate(
    ctx: ssl.SSLContext, port: int, host: str = "127.0.0.1"
) -> ssl.SSLCertVerificationError:
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        await handshake(ctx, port, host)
    return info.value


async def refused_handshake(ctx: ssl.SSLContext, port: int) -> ssl.SSLError:
    with pytest.raises(ssl.SSLError) as info:
        await handshake(ctx, port)
    assert not isinstance(info.value, ssl.SSLCertVerificationError), info.value
    return info.value


def test_agent_context_is_as_strict_as_the_csms(charger: StateDir, tls_pki: TlsPki) -> None:
    agent = station_tls.client_context(charger)
    csms = server_context(TlsFiles(tls_pki.server_cert, tls_pki.server_key), TEST_PASSPHRASE.encode)
    for ctx in (agent, csms):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        assert ctx.options & ssl.OP_NO_COMPRESSION
        assert ctx.options & ssl.OP_NO_RENEGOTIATION
        tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
        assert tls12 == OCPP_SUITES
    assert agent.verify_mode == ssl.CERT_REQUIRED and agent.check_hostname
    # The CSMS root is the only trust anchor (no system CAs).
    assert [c["subject"] for c in agent.get_ca_certs()] == [
        ((("commonName", "ACME CSMS Root"),), (("organizationName", "ACME"),))
    ]


async def test_csms_certificate_from_an_untrusted_root_is_refused(
    tmp_path: Path, charger: StateDir
) -> None:
    impostor = TlsPki.create(tmp_path / "impostor")  # its own root, a cert for 127.0.0.1
    with tls_server(impostor.server_context()) as server:
        assert (await handshake(impostor.client_context(), server.port)).version == "TLSv1.3"
        server.next_handshake()
        e = await refused_certificate(station_tls.client_context(charger), server.port)
        assert e.verify_code == UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        assert e.verify_message == "unable to get local issuer certificate"
        assert server.next_handshake().error is not None  # the handshake never completed


@pytest.mark.parametrize(
    ("certified", "asked", "code", "message"),
    [
        ("csms.example", "127.0.0.1", IP_ADDRESS_MISMATCH, "IP address mismatch"),
        ("127.0.0.2", "127.0.0.1", IP_ADDRESS_MISMATCH, "IP address mismatch"),
        ("csms.example", "localhost", HOSTNAME_MISMATCH, "Hostname mismatch"),
    ],
)
async def test_csms_certificate_for_another_host_is_refused(
    tmp_path: Path,
    charger: StateDir,
    tls_pki: TlsPki,
    certified: str,
    asked: str,
    code: int,
    message: str,
) -> None:
    """A valid certificate under the trusted root, stolen from (or issued for) another host."""
    other_host = tls_pki.with_server_certificate(tmp_path / "other-host", certified)
    ctx = station_tls.client_context(charger)
    with tls_server(other_host.server_context()) as server:
        # The chain is good: asked for the host it names, the charger's context accepts it.
        assert (await handshake(ctx, server.port, certified)).version == "TLSv1.3"
        server.next_handshake()
        e = await refused_certificate(ctx, server.port, asked)
        assert e.verify_code == code
        assert e.verify_message == f"{message}, certificate is not valid for '{asked}'."
        assert server.next_handshake().error is not None


@pytest.mark.parametrize(
    ("issued", "days", "code", "message"),
    [
        (dt.timedelta(days=-10), 2, CERT_HAS_EXPIRED, "certificate has expired"),
        (dt.timedelta(days=1), 30, CERT_NOT_YET_VALID, "certificate is not yet valid"),
    ],
)
async def test_csms_certificate_outside_its_validity_is_refused(
    tmp_path: Path,
    charger: StateDir,
    tls_pki: TlsPki,
    issued: dt.timedelta,
    days: int,
    code: int,
    message: str,
) -> None:
    """The right host under the trusted root, but expired (or not valid yet)."""
    stale = tls_pki.with_server_certificate(
        tmp_path / "stale", "127.0.0.1", days=days, at=now() + issued
    )
    with tls_server(stale.server_context()) as server:
        e = await refused_certificate(station_tls.client_context(charger), server.port)
        assert (e.verify_code, e.verify_message) == (code, message)
        assert server.next_handshake().error is not None


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")  # the point
@pytest.mark.parametrize(
    "old", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["tls1.0", "tls1.1"]
)
async def test_csms_speaking_only_tls_1_0_or_1_1_is_refused(
    charger: StateDir, tls_pki: TlsPki, old: ssl.TLSVersion
) -> None:
    with tls_server(tls_pki.server_context(minimum=old, maximum=old)) as server:
        # The server really speaks it (to a client that allows it) ...
        seen = await handshake(tls_pki.client_context(minimum=old, maximum=old), server.port)
        assert (
            seen.version == {ssl.TLSVersion.TLSv1: "TLSv1", ssl.TLSVersion.TLSv1_1: "TLSv1.1"}[old]
        )
        server.next_handshake()
        # ... and the charger refuses to go below TLS 1.2.
        e = await refused_handshake(station_tls.client_context(charger), server.port)
        assert e.reason in ("UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION"), e
        assert server.next_handshake().reason in (
            "UNSUPPORTED_PROTOCOL",
            "TLSV1_ALERT_PROTOCOL_VERSION",
        )


@pytest.mark.parametrize(
    "suite",
    [
        "ECDHE-ECDSA-AES128-SHA256",  # CBC
        "ECDHE-ECDSA-AES256-SHA384",  # CBC
        "ECDHE-ECDSA-AES128-SHA",  # CBC, SHA-1
        "ECDHE-ECDSA-CHACHA20-POLY1305",  # AEAD, but not an OCPP suite
    ],
)
async def test_csms_offering_only_non_ocpp_tls12_suites_is_refused(
    charger: StateDir, tls_pki: TlsPki, suite: str
) -> None:
    tls12 = ssl.TLSVersion.TLSv1_2
    with tls_server(tls_pki.server_context(maximum=tls12, ciphers=suite)) as server:
        seen = await handshake(tls_pki.client_context(maximum=tls12, ciphers=suite), server.port)
        assert (seen.version, seen.cipher) == ("TLSv1.2", suite)
        server.next_handshake()
        e = await refused_handshake(station_tls.client_context(charger), server.port)
        assert e.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE", e
        assert server.next_handshake().reason == "NO_SHARED_CIPHER"


@pytest.mark.parametrize("tls_maximum", [None, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
async def test_agent_and_csms_negotiate_ocpp_tls_without_compression(
    tmp_path: Path, charger: StateDir, tls_pki: TlsPki, tls_maximum: ssl.TLSVersion | None
) -> None:
    """The real agent context against the real listener: the websocket opens, over TLS 1.3
    (GCM) or, with the server capped, TLS 1.2 with an OCPP suite; never compressed."""
    async with running_csms(tmp_path / "srv", tls_pki, tls_maximum=tls_maximum) as csms:
        await csms.add_station(STATION, PASSWORD, 2)
        ctx = station_tls.client_context(charger)
        async with station_connection(csms.url, STATION, PASSWORD, ssl_context=ctx) as ws:
            tls: ssl.SSLObject = ws.transport.get_extra_info("ssl_object")
            cipher = tls.cipher()
            assert cipher is not None
            assert tls.compression() is None
            if tls_maximum is None:
                assert (tls.version(), cipher[0]) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
            else:
                assert tls.version() == "TLSv1.2"
                assert cipher[0] in OCPP_SUITES
                assert cipher[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"  # the server's first


@pytest.mark.parametrize("attack", ["untrusted root", "wrong host"])
async def test_agent_never_boots_against_a_csms_impostor(
    tmp_path: Path,
    charger: StateDir,
    tls_pki: TlsPki,
    caplog: pytest.LogCaptureFixture,
    attack: str,
) -> None:
    """The real agent against the real listener with a bad certificate: no websocket, no
    BootNotification; one clear log line per attempt, one security event for the run."""
    if attack == "untrusted root":
        impostor = TlsPki.create(tmp_path / "impostor")
        served = replace(tls_pki, server_cert=impostor.server_cert, server_key=impostor.server_key)
        why = "unable to get local issuer certificate"
    else:
        served = tls_pki.with_server_certificate(tmp_path / "wrong-host", "csms.example")
        why = "IP address mismatch, certificate is not valid for '127.0.0.1'."
    caplog.set_level(logging.INFO, logger="chargeward.agent")
    async with running_csms(tmp_path / "srv", served) as csms:
        await csms.add_station(STATION, PASSWORD, 2)
        before = await csms.audit(STATION)

        def refusals() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.name == "chargeward.agent" and r.levelno == logging.ERROR
            ]

        async with running_agent(charger, csms.url) as agent:
            await csms.wait(lambda: len(refusals()) >= 3, "three refused attempts", timeout=10)
            assert not agent.online
        # Never past TLS: no HTTP request reached the listener, the station never connected.
        assert csms.listener.refusals == []
        assert csms.registry.get(STATION) is None
        assert await csms.audit(STATION) == before
    assert set(refusals()) == {
        f"{STATION}: cannot connect to CSMS {csms.url}: TLS certificate verify failed: {why}"
    }
    events = [e for e in agent.security_log.entries() if e.type == "InvalidCsmsCertificate"]
    assert [e.tech_info for e in events] == [f"TLS certificate verify failed: {why}"]
