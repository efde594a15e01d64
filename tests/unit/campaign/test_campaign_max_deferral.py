"""``max_deferral``: a station deferred (charging) for longer is skipped, not waited on for ever
(a lost TransactionEvent(Ended) leaves it "charging"); it is no failure for the error gate,
its stage goes on without it, and an operator can retry it (pure; an injected clock)."""

from __future__ import annotations

import datetime as dt

import pytest

from chargeward.campaign import machine, planner
from chargeward.campaign.machine import ERRORS, StationRun, step
from chargeward.campaign.spec import CampaignSpecError, parse_spec, spec_document
from tests.unit.campaign.test_campaign_rules import NEW, T0, spec


def hours(n: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=n)


def test_max_deferral_defaults_to_12h_is_bounded_and_reads_back() -> None:
    assert spec().max_deferral == dt.timedelta(hours=12)
    s = spec(max_deferral="3h")
    assert parse_spec(spec_document(s)) == s and s.max_deferral == dt.timedelta(hours=3)
    for bad in ("30s", "31d", "soon"):
        with pytest.raises(CampaignSpecError) as e:
            spec(max_deferral=bad)
        assert e.value.field == "max_deferral" and str(e.value).startswith("max_deferral: ")


def test_a_station_deferred_past_max_deferral_is_skipped_not_failed_and_may_be_retried() -> None:
    p = machine.Policy(expected=NEW, spec=spec())
    run = step(StationRun("CP-1", 0, "waiting"), machine.Defer(T0), p)
    run = step(run, machine.Charging(T0, active=True), p)
    # A session end reported while deferred does not move the deferral's deadline.
    run = step(run, machine.Charging(hours(6), active=False), p)
    run = step(run, machine.Charging(hours(6), active=True), p)
    assert step(run, machine.Tick(hours(11.9)), p).state == "deferred"
    skipped = step(run, machine.Tick(hours(12)), p)
    assert skipped.state == "canceled" and skipped.skipped and skipped.terminal
    assert skipped.reason == "skipped: charging for over 12h"
    assert skipped.state not in ERRORS
    retried = step(skipped, machine.Retry(hours(20)), p)
    assert retried.state == "waiting" and retried.reason is None and retried.deadline is None
    aborted = step(StationRun("CP-2", 0, "waiting"), machine.Abort(T0), p)
    assert not aborted.skipped and step(aborted, machine.Retry(T0), p) == aborted


def test_a_canary_stuck_charging_lets_its_stage_pass_after_max_deferral() -> None:
    """Three canaries, a 100 % success gate and an error gate of 1: two succeed, one stays
    "charging" (its session end was lost).  The stage waits for it up to max_deferral, then
    goes on without it, with no pause and a note saying why."""
    s = spec(stages={"canary": 3, "then": ["100%"]}, gates={"success": "100%", "error": 1})
    c = planner.Campaign(1, s, "feature", NEW, stage_started_at=T0, stage_sizes=(3, 4))
    runs = {
        "CP-1": StationRun("CP-1", 0, "succeeded"),
        "CP-2": StationRun("CP-2", 0, "succeeded"),
        "CP-3": StationRun("CP-3", 0, "waiting"),
        "CP-4": StationRun("CP-4", 1, "pending"),
    }
    fleet = {sid: planner.FleetStation(sid, None, True, sid == "CP-3") for sid in runs}
    first = planner.plan(c, runs, fleet, {}, T0)
    assert first.runs["CP-3"].state == "deferred" and first.campaign.stage == 0
    runs = {**runs, **first.runs}
    held = planner.plan(first.campaign, runs, fleet, {}, hours(11))
    assert held.campaign.stage == 0 and held.dispatch == [] and not held.runs
    later = planner.plan(first.campaign, runs, fleet, {}, hours(12))
    assert later.runs["CP-3"].skipped
    assert later.campaign.status == "running" and later.campaign.stage == 1
    assert "CP-3 skipped: charging for over 12h" in later.notes
    assert later.dispatch == ["CP-4"]
