"""The campaign planner: one pure decision per tick, from state and a clock.

    result = plan(campaign, runs, fleet, sites, now)
    result.runs        # stations whose state changed (persist these first)
    result.dispatch    # then send UpdateFirmware to these, in this order

Each tick the planner

1. passes the time to every station (deadlines, soaks: :func:`machine.step` with ``Tick``);
2. checks the current stage's error gate: at or past it the campaign pauses, and stays paused
   until an operator resumes it (errors counted before a resume do not pause it again);
3. moves to the next stage once enough of this stage's stations succeeded, and finishes
   the campaign when the last stage has no station left in flight; a station skipped after
   charging for longer than the campaign's ``max_deferral`` (state *canceled*, see
   :func:`machine.step`) is not waited for: the share is of the stage's other stations;
4. picks stations to dispatch, in stage and rank order, each only if it is connected, past its
   jitter delay, inside its site's maintenance window (feature releases always; security
   releases unless the campaign bypasses windows), not charging (else *deferred*), and only
   while the global and per-site limits and the site's availability floor allow.  Where windows
   apply, a station outside its window whose next window opens within the campaign's
   ``download_ahead`` is dispatched early with ``install_at`` = that window's start (OCPP
   ``installDateTime``): it downloads now and installs only inside the window.

An install must also end inside its window: a station is sent its update inside a window only
while the expected install time (:func:`install_time`: the campaign's ``install_duration``,
or what its own finished installs measured when that is longer) is left of it, and is sent
ahead only to a window that leaves that much.

Every station the planner does not dispatch says why, in :attr:`Plan.reasons`: a
:class:`~chargeward.campaign.waits.WaitReason`, a code and a sentence ("window closes at
05:00, install needs 15 min; waits until Wed 02:00 Europe/London", "site depot has 1 available
charger; keep_available = 1", "offline since 2026-11-02 10:00 UTC").  Step 5, after the
dispatch: a stage that has not passed its success gate ``stage_deadline`` after it started is
reported once (:attr:`Plan.overdue`, with the reasons counted), and the campaign paused when
its ``on_stage_deadline`` says so (:mod:`chargeward.campaign.waits`).

Where windows apply, a station that is outside its window (or inside it with less than the
install time left), past its install time and has not started installing (it was charging all
window long, say) is *rescheduled* (:attr:`Plan.reschedule`): the same release again with
the start of the next window long enough for the install.  This is checked in running and
paused campaigns alike, and is not an attempt.

Stations are ranked by a hash of campaign and station id, so the canary is a fair sample and
the same on every node and after every restart.  A station with no site, or a site without
windows, may update at any time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal
from zoneinfo import ZoneInfo

from chargeward.campaign import machine
from chargeward.campaign.machine import ERRORS, TERMINAL, StationRun
from chargeward.campaign.spec import CampaignSpec, StationFacts
from chargeward.campaign.waits import WAIT_CODES as WAIT_CODES
from chargeward.campaign.waits import StageOverdue as StageOverdue
from chargeward.campaign.waits import WaitReason as WaitReason
from chargeward.campaign.waits import current_reason as current_reason
from chargeward.campaign.waits import stage_overdue
from chargeward.model.fleet import MaintenanceWindow, next_window_fit, window_close

CampaignStatus = Literal[
    "awaiting_approval", "running", "paused", "aborted", "completed", "rolled_back"
]
# A charger in these states is out of service for the availability floor and the site limit.
UPDATING: frozenset[str] = frozenset({"dispatched", "downloading", "installing", "rebooting"})
# Measured install times count once this many of the campaign's installs have finished.
MEASURED_MIN = 3
MEASURED_PERCENTILE = 90


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
    # The current stage's deadline was reported already (its alert exists): never again.
    overdue_noted: bool = False

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
    offline_since: dt.datetime | None = None  # last seen, when not connected


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
    # Why each waiting or deferred station was not dispatched this tick.
    reasons: dict[str, WaitReason] = field(default_factory=dict)
    assessed: bool = False  # the dispatch step ran: ``reasons`` holds every waiting station
    overdue: StageOverdue | None = None  # the stage deadline passed (reported once)

    @property
    def waiting(self) -> dict[str, str]:
        """The sentence of each of :attr:`reasons`."""
        return {sid: r.text for sid, r in self.reasons.items()}


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
    # Canceled in a running campaign means skipped (an abort cancels only when it stops the
    # campaign); finished runs are planned from their state alone, without the reason.
    own = [r for r in runs if r.stage == campaign.stage and r.state != "canceled"]
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
            put(new := machine.step(run, machine.Tick(now), policy))
            if new.skipped:
                out.notes.append(f"{new.station_id} {new.reason}")
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
    out.assessed = True
    # 5. the stage deadline, once per stage (``overdue_noted``: reported already)
    started_at, stage = campaign.stage_started_at, campaign.stage
    overdue = stage_overdue(campaign.spec, stage, started_at, current, out.reasons, now)
    if overdue is not None and not campaign.overdue_noted:
        out.overdue = overdue
        out.notes.append(f"overdue: {overdue.text}")
        if overdue.paused:  # nothing more is sent until an operator looked
            out.dispatch.clear()
            out.install_at.clear()
            out.campaign = replace(campaign, status="paused", pause_reason=overdue.text[:300])
            out.notes.append(f"paused: stage {overdue.stage} overdue")
    return out


# A station whose install time has just come is given this long to report Installing before
# too little of its window is thought left: it was sent a start that fitted, and a tick in
# the seconds before its report must not move it to another window.
START_GRACE = dt.timedelta(minutes=2)


def reschedules(
    campaign: Campaign,
    runs: Mapping[str, StationRun],
    fleet: Mapping[str, FleetStation],
    sites: Mapping[str, SiteNow],
    now: dt.datetime,
) -> dict[str, Reschedule]:
    """Stations to send their release again so that the install starts (and ends) inside a
    window: the station took the request, has not started installing, its install time has
    come (or it has none) and ``now`` is outside its site's windows, or inside one with less
    than :func:`install_time` left.  The new install time is the start of the next window
    that long.  A request still unanswered waits, and a refused reschedule is never repeated
    (``window_guard``)."""
    out: dict[str, Reschedule] = {}
    if not campaign.windows_apply:
        return out
    need: dt.timedelta | None = None
    seen: dict[str, _Window] = {}  # per site: every station there sees the same window
    for run in runs.values():
        if run.state == "dispatched" or not run.install_pending or not run.window_guard:
            continue
        if run.install_at is not None and now < run.install_at + START_GRACE:
            continue  # sent ahead: waiting for its window to open, or starting its install
        station = fleet.get(run.station_id)
        if station is None or not station.connected or station.site_id is None:
            continue
        site = sites.get(station.site_id)
        if site is None or not site.windows:
            continue
        need = install_time(campaign, runs) if need is None else need
        w = _window(seen, site, now, need)
        if w.fits or w.opens is None:
            continue
        if w.close is None:
            why = "the window closed before the install started"
        else:
            why = f"the {_too_short(site, w.close, need)}"
        if station.charging or run.charging_since is not None:
            why += " (charging)"
        out[run.station_id] = Reschedule(w.opens, why)
    return out


def install_time(campaign: Campaign, runs: Mapping[str, StationRun]) -> dt.timedelta:
    """How long an install is expected to take: the campaign's ``install_duration``, or what
    its own installs measured (:func:`measured_install`) when that is longer, so that a fleet
    slower than declared is not squeezed into windows it overruns."""
    declared = campaign.spec.install_duration
    measured = measured_install(runs.values())
    return declared if measured is None else max(declared, measured)


def measured_install(runs: Iterable[StationRun]) -> dt.timedelta | None:
    """The 90th percentile (nearest rank) of the time from the start of the install to the
    boot on the new image, over runs that booted it; None before :data:`MEASURED_MIN` did.

    The install starts at the run's entry into *installing* or at its ``install_at``, if
    later (a station that reported ``InstallScheduled`` waits for it); it ends at the entry
    into *soaking*.  A high percentile rather than the median: the window must hold nearly
    every install, not half of them; not the maximum, so one station that stalled does not
    hold back the fleet.
    """
    samples: list[float] = []
    for run in runs:
        took = _install_took(run)
        if took is not None:
            samples.append(took)
    if len(samples) < MEASURED_MIN:
        return None
    samples.sort()
    k = math.ceil(MEASURED_PERCENTILE * len(samples) / 100) - 1
    return dt.timedelta(seconds=samples[k])


def _install_took(run: StationRun) -> float | None:
    """Seconds from the start of ``run``'s install to its boot on the new image, if both are
    on its timeline."""
    booted: dt.datetime | None = None
    for at, state, _note in reversed(run.timeline):
        if booted is None:
            if state == "soaking":
                booted = dt.datetime.fromisoformat(at)
        elif state == "installing":
            start = dt.datetime.fromisoformat(at)
            if run.install_at is not None and run.install_at < booted:
                start = max(start, run.install_at)
            return max((booted - start).total_seconds(), 0.0)
        elif state in ("dispatched", "waiting"):
            return None  # the boot followed another request's install
    return None


@dataclass(frozen=True)
class _Window:
    """A site's windows seen from now, for an install that takes a given time."""

    close: dt.datetime | None  # when the window around now closes; None: outside every one
    fits: bool  # an install started now ends before ``close``
    opens: dt.datetime | None  # if not: the next window start that long (None: none is)


