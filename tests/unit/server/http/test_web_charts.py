"""The campaign page's outcomes-over-time chart, from the runs' timelines (pure)."""

from __future__ import annotations

import datetime as dt

from chargeward.server.http.web_campaigns import CHART_POINTS, chart, outcome_series

T0 = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


def at(minutes: float) -> str:
    return (T0 + dt.timedelta(minutes=minutes)).isoformat()


def run(*events: tuple[float, str], finished: float | None = None) -> dict[str, object]:
    return {
        "timeline": [[at(m), state, ""] for m, state in events],
        "finished_at": at(finished) if finished is not None else None,
    }


def test_each_station_counts_once_per_outcome_from_when_it_entered_it() -> None:
    runs = [
        run((0, "dispatched"), (5, "succeeded"), finished=5),
        run((0, "deferred"), (2, "deferred"), (8, "dispatched"), (10, "failed"), finished=10),
        run((1, "dispatched"), (9, "failed"), (10, "rolled_back"), finished=10),
        run((3, "pending")),
    ]
    times, series = outcome_series(runs, T0, T0 + dt.timedelta(minutes=10))
    assert len(times) == CHART_POINTS and times[0] == T0 and times[-1] == at_dt(10)
    assert {k: v[-1] for k, v in series.items()} == {
        "succeeded": 1,
        "failed": 2,
        "rolled_back": 1,
        "deferred": 1,  # deferred twice, one station
    }
    assert {k: v[0] for k, v in series.items()} == {
        "succeeded": 0,
        "failed": 0,
        "rolled_back": 0,
        "deferred": 1,
    }
    for values in series.values():  # cumulative: never goes down
        assert values == sorted(values)
    halfway = times.index(next(t for t in times if t >= at_dt(5)))
    assert series["succeeded"][halfway] == 1 and series["failed"][halfway] == 0


def test_a_finished_campaign_is_charted_to_its_last_station_and_scaled_to_the_fleet() -> None:
    runs = [run((2, "succeeded"), finished=2), run((4, "succeeded"), finished=4)]
    campaign = {"created_at": T0.isoformat(), "status": "completed"}
    drawn = chart(runs, campaign)
    assert drawn["times"][-1] == at_dt(4) and drawn["top"] == 2
    points = [tuple(map(float, p.split(","))) for p in drawn["lines"]["succeeded"].split()]
    assert points[0] == (0.0, 160.0) and points[-1] == (600.0, 0.0)  # 0 at the start, 2 of 2


def at_dt(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)
