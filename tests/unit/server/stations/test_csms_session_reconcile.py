"""A session whose TransactionEvent(Ended) was lost with its connection is closed when the
station reboots or reports its connectors ``Available`` again, so a campaign dispatches to it
instead of deferring it (a light OCPP station over a real websocket to the CSMS listener)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action

from chargeward import audit
from chargeward.campaign import planner
from chargeward.campaign.machine import StationRun
from chargeward.campaign.spec import parse_spec
from chargeward.server.fleet import station_registry
from chargeward.server.rollout import campaign_fleet
from chargeward.server.store import tables
from chargeward.server.store.db import Database
from tests.unit.server.stations.test_csms_reconnect import NOW, PASSWORD, _connect, _listener

STAMP = "2026-11-22T09:00:00Z"


class _Station(ChargePoint):  # type: ignore[misc]
    """Answers TriggerMessage(StatusNotification) with its connector, now Available, if
    ``answers`` (else NotImplemented: only what the test names closes the session)."""

    def __init__(self, *args: object, answers: bool = False, **kw: object) -> None:
        super().__init__(*args, **kw)
        self.answers = answers
        self.reported = asyncio.Event()

    @on(Action.trigger_message)
    def on_trigger(self, requested_message: str, **_: object) -> call_result.TriggerMessage:
        return call_result.TriggerMessage(status="Accepted" if self.answers else "NotImplemented")

    @after(Action.trigger_message)
    async def after_trigger(self, requested_message: str, **_: object) -> None:
        if self.answers and requested_message == "StatusNotification":
            await _connector(self, "Available")
            self.reported.set()


@asynccontextmanager
async def _station(
    port: int, station_id: str, *, boot: bool, answers: bool = False
) -> AsyncIterator[_Station]:
    """A connected station (Basic auth, profile 1), booted with ``PowerUp`` if ``boot``."""
    async with _connect(port, station_id) as ws:
        cp = _Station(station_id, ws, response_timeout=10, answers=answers)
        reader = asyncio.create_task(cp.start())
        try:
            if boot:
                await cp.call(
                    call.BootNotification(
                        charging_station={"model": "AC22", "vendor_name": "ACME"},
                        reason="PowerUp",
                    ),
                    suppress=False,
                )
            yield cp
        finally:
            reader.cancel()


@asynccontextmanager
async def _csms(tmp_path: Path) -> AsyncIterator[tuple[Database, int]]:
    """The CSMS listener on a free port, with CP-1 registered (profile 1)."""
    db = await Database.open(data_dir=tmp_path)
    try:
        async with db.session() as s:
            await station_registry.register_station(
                s, "CP-1", actor="test", password=PASSWORD, now=NOW
            )
            (await s.get(tables.Station, "CP-1")).security_profile = 1  # type: ignore[union-attr]
        _, port, server = await _listener(db)
        try:
            yield db, port
        finally:
            server.close()  # type: ignore[attr-defined]
            await server.wait_closed()  # type: ignore[attr-defined]
    finally:
        await db.close()


async def _started(cp: ChargePoint, evse: int, tx: str) -> None:
    await cp.call(
        call.TransactionEvent(
            event_type="Started",
            timestamp=STAMP,
            trigger_reason="CablePluggedIn",
            seq_no=0,
            transaction_info={"transaction_id": tx},
            evse={"id": evse, "connector_id": 1},
        ),
        suppress=False,
    )


async def _connector(cp: ChargePoint, status: str) -> None:
    await cp.call(
        call.StatusNotification(
            timestamp=STAMP, connector_status=status, evse_id=1, connector_id=1
        ),
        suppress=False,
    )


async def _sessions(db: Database) -> dict[str, str]:
    async with db.snapshot() as s:
        row = await s.get(tables.Station, "CP-1")
        assert row is not None
        return dict(row.active_transactions)


async def _dispatched(db: Database) -> list[str]:
    """What the campaign planner does with CP-1 (deferred so far) given the stored fleet."""
    s_ = parse_spec({"name": "c1", "release": "r1", "stages": {"canary": 1}, "jitter": 0})
    c = planner.Campaign(1, s_, "feature", {"main": "2.0.0"}, stage_started_at=NOW,
                         stage_sizes=(1,))  # fmt: skip
    async with db.snapshot() as s:
        fleet, sites = await campaign_fleet.fleet_now(s, ["CP-1"])
    runs = {"CP-1": StationRun("CP-1", 0, "deferred", reason="charging")}
    return planner.plan(c, runs, fleet, sites, NOW).dispatch


@pytest.mark.parametrize("report", ["reboot", "available", "asked"])
async def test_a_session_whose_end_was_lost_is_closed_on_reconnect(
    tmp_path: Path, report: str
) -> None:
    async with _csms(tmp_path) as (db, port):
        async with _station(port, "CP-1", boot=True) as cp:
            await _connector(cp, "Available")
            await _started(cp, 1, "tx-1")
            await _connector(cp, "Occupied")
        # The connection dropped before TransactionEvent(Ended) arrived.
        assert await _sessions(db) == {"1": "tx-1"}
        assert await _dispatched(db) == []  # still "charging": deferred

        again = _station(port, "CP-1", boot=report == "reboot", answers=report == "asked")
        async with again as cp:
            if report == "available":
                await _connector(cp, "Available")
            elif report == "asked":  # the CSMS asks with TriggerMessage(StatusNotification)
                await asyncio.wait_for(cp.reported.wait(), 10)
            else:
                await cp.call(call.Heartbeat(), suppress=False)
            assert await _sessions(db) == {}
            assert await _dispatched(db) == ["CP-1"]
            async with db.snapshot() as s:
                closed = await audit.entries(s, target="CP-1")
    [entry] = [e for e in closed if e.action == "station.sessions_reconciled"]
    assert entry.details["closed"] == {"1": "tx-1"}


async def test_a_session_closed_by_reconciliation_does_not_come_back_with_the_next_one(
    tmp_path: Path,
) -> None:
    """On the same connection: the station reports Available without the Ended; the session
    is closed, and a session on another EVSE later does not bring the old one back."""
    async with _csms(tmp_path) as (db, port), _station(port, "CP-1", boot=True) as cp:
        await _started(cp, 1, "tx-1")
        await _connector(cp, "Occupied")
        await _connector(cp, "Available")  # the Ended was lost
        await _started(cp, 2, "tx-2")
        assert await _sessions(db) == {"2": "tx-2"}
