"""A station the CSMS once accepted needs no new BootNotification after a server restart."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from ocpp.exceptions import SecurityError
from ocpp.v201 import ChargePoint, call
from websockets.asyncio.client import connect

from chargeward.server.fleet import station_registry
from chargeward.server.stations import station_reports
from chargeward.server.stations.csms import CsmsListener, Registry
from chargeward.server.store import tables
from chargeward.server.store.db import Database

NOW = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)
PASSWORD = "Station-Password-0123456789"


def _connect(port: int, station_id: str) -> Any:
    """The station's websocket to the listener (Basic auth, profile 1)."""
    auth = base64.b64encode(f"{station_id}:{PASSWORD}".encode()).decode()
    return connect(
        f"ws://127.0.0.1:{port}/ocpp/{station_id}",
        subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Basic {auth}"},
        open_timeout=10,
    )


async def _session(port: int, station_id: str, *, boot: bool) -> object:
    """Connect, optionally boot, send one Heartbeat; returns its result (or raises)."""
    async with _connect(port, station_id) as ws:
        cp = ChargePoint(station_id, ws, response_timeout=10)
        reader = asyncio.create_task(cp.start())
        try:
            if boot:
                await cp.call(
                    call.BootNotification(
                        charging_station={"model": "AC22", "vendor_name": "ACME"},
                        reason="PowerUp",
                    )
                )
            return await cp.call(call.Heartbeat(), suppress=False)
        finally:
            reader.cancel()


async def _listener(db: Database) -> tuple[CsmsListener, int, object]:
    listener = CsmsListener(db, Registry(), allow_profile_1=True)
    server = await listener.serve("127.0.0.1", 0)
    return listener, next(iter(server.sockets)).getsockname()[1], server


async def test_a_booted_station_reconnects_to_a_restarted_server_without_booting(
    tmp_path: Path,
) -> None:
    db = await Database.open(data_dir=tmp_path)
    try:
        async with db.session() as s:
            for sid in ("CP-1", "CP-2"):
                await station_registry.register_station(
                    s, sid, actor="test", password=PASSWORD, now=NOW
                )
                (await s.get(tables.Station, sid)).security_profile = 1  # type: ignore[union-attr]
        _, port, server = await _listener(db)
        assert await _session(port, "CP-1", boot=True) is not None
        server.close()  # type: ignore[attr-defined]
        await server.wait_closed()  # type: ignore[attr-defined]

        _, port, server = await _listener(db)  # a new process: nothing remembered in memory
        heartbeat = await _session(port, "CP-1", boot=False)
        assert heartbeat is not None and heartbeat.current_time  # type: ignore[attr-defined]
        # A station that never booted is still held to B02.FR.09.
        with pytest.raises(SecurityError, match="BootNotification has not been accepted"):
            await _session(port, "CP-2", boot=False)
        server.close()  # type: ignore[attr-defined]
        await server.wait_closed()  # type: ignore[attr-defined]
    finally:
        await db.close()


async def test_a_reconnect_while_the_old_connection_s_disconnect_is_written_stays_connected(
    tmp_path: Path,
) -> None:
    """A charger back from a reboot in under a second: the old connection's "disconnected"
    may be committed after the new one's "connected" (seen with 10,000 simulated chargers:
    the planner then skipped stations that were online).  Connected must win."""
    db = await Database.open(data_dir=tmp_path)
    try:
        async with db.session() as s:
            await station_registry.register_station(
                s, "CP-1", actor="test", password=PASSWORD, now=NOW
            )
            (await s.get(tables.Station, "CP-1")).security_profile = 1  # type: ignore[union-attr]
        listener, port, server = await _listener(db)
        real = listener.sink.connected
        reconnected = asyncio.Event()
        disconnecting = asyncio.Event()

        async def late_disconnect(station_id: str, connected: bool, **kw: Any) -> bool:
            if not connected:  # held back until the new connection's write went through
                disconnecting.set()
                await reconnected.wait()
            return await real(station_id, connected, **kw)

        listener.sink.connected = late_disconnect  # type: ignore[method-assign]
        try:
            await _session(port, "CP-1", boot=True)
            await asyncio.wait_for(disconnecting.wait(), 10)  # the old handler waits to write it
            async with _connect(port, "CP-1") as ws:
                cp = ChargePoint("CP-1", ws, response_timeout=10)
                reader = asyncio.create_task(cp.start())
                await cp.call(call.Heartbeat(), suppress=False)  # "connected" is written
                reconnected.set()
                for _ in range(50):
                    await asyncio.sleep(0.05)
                    async with db.session() as s:
                        station = await station_reports.station_detail(s, "CP-1", now=NOW)
                    if station.connected:
                        break
                assert station.connected
                reader.cancel()
        finally:
            server.close()  # type: ignore[attr-defined]
            await server.wait_closed()  # type: ignore[attr-defined]
    finally:
        await db.close()
