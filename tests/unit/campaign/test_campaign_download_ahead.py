"""Download ahead of the window, install only inside it (pure; an injected clock).

- ``next_window_start``: the first instant a weekly window opens, in the site's zone, DST
  included (the autumn repeat and the spring gap);
- the ``download_ahead`` setting: default, ``0`` turns it off, errors name the field;
- the planner sends a station its UpdateFirmware within ``download_ahead`` of its window with
  ``install_at`` = the window's start (Europe/London across the October change), not earlier,
  and never an ``install_at`` outside a window; a station that did not start installing in its
  window is rescheduled to the next one;
- the state machine does not time out a station waiting for its install time, and a
  reschedule is not an attempt.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from chargeward.campaign import machine, planner
from chargeward.campaign.codec import run_from_row, run_to_row
from chargeward.campaign.machine import StationRun, step
from chargeward.campaign.spec import CampaignSpecError, parse_spec, spec_document
from chargeward.model.fleet import in_window, next_window_start, parse_windows

NEW = {"main": "2.0.0"}
DAILY_2_TO_4 = [
    {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "02:00", "end": "04:00"}
]


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)  # type: ignore[misc]


def spec(**kw: object):  # type: ignore[no-untyped-def]
    doc: dict[str, object] = {
        "name": "c1",
        "release": "r1",
        "soak": "10m",
        "jitter": 0,
        "stages": {"canary": 1},
        "concurrency": {"keep_available": 0},
    }
    doc.update(kw)
    return parse_spec(doc)


# -- next_window_start ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "opens"),
    [
        # Saturday 24 October 2026, BST (UTC+1): 02:00 local is 01:00 UTC.
        (utc(2026, 10, 24, 0, 0), utc(2026, 10, 24, 1, 0)),
        (utc(2026, 10, 24, 1, 0), utc(2026, 10, 24, 1, 0)),  # at the start: that start
        # After that window, the next is Sunday 25: clocks went back at 02:00 BST, so 02:00
        # local is GMT, 02:00 UTC (25 h later, not 24).
        (utc(2026, 10, 24, 3, 0), utc(2026, 10, 25, 2, 0)),
        (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2, 0)),
        # Monday 26, GMT: 02:00 UTC.
        (utc(2026, 10, 25, 4, 0), utc(2026, 10, 26, 2, 0)),
    ],
)
def test_next_window_start_in_london_across_the_october_change(
    after: dt.datetime, opens: dt.datetime
) -> None:
    windows = parse_windows(DAILY_2_TO_4)
    got = next_window_start(windows, "Europe/London", after)
    assert got == opens and in_window(windows, "Europe/London", got)
    assert not in_window(windows, "Europe/London", got - dt.timedelta(seconds=1))


def test_next_window_start_repeated_and_missing_wall_times() -> None:
    sunday = parse_windows([{"days": ["sun"], "start": "01:30", "end": "03:00"}])
    # 25 October: 01:30 happens twice; the window opens at the first, 00:30 UTC (BST).
    assert next_window_start(sunday, "Europe/London", utc(2026, 10, 24)) == utc(2026, 10, 25, 0, 30)
    # 29 March: 01:30 does not exist (01:00 GMT -> 02:00 BST); it opens with the change.
    opens = next_window_start(sunday, "Europe/London", utc(2026, 3, 28))
    assert opens == utc(2026, 3, 29, 1, 0)
    assert in_window(sunday, "Europe/London", opens)
    assert not in_window(sunday, "Europe/London", opens - dt.timedelta(seconds=1))
    # A window wholly inside the gap does not open that day: a week later.
    gap = parse_windows([{"days": ["sun"], "start": "01:10", "end": "01:50"}])
    assert next_window_start(gap, "Europe/London", utc(2026, 3, 28)) == utc(2026, 4, 5, 0, 10)
    assert next_window_start([], "Europe/London", utc(2026, 3, 28)) is None


def test_next_window_start_crossing_midnight_and_other_zones() -> None:
    weekend = parse_windows([{"days": ["sat"], "start": "22:00", "end": "04:00"}])
    # Monday 2 November 2026 in New York (EST, UTC-5): Saturday 7th 22:00 is 03:00 UTC Sunday.
    opens = next_window_start(weekend, "America/New_York", utc(2026, 11, 2, 12))
    assert opens == utc(2026, 11, 8, 3, 0)
    # Inside the window already (Sunday 01:00 local): the next start is a week on.
    assert next_window_start(weekend, "America/New_York", utc(2026, 11, 8, 6)) == utc(
        2026, 11, 15, 3, 0
    )


# -- the setting ------------------------------------------------------------------------------


def test_download_ahead_defaults_to_two_hours_and_zero_turns_it_off() -> None:
    assert spec().download_ahead == dt.timedelta(hours=2)
    assert spec(download_ahead="0").download_ahead == dt.timedelta(0)
    assert spec(download_ahead=0).download_ahead == dt.timedelta(0)
    s = spec(download_ahead="45m")
    assert s.download_ahead == dt.timedelta(minutes=45)
    assert parse_spec(spec_document(s)).download_ahead == s.download_ahead  # stored form


@pytest.mark.parametrize("value", ["soon", "2 hours", -60, True, "8d", [1]])
def test_a_bad_download_ahead_names_its_field(value: object) -> None:
    with pytest.raises(CampaignSpecError) as e:
        spec(download_ahead=value)
    assert e.value.field == "download_ahead"
    assert str(e.value).startswith("download_ahead: ")


# -- the planner ------------------------------------------------------------------------------


def setup(
    windows: list[dict[str, object]] = DAILY_2_TO_4,
    *,
    release_class: str = "feature",
    charging: bool = False,
    run: StationRun | None = None,
    status: planner.CampaignStatus = "running",
    **kw: object,
) -> tuple[planner.Campaign, dict, dict, dict]:  # type: ignore[type-arg]
    s = spec(**kw)
    c = planner.Campaign(
        1, s, release_class, NEW, status=status, stage_started_at=utc(2026, 1, 1),
        stage_sizes=(1,),
    )  # fmt: skip
    runs = {"CP-1": run or StationRun("CP-1", 0, "waiting")}
    fleet = {"CP-1": planner.FleetStation("CP-1", "london", True, charging)}
    sites = {
        "london": planner.SiteNow(
            "london", "Europe/London", tuple(parse_windows(windows)), available=1, updating=0
        )
    }
    return c, runs, fleet, sites


@pytest.mark.parametrize(
    ("now", "install_at"),
    [
        # Friday 23 October, BST: the window opens 01:00 UTC on the 24th.
        (utc(2026, 10, 23, 22, 59), None),  # 2 h 1 min ahead: too early
        (utc(2026, 10, 23, 23, 0), utc(2026, 10, 24, 1, 0)),  # exactly 2 h ahead
        (utc(2026, 10, 24, 0, 59), utc(2026, 10, 24, 1, 0)),
        # Sunday 25 October: the clocks go back at 01:00 UTC, the window opens 02:00 UTC.
        # A zone-naive "02:00 BST" (01:00 UTC) would dispatch at 23:00 on the 24th.
        (utc(2026, 10, 24, 23, 30), None),
        (utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 2, 0)),
        (utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 2, 0)),
        # Monday 26 October, GMT: 02:00 UTC.
        (utc(2026, 10, 25, 23, 59), None),
        (utc(2026, 10, 26, 0, 0), utc(2026, 10, 26, 2, 0)),
    ],
)
def test_a_station_is_sent_its_update_within_download_ahead_of_its_window(
    now: dt.datetime, install_at: dt.datetime | None
) -> None:
    c, runs, fleet, sites = setup(download_ahead="2h")
    out = planner.plan(c, runs, fleet, sites, now)
    assert out.dispatch == (["CP-1"] if install_at else [])
    assert out.install_at.get("CP-1") == install_at


def test_inside_the_window_the_install_is_immediate_and_zero_turns_ahead_off() -> None:
    c, runs, fleet, sites = setup(download_ahead="2h")
    inside = planner.plan(c, runs, fleet, sites, utc(2026, 10, 26, 3, 0))
    assert inside.dispatch == ["CP-1"] and inside.install_at == {}
    c, runs, fleet, sites = setup(download_ahead="0")
    assert planner.plan(c, runs, fleet, sites, utc(2026, 10, 26, 1, 59)).dispatch == []


def test_download_ahead_keeps_every_other_rule() -> None:
    now = utc(2026, 10, 26, 1, 0)  # an hour before the window
    c, runs, fleet, sites = setup(download_ahead="2h", charging=True)
    out = planner.plan(c, runs, fleet, sites, now)
    assert out.dispatch == [] and out.runs["CP-1"].state == "deferred"  # never while charging
    c, runs, fleet, sites = setup(download_ahead="2h", concurrency={"keep_available": 1})
    assert planner.plan(c, runs, fleet, sites, now).dispatch == []  # the site's floor


def test_security_releases_that_bypass_windows_need_no_install_time() -> None:
    c, runs, fleet, sites = setup(release_class="security", bypass_windows=True)
    out = planner.plan(c, runs, fleet, sites, utc(2026, 10, 26, 12, 0))
    assert out.dispatch == ["CP-1"] and out.install_at == {}


def waiting_to_install(install_at: dt.datetime | None, charging: bool = True) -> StationRun:
    """Sent ahead (or inside the window), downloaded, then held by a charging session."""
    p = machine.Policy(NEW, spec())
    sent = install_at - dt.timedelta(hours=1) if install_at else utc(2026, 10, 26, 2, 30)
    run = step(StationRun("CP-1", 0, "waiting"), machine.Dispatched(sent, 5, install_at), p)
    run = step(run, machine.Response(sent, "Accepted"), p)
    for status in ("Downloading", "Downloaded", "SignatureVerified", "InstallScheduled"):
        run = step(run, machine.Status(sent + dt.timedelta(minutes=5), status), p)
    if charging:
        run = step(run, machine.Charging(sent + dt.timedelta(minutes=6), True), p)
    return run


def test_a_station_that_did_not_install_in_its_window_is_rescheduled_to_the_next() -> None:
    opens = utc(2026, 10, 26, 2, 0)
    run = waiting_to_install(opens)
    assert run.state == "installing" and run.install_pending
    c, runs, fleet, sites = setup(run=run, charging=True)
    for now in (opens - dt.timedelta(minutes=1), opens, utc(2026, 10, 26, 3, 45)):
        assert planner.plan(c, runs, fleet, sites, now).reschedule == {}  # waits in its window
    # Too little of the window left for the 15 min install: moved on while still inside it.
    late = planner.plan(c, runs, fleet, sites, utc(2026, 10, 26, 3, 46)).reschedule["CP-1"]
    assert late.install_at == utc(2026, 10, 27, 2, 0)
    assert late.reason == "the window closes at 04:00, install needs 15 min (charging)"
    closed = planner.plan(c, runs, fleet, sites, utc(2026, 10, 26, 4, 0))
    move = closed.reschedule["CP-1"]
    assert move.install_at == utc(2026, 10, 27, 2, 0)
    assert move.reason == "the window closed before the install started (charging)"
    # Paused campaigns still move their stations out of the closed window.
    c, runs, fleet, sites = setup(run=run, charging=True, status="paused")
    assert "CP-1" in planner.plan(c, runs, fleet, sites, utc(2026, 10, 26, 4, 0)).reschedule
    # Dispatched inside the window without an install time: the same rule.
    c, runs, fleet, sites = setup(run=waiting_to_install(None), charging=True)
    assert "CP-1" in planner.plan(c, runs, fleet, sites, utc(2026, 10, 26, 4, 0)).reschedule
    # Installing already: nothing to move.
    p = machine.Policy(NEW, spec())
    installing = step(run, machine.Status(utc(2026, 10, 26, 3, 0), "Installing"), p)
    c, runs, fleet, sites = setup(run=installing)
    assert planner.plan(c, runs, fleet, sites, utc(2026, 10, 26, 4, 0)).reschedule == {}


# -- the state machine ------------------------------------------------------------------------


def test_a_station_waiting_for_its_install_time_is_not_timed_out() -> None:
    p = machine.Policy(NEW, spec(timeouts={"download": "1h", "install": "30m"}))
    opens = utc(2026, 10, 26, 2, 0)
    sent = opens - dt.timedelta(hours=6)  # far ahead: longer than download + install
    run = step(StationRun("CP-1", 0, "waiting"), machine.Dispatched(sent, 5, opens), p)
    run = step(run, machine.Response(sent, "Accepted"), p)
    run = step(run, machine.Status(sent, "Downloading"), p)
    assert run.deadline == sent + dt.timedelta(hours=1)  # the download has its own deadline
    done = step(run, machine.Status(sent + dt.timedelta(minutes=20), "SignatureVerified"), p)
    assert done.phase == "install" and done.deadline == opens + dt.timedelta(minutes=30)
    assert step(done, machine.Tick(opens), p).state == "downloading"
    scheduled = step(done, machine.Status(sent + dt.timedelta(minutes=21), "InstallScheduled"), p)
    assert scheduled.state == "installing" and scheduled.install_pending
    assert scheduled.deadline == opens + dt.timedelta(minutes=30)
    assert step(scheduled, machine.Tick(opens + dt.timedelta(minutes=29)), p) == scheduled
    late = step(scheduled, machine.Tick(opens + dt.timedelta(minutes=30)), p)
    assert late.state == "waiting" and late.reason == "install timed out"  # only then late


def test_a_reschedule_is_not_an_attempt_and_a_refused_one_follows_the_old_request() -> None:
    p = machine.Policy(NEW, spec(max_attempts=1))
    run = waiting_to_install(utc(2026, 10, 26, 2, 0))
    assert run.attempts == 1
    now, nxt = utc(2026, 10, 26, 4, 0), utc(2026, 10, 27, 2, 0)
    moved = step(run, machine.Rescheduled(now, 6, nxt, "the window closed"), p)
    assert (moved.state, moved.attempts, moved.request_id) == ("dispatched", 1, 6)
    assert moved.install_at == nxt and moved.reschedules == 1 and moved.rescheduled_from == 5
    assert moved.reason == "rescheduled: the window closed"
    assert "rescheduled (the window closed)" in moved.timeline[-1][2]
    assert run_from_row(json.loads(json.dumps(run_to_row(moved)))) == moved
    # The station answers AcceptedCanceled for the old request (OCPP L01) and goes on.
    taken = step(moved, machine.Response(now, "AcceptedCanceled"), p)
    assert taken.state == "downloading" and taken.rescheduled_from is None
    done = step(taken, machine.Status(now, "InstallScheduled"), p)
    assert done.deadline == nxt + dt.timedelta(minutes=30)
    # Refused (the agent refuses while installing): back to the old request, not a failure.
    refused = step(moved, machine.Response(now, "Rejected"), p)
    assert (refused.state, refused.request_id, refused.attempts) == ("installing", 5, 1)
    assert not refused.window_guard and refused.install_at is None
    assert step(refused, machine.Rescheduled(now, 7, nxt, "again"), p) == refused
    # Never answered (maybe never sent: a crash after it was stored): the same, once the
    # response deadline runs (it stops while the car charges).
    idle = waiting_to_install(utc(2026, 10, 26, 2, 0), charging=False)
    silent = step(
        step(idle, machine.Rescheduled(now, 6, nxt, "x"), p),
        machine.Tick(now + dt.timedelta(minutes=6)),
        p,
    )
    assert (silent.state, silent.request_id, silent.attempts) == ("downloading", 5, 1)
    # A reschedule before the first answer, or after the install started, changes nothing.
    fresh = step(StationRun("CP-1", 0, "waiting"), machine.Dispatched(now, 8), p)
    assert step(fresh, machine.Rescheduled(now, 9, nxt, "x"), p) == fresh
    installing = step(run, machine.Status(now, "Installing"), p)
    assert step(installing, machine.Rescheduled(now, 9, nxt, "x"), p) == installing