def _window(
    seen: dict[str, _Window], site: SiteNow, now: dt.datetime, need: dt.timedelta
) -> _Window:
    """``site``'s :class:`_Window` now, worked out once per site and tick (``seen``): every
    station of the site sees the same windows."""
    found = seen.get(site.id)
    if found is None:
        close = window_close(site.windows, site.timezone, now)
        if close is not None and close - now >= need:
            found = _Window(close, True, None)
        else:
            found = _Window(close, False, next_window_fit(site.windows, site.timezone, now, need))
        seen[site.id] = found
    return found


def _too_short(site: SiteNow, close: dt.datetime, need: dt.timedelta) -> str:
    """Why an install may not start now: what is left of the window is too short."""
    local = close.astimezone(ZoneInfo(site.timezone))
    return f"window closes at {local:%H:%M}, install needs {_minutes(need)}"


def _minutes(span: dt.timedelta) -> str:
    return f"{math.ceil(span.total_seconds() / 60)} min"


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
    need: dt.timedelta | None = None  # the install time, once a window needs it
    seen: dict[str, _Window] = {}  # per site: every station there sees the same window
    for run in candidates:
        sid = run.station_id
        station = fleet.get(sid)
        if station is None or not station.connected:
            out.reasons[sid] = _offline(station, sites)
            continue
        if in_flight >= limits.global_limit:
            out.reasons[sid] = WaitReason(
                "global_limit",
                f"the campaign's global limit is reached ({limits.global_limit} stations "
                "updating at once)",
            )
            continue
        if run.state == "deferred" and not station.charging:
            run = machine.step(run, machine.Resume(now), policy)
            put(run)
        site = sites.get(station.site_id) if station.site_id else None
        starts = started + jitter_delay(campaign, sid)
        if now < starts and run.stage == campaign.stage:
            out.reasons[sid] = WaitReason("jitter", f"jitter: starts at {_when(starts, site)}")
            continue
        install_at = None
        if campaign.windows_apply and site is not None and site.windows:
            need = install_time(campaign, current) if need is None else need
            w = _window(seen, site, now, need)
            if not w.fits:
                if w.opens is None or w.opens - now > campaign.spec.download_ahead:
                    out.reasons[sid] = WaitReason("window", _window_wait(site, w, need))
                    continue
                install_at = w.opens  # download now, install when the window opens
        if station.charging:  # OCPP L01.FR.06: never while a car is charging
            if run.state == "waiting":
                run = machine.step(run, machine.Defer(now), policy)
                put(run)
            out.reasons[sid] = _charging(run, site)
            continue
        if site is not None:
            if site_updating.get(site.id, 0) >= limits.per_site:
                out.reasons[sid] = WaitReason(
                    "site_limit",
                    f"site {site.id} has {_chargers(site_updating.get(site.id, 0))} updating; "
                    f"per_site = {limits.per_site}",
                )
                continue
            if site_available.get(site.id, 0) - 1 < limits.keep_available:
                available = _chargers(site_available.get(site.id, 0), "available ")
                out.reasons[sid] = WaitReason(
                    "site_floor",
                    f"site {site.id} has {available}; keep_available = {limits.keep_available}",
                )
                continue
            site_updating[site.id] = site_updating.get(site.id, 0) + 1
            site_available[site.id] = site_available.get(site.id, 0) - 1
        in_flight += 1
        out.dispatch.append(run.station_id)
        if install_at is not None:
            out.install_at[run.station_id] = install_at


