"""Campaign rules one at a time: the definition's parser, the station state machine and the
planner's window, deferral and gate decisions (pure; an injected clock)."""

from __future__ import annotations

import datetime as dt

import pytest

from chargeward.campaign import machine, planner
from chargeward.campaign.machine import StationRun, step
from chargeward.campaign.spec import (
    Amount,
    CampaignSpec,
    CampaignSpecError,
    Selector,
    StationFacts,
    check_class,
    parse_spec,
    spec_document,
)
from chargeward.model.fleet import parse_windows

T0 = dt.datetime(2026, 11, 2, 1, 0, tzinfo=dt.UTC)
NEW = {"main": "2.0.0"}


def spec(**kw: object) -> CampaignSpec:
    doc: dict[str, object] = {"name": "c1", "release": "r1", "soak": "10m", "jitter": 0}
    doc.update(kw)
    return parse_spec(doc)


def policy(**kw: object) -> machine.Policy:
    return machine.Policy(expected=NEW, spec=spec(**kw))


def minutes(n: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


# -- the definition ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"name": "bad name!"}, "name"),
        ({"stages": {"canary": 0}}, "stages.canary"),
        ({"stages": {"canary": "150%"}}, "stages.canary"),
        ({"stages": {"canary": "10%", "then": ["5%"]}}, "stages.then.0"),
        ({"stages": {"canary": 1, "then": ["50%"], "exponential": 2}}, "stages"),
        ({"gates": {"error": "ten"}}, "gates.error"),
        ({"gates": {"min_finished": 0}}, "gates.min_finished"),
        ({"soak": "forever"}, "soak"),
        ({"timeouts": {"download": "0s"}}, "timeouts.download"),
        ({"timeouts": {"reboot_time": "1m"}}, "timeouts.reboot_time"),
        ({"target": {"version": "newest"}}, "target.version"),
        ({"target": {"tags": [""]}}, "target.tags.0"),
        ({"retries": 11}, "retries"),
        ({"concurrency": {"per_site": 0}}, "concurrency.per_site"),
        ({"bypass_windows": "yes"}, "bypass_windows"),
        ({"colour": "blue"}, "campaign.colour"),
    ],
)
def test_a_bad_definition_names_its_field(doc: dict[str, object], field: str) -> None:
    with pytest.raises(CampaignSpecError) as e:
        spec(**doc)
    assert e.value.field == field and str(e.value).startswith(f"{field}: ")


def test_a_definition_reads_back_from_its_stored_form() -> None:
    s = spec(
        target={"models": ["AC22"], "version": ">=1.0,<2.0", "tags": ["pilot"], "sites": ["s1"]},
        stages={"canary": "2%", "then": ["25%", "100%"]},
        gates={"success": "90%", "error": "5%", "min_finished": 10},
        concurrency={"global": 50, "per_site": 2, "keep_available": 1},
        timeouts={"download": "3h"},
        retries=5,
        max_attempts=3,
    )
    assert parse_spec(spec_document(s)) == s


@pytest.mark.parametrize("canary", ["100%", 4])
def test_a_campaign_of_one_stage_reads_back_from_its_stored_form(canary: object) -> None:
    """A canary of the whole fleet (or of a fleet smaller than it) and no ``then``: the stored
    form must parse again, or every scheduler tick of the campaign fails."""
    s = spec(stages={"canary": canary})
    assert parse_spec(spec_document(s)) == s


def test_exponential_stages_double_until_the_whole_fleet() -> None:
    s = spec(stages={"canary": "1%", "exponential": 2})
    assert s.stage_sizes(1000) == [10, 20, 40, 80, 160, 320, 640, 1000]


def test_selector_combines_every_criterion() -> None:
    sel = spec(target={"models": ["AC22"], "version": ">=1.0,<1.2", "tags": ["pilot"]}).selector
    base = StationFacts("CP-1", model="AC22", firmware_version="1.1.3", tags=("pilot", "x"))
    assert sel.matches(base)
    assert not sel.matches(
        StationFacts("CP-2", model="DC50", firmware_version="1.1.3", tags=("pilot",))
    )
    assert not sel.matches(
        StationFacts("CP-3", model="AC22", firmware_version="1.2.0", tags=("pilot",))
    )
    assert not sel.matches(StationFacts("CP-4", model="AC22", firmware_version="1.1.3"))
    assert not sel.matches(
        StationFacts("CP-5", model="AC22", firmware_version="vendor-x", tags=("pilot",))
    )


