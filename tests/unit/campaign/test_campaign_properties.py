"""Property tests of the campaign planner and the per-station state machine (pure, no I/O).

Hypothesis draws fleets (sites in several time zones with random windows, stations that come
and go, charge and misbehave), campaigns (stages, gates, limits, classes) and event sequences,
then runs ticks of the planner against a simulated fleet.  After every tick:

- a stage never exceeds its size (stations ever dispatched <= the current cumulative size);
- no dispatch outside the site's window (feature class, or security without bypass), nor
  inside it with less than the install time left, unless it was sent ahead: within
  ``download_ahead`` of the window, with an ``install_at`` that opens a window at least the
  install time long; every reschedule's ``install_at`` does too, and a reschedule is never
  an attempt;
- a simulated charger (which, like the agent, installs at ``install_at`` once no car charges)
  never starts installing outside its window;
- no dispatch to a station with an active transaction;
- the per-site availability floor, the per-site and the global limits hold after the tick's
  dispatches;
- a crossed error gate always pauses the campaign;
- no station gets more UpdateFirmware requests than ``max_attempts``;
- a restart at any point changes no outcome (state read back from its stored form and the
  same events replayed give the same states).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chargeward.campaign import machine, planner
from chargeward.campaign.codec import run_from_row, run_to_row
from chargeward.campaign.machine import ERRORS, TERMINAL, StationRun
from chargeward.campaign.spec import (
    Amount,
    CampaignSpec,
    Concurrency,
    Gates,
    Selector,
    Timeouts,
)
from chargeward.model.fleet import in_window, parse_windows, window_close

ZONES = ["Europe/London", "America/New_York", "Asia/Kolkata", "Australia/Sydney", "UTC"]
START = dt.datetime(2026, 10, 20, 0, 0, tzinfo=dt.UTC)
NEW = {"main": "2.0.0"}
OLD = {"main": "1.0.0"}
BEHAVIOURS = ["good", "good", "good", "bad_health", "fail_download", "silent", "rollback"]


@dataclass
class Sim:
    campaign: planner.Campaign
    runs: dict[str, StationRun]
    site_of: dict[str, str | None]
    sites: dict[str, tuple[str, tuple]]  # id -> (zone, windows)
    connected: dict[str, bool]
    charging: dict[str, bool]
    behaviour: dict[str, str]
    now: dt.datetime = START
    next_request: int = 1
    dispatches: dict[str, int] = field(default_factory=dict)
    reschedules: dict[str, int] = field(default_factory=dict)
    ever_dispatched: set[str] = field(default_factory=set)


window_st = st.fixed_dictionaries(
    {
        "days": st.lists(
            st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
            min_size=1,
            max_size=7,
            unique=True,
        ),
        "start": st.sampled_from(["00:00", "01:30", "02:00", "22:00", "23:00", "12:00"]),
        "end": st.sampled_from(["04:00", "05:00", "03:00", "06:30", "23:59", "13:00"]),
    }
)
windows_st = st.lists(window_st, max_size=2)
some_windows_st = st.lists(window_st, min_size=1, max_size=2)


@st.composite
def sims(draw: st.DrawFn) -> Sim:
    n_sites = draw(st.integers(1, 4))
    sites = {
        f"S{i}": (draw(st.sampled_from(ZONES)), tuple(parse_windows(draw(windows_st))))
        for i in range(n_sites)
    }
    n = draw(st.integers(1, 30))
    ids = [f"CP-{i:02d}" for i in range(n)]
    site_of = {sid: draw(st.sampled_from([*sites, None])) for sid in ids}
    release_class = draw(st.sampled_from(["feature", "security"]))
    canary = draw(st.one_of(st.integers(1, 4).map(lambda v: Amount(v, False)),
                            st.sampled_from([Amount(5, True), Amount(20, True)])))  # fmt: skip
    error = draw(st.one_of(st.integers(1, 4).map(lambda v: Amount(v, False)),
                           st.sampled_from([Amount(10, True), Amount(50, True)])))  # fmt: skip
    spec = CampaignSpec(
        name="prop",
        release_id="r",
        selector=Selector(),
        stages=(canary, Amount(50, True), Amount(100, True)),
        gates=Gates(
            success=draw(st.sampled_from([Amount(50, True), Amount(100, True)])),
            error=error,
            min_finished=draw(st.integers(1, 3)),
        ),
        soak=dt.timedelta(minutes=draw(st.sampled_from([0, 20, 90]))),
        concurrency=Concurrency(
            global_limit=draw(st.integers(1, 8)),
            per_site=draw(st.integers(1, 3)),
            keep_available=draw(st.integers(0, 2)),
        ),
        timeouts=Timeouts(
            response=dt.timedelta(minutes=10),
            download=dt.timedelta(minutes=60),
            install=dt.timedelta(minutes=30),
            reboot=dt.timedelta(minutes=20),
        ),
        jitter=dt.timedelta(minutes=draw(st.sampled_from([0, 30]))),
        download_ahead=dt.timedelta(minutes=draw(st.sampled_from([0, 30, 120, 360]))),
        max_attempts=draw(st.integers(1, 3)),
        bypass_windows=release_class == "security" and draw(st.booleans()),
    )
    sizes, stage_of = planner.assign_stages(7, spec, ids)
    campaign = planner.Campaign(
        id=7,
        spec=spec,
        release_class=release_class,
        expected=NEW,
        stage_started_at=START,
        stage_sizes=sizes,
    )
    return Sim(
        campaign=campaign,
        runs={sid: StationRun(sid, stage_of[sid]) for sid in ids},
        site_of=site_of,
        sites=sites,
        connected={sid: draw(st.booleans()) or draw(st.booleans()) for sid in ids},
        charging={sid: draw(st.booleans()) and draw(st.booleans()) for sid in ids},
        behaviour={sid: draw(st.sampled_from(BEHAVIOURS)) for sid in ids},
    )


def fleet_now(sim: Sim) -> tuple[dict, dict]:
    fleet = {
        sid: planner.FleetStation(sid, sim.site_of[sid], sim.connected[sid], sim.charging[sid])
        for sid in sim.runs
    }
    sites = {}
    for site, (zone, windows) in sim.sites.items():
        here = [sid for sid in sim.runs if sim.site_of[sid] == site]
        updating = sum(sim.runs[s].state in planner.UPDATING for s in here)
        available = sum(
            sim.connected[s] and sim.runs[s].state not in planner.UPDATING for s in here
        )
        sites[site] = planner.SiteNow(site, zone, windows, available, updating)
    return fleet, sites


def station_reacts(sim: Sim, sid: str, policy: machine.Policy) -> None:
    """One step of the simulated charger's behaviour for its current state."""
    run, b, at = sim.runs[sid], sim.behaviour[sid], sim.now
    if b == "silent" or not sim.connected[sid]:
        return
    event: machine.Event | None = None
    if run.state == "dispatched":
        event = machine.Response(at, "Accepted")
    elif run.state == "downloading":
        if b == "fail_download":
            event = machine.Status(at, "DownloadFailed")
        elif run.install_at is not None and at < run.install_at:
            event = machine.Status(at, "InstallScheduled")  # OCPP L01.FR.11: waits for it
        elif not sim.charging[sid]:  # the agent's own gate: never installs while charging
            event = start_install(sim, sid, at)
    elif run.state == "installing" and run.last_status != "Installing":
        due = run.install_at is None or at >= run.install_at
        if due and not sim.charging[sid]:
            event = start_install(sim, sid, at)
    elif run.state == "installing":
        event = machine.Status(at, "Installed")
    elif run.state == "rebooting":
        event = machine.Boot(at, "FirmwareUpdate", OLD if b == "rollback" else NEW)
    elif run.state == "soaking" and b == "bad_health":
        event = machine.Fault(at, "connector_faulted", "1/1")
    if event is not None:
        sim.runs[sid] = machine.step(run, event, policy)


