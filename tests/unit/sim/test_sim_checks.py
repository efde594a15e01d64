"""The simulator's after-run check of when installs began: against the site's maintenance
windows in its own wall time, and against the charging sessions the simulator drove."""

from __future__ import annotations

import datetime as dt

from chargeward.sim.checks import violations
from chargeward.sim.scenario import Link, Site
from chargeward.sim.station import Session

UTC = dt.UTC
# 01:00-03:00 in New York (UTC-5 in December): 06:00-08:00 UTC.
SITE = Site(
    "depot",
    "America/New_York",
    [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "01:00", "end": "03:00"}],
    Link(),
)
NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 12, 4, hour, minute, tzinfo=UTC)


def test_installs_inside_the_local_window_and_between_sessions_pass() -> None:
    sessions = [Session(at(5), at(6, 10))]
    assert violations("CP1", [at(6, 30), at(7, 59)], SITE, sessions, NOW) == ([], [])


def test_an_install_outside_the_local_window_is_flagged_even_if_inside_it_in_utc() -> None:
    # 02:00 UTC would be inside a 01:00-03:00 window read as UTC; in New York it is 21:00.
    outside, during = violations("CP1", [at(2), at(6)], SITE, [], NOW)
    assert outside == ["CP1 at 2026-12-04T02:00:00+00:00"] and during == []


def test_an_install_during_a_session_is_flagged_and_an_open_session_runs_until_now() -> None:
    sessions = [Session(at(6), at(6, 20)), Session(at(7, 30))]  # the second never ended
    outside, during = violations("CP1", [at(6, 10), at(6, 40), at(7, 45)], SITE, sessions, NOW)
    assert outside == []
    assert during == ["CP1 at 2026-12-04T06:10:00+00:00", "CP1 at 2026-12-04T07:45:00+00:00"]


def test_both_at_once_are_reported_once_each() -> None:
    sessions = [Session(at(9), at(10))]
    outside, during = violations("CP2", [at(9, 30)], SITE, sessions, NOW)
    assert outside == during == ["CP2 at 2026-12-04T09:30:00+00:00"]
