"""A station's report and a campaign tick that change the same run at once: neither change is
lost (PostgreSQL; found as a completed campaign whose run was still soaking, one slow-suite
run in several).

The tick times the run out (a terminal state) while the station's report, read before the
tick committed, would move it on.  The report used to step the run it had read and write over
the tick's change; it now locks the run as it reads it, waits for the tick, and sees the run
terminal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from chargeward.campaign import machine
from chargeward.server.rollout import campaign_runs, campaign_scheduler
from chargeward.server.stations import station_reports
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Campaign
from tests.support.campaigns import one_station_campaign, until
from tests.support.contention import lock_waiters
from tests.support.fleet import Pki

T0 = dt.datetime.now(dt.UTC).replace(microsecond=0)


async def _downloading(
    db: Database, tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, int]:
    """A one-station campaign (one attempt) whose run is downloading: (campaign, request)."""
    state, cid = await one_station_campaign(
        db, tmp_path, pki, T0, "race", max_attempts=1, timeouts={"download": "10m"}
    )

    async def accepted(_state: Any, _order: Any, **_: Any) -> str:
        return "Accepted"

    monkeypatch.setattr(campaign_scheduler, "send_update", accepted)
    state.clock = lambda: T0
    [order] = await campaign_scheduler.tick_campaign(state, cid)
    async with db.session() as s:
        await station_reports.record_firmware_status(
            s, "CP-1", status="Downloading", request_id=order.request_id, now=T0
        )
    return cid, order.request_id


async def test_a_report_racing_a_tick_that_timed_the_run_out_does_not_undo_it(
    pg: Database, tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid, request_id = await _downloading(pg, tmp_path, pki, monkeypatch)
    late = T0 + dt.timedelta(hours=1)  # the download deadline passed
    async with pg.session() as tick:  # the tick: the run timed out, not yet committed
        row, run = (await campaign_runs.load_runs(tick, cid))["CP-1"]
        assert run.state == "downloading"
        campaign = await tick.get(Campaign, cid)
        assert campaign is not None
        timed_out = machine.step(run, machine.Tick(late), campaign_runs.to_planner(campaign).policy)
        assert timed_out.state == "timed_out"
        campaign_runs.store_run(row, timed_out, late)
        await tick.flush()

        async def report() -> None:
            async with pg.session() as s:
                await station_reports.record_firmware_status(
                    s, "CP-1", status="Installing", request_id=request_id, now=late
                )

        reporting = asyncio.create_task(report())
        await until(
            lambda: _either(lock_waiters(pg), reporting), "the report to wait for the run", 15
        )
    await asyncio.wait_for(reporting, 15)  # the tick committed above
    async with pg.snapshot() as s:
        _, final = (await campaign_runs.load_runs(s, cid))["CP-1"]
    assert final.state == "timed_out", final.timeline


async def _either(waiters: Any, task: asyncio.Task[None]) -> bool:
    return bool(await waiters) or task.done()
