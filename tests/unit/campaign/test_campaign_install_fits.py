"""An install must end inside its window (pure; an injected clock).

- ``window_close`` and ``next_window_fit``: when the window an instant lies in closes, and the
  first window start that leaves a given time, across midnight and both DST changes;
- ``install_duration``: default 15 min, stored form, errors that name the field;
- the planner sends a station its update inside a window only while the install time is left
  (04:59 in 02:00-05:00 is too late, 04:30 is not), says why a station waits, sends it ahead
  to the next window that fits, uses the campaign's measured install time when it is longer
  than the declared one, reschedules only into a window long enough, and leaves security
  releases that bypass windows alone.
"""

from __future__ import annotations

import datetime as dt

import pytest

from chargeward.campaign import machine, planner
from chargeward.campaign.machine import StationRun, step
from chargeward.campaign.spec import CampaignSpecError, parse_spec, spec_document
from chargeward.model.fleet import next_window_fit, parse_windows, window_close
from tests.unit.campaign.test_campaign_download_ahead import spec, utc

NEW = {"main": "2.0.0"}
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
NIGHT = [{"days": EVERY_DAY, "start": "02:00", "end": "05:00"}]
ZONE = "Europe/London"


def minutes(n: int) -> dt.timedelta:
    return dt.timedelta(minutes=n)


def setup(
    windows: list[dict[str, object]] = NIGHT,
    *,
    runs: dict[str, StationRun] | None = None,
    release_class: str = "feature",
    charging: bool = False,
    **kw: object,
) -> tuple[planner.Campaign, dict, dict, dict]:  # type: ignore[type-arg]
    c = planner.Campaign(
        1, spec(**kw), release_class, NEW, stage_started_at=utc(2026, 1, 1), stage_sizes=(1,)
    )
    runs = {"CP-1": StationRun("CP-1", 0, "waiting"), **(runs or {})}
    fleet = {sid: planner.FleetStation(sid, "depot", True, charging) for sid in runs}
    sites = {
        "depot": planner.SiteNow(
            "depot", ZONE, tuple(parse_windows(windows)), available=len(runs), updating=0
        )
    }
    return c, runs, fleet, sites


# -- window_close and next_window_fit ----------------------------------------------------------


def test_window_close_is_the_end_of_the_window_the_instant_lies_in() -> None:
    night = parse_windows(NIGHT)
    # Tuesday 10 November 2026, GMT: local time is UTC.
    assert window_close(night, ZONE, utc(2026, 11, 10, 4, 59)) == utc(2026, 11, 10, 5, 0)
    assert window_close(night, ZONE, utc(2026, 11, 10, 2, 0)) == utc(2026, 11, 10, 5, 0)
    assert window_close(night, ZONE, utc(2026, 11, 10, 5, 0)) is None  # closed: outside
    # Windows that touch are one: 02:00-05:00 then 05:00-06:00 closes at 06:00.
    touching = parse_windows([*NIGHT, {"days": EVERY_DAY, "start": "05:00", "end": "06:00"}])
    assert window_close(touching, ZONE, utc(2026, 11, 10, 4, 59)) == utc(2026, 11, 10, 6, 0)


def test_window_close_across_midnight() -> None:
    saturday_night = parse_windows([{"days": ["sat"], "start": "22:00", "end": "01:00"}])
    # Saturday 14 November 23:00 and Sunday 00:50: both close on Sunday at 01:00.
    assert window_close(saturday_night, ZONE, utc(2026, 11, 14, 23)) == utc(2026, 11, 15, 1)
    assert window_close(saturday_night, ZONE, utc(2026, 11, 15, 0, 50)) == utc(2026, 11, 15, 1)
    assert window_close(saturday_night, ZONE, utc(2026, 11, 16, 0, 50)) is None  # Monday


def test_window_close_across_the_dst_changes_in_london() -> None:
    # 29 March 2026: 01:00 GMT -> 02:00 BST.  00:30-03:00 local lasts 1 h 30 in real time.
    spring = parse_windows([{"days": ["sun"], "start": "00:30", "end": "03:00"}])
    assert window_close(spring, ZONE, utc(2026, 3, 29, 0, 50)) == utc(2026, 3, 29, 2, 0)
    # An end inside the gap (01:30 never happens): the window closes when the clocks go forward.
    gap_end = parse_windows([{"days": ["sun"], "start": "00:30", "end": "01:30"}])
    assert window_close(gap_end, ZONE, utc(2026, 3, 29, 0, 50)) == utc(2026, 3, 29, 1, 0)
    # 25 October 2026: 02:00 BST -> 01:00 GMT.  00:30-02:00 local lasts 2 h 30.
    autumn = parse_windows([{"days": ["sun"], "start": "00:30", "end": "02:00"}])
    assert window_close(autumn, ZONE, utc(2026, 10, 24, 23, 30)) == utc(2026, 10, 25, 2, 0)
    assert window_close(autumn, ZONE, utc(2026, 10, 25, 1, 15)) == utc(2026, 10, 25, 2, 0)


