"""An UpdateFirmware whose answer was lost is asked about, never sent twice blindly (issue 28,
point 3), on SQLite and PostgreSQL with the scheduler's clock injected.

The chaos test: 17 of 240 chargers got a second UpdateFirmware with no failure in between.
The node that sent the first one died before storing the station's ``Accepted``; the campaign
timed the run out and sent another.  Now a request with no answer keeps its run *dispatched*
(phase confirm), the scheduler asks the station (TriggerMessage(FirmwareStatusNotification)),
and the station's report decides: progress for the request adopts it, ``Idle`` frees the run
for another attempt.  The station here is the CSMS side's view of one: it records what it is
sent, and its reports go through the server's station-report path as a charger's would.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from chargeward.ocpp.csms import FirmwareOrder
from chargeward.server.rollout import campaign_runs, campaign_scheduler
from chargeward.server.rollout import unanswered as unanswered_mod
from chargeward.server.state import ServerState
from chargeward.server.stations import station_reports
from chargeward.server.store.db import Database
from chargeward.server.store.tables import FirmwareUpdate
from tests.support.campaigns import one_station_campaign
from tests.support.fleet import Pki

T0 = dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class Charger:
    """What the CSMS holds for a connected station: it records UpdateFirmware and
    TriggerMessage; ``lose_replies`` of its UpdateFirmware answers never come back."""

    id: str
    lose_replies: int = 0
    orders: list[FirmwareOrder] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)

    async def update_firmware(self, order: FirmwareOrder) -> str:
        self.orders.append(order)
        if self.lose_replies:
            self.lose_replies -= 1
            raise TimeoutError("the reply was lost")
        return "Accepted"

    async def trigger_message(self, requested_message: str) -> str:
        self.triggers.append(requested_message)
        return "Accepted"


async def _campaign(db: Database, tmp_path: Path, pki: Pki) -> tuple[ServerState, int]:
    unanswered_mod._asked.clear()
    return await one_station_campaign(
        db, tmp_path, pki, T0, "lost", max_attempts=3, timeouts={"response": "1m"}
    )


@dataclass
class Clock:
    now: dt.datetime = T0

    def __call__(self) -> dt.datetime:
        return self.now


async def _with_charger(
    db: Database, tmp_path: Path, pki: Pki
) -> tuple[ServerState, int, Charger, Clock]:
    """The campaign, its station connected here with its first UpdateFirmware reply lost,
    and the scheduler's clock."""
    state, cid = await _campaign(db, tmp_path, pki)
    charger = Charger("CP-1", lose_replies=1)
    state.registry.stations["CP-1"] = charger  # type: ignore[assignment]
    clock = Clock()
    state.clock = clock
    return state, cid, charger, clock


async def _run(db: Database, cid: int) -> Any:
    async with db.snapshot() as s:
        return (await campaign_runs.load_runs(s, cid))["CP-1"][1]


async def _report(db: Database, status: str, request_id: int | None, at: dt.datetime) -> None:
    async with db.session() as s:
        await station_reports.record_firmware_status(
            s, "CP-1", status=status, request_id=request_id, now=at
        )


async def _outcomes(db: Database) -> list[tuple[int, str]]:
    async with db.snapshot() as s:
        rows = await s.execute(
            select(FirmwareUpdate.id, FirmwareUpdate.outcome).order_by(FirmwareUpdate.id)
        )
        return [(r, o) for r, o in rows]


async def test_a_lost_reply_is_asked_about_and_the_stations_progress_adopts_it(
    db: Database, tmp_path: Path, pki: Pki
) -> None:
    state, cid, charger, clock = await _with_charger(db, tmp_path, pki)

    [order] = await campaign_scheduler.tick_campaign(state, cid)
    run = await _run(db, cid)
    assert (run.state, run.phase, run.attempts) == ("dispatched", "confirm", 1)
    assert len(charger.orders) == 1 and charger.triggers == []

    for minutes in (0.5, 1.5, 3):  # ticks, past the response and the confirm deadlines
        clock.now = T0 + dt.timedelta(minutes=minutes)
        assert await campaign_scheduler.tick_campaign(state, cid) == []
        if minutes == 0.5:
            assert charger.triggers == ["FirmwareStatusNotification"]  # asked, once
            # The station answers the question: it works on the request.
            await _report(db, "Downloading", order.request_id, clock.now)
            run = await _run(db, cid)
            assert (run.state, run.attempts, run.phase) == ("downloading", 1, "download")
    assert len(charger.orders) == 1  # never a second UpdateFirmware
    assert charger.triggers == ["FirmwareStatusNotification"]
    assert await _outcomes(db) == [(order.request_id, "pending")]


async def test_a_request_whose_node_died_is_adopted_from_a_late_report_not_sent_again(
    db: Database, tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node that sent the request died before storing any answer: the run sits dispatched
    until its response deadline, is asked about while the station is away, and the station's
    status, arriving on any node once it reconnects, adopts the request."""
    state, cid = await _campaign(db, tmp_path, pki)
    sent: list[int] = []

    async def died_after_sending(_state: Any, order: Any, **_: Any) -> str:
        sent.append(order.request_id)  # reached the station; the answer died with the node
        return "Accepted"

    monkeypatch.setattr(campaign_scheduler, "send_update", died_after_sending)
    state.clock = clock = Clock()
    [order] = await campaign_scheduler.tick_campaign(state, cid)
    assert (await _run(db, cid)).state == "dispatched"

    clock.now = T0 + dt.timedelta(minutes=1.5)  # the response deadline passed: not a failure yet
    assert await campaign_scheduler.tick_campaign(state, cid) == []
    run = await _run(db, cid)
    assert (run.state, run.phase) == ("dispatched", "confirm")
    assert run.reason == f"no answer in 1m; asking the station about requestId {order.request_id}"

    clock.now = T0 + dt.timedelta(minutes=2)
    await _report(db, "Installing", order.request_id, clock.now)  # via another node, once back
    assert await campaign_scheduler.tick_campaign(state, cid) == []
    run = await _run(db, cid)
    assert (run.state, run.attempts) == ("installing", 1)
    assert sent == [order.request_id]


async def test_an_idle_station_frees_the_run_for_another_attempt(
    db: Database, tmp_path: Path, pki: Pki
) -> None:
    state, cid, charger, clock = await _with_charger(db, tmp_path, pki)
    [first] = await campaign_scheduler.tick_campaign(state, cid)
    assert charger.triggers == []
    clock.now = T0 + dt.timedelta(seconds=10)
    assert await campaign_scheduler.tick_campaign(state, cid) == []  # asks, sends nothing
    assert charger.triggers == ["FirmwareStatusNotification"]

    await _report(db, "Idle", None, clock.now)  # it never took the request
    run = await _run(db, cid)
    assert (run.state, run.attempts) == ("waiting", 1)
    assert run.reason == f"requestId {first.request_id}: the station is idle"

    clock.now = T0 + dt.timedelta(seconds=20)
    [second] = await campaign_scheduler.tick_campaign(state, cid)
    assert second.request_id != first.request_id
    assert [o.request_id for o in charger.orders] == [first.request_id, second.request_id]
    assert (await _run(db, cid)).attempts == 2
    assert await _outcomes(db) == [(first.request_id, "timed_out"), (second.request_id, "pending")]
