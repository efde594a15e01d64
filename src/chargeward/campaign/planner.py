"""The campaign planner: one pure decision per tick, from state and a clock.

    result = plan(campaign, runs, fleet, sites, now)
    result.runs        # stations whose state changed (persist these first)
    result.dispatch    # then send UpdateFirmware to these, in this order

Each tick the planner

1. passes the time to every station (deadlines, soaks: :func:`machine.step` with ``Tick``);
2. checks the current stage's error gate: at or past it the campaign pauses, and stays paused
   until an operator resumes it (errors counted before a resume do not pause it again);
3. moves to the next stage once enough of this stage's stations succeeded, and finishes
   the campaign when the last stage has no station left in flight;
4. picks stations to dispatch, in stage and rank order, each only if it is connected, past its
   jitter delay, inside its site's maintenance window (feature releases always; security
   releases unless the campaign bypasses windows), not charging (else *deferred*), and only
   while the global and per-site limits and the site's availability floor allow.  Where windows
   apply, a station outside its window whose next window opens within the campaign's
   ``download_ahead`` is dispatched early with ``install_at`` = that window's start (OCPP
   ``installDateTime``): it downloads now and installs only inside the window.

Where windows apply, a station that is outside its window, past its install time and has not
started installing (it was charging all window long, say) is *rescheduled*
(:attr:`Plan.reschedule`): the same release again with the next window's start.  This is
checked in running and paused campaigns alike, and is not an attempt.

Stations are ranked by a hash of campaign and station id, so the canary is a fair sample and
the same on every node and after every restart.  A station with no site, or a site without
windows, may update at any time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from chargeward.campaign import machine
from chargeward.campaign.machine import ERRORS, TERMINAL, StationRun
from chargeward.campaign.spec import CampaignSpec, StationFacts
from chargeward.model.fleet import MaintenanceWindow, in_window, next_window_start

CampaignStatus = Literal[
    "awaiting_approval", "running", "paused", "aborted", "completed", "rolled_back"
]
# A charger in these states is out of service for the availability floor and the site limit.
UPDATING: frozenset[str] = frozenset({"dispatched", "downloading", "installing", "rebooting"})


@dataclass(frozen=True)
class Campaign:
    """A campaign's own state (one row of ``campaigns``)."""

    id: int
    spec: CampaignSpec
    release_class: str  # feature | security
    expected: Mapping[str, str]  # component -> version the release brings
    status: CampaignStatus = "running"
    stage: int = 0
    stage_started_at: dt.datetime | None = None
    stage_sizes: tuple[int, ...] = ()  # cumulative, fixed at start
    pause_reason: str | None = None
    gate_baseline: tuple[int, int] = (0, 0)  # (errors, finished) acknowledged by a resume

    @property
    def policy(self) -> machine.Policy:
        return machine.Policy(expected=self.expected, spec=self.spec)

    @property
    def windows_apply(self) -> bool:
        return not (self.spec.bypass_windows and self.release_class == "security")


@dataclass(frozen=True)
class FleetStation:
    """What the planner needs of a station now."""

    id: str
    site_id: str | None
    connected: bool
    charging: bool


@dataclass(frozen=True)
class SiteNow:
    """A site now: its windows, and how many chargers are available or updating (all
    campaigns counted)."""

    id: str
    timezone: str
    windows: tuple[MaintenanceWindow, ...]
    available: int  # connected and not updating
    updating: int


@dataclass(frozen=True)
class Reschedule:
    """Send the station's release again, to install at ``install_at``; ``reason`` is why."""

    install_at: dt.datetime
    reason: str


@dataclass
class Plan:
    campaign: Campaign
    runs: dict[str, StationRun] = field(default_factory=dict)  # changed, to persist
    dispatch: list[str] = field(default_factory=list)
    # installDateTime of a dispatch sent ahead of its window (absent: install at once)
    install_at: dict[str, dt.datetime] = field(default_factory=dict)
    reschedule: dict[str, Reschedule] = field(default_factory=dict)  # not attempts
    notes: list[str] = field(default_factory=list)  # what happened to the campaign, for audit


