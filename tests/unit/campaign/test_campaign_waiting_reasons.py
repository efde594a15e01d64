"""Every station the planner does not dispatch says why, and a stage that runs past its
deadline is reported once (pure; an injected clock).

- each of the planner's wait codes with its sentence: offline (since when), the global limit,
  jitter (starts at), the window, charging, the site's per-site limit and its availability
  floor ("site S has 1 available charger; keep_available = 1");
- what a stored run waits for (:func:`planner.current_reason`): its stage, a paused or
  unapproved campaign, the confirm phase, the stored reason;
- ``stage_deadline`` / ``on_stage_deadline``: defaults, limits, stored form; a stage past its
  deadline is reported with the reasons counted, paused with ``pause``, and never twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from chargeward.campaign import planner
from chargeward.campaign.machine import StationRun
from chargeward.campaign.spec import CampaignSpecError, parse_spec, spec_document
from chargeward.model.fleet import parse_windows

T0 = dt.datetime(2026, 11, 10, 12, 0, tzinfo=dt.UTC)  # a Tuesday, GMT in London
NEW = {"main": "2.0.0"}
NIGHT = [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "02:00",
          "end": "05:00"}]  # fmt: skip


def spec(**kw: object) -> planner.CampaignSpec:
    doc: dict[str, object] = {"name": "c1", "release": "r1", "jitter": 0, "download_ahead": "0"}
    doc.update(kw)
    return parse_spec(doc)


def campaign(started: dt.datetime = T0, **kw: object) -> planner.Campaign:
    return planner.Campaign(7, spec(**kw), "feature", NEW, stage_started_at=started,
                            stage_sizes=(1, 4))  # fmt: skip


def site(available: int, updating: int = 0, windows: list[dict[str, object]] | None = None,
         sid: str = "depot") -> planner.SiteNow:  # fmt: skip
    return planner.SiteNow(sid, "Europe/London", tuple(parse_windows(windows or [])),
                           available, updating)  # fmt: skip


def station(sid: str, *, connected: bool = True, charging: bool = False,
            site_id: str | None = "depot", **kw: object) -> planner.FleetStation:  # fmt: skip
    return planner.FleetStation(sid, site_id, connected, charging, **kw)  # type: ignore[arg-type]


def waiting(*ids: str, stage: int = 0) -> dict[str, StationRun]:
    return {sid: StationRun(sid, stage, "waiting") for sid in ids}


def test_an_offline_station_says_since_when() -> None:
    seen = dt.datetime(2026, 11, 9, 22, 15, tzinfo=dt.UTC)
    fleet = {"CP-1": station("CP-1", connected=False, offline_since=seen)}
    out = planner.plan(campaign(), waiting("CP-1"), fleet, {"depot": site(3)}, T0)
    assert out.dispatch == []
    why = out.reasons["CP-1"]
    assert (why.code, why.text) == ("offline", "offline since 2026-11-09 22:15 Europe/London")
    assert why.since == seen
    out = planner.plan(campaign(), waiting("CP-1"), {}, {}, T0)  # not in the registry at all
    assert out.reasons["CP-1"] == planner.WaitReason("offline", "not in the fleet registry")


def test_the_availability_floor_names_the_site_and_keep_available() -> None:
    # The reviewer's one-charger site: keep_available = 1 (the default) leaves nothing.
    out = planner.plan(campaign(), waiting("CP-1"), {"CP-1": station("CP-1")},
                       {"depot": site(1)}, T0)  # fmt: skip
    assert out.dispatch == []
    assert out.reasons["CP-1"] == planner.WaitReason(
        "site_floor", "site depot has 1 available charger; keep_available = 1"
    )
    # Two chargers, one may go; the second waits for the floor.
    runs = waiting("CP-1", "CP-2")
    fleet = {sid: station(sid) for sid in runs}
    out = planner.plan(campaign(concurrency={"per_site": 2}), runs, fleet, {"depot": site(2)}, T0)
    assert len(out.dispatch) == 1
    (held,) = set(runs) - set(out.dispatch)
    assert out.reasons == {
        held: planner.WaitReason("site_floor", "site depot has 1 available charger; "
                                 "keep_available = 1")
    }  # fmt: skip


def test_the_per_site_and_global_limits() -> None:
    runs = waiting("CP-1", "CP-2", "CP-3")
    fleet = {sid: station(sid) for sid in runs}
    out = planner.plan(campaign(concurrency={"keep_available": 0}), runs, fleet,
                       {"depot": site(3)}, T0)  # fmt: skip
    assert len(out.dispatch) == 1  # per_site = 1
    assert {r.code for r in out.reasons.values()} == {"site_limit"}
    assert len(out.reasons) == 2
    assert (
        next(iter(out.reasons.values())).text == "site depot has 1 charger updating; per_site = 1"
    )

    fleet = {sid: station(sid, site_id=None) for sid in runs}
    out = planner.plan(campaign(concurrency={"global": 2}), runs, fleet, {}, T0)
    assert len(out.dispatch) == 2
    assert [r.text for r in out.reasons.values()] == [
        "the campaign's global limit is reached (2 stations updating at once)"
    ]


def test_jitter_window_and_charging() -> None:
    c = campaign(jitter="1h")
    delay = planner.jitter_delay(c, "CP-1")
    out = planner.plan(c, waiting("CP-1"), {"CP-1": station("CP-1", site_id=None)}, {}, T0)
    starts = T0 + delay
    assert out.reasons["CP-1"] == planner.WaitReason(
        "jitter", f"jitter: starts at {starts:%Y-%m-%d %H:%M} UTC"
    )

    out = planner.plan(campaign(), waiting("CP-1"), {"CP-1": station("CP-1")},
                       {"depot": site(3, windows=NIGHT)}, T0)  # fmt: skip
    assert out.reasons["CP-1"] == planner.WaitReason(
        "window", "outside window until Wed 02:00 Europe/London"
    )

    out = planner.plan(campaign(), waiting("CP-1"), {"CP-1": station("CP-1", charging=True)},
                       {"depot": site(3)}, T0)  # fmt: skip
    assert out.runs["CP-1"].state == "deferred"
    assert out.reasons["CP-1"].code == "charging"
    assert out.reasons["CP-1"].text == (
        "charging: a session is active; skipped at 2026-11-11 00:00 Europe/London if it still is"
    )


def test_a_dispatched_station_has_no_reason() -> None:
    out = planner.plan(campaign(concurrency={"keep_available": 0}), waiting("CP-1"),
                       {"CP-1": station("CP-1")}, {"depot": site(1)}, T0)  # fmt: skip
    assert out.dispatch == ["CP-1"] and out.reasons == {} and out.assessed


@pytest.mark.parametrize(
    ("kw", "code", "text"),
    [
        ({"state": "pending", "stage": 2}, "stage",
         "its stage (2) has not started; the campaign is at stage 0"),
        ({"status": "paused"}, "paused", "campaign paused: stage 0 overdue"),
        ({"status": "awaiting_approval"}, "approval",
         "the campaign awaits a second person's approval"),
        ({"state": "dispatched", "phase": "confirm", "reason": "asking about requestId 4"},
         "confirm", "asking about requestId 4"),
        ({"stored": {"code": "offline", "text": "offline since X", "since": None}}, "offline",
         "offline since X"),
        ({}, "next_tick", "not yet looked at: the scheduler decides on its next tick"),
    ],
)  # fmt: skip
def test_what_a_stored_run_waits_for(kw: dict[str, object], code: str, text: str) -> None:
    args: dict[str, object] = {
        "state": "waiting", "stage": 0, "phase": None, "reason": None, "stored": None,
        "status": "running", "campaign_stage": 0, "pause_reason": "stage 0 overdue",
    }  # fmt: skip
    args.update(kw)
    why = planner.current_reason(**args)  # type: ignore[arg-type]
    assert why is not None and (why.code, why.text) == (code, text)


def test_stations_in_flight_or_finished_wait_for_nothing() -> None:
    for state, status in [("downloading", "running"), ("succeeded", "running"),
                          ("waiting", "aborted")]:  # fmt: skip
        assert planner.current_reason(
            state=state, stage=0, phase="download", reason=None, stored=None, status=status,
            campaign_stage=0,
        ) is None  # fmt: skip


def test_a_wait_reason_reads_back_from_its_stored_form() -> None:
    why = planner.WaitReason("offline", "offline since T", T0)
    assert planner.WaitReason.from_document(why.document()) == why
    assert planner.WaitReason.from_document({"code": "jitter"}).text == ""


# -- the stage deadline --------------------------------------------------------------------------


def test_stage_deadline_defaults_limits_and_stored_form() -> None:
    s = spec()
    assert (s.stage_deadline, s.on_stage_deadline) == (dt.timedelta(days=3), "alert")
    s = spec(stage_deadline="48h", on_stage_deadline="pause")
    assert parse_spec(spec_document(s)) == s
    for field, value in [("stage_deadline", "30m"), ("stage_deadline", "91d"),
                         ("stage_deadline", "soon"), ("on_stage_deadline", "abort"),
                         ("on_stage_deadline", True)]:  # fmt: skip
        with pytest.raises(CampaignSpecError) as e:
            spec(**{field: value})
        assert e.value.field == field


def test_a_stage_past_its_deadline_is_reported_with_its_reasons() -> None:
    # The reviewer's second case: 100 % success gate, the one canary offline for good.
    seen = T0 - dt.timedelta(minutes=5)
    runs = {"CP-1": StationRun("CP-1", 0, "waiting"), "CP-2": StationRun("CP-2", 1, "pending")}
    fleet = {"CP-1": station("CP-1", connected=False, offline_since=seen),
             "CP-2": station("CP-2")}  # fmt: skip
    sites = {"depot": site(3)}
    c = campaign(stage_deadline="2d")
    before = planner.plan(
        c, runs, fleet, sites, T0 + dt.timedelta(days=2) - dt.timedelta(seconds=1)
    )
    assert before.overdue is None and not any("overdue" in n for n in before.notes)

    out = planner.plan(c, runs, fleet, sites, T0 + dt.timedelta(days=2))
    assert out.overdue is not None and not out.overdue.paused
    assert out.overdue.waiting == {"offline": ("CP-1",)}
    assert out.overdue.text == (
        "stage 0 not through its success gate 2d after it started: 0 of 1 succeeded, 1 needed; "
        "waiting: offline 1 (CP-1)"
    )
    assert out.campaign.status == "running"
    assert f"overdue: {out.overdue.text}" in out.notes

    # Once reported (the scheduler found its alert), never again.
    again = planner.plan(
        replace(c, overdue_noted=True), runs, fleet, sites, T0 + dt.timedelta(days=14)
    )
    assert again.overdue is None and again.campaign.status == "running"


def test_on_stage_deadline_pause_pauses_and_sends_nothing() -> None:
    runs = {"CP-1": StationRun("CP-1", 0, "waiting"), "CP-2": StationRun("CP-2", 0, "waiting")}
    fleet = {"CP-1": station("CP-1", connected=False), "CP-2": station("CP-2", site_id=None)}
    c = planner.Campaign(7, spec(on_stage_deadline="pause", stage_deadline="1h"), "feature",
                         NEW, stage_started_at=T0, stage_sizes=(2,))  # fmt: skip
    assert planner.plan(c, runs, fleet, {}, T0).dispatch == ["CP-2"]  # before the deadline
    out = planner.plan(c, runs, fleet, {}, T0 + dt.timedelta(hours=1))
    assert out.overdue is not None and out.overdue.paused
    assert out.dispatch == [] and out.campaign.status == "paused"
    assert out.campaign.pause_reason == out.overdue.text
    assert "offline 1 (CP-1)" in out.overdue.text
    assert out.notes[-1] == "paused: stage 0 overdue"
    # Busy stations of the stage are counted by state.
    runs["CP-2"] = StationRun("CP-2", 0, "downloading")
    out = planner.plan(c, runs, fleet, {}, T0 + dt.timedelta(hours=1))
    assert out.overdue is not None and out.overdue.text.endswith("; 1 downloading")


def test_a_stage_that_passed_is_never_overdue() -> None:
    runs = {"CP-1": StationRun("CP-1", 0, "succeeded"), "CP-2": StationRun("CP-2", 1, "pending")}
    fleet = {sid: station(sid, site_id=None) for sid in runs}
    out = planner.plan(campaign(stage_deadline="1h"), runs, fleet, {}, T0 + dt.timedelta(days=9))
    assert out.campaign.stage == 1 and out.overdue is None