def _chargers(n: int, kind: str = "") -> str:
    return f"{n} {kind}charger{'' if n == 1 else 's'}"


def _when(at: dt.datetime, site: SiteNow | None) -> str:
    """``at`` in the site's time zone (UTC without a site), to the minute."""
    zone = site.timezone if site is not None else "UTC"
    return f"{at.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M} {zone}"


def _offline(station: FleetStation | None, sites: Mapping[str, SiteNow]) -> WaitReason:
    if station is None:
        return WaitReason("offline", "not in the fleet registry")
    if station.offline_since is None:
        return WaitReason("offline", "offline (never seen)")
    site = sites.get(station.site_id) if station.site_id else None
    return WaitReason(
        "offline", f"offline since {_when(station.offline_since, site)}", station.offline_since
    )


def _charging(run: StationRun, site: SiteNow | None) -> WaitReason:
    """A deferred station: charging, and when it is skipped (``max_deferral``)."""
    text = "charging: a session is active"
    if run.state == "deferred" and run.deadline is not None:
        text += f"; skipped at {_when(run.deadline, site)} if it still is"
    return WaitReason("charging", text)


def _window_wait(site: SiteNow, w: _Window, need: dt.timedelta) -> str:
    """Why a station waits for its window: outside it, or too little of it left."""
    if w.opens is None:
        return f"no window at site {site.id} stays open {_minutes(need)}, the install time"
    local = w.opens.astimezone(ZoneInfo(site.timezone))
    until = f"until {local:%a %H:%M} {site.timezone}"
    if w.close is None:
        return f"outside window {until}"
    return f"{_too_short(site, w.close, need)}; waits {until}"