def rank(campaign_id: int, station_id: str) -> str:
    return hashlib.sha256(f"{campaign_id}\x00{station_id}".encode()).hexdigest()


def jitter_delay(campaign: Campaign, station_id: str) -> dt.timedelta:
    """A station's fixed random delay after its stage starts, in ``[0, jitter)``."""
    span = campaign.spec.jitter.total_seconds()
    if span <= 0:
        return dt.timedelta(0)
    fraction = int(rank(campaign.id, station_id)[:8], 16) / 0x1_0000_0000
    return dt.timedelta(seconds=span * fraction)


def assign_stages(
    campaign_id: int, spec: CampaignSpec, stations: Iterable[str]
) -> tuple[tuple[int, ...], dict[str, int]]:
    """Cumulative stage sizes and each station's stage, from the targeted fleet at start."""
    ordered = sorted(stations, key=lambda sid: rank(campaign_id, sid))
    sizes = tuple(spec.stage_sizes(len(ordered)))
    out: dict[str, int] = {}
    k = 0
    for i, sid in enumerate(ordered):
        while k < len(sizes) - 1 and i >= sizes[k]:
            k += 1
        out[sid] = k
    return sizes, out


def targets(spec: CampaignSpec, stations: Iterable[StationFacts]) -> list[str]:
    return sorted(s.id for s in stations if spec.selector.matches(s))


def _gate(campaign: Campaign, runs: Iterable[StationRun]) -> str | None:
    """Why the error gate is crossed, or None."""
    active = [r for r in runs if r.stage <= campaign.stage]
    errors = sum(r.state in ERRORS for r in active) - campaign.gate_baseline[0]
    finished = sum(r.state in TERMINAL for r in active) - campaign.gate_baseline[1]
    g = campaign.spec.gates
    if g.error.percent:
        if finished >= g.min_finished and errors > 0 and errors * 100 >= g.error.value * finished:
            return f"{errors} of {finished} finished stations failed (gate {g.error})"
        return None
    if errors >= g.error.value:
        return f"{errors} stations failed (gate {g.error})"
    return None


def _stage_passed(campaign: Campaign, runs: Iterable[StationRun]) -> bool:
    own = [r for r in runs if r.stage == campaign.stage]
    if not own:
        return True
    succeeded = sum(r.state == "succeeded" for r in own)
    return succeeded >= campaign.spec.gates.success.of(len(own))


def plan(
    campaign: Campaign,
    runs: Mapping[str, StationRun],
    fleet: Mapping[str, FleetStation],
    sites: Mapping[str, SiteNow],
    now: dt.datetime,
) -> Plan:
    """The next decisions for ``campaign`` (see the module docstring)."""
    out = Plan(campaign)
    if campaign.status == "paused":
        out.reschedule = reschedules(campaign, runs, fleet, sites, now)
    if campaign.status != "running":
        return out
    policy = campaign.policy
    current = dict(runs)

    def put(run: StationRun) -> None:
        if run != current[run.station_id]:
            current[run.station_id] = run
            out.runs[run.station_id] = run

    for run in list(current.values()):  # 1. time passes
        if not run.terminal:
            put(machine.step(run, machine.Tick(now), policy))
    out.reschedule = reschedules(campaign, current, fleet, sites, now)

    reason = _gate(campaign, current.values())  # 2. error gate
    if reason is not None:
        out.campaign = replace(campaign, status="paused", pause_reason=reason)
        out.notes.append(f"paused: {reason}")
        return out

    last = len(campaign.stage_sizes) - 1  # 3. stages
    while campaign.stage < last and _stage_passed(campaign, current.values()):
        campaign = replace(campaign, stage=campaign.stage + 1, stage_started_at=now)
        out.notes.append(f"stage {campaign.stage} started")
    if campaign.stage >= last and all(r.terminal for r in current.values()):
        campaign = replace(campaign, status="completed")
        out.notes.append("completed")
        out.campaign = campaign
        return out
    out.campaign = campaign
    started = campaign.stage_started_at or now
    for run in list(current.values()):
        if run.state == "pending" and run.stage <= campaign.stage:
            put(machine.step(run, machine.StageStarted(now), policy))

    _dispatch(out, campaign, current, put, fleet, sites, started, now)  # 4.
    return out