def start_install(sim: Sim, sid: str, at: dt.datetime) -> machine.Event:
    """The charger starts writing the image: never outside its window, where windows apply."""
    site = sim.site_of[sid]
    zone, windows = sim.sites[site] if site else ("UTC", ())
    if sim.campaign.windows_apply and windows:
        assert in_window(windows, zone, at), (sid, at, windows, sim.runs[sid])
    return machine.Status(at, "Installing")


def gate_crossed(c: planner.Campaign, runs: dict[str, StationRun]) -> bool:
    """The error gate, written out again independently of the planner."""
    active = [r for r in runs.values() if r.stage <= c.stage]
    errors = sum(r.state in ERRORS for r in active) - c.gate_baseline[0]
    finished = sum(r.state in TERMINAL for r in active) - c.gate_baseline[1]
    g = c.spec.gates
    if g.error.percent:
        return (
            finished >= g.min_finished and errors > 0 and 100 * errors >= g.error.value * finished
        )
    return errors >= g.error.value


def _left(windows: tuple, zone: str, at: dt.datetime) -> dt.timedelta:  # type: ignore[type-arg]
    """What is left of the window ``at`` lies in (nothing outside every window)."""
    close = window_close(windows, zone, at)
    return dt.timedelta(0) if close is None else close - at