def test_only_security_releases_may_bypass_windows() -> None:
    s = spec(bypass_windows=True)
    check_class(s, "security")
    with pytest.raises(CampaignSpecError, match="only security releases"):
        check_class(s, "feature")


# -- the station machine ---------------------------------------------------------------------


def through_install(p: machine.Policy, run: StationRun | None = None) -> StationRun:
    run = run or StationRun("CP-1", 0, "waiting")
    run = step(run, machine.Dispatched(minutes(0), 11), p)
    run = step(run, machine.Response(minutes(0), "Accepted"), p)
    for status in ("Downloading", "Downloaded", "SignatureVerified", "Installing"):
        run = step(run, machine.Status(minutes(1), status), p)
    return step(run, machine.Status(minutes(2), "InstallRebooting"), p)


def test_success_needs_the_new_version_after_a_firmware_update_boot_and_the_soak() -> None:
    p = policy()
    run = through_install(p)
    assert run.state == "rebooting"
    assert step(run, machine.Status(minutes(3), "Installed"), p).state == "rebooting"
    soaking = step(run, machine.Boot(minutes(3), "FirmwareUpdate", NEW), p)
    assert soaking.state == "soaking"
    assert step(soaking, machine.Tick(minutes(12)), p).state == "soaking"
    done = step(soaking, machine.Tick(minutes(13)), p)
    assert done.state == "succeeded" and done.finished_at == minutes(13)
    # The new version under another boot reason is not proof that our install ran.
    assert step(run, machine.Boot(minutes(3), "PowerUp", NEW), p).state == "failed"


def test_a_fallback_to_the_old_slot_is_a_rollback() -> None:
    p = policy()
    run = through_install(p)
    back = step(run, machine.Boot(minutes(3), "FirmwareUpdate", {"main": "1.0.0"}), p)
    assert back.state == "rolled_back"
    soaking = step(run, machine.Boot(minutes(3), "FirmwareUpdate", NEW), p)
    assert (
        step(soaking, machine.Fault(minutes(4), "rolled_back", "self-test"), p).state
        == "rolled_back"
    )


def test_faults_and_reboot_loops_in_the_soak_fail_the_station() -> None:
    p = policy()
    soaking = step(through_install(p), machine.Boot(minutes(3), "FirmwareUpdate", NEW), p)
    assert step(soaking, machine.Fault(minutes(4), "connector_faulted", "1/1"), p).state == "failed"
    assert step(soaking, machine.Fault(minutes(4), "security_event", "x"), p).state == "failed"
    once = step(soaking, machine.Boot(minutes(4), "PowerUp", NEW), p)
    assert once.state == "soaking"  # one power cut is not a loop
    assert step(once, machine.Boot(minutes(5), "PowerUp", NEW), p).state == "failed"


def test_charging_stops_the_clock_and_never_times_a_station_out() -> None:
    p = policy(timeouts={"install": "30m"}, max_attempts=1)
    run = step(StationRun("CP-1", 0, "waiting"), machine.Dispatched(minutes(0), 3), p)
    run = step(run, machine.Status(minutes(0), "InstallScheduled"), p)
    assert run.state == "installing" and run.deadline == minutes(30)
    run = step(run, machine.Charging(minutes(5), True), p)
    assert step(run, machine.Tick(minutes(600)), p).state == "installing"  # 10 h of charging
    run = step(run, machine.Charging(minutes(605), False), p)
    assert run.deadline == minutes(630)
    assert step(run, machine.Tick(minutes(629)), p).state == "installing"
    assert step(run, machine.Tick(minutes(630)), p).state == "timed_out"