def reschedules(
    campaign: Campaign,
    runs: Mapping[str, StationRun],
    fleet: Mapping[str, FleetStation],
    sites: Mapping[str, SiteNow],
    now: dt.datetime,
) -> dict[str, Reschedule]:
    """Stations to send their release again so that the install starts inside a window: the
    station took the request, has not started installing, its install time has come (or it
    has none) and ``now`` is outside its site's windows.  A request still unanswered waits,
    and a refused reschedule is never repeated (``window_guard``)."""
    out: dict[str, Reschedule] = {}
    if not campaign.windows_apply:
        return out
    for run in runs.values():
        if run.state == "dispatched" or not run.install_pending or not run.window_guard:
            continue
        if run.install_at is not None and now < run.install_at:
            continue  # sent ahead: waiting for its window to open
        station = fleet.get(run.station_id)
        if station is None or not station.connected or station.site_id is None:
            continue
        site = sites.get(station.site_id)
        if site is None or not site.windows or in_window(site.windows, site.timezone, now):
            continue
        opens = next_window_start(site.windows, site.timezone, now)
        if opens is None:
            continue
        why = "the window closed before the install started"
        if station.charging or run.charging_since is not None:
            why += " (charging)"
        out[run.station_id] = Reschedule(opens, why)
    return out


def _dispatch(
    out: Plan,
    campaign: Campaign,
    current: dict[str, StationRun],
    put: Callable[[StationRun], None],
    fleet: Mapping[str, FleetStation],
    sites: Mapping[str, SiteNow],
    started: dt.datetime,
    now: dt.datetime,
) -> None:
    policy = campaign.policy
    limits = campaign.spec.concurrency
    in_flight = sum(r.state in UPDATING for r in current.values())
    site_updating = {sid: s.updating for sid, s in sites.items()}
    site_available = {sid: s.available for sid, s in sites.items()}
    candidates = sorted(
        (r for r in current.values() if r.state in ("waiting", "deferred")),
        key=lambda r: (r.stage, rank(campaign.id, r.station_id)),
    )
    for run in candidates:
        if in_flight >= limits.global_limit:
            return
        station = fleet.get(run.station_id)
        if station is None or not station.connected:
            continue
        if run.state == "deferred" and not station.charging:
            run = machine.step(run, machine.Resume(now), policy)
            put(run)
        if now < started + jitter_delay(campaign, run.station_id) and run.stage == campaign.stage:
            continue
        site = sites.get(station.site_id) if station.site_id else None
        install_at = None
        if (
            campaign.windows_apply
            and site is not None
            and site.windows
            and not in_window(site.windows, site.timezone, now)
        ):
            ahead = campaign.spec.download_ahead
            opens = next_window_start(site.windows, site.timezone, now) if ahead else None
            if opens is None or opens - now > ahead:
                continue
            install_at = opens  # download now, install when the window opens
        if station.charging:  # OCPP L01.FR.06: never while a car is charging
            if run.state == "waiting":
                put(machine.step(run, machine.Defer(now), policy))
            continue
        if site is not None:
            if site_updating.get(site.id, 0) >= limits.per_site:
                continue
            if site_available.get(site.id, 0) - 1 < limits.keep_available:
                continue
            site_updating[site.id] = site_updating.get(site.id, 0) + 1
            site_available[site.id] = site_available.get(site.id, 0) - 1
        in_flight += 1
        out.dispatch.append(run.station_id)
        if install_at is not None:
            out.install_at[run.station_id] = install_at