def tick(sim: Sim, check: bool = True) -> None:
    fleet, sites = fleet_now(sim)
    before = sim.campaign
    result = planner.plan(sim.campaign, sim.runs, fleet, sites, sim.now)
    sim.runs.update(result.runs)
    sim.campaign = result.campaign
    policy = sim.campaign.policy
    for sid in result.dispatch:
        sim.runs[sid] = machine.step(
            sim.runs[sid],
            machine.Dispatched(sim.now, sim.next_request, result.install_at.get(sid)),
            policy,
        )
        assert sim.runs[sid].state == "dispatched"
        sim.next_request += 1
        sim.dispatches[sid] = sim.dispatches.get(sid, 0) + 1
        sim.ever_dispatched.add(sid)
    for sid, move in result.reschedule.items():
        before_run = sim.runs[sid]
        sim.runs[sid] = machine.step(
            before_run,
            machine.Rescheduled(sim.now, sim.next_request, move.install_at, move.reason),
            policy,
        )
        assert sim.runs[sid].state == "dispatched"
        assert sim.runs[sid].attempts == before_run.attempts  # a reschedule is no attempt
        sim.next_request += 1
        sim.reschedules[sid] = sim.reschedules.get(sid, 0) + 1
    if not check:
        return
    c = sim.campaign
    # A stage never exceeds its size.
    assert len(sim.ever_dispatched) <= c.stage_sizes[c.stage]
    need = planner.install_time(c, sim.runs)
    for sid in result.dispatch:
        site = sim.site_of[sid]
        zone, windows = sim.sites[site] if site else ("UTC", ())
        install_at = result.install_at.get(sid)
        if c.windows_apply and windows:  # never outside the window, or sent ahead of it
            if install_at is None:
                assert in_window(windows, zone, sim.now), (sid, sim.now, windows)
                assert _left(windows, zone, sim.now) >= need, (sid, sim.now, windows)
            else:
                assert _left(windows, zone, sim.now) < need
                assert in_window(windows, zone, install_at), (sid, install_at, windows)
                assert _left(windows, zone, install_at) >= need, (sid, install_at, windows)
                assert sim.now < install_at <= sim.now + c.spec.download_ahead
        else:
            assert install_at is None  # no window to wait for
        assert not sim.charging[sid]  # never while charging
        assert sim.dispatches[sid] <= c.spec.max_attempts  # the retry policy
    if result.dispatch:  # the global limit
        in_flight = sum(r.state in planner.UPDATING for r in sim.runs.values())
        assert in_flight <= c.spec.concurrency.global_limit
    floor = c.spec.concurrency.keep_available
    _, sites_after = fleet_now(sim)
    for sid in result.dispatch:
        site = sim.site_of[sid]
        if site is not None:
            assert sites_after[site].available >= floor, (site, sites_after[site])
            assert sites_after[site].updating <= c.spec.concurrency.per_site
    for sid, move in result.reschedule.items():  # moved into the next window
        site = sim.site_of[sid]
        assert c.windows_apply and site is not None
        zone, windows = sim.sites[site]
        assert _left(windows, zone, sim.now) < need
        assert sim.now < move.install_at and in_window(windows, zone, move.install_at)
        assert _left(windows, zone, move.install_at) >= need
    if before.status == "running" and gate_crossed(replace(c, status="running"), sim.runs):
        assert c.status == "paused", "the error gate was crossed and the campaign runs on"
    if c.status == "paused":
        assert c.pause_reason


def advance_world(sim: Sim, data: st.DataObject) -> None:
    sim.now += dt.timedelta(minutes=data.draw(st.sampled_from([5, 17, 45, 120, 300])))
    for sid in list(sim.runs):
        if data.draw(st.integers(0, 9)) == 0:
            sim.charging[sid] = not sim.charging[sid]
            sim.runs[sid] = machine.step(
                sim.runs[sid], machine.Charging(sim.now, sim.charging[sid]), sim.campaign.policy
            )
        if data.draw(st.integers(0, 14)) == 0:
            sim.connected[sid] = not sim.connected[sid]


def restored(sim: Sim) -> Sim:
    """The simulation as a restarted server sees it: runs read back from their JSON rows."""
    rows = json.loads(json.dumps([run_to_row(r) for r in sim.runs.values()]))
    runs = {r["station_id"]: run_from_row(r) for r in rows}
    assert runs == sim.runs
    return replace(
        sim,
        runs=runs,
        dispatches=dict(sim.dispatches),
        reschedules=dict(sim.reschedules),
        ever_dispatched=set(sim.ever_dispatched),
    )