def test_attempts_are_capped_by_the_policy() -> None:
    p = policy(max_attempts=2, timeouts={"response": "1m"})
    run = StationRun("CP-1", 0, "waiting")
    run = step(run, machine.Dispatched(minutes(0), 1), p)
    run = step(run, machine.Tick(minutes(2)), p)  # no answer: asked, not yet given up
    assert (run.state, run.phase, run.attempts) == ("dispatched", "confirm", 1)
    run = step(run, machine.Tick(minutes(4)), p)  # and no word after asking: a timeout
    assert run.state == "waiting" and run.attempts == 1
    assert run.reason == "requestId 1: no answer in 1m", run.reason
    run = step(run, machine.Dispatched(minutes(5), 2), p)
    run = step(run, machine.Status(minutes(6), "DownloadFailed"), p)
    assert run.state == "failed" and run.attempts == 2
    assert step(run, machine.Dispatched(minutes(7), 3), p) == run  # no third request
    retried = step(run, machine.Retry(minutes(8)), p)
    assert retried.state == "waiting" and retried.attempts == 0


@pytest.mark.parametrize("answer", ["NotConnected", "NotDelivered"])
def test_a_request_that_never_reached_the_station_is_no_attempt(answer: str) -> None:
    """No node held the station, or its node was gone: the infrastructure failed, so the
    station keeps its attempts; a refusal or a silence from the station still costs one."""
    p = policy(max_attempts=1, timeouts={"response": "1m"})
    run = step(StationRun("CP-1", 0, "waiting"), machine.Dispatched(minutes(0), 1), p)
    lost = step(run, machine.Response(minutes(0), answer), p)
    assert (lost.state, lost.attempts, lost.reason) == ("waiting", 0, f"UpdateFirmware {answer}")
    again = step(lost, machine.Dispatched(minutes(1), 2), p)
    assert (again.state, again.attempts, again.request_id) == ("dispatched", 1, 2)
    assert step(again, machine.Response(minutes(1), "Rejected"), p).state == "failed"
    silent = step(step(again, machine.Tick(minutes(3)), p), machine.Tick(minutes(5)), p)
    assert silent.state == "timed_out"


def test_a_station_without_signed_update_is_not_asked_again() -> None:
    """An OCPP 1.6 station that refused SignedUpdateFirmware as not implemented answers the
    same until an operator marks it legacy: no attempt is spent on asking again (ADR 0039);
    a plain refusal still leaves the next attempt."""
    p = policy(max_attempts=3)
    run = step(StationRun("CP-1", 0, "waiting"), machine.Dispatched(minutes(0), 1), p)
    final = step(run, machine.Response(minutes(0), "SignedUpdateUnsupported"), p)
    assert (final.state, final.attempts) == ("failed", 1)
    assert final.reason == "UpdateFirmware SignedUpdateUnsupported"
    assert step(run, machine.Response(minutes(0), "Rejected"), p).state == "waiting"


# A request whose answer was lost (issue 28): the node that sent it died, or the reply timed
# out.  It may have reached the station, so it is asked about, never sent twice blindly.


def _unanswered(p: machine.Policy) -> StationRun:
    run = step(StationRun("CP-1", 0, "waiting"), machine.Dispatched(minutes(0), 7), p)
    run = step(run, machine.Tick(minutes(2)), p)  # the response deadline (1m) passed
    assert (run.state, run.phase, run.attempts) == ("dispatched", "confirm", 1), run
    assert run.reason == "no answer in 1m; asking the station about requestId 7"
    return run


@pytest.mark.parametrize("status", ["Downloading", "Downloaded", "Installing", "Installed"])
def test_a_progress_status_adopts_an_unanswered_request(status: str) -> None:
    p = policy(max_attempts=3, timeouts={"response": "1m"})
    run = step(_unanswered(p), machine.Status(minutes(3), status), p)
    assert run.state in ("downloading", "installing", "rebooting") and run.attempts == 1
    assert run.phase != "confirm" and run.request_id == 7