def test_next_window_fit_skips_windows_too_short_for_the_install() -> None:
    windows = parse_windows(
        [*NIGHT, {"days": EVERY_DAY, "start": "06:00", "end": "06:10"}]  # a 10 min window
    )
    after = utc(2026, 11, 10, 5, 30)
    assert next_window_fit(windows, ZONE, after, minutes(10)) == utc(2026, 11, 10, 6, 0)
    assert next_window_fit(windows, ZONE, after, minutes(15)) == utc(2026, 11, 11, 2, 0)
    # Inside a window with too little left: the next one that fits.
    assert next_window_fit(windows, ZONE, utc(2026, 11, 10, 4, 59), minutes(15)) == utc(
        2026, 11, 11, 2, 0
    )
    assert next_window_fit(windows, ZONE, after, dt.timedelta(hours=4)) is None  # none is
    assert next_window_fit([], ZONE, after, minutes(1)) is None


# -- the setting ---------------------------------------------------------------------------------


def test_install_duration_defaults_to_15_minutes_and_is_stored() -> None:
    assert spec().install_duration == minutes(15)
    s = spec(install_duration="40m")
    assert s.install_duration == minutes(40)
    assert parse_spec(spec_document(s)).install_duration == minutes(40)


@pytest.mark.parametrize("value", ["0", 0, "30s", "2d", "soon", True, [15]])
def test_a_bad_install_duration_names_its_field(value: object) -> None:
    with pytest.raises(CampaignSpecError) as e:
        spec(install_duration=value)
    assert e.value.field == "install_duration"
    assert str(e.value).startswith("install_duration: ")


# -- the planner ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "dispatched"),
    [
        (utc(2026, 11, 10, 4, 30), True),
        (utc(2026, 11, 10, 4, 45), True),  # exactly 15 min left
        (utc(2026, 11, 10, 4, 46), False),
        (utc(2026, 11, 10, 4, 59), False),
    ],
)
def test_a_station_is_dispatched_only_while_the_install_fits_in_the_window(
    now: dt.datetime, dispatched: bool
) -> None:
    c, runs, fleet, sites = setup(download_ahead="0")
    out = planner.plan(c, runs, fleet, sites, now)
    assert out.dispatch == (["CP-1"] if dispatched else [])
    assert out.install_at == {}
    if not dispatched:
        assert out.waiting["CP-1"] == (
            "window closes at 05:00, install needs 15 min; waits until Wed 02:00 Europe/London"
        )


def test_too_late_in_the_window_it_is_sent_ahead_to_the_next_one() -> None:
    c, runs, fleet, sites = setup(download_ahead="1d")
    out = planner.plan(c, runs, fleet, sites, utc(2026, 11, 10, 4, 59))
    assert out.dispatch == ["CP-1"]
    assert out.install_at == {"CP-1": utc(2026, 11, 11, 2, 0)}  # the next day's 02:00
    assert "CP-1" not in out.waiting
    # With the default download_ahead (2 h) the next window is too far: it waits.
    c, runs, fleet, sites = setup()
    assert planner.plan(c, runs, fleet, sites, utc(2026, 11, 10, 4, 59)).dispatch == []


def test_a_window_over_midnight() -> None:
    late = [{"days": ["sat"], "start": "22:00", "end": "01:00"}]
    c, runs, fleet, sites = setup(late, download_ahead="0")
    for now, dispatched in [
        (utc(2026, 11, 14, 23, 50), True),  # Saturday: 1 h 10 left, over midnight
        (utc(2026, 11, 15, 0, 40), True),  # Sunday 00:40: 20 min left
        (utc(2026, 11, 15, 0, 50), False),  # 10 min left
    ]:
        assert planner.plan(c, runs, fleet, sites, now).dispatch == (
            ["CP-1"] if dispatched else []
        ), now
    waits = planner.plan(c, runs, fleet, sites, utc(2026, 11, 15, 0, 50)).waiting["CP-1"]
    assert waits == "window closes at 01:00, install needs 15 min; waits until Sat 22:00 " + ZONE


def test_dst_days_in_london_count_real_time_not_wall_time() -> None:
    # 29 March 2026, 00:50 GMT: the wall clock shows 2 h 10 to 03:00, but the clocks go
    # forward at 01:00, so 70 min are left: a 75 min install does not fit, 70 min does.
    spring = [{"days": ["sun"], "start": "00:30", "end": "03:00"}]
    now = utc(2026, 3, 29, 0, 50)
    c, runs, fleet, sites = setup(spring, download_ahead="0", install_duration="75m")
    out = planner.plan(c, runs, fleet, sites, now)
    assert out.dispatch == []
    assert out.waiting["CP-1"].startswith("window closes at 03:00, install needs 75 min")
    c, runs, fleet, sites = setup(spring, download_ahead="0", install_duration="70m")
    assert planner.plan(c, runs, fleet, sites, now).dispatch == ["CP-1"]
    # 25 October 2026, 01:15 BST (00:15 UTC): the wall clock shows 45 min to 02:00, but
    # 01:00-02:00 happens twice, so 1 h 45 are left: a 60 min install fits.
    autumn = [{"days": ["sun"], "start": "00:30", "end": "02:00"}]
    c, runs, fleet, sites = setup(autumn, download_ahead="0", install_duration="60m")
    assert planner.plan(c, runs, fleet, sites, utc(2026, 10, 25, 0, 15)).dispatch == ["CP-1"]
    assert planner.plan(c, runs, fleet, sites, utc(2026, 10, 25, 1, 15)).dispatch == []