@pytest.mark.slow  # 35 s beside the suite's other tests on 2 cores
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sim=sims(), data=st.data())
def test_invariants_hold_over_random_fleets_and_event_sequences(
    sim: Sim, data: st.DataObject
) -> None:
    policy = sim.campaign.policy
    for _ in range(40):
        tick(sim)
        if sim.campaign.status == "paused" and data.draw(st.booleans()):  # an operator resumes
            errors = sum(
                r.state in ERRORS for r in sim.runs.values() if r.stage <= sim.campaign.stage
            )
            finished = sum(
                r.state in TERMINAL for r in sim.runs.values() if r.stage <= sim.campaign.stage
            )
            sim.campaign = replace(
                sim.campaign, status="running", pause_reason=None, gate_baseline=(errors, finished)
            )
        for sid in sim.runs:
            station_reacts(sim, sid, policy)
        advance_world(sim, data)
    for sid, n in sim.dispatches.items():
        assert n <= sim.campaign.spec.max_attempts, sid


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sim=sims(), windows=some_windows_st, data=st.data())
def test_feature_releases_install_only_inside_windows_though_they_download_ahead(
    sim: Sim, windows: list[dict[str, object]], data: st.DataObject
) -> None:
    """Every station behaves, sits at a site with windows and charges now and then: each one
    downloads when it may (ahead of its window) and starts installing only inside a window
    (``start_install`` checks), rescheduled when a session outlasts its window."""
    site_windows = tuple(parse_windows(windows))
    sim.sites = {site: (zone, site_windows) for site, (zone, _) in sim.sites.items()}
    sim.site_of = {sid: data.draw(st.sampled_from(sorted(sim.sites))) for sid in sim.runs}
    sim.behaviour = dict.fromkeys(sim.runs, "good")
    sim.connected = dict.fromkeys(sim.runs, True)
    spec = replace(
        sim.campaign.spec,
        bypass_windows=False,
        gates=Gates(Amount(50, True)),
        concurrency=replace(sim.campaign.spec.concurrency, keep_available=0),
    )
    sim.campaign = replace(sim.campaign, spec=spec, release_class="feature")
    for _ in range(60):
        tick(sim)
        for sid in sim.runs:
            station_reacts(sim, sid, sim.campaign.policy)
        sim.now += dt.timedelta(minutes=data.draw(st.sampled_from([5, 17, 45, 120])))
        for sid in list(sim.runs):
            if data.draw(st.integers(0, 5)) == 0:
                sim.charging[sid] = not sim.charging[sid]
                sim.runs[sid] = machine.step(
                    sim.runs[sid], machine.Charging(sim.now, sim.charging[sid]), sim.campaign.policy
                )
    for sid, run in sim.runs.items():
        assert run.attempts <= sim.campaign.spec.max_attempts, sid
        assert sim.dispatches.get(sid, 0) == run.attempts, sid  # reschedules are no attempts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sim=sims(), cut=st.integers(0, 24), seed=st.randoms(use_true_random=False))
def test_a_restart_at_any_point_changes_no_outcome(sim: Sim, cut: int, seed) -> None:  # type: ignore[no-untyped-def]
    """Run the same world twice, once straight and once restarted at step ``cut`` from the
    stored form; every station ends in the same state with the same history."""
    script = [
        (seed.choice([5, 17, 45, 120]), [seed.random() < 0.1 for _ in sim.runs]) for _ in range(25)
    ]

    def run(s: Sim, restart_at: int | None) -> Sim:
        for i, (minutes, flips) in enumerate(script):
            if i == restart_at:
                s = restored(s)
            tick(s, check=False)
            for sid in s.runs:
                station_reacts(s, sid, s.campaign.policy)
            s.now += dt.timedelta(minutes=minutes)
            for sid, flip in zip(list(s.runs), flips, strict=True):
                if flip:
                    s.charging[sid] = not s.charging[sid]
                    s.runs[sid] = machine.step(
                        s.runs[sid], machine.Charging(s.now, s.charging[sid]), s.campaign.policy
                    )
        return s

    def copy(s: Sim) -> Sim:
        return replace(s, runs=dict(s.runs), connected=dict(s.connected), charging=dict(s.charging),
                       dispatches={}, ever_dispatched=set())  # fmt: skip

    straight = run(copy(sim), None)
    restarted = run(copy(sim), cut)
    assert restarted.runs == straight.runs
    assert restarted.campaign == straight.campaign


def test_stage_sizes_are_cumulative_and_end_with_the_fleet() -> None:
    spec = CampaignSpec(
        "s", "r", Selector(), (Amount(2, False), Amount(25, True), Amount(100, True))
    )
    assert spec.stage_sizes(40) == [2, 10, 40]
    assert spec.stage_sizes(3) == [2, 3]  # 25% of 3 rounds to 1, below the canary: merged
    assert spec.stage_sizes(1) == [1]
    sizes, stage_of = planner.assign_stages(1, spec, [f"CP-{i}" for i in range(40)])
    assert sizes == (2, 10, 40)
    assert [sum(1 for v in stage_of.values() if v == k) for k in range(3)] == [2, 8, 30]
