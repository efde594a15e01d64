"""Slow-loris against the OCPP listener: connections that hold a socket without finishing.

A client that sends its HTTP upgrade a byte at a time, one that opens TCP and sends nothing
(not even a TLS ClientHello), and one that completes the upgrade and then never answers a
ping: the listener closes each within its timeouts (:class:`ListenerTimeouts`, short here),
and fifty of them at once do not keep a station from connecting and booting meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from chargeward.server.stations.csms import ListenerTimeouts
from tests.support.fleet import basic
from tests.support.fuzzing import FuzzReport
from tests.support.ocpp_peer import Peer
from tests.support.tls import Csms, TlsPki, running_csms, station_connection

pytestmark = pytest.mark.timeout(60)

PASSWORD = "slow-loris-password-0123456"
TIMEOUTS = ListenerTimeouts(open_timeout=1.5, ping_interval=0.5, ping_timeout=0.5)
# Closed by then: the TLS handshake and then the upgrade may each take open_timeout.
OPEN_BOUND = 2 * TIMEOUTS.open_timeout + 1.5
PING_BOUND = TIMEOUTS.ping_interval + TIMEOUTS.ping_timeout + 1.5
BOOT = {"reason": "PowerUp", "chargingStation": {"model": "AC22", "vendorName": "ACME"}}


def upgrade_request(station_id: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ocpp/{station_id} HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: ocpp2.0.1\r\n"
        f"Authorization: {basic(station_id, PASSWORD)}\r\n\r\n"
    ).encode()


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """What the server sent until it closed the connection."""
    got = b""
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while chunk := await reader.read(4096):
            got += chunk
    return got


async def held_open(
    csms: Csms,
    *,
    tls: ssl.SSLContext | None,
    send: bytes = b"",
    every: float = 0.0,
    upgrade: bool = False,
    opened_into: list[None] | None = None,
) -> tuple[float, bytes]:
    """Open a connection and hold it: with ``every``, trickle ``send`` a byte at a time;
    with ``upgrade``, send it whole and then never answer.  Returns the seconds until the
    server closed the connection and what it sent; ``opened_into`` gets one item once the
    connection is open (and its TLS handshake done)."""
    port = urlsplit(csms.url).port
    started = time.monotonic()
    opened = asyncio.open_connection(
        "127.0.0.1", port, ssl=tls, server_hostname="127.0.0.1" if tls else None
    )
    reader, writer = await opened
    if opened_into is not None:
        opened_into.append(None)
    if upgrade:
        writer.write(send)

    async def trickle() -> None:
        for byte in send if every else b"":
            writer.write(bytes([byte]))
            await asyncio.sleep(every)

    trickling = asyncio.create_task(trickle())
    try:
        got = await asyncio.wait_for(_until_closed(reader), 30)
    finally:
        trickling.cancel()
        writer.close()
    return time.monotonic() - started, got


async def boots(csms: Csms, pki: TlsPki, station_id: str) -> float:
    """A well-behaved station connects and boots; returns how long that took."""
    started = time.monotonic()
    ctx = pki.client_context()
    async with station_connection(csms.url, station_id, PASSWORD, ssl_context=ctx) as ws:
        outcome = await Peer(ws).start().call("b1", "BootNotification", BOOT)
        assert outcome.reply is not None and outcome.reply[2]["status"] == "Accepted"
    return time.monotonic() - started


async def test_slow_and_silent_connections_are_closed_and_block_no_one(
    tmp_path: Path, tls_pki: TlsPki
) -> None:
    report = FuzzReport("slow_loris")
    closed_after: dict[str, float] = {}  # seconds, the longest of each kind
    async with running_csms(tmp_path / "srv", tls_pki, timeouts=TIMEOUTS) as csms:
        for station_id in ("CP-GOOD", "CP-IDLE", "CP-SLOW"):
            await csms.add_station(station_id, PASSWORD, 2)
        tls = tls_pki.client_context()

        # One of each, alone.
        seconds, got = await held_open(csms, tls=tls, send=upgrade_request("CP-SLOW"), every=0.1)
        report.count("upgrade a byte at a time", "closed")
        closed_after["upgrade a byte at a time"] = seconds
        assert seconds < OPEN_BOUND and b"101" not in got
        seconds, got = await held_open(csms, tls=None)
        report.count("TCP, nothing sent", "closed")
        closed_after["TCP, nothing sent"] = seconds
        assert seconds < OPEN_BOUND and got == b""
        seconds, got = await held_open(csms, tls=tls, send=upgrade_request("CP-IDLE"), upgrade=True)
        report.count("upgraded, pings unanswered", "closed")
        closed_after["upgraded, pings unanswered"] = seconds
        assert got.startswith(b"HTTP/1.1 101 ")  # it was in, then went quiet
        assert seconds < TIMEOUTS.open_timeout + PING_BOUND

        # Fifty at once, while a station connects and boots.
        holding: list[None] = []
        slow = [
            held_open(
                csms, tls=tls, send=upgrade_request("CP-SLOW"), every=0.2, opened_into=holding
            )
            for _ in range(25)
        ] + [held_open(csms, tls=None, opened_into=holding) for _ in range(25)]
        attack = asyncio.gather(*slow)
        await csms.wait(lambda: len(holding) == len(slow), "all of them to hold their sockets")
        booted_in = await asyncio.wait_for(boots(csms, tls_pki, "CP-GOOD"), 5)
        assert booted_in < 2
        results = await attack
        report.count("held at once", "closed", len(results))
        closed_after["held at once"] = max(seconds for seconds, _ in results)
        assert max(seconds for seconds, _ in results) < OPEN_BOUND + 1
        assert not any(b"101" in got for _, got in results)
        assert await boots(csms, tls_pki, "CP-GOOD") < 2  # and after
    rounded = {k: round(v, 2) for k, v in closed_after.items()}
    data = report.write(closed_after=rounded, boot_during_attack=round(booted_in, 2))
    assert data["tried"] == 53