def installed(sid: str, start: dt.datetime, took: dt.timedelta) -> StationRun:
    """A run that installed from ``start`` and booted the new version ``took`` later."""
    p = machine.Policy(NEW, spec())
    run = step(StationRun(sid, 0, "waiting"), machine.Dispatched(start, 1), p)
    run = step(run, machine.Response(start, "Accepted"), p)
    run = step(run, machine.Status(start, "Downloading"), p)
    run = step(run, machine.Status(start, "Installing"), p)
    run = step(run, machine.Status(start + took / 2, "InstallRebooting"), p)
    run = step(run, machine.Boot(start + took, "FirmwareUpdate", NEW), p)
    assert run.state == "soaking"
    return run


def test_a_measured_install_time_longer_than_declared_wins() -> None:
    day = utc(2026, 11, 9, 2, 0)
    slow = {f"CP-{i}": installed(f"CP-{i}", day, minutes(40)) for i in (2, 3, 4)}
    c, runs, fleet, sites = setup(runs=slow, download_ahead="0", install_duration="15m")
    assert planner.install_time(c, runs) == minutes(40)
    out = planner.plan(c, runs, fleet, sites, utc(2026, 11, 10, 4, 30))  # 30 min left
    assert out.dispatch == []
    assert out.waiting["CP-1"].startswith("window closes at 05:00, install needs 40 min")
    assert planner.plan(c, runs, fleet, sites, utc(2026, 11, 10, 4, 20)).dispatch == ["CP-1"]
    # Fewer than three measured installs are no measure yet; a faster fleet never shortens
    # the declared time.
    two = dict(list(slow.items())[:2])
    c, runs, fleet, sites = setup(runs=two, download_ahead="0")
    assert planner.install_time(c, runs) == minutes(15)
    fast = {f"CP-{i}": installed(f"CP-{i}", day, minutes(3)) for i in (2, 3, 4)}
    c, runs, fleet, sites = setup(runs=fast, download_ahead="0")
    assert planner.install_time(c, runs) == minutes(15)


def test_the_measure_is_the_90th_percentile_and_counts_from_the_install_time() -> None:
    day = utc(2026, 11, 9, 2, 0)
    runs = [installed(f"CP-{i}", day, minutes(10 + i)) for i in range(10)]  # 10..19 min
    assert planner.measured_install(runs) == minutes(18)
    # Sent ahead: the install started at install_at (InstallScheduled came at download).
    p = machine.Policy(NEW, spec())
    sent, opens = day - dt.timedelta(hours=1), day
    run = step(StationRun("CP-A", 0, "waiting"), machine.Dispatched(sent, 1, opens), p)
    run = step(run, machine.Response(sent, "Accepted"), p)
    run = step(run, machine.Status(sent, "InstallScheduled"), p)
    run = step(run, machine.Boot(opens + minutes(25), "FirmwareUpdate", NEW), p)
    assert planner.measured_install([run] * 3) == minutes(25)


def test_a_reschedule_targets_a_window_long_enough() -> None:
    windows = [*NIGHT, {"days": EVERY_DAY, "start": "06:00", "end": "06:10"}]
    p = machine.Policy(NEW, spec())
    sent = utc(2026, 11, 10, 3, 0)
    run = step(StationRun("CP-1", 0, "waiting"), machine.Dispatched(sent, 5), p)
    run = step(run, machine.Response(sent, "Accepted"), p)
    run = step(run, machine.Status(sent, "SignatureVerified"), p)
    run = step(run, machine.Charging(sent, True), p)  # a car holds the install back
    c, runs, fleet, sites = setup(windows, runs={"CP-1": run}, charging=True)
    assert planner.plan(c, runs, fleet, sites, utc(2026, 11, 10, 4, 45)).reschedule == {}
    move = planner.plan(c, runs, fleet, sites, utc(2026, 11, 10, 4, 50)).reschedule["CP-1"]
    assert move.install_at == utc(2026, 11, 11, 2, 0)  # not the 10 min window at 06:00
    assert move.reason == "the window closes at 05:00, install needs 15 min (charging)"
    move = planner.plan(c, runs, fleet, sites, utc(2026, 11, 10, 5, 30)).reschedule["CP-1"]
    assert move.install_at == utc(2026, 11, 11, 2, 0)


def test_security_releases_that_bypass_windows_are_unaffected() -> None:
    c, runs, fleet, sites = setup(release_class="security", bypass_windows=True)
    out = planner.plan(c, runs, fleet, sites, utc(2026, 11, 10, 4, 59))
    assert out.dispatch == ["CP-1"] and out.install_at == {} and out.waiting == {}