def test_a_lost_reply_is_asked_about_and_an_idle_station_is_sent_another() -> None:
    p = policy(max_attempts=3, timeouts={"response": "1m"})
    run = step(StationRun("CP-1", 0, "waiting"), machine.Dispatched(minutes(0), 7), p)
    lost = step(run, machine.Response(minutes(0), "NoResponse"), p)
    assert (lost.state, lost.phase, lost.attempts) == ("dispatched", "confirm", 1)
    assert lost.deadline == minutes(1)  # the response timeout again, to hear from it
    idle = step(lost, machine.Status(minutes(0.5), "Idle"), p)
    assert (idle.state, idle.attempts) == ("waiting", 1)
    assert idle.reason == "requestId 7: the station is idle"
    # Idle means nothing while the station works on a request it answered.
    working = step(run, machine.Response(minutes(0), "Accepted"), p)
    assert step(working, machine.Status(minutes(0.5), "Idle"), p) == working


def test_an_unanswered_request_fails_when_the_station_stays_silent_or_reports_a_failure() -> None:
    p = policy(max_attempts=1, timeouts={"response": "1m"})
    silent = step(_unanswered(p), machine.Tick(minutes(3.5)), p)
    assert (silent.state, silent.reason) == ("timed_out", "requestId 7: no answer in 1m")
    failed = step(_unanswered(p), machine.Status(minutes(2.5), "DownloadFailed"), p)
    assert failed.state == "failed"


def test_a_waiting_run_adopts_its_request_when_the_station_reports_progress_late() -> None:
    """Given up on (the confirm deadline passed too), but not yet sent again: the station's
    report for that request is proof it works on it."""
    p = policy(max_attempts=3, timeouts={"response": "1m"})
    waiting = step(_unanswered(p), machine.Tick(minutes(3.5)), p)
    assert (waiting.state, waiting.request_id) == ("waiting", 7)
    adopted = step(waiting, machine.Status(minutes(4), "Downloading"), p)
    assert (adopted.state, adopted.attempts, adopted.reason) == ("downloading", 1, None)
    assert "the station works on it" in adopted.timeline[-2][2]
    # A failure report of the old request does not revive it.
    assert step(waiting, machine.Status(minutes(4), "DownloadFailed"), p) == waiting


def test_abort_spares_stations_already_installing() -> None:
    p = policy()
    installing = step(through_install(p), machine.Abort(minutes(3)), p)
    assert installing.state == "rebooting"
    waiting = step(StationRun("CP-2", 0, "waiting"), machine.Abort(minutes(3)), p)
    assert waiting.state == "canceled"


# -- the planner: windows in local time, deferral, gates -------------------------------------


Setup = tuple[planner.Campaign, dict, dict, dict]  # type: ignore[type-arg]


def one_station_campaign(
    windows: list[dict[str, object]],
    release_class: str = "feature",
    bypass: bool = False,
    download_ahead: str = "0",  # only dispatches inside the window (see download-ahead tests)
) -> Setup:
    s = spec(
        bypass_windows=bypass,
        stages={"canary": 1},
        concurrency={"keep_available": 0},
        download_ahead=download_ahead,
    )
    c = planner.Campaign(1, s, release_class, NEW, stage_started_at=T0, stage_sizes=(1,))
    runs = {"CP-1": StationRun("CP-1", 0, "waiting")}
    fleet = {"CP-1": planner.FleetStation("CP-1", "london", True, False)}
    sites = {
        "london": planner.SiteNow(
            "london", "Europe/London", tuple(parse_windows(windows)), available=1, updating=0
        )
    }
    return c, runs, fleet, sites


