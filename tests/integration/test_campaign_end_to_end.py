"""Campaigns end to end: the real server process (scheduler on the leader, SQLite) and real
agents over OCPP 2.0.1 on loopback.

- a good release goes canary -> 100 %, the rest of the fleet only after the canary passed its
  health gate (new version reported with reason FirmwareUpdate, healthy through the soak);
- a station charging when its turn comes is deferred (not failed, not timed out) and updated
  once the session ends;
- a bad release (the charging application fails its start-up self-test, so the charger falls
  back to its old slot) pauses the campaign at the canary, raises an alert, and no other
  station gets an UpdateFirmware.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.campaigns import (
    ALL_DAY,
    BAD_VERSION,
    STATIONS,
    agents,
    api,
    campaign,
    campaign_doc,
    runs,
    scheduler_ticks,
    state_is,
    status_is,
    until,
)
from tests.support.fleet import Pki, assert_no_crash, running_server


@pytest.mark.slow  # 53 s beside the suite's other tests on 2 cores
async def test_canary_then_fleet_charging_deferred_and_a_bad_release_pauses_at_canary(
    tmp_path: Path, pki: Pki, factory_bundle: Path
) -> None:
    good = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2)
    bad = pki.bundle(tmp_path / "acme-1.2.0.cwb", BAD_VERSION, 3)
    with running_server(tmp_path, pki, extra_args=("--campaign-tick", "0.3")) as srv:
        good_id = srv.upload(good)["id"]
        bad_id = srv.upload(bad)["id"]
        await api(srv, "POST", "/api/v1/sites", json={
            "id": "depot", "name": "Depot", "timezone": "Europe/London",
            "maintenance_windows": ALL_DAY,
        })  # fmt: skip
        async with agents(srv, tmp_path, pki, factory_bundle) as fleet:
            for sid in STATIONS:
                await api(srv, "PATCH", f"/api/v1/stations/{sid}", json={"site_id": "depot"})
            created = await api(
                srv, "POST", "/api/v1/campaigns", json=campaign_doc("good", good_id)
            )
            cid = created["id"]
            assert created["stages"][0]["size"] == 1 and created["stages"][1]["size"] == 3
            canary = next(s for s, r in (await runs(srv, cid)).items() if r["stage"] == 0)
            charging = next(s for s in STATIONS if s != canary)
            await fleet[charging].start_session(1)  # a car charges at one of the others

            # The canary alone goes first and must pass its gate before the rest start.
            async def canary_done() -> bool:
                r = await runs(srv, cid)
                others = [r[s] for s in STATIONS if s != canary]
                assert all(o["attempts"] == 0 for o in others) or r[canary]["state"] == "succeeded"
                return r[canary]["state"] == "succeeded"

            await until(canary_done, "the canary to pass its health gate")
            # The charging station is deferred, counted apart; the others update.
            await until(
                lambda: state_is(srv, cid, charging, "deferred"), "the charging one deferred"
            )
            view = await campaign(srv, cid)
            assert view["deferred_charging"] == 1 and view["counts"]["failed"] == 0
            others = [s for s in STATIONS if s not in (canary, charging)]
            for sid in others:
                await until(lambda sid=sid: state_is(srv, cid, sid, "succeeded"), f"{sid}")
            r = await runs(srv, cid)
            assert r[charging]["attempts"] == 0  # never sent an update while charging
            first_other = min(r[s]["started_at"] for s in others)
            assert first_other >= r[canary]["finished_at"]

            await fleet[charging].end_session(1)
            await until(
                lambda: state_is(srv, cid, charging, "succeeded"), "the deferred one updated"
            )
            view = await until(lambda: status_is(srv, cid, "completed"), "the campaign to complete")
            assert view["counts"]["succeeded"] == 4 and view["mean_time_to_update_s"] > 0
            for sid in STATIONS:
                s = await api(srv, "GET", f"/api/v1/stations/{sid}")
                assert s["firmware_version"] == "1.1.0"
            timeline = (await runs(srv, cid))[charging]["timeline"]
            assert [t[1] for t in timeline][:3] == ["waiting", "deferred", "waiting"]

            # A bad release: the canary falls back to its old slot; the campaign pauses there.
            bad_c = (await api(srv, "POST", "/api/v1/campaigns", json=campaign_doc("bad", bad_id)))[
                "id"
            ]
            paused = await until(lambda: status_is(srv, bad_c, "paused"), "the gate to pause it")
            r = await runs(srv, bad_c)
            bad_canary = next(s for s, x in r.items() if x["stage"] == 0)
            assert r[bad_canary]["state"] == "rolled_back"
            assert "1 stations failed" in paused["pause_reason"]
            ticks = await scheduler_ticks(srv)  # then several more: nothing moves while paused

            async def more_ticks() -> bool:
                return await scheduler_ticks(srv) >= ticks + 3

            await until(more_ticks, "three more scheduler ticks")
            r = await runs(srv, bad_c)
            untouched = [s for s in STATIONS if s != bad_canary]
            assert all(r[s]["state"] == "pending" and r[s]["attempts"] == 0 for s in untouched)
            for sid in STATIONS:
                s = await api(srv, "GET", f"/api/v1/stations/{sid}")
                assert s["firmware_version"] == "1.1.0"  # the canary too: it fell back
                assert all(u["release_id"] != bad_id for u in s["updates"]) or sid == bad_canary
            alerts = await api(srv, "GET", "/api/v1/alerts")
            assert any(a["kind"] == "campaign_paused" for a in alerts)
            trail = await api(srv, "GET", "/api/v1/audit", params={"target": f"campaign:{bad_c}"})
            assert {"campaign.created", "campaign.progress", "campaign.station"} <= {
                e["action"] for e in trail
            }
            await api(srv, "POST", f"/api/v1/campaigns/{bad_c}/abort")
            aborted = await campaign(srv, bad_c)
            assert aborted["status"] == "aborted" and aborted["counts"]["canceled"] == 3
    assert_no_crash(srv.proc.output())