@pytest.mark.parametrize(
    ("utc", "dispatched"),
    [
        # Saturday 24 October 2026, British Summer Time (UTC+1): 02:00 local is 01:00 UTC.
        (dt.datetime(2026, 10, 24, 0, 59, tzinfo=dt.UTC), False),
        (dt.datetime(2026, 10, 24, 1, 0, tzinfo=dt.UTC), True),
        # The last start that leaves the 15 min install (the default) inside the window.
        (dt.datetime(2026, 10, 24, 2, 45, tzinfo=dt.UTC), True),
        (dt.datetime(2026, 10, 24, 2, 46, tzinfo=dt.UTC), False),
        (dt.datetime(2026, 10, 24, 3, 0, tzinfo=dt.UTC), False),
        # Sunday 25 October: clocks go back at 02:00 BST (01:00 UTC); 02:00 GMT is 02:00 UTC.
        (dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.UTC), False),
        (dt.datetime(2026, 10, 25, 2, 0, tzinfo=dt.UTC), True),
        # Monday 26 October, GMT (UTC+0): the window is 02:00-04:00 UTC now.
        (dt.datetime(2026, 10, 26, 1, 0, tzinfo=dt.UTC), False),
        (dt.datetime(2026, 10, 26, 1, 59, tzinfo=dt.UTC), False),
        (dt.datetime(2026, 10, 26, 2, 0, tzinfo=dt.UTC), True),
        (dt.datetime(2026, 10, 26, 3, 45, tzinfo=dt.UTC), True),
        (dt.datetime(2026, 10, 26, 3, 46, tzinfo=dt.UTC), False),
        (dt.datetime(2026, 10, 26, 4, 0, tzinfo=dt.UTC), False),
    ],
)
def test_dst_a_london_site_gets_its_window_at_local_time_across_the_october_change(
    utc: dt.datetime, dispatched: bool
) -> None:
    c, runs, fleet, sites = one_station_campaign(
        [
            {
                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                "start": "02:00",
                "end": "04:00",
            }
        ]
    )
    c = planner.Campaign(1, c.spec, "feature", NEW, stage_started_at=utc, stage_sizes=(1,))
    assert planner.plan(c, runs, fleet, sites, utc).dispatch == (["CP-1"] if dispatched else [])


def test_security_releases_may_bypass_windows_feature_releases_never() -> None:
    night = [{"days": ["sat"], "start": "02:00", "end": "03:00"}]  # T0 is a Monday
    feature, runs, fleet, sites = one_station_campaign(night)
    assert planner.plan(feature, runs, fleet, sites, T0).dispatch == []
    security, *_ = one_station_campaign(night, "security", bypass=True)
    assert planner.plan(security, runs, fleet, sites, T0).dispatch == ["CP-1"]
    staged, *_ = one_station_campaign(night, "security", bypass=False)
    assert planner.plan(staged, runs, fleet, sites, T0).dispatch == []


def test_a_charging_station_is_deferred_then_resumed() -> None:
    c, runs, fleet, sites = one_station_campaign([])
    fleet["CP-1"] = planner.FleetStation("CP-1", "london", True, True)
    first = planner.plan(c, runs, fleet, sites, T0)
    assert first.dispatch == [] and first.runs["CP-1"].state == "deferred"
    fleet["CP-1"] = planner.FleetStation("CP-1", "london", True, False)
    later = planner.plan(first.campaign, first.runs, fleet, sites, minutes(90))
    assert later.dispatch == ["CP-1"] and later.runs["CP-1"].state == "waiting"


def test_the_error_gate_pauses_and_a_resume_acknowledges_what_was_counted() -> None:
    s = spec(stages={"canary": 2}, gates={"error": 1})
    c = planner.Campaign(1, s, "feature", NEW, stage_started_at=T0, stage_sizes=(2,))
    runs = {
        "CP-1": StationRun("CP-1", 0, "failed"),
        "CP-2": StationRun("CP-2", 0, "waiting"),
    }
    fleet = {sid: planner.FleetStation(sid, None, True, False) for sid in runs}
    paused = planner.plan(c, runs, fleet, {}, T0)
    assert paused.campaign.status == "paused" and paused.dispatch == []
    assert paused.campaign.pause_reason == "1 stations failed (gate 1)"
    resumed = planner.Campaign(1, s, "feature", NEW, stage_started_at=T0, stage_sizes=(2,),
                               gate_baseline=(1, 1))  # fmt: skip
    assert planner.plan(resumed, runs, fleet, {}, T0).dispatch == ["CP-2"]


def test_exact_selector_is_used_for_the_explicit_list() -> None:
    s = CampaignSpec("c", "r", Selector(stations=("CP-2",)), (Amount(1, False),))
    facts = [StationFacts("CP-1"), StationFacts("CP-2")]
    assert planner.targets(s, facts) == ["CP-2"]
