"""Campaigns in the database: create, approve, pause, resume, abort, retry, roll back, views,
and the station reports that move a station's run on.

The decisions are in :mod:`chargeward.campaign` (pure); this module loads their inputs, stores
their outputs and writes the audit trail.  Station reports reach a run through
:func:`on_station_event`, called by :mod:`chargeward.server.stations.station_reports` inside the
transaction that stores the report, so a report and its effect on the campaign commit together.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.campaign import machine, planner
from chargeward.campaign.codec import run_from_row, run_to_row
from chargeward.campaign.machine import ERRORS, TERMINAL, State, StationRun
from chargeward.campaign.spec import (
    CampaignSpec,
    StationFacts,
    check_class,
    parse_spec,
    spec_document,
)
from chargeward.errors import Conflict, NotFound
from chargeward.model.firmware import MAIN_COMPONENT
from chargeward.model.fleet import parse_windows
from chargeward.server.common import inputs
from chargeward.server.store.tables import (
    Campaign,
    CampaignStation,
    Release,
    Site,
    Station,
    StationTag,
)

LIVE = ("running", "paused", "awaiting_approval")  # a station's reports go to these
DEFAULT_APPROVAL_THRESHOLD = 100  # larger campaigns need a second person to start them


@dataclass(frozen=True)
class StageView:
    stage: int
    size: int  # stations assigned to this stage
    counts: Mapping[str, int]


@dataclass(frozen=True)
class CampaignView:
    id: int
    name: str
    release_id: str
    version: str
    release_class: str
    status: str
    stage: int
    stages: Sequence[StageView]
    counts: Mapping[str, int]  # over the whole campaign, every state listed
    deferred_charging: int  # waiting for a session to end (included in counts too)
    mean_time_to_update_s: float | None
    pause_reason: str | None
    created_by: str
    approved_by: str | None
    created_at: dt.datetime
    spec: Mapping[str, Any]


# -- loading and saving ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _spec_from_json(text: str) -> CampaignSpec:
    return parse_spec(json.loads(text))


def stored_spec(row: Campaign) -> CampaignSpec:
    """The campaign's spec (stored once at creation), parsed once per process, not per report;
    kept on the loaded row too, so the reports of one batch do not even re-serialise it."""
    spec: CampaignSpec | None = row.__dict__.get("_parsed_spec")
    if spec is None:
        spec = _spec_from_json(json.dumps(row.spec, sort_keys=True))
        row.__dict__["_parsed_spec"] = spec  # not a mapped attribute: never written back
    return spec


def to_planner(row: Campaign) -> planner.Campaign:
    return planner.Campaign(
        id=row.id,
        spec=stored_spec(row),
        release_class=row.release_class,
        expected=dict(row.expected),
        status=cast(planner.CampaignStatus, row.status),
        stage=row.stage,
        stage_started_at=row.stage_started_at,
        stage_sizes=tuple(int(n) for n in row.stage_sizes),
        pause_reason=row.pause_reason,
        gate_baseline=(int(row.gate_baseline[0]), int(row.gate_baseline[1])),
    )


def store_campaign(row: Campaign, c: planner.Campaign, now: dt.datetime) -> None:
    row.status = c.status
    row.stage = c.stage
    row.stage_started_at = c.stage_started_at
    row.pause_reason = c.pause_reason
    row.gate_baseline = list(c.gate_baseline)
    row.updated_at = now
    if c.status in ("completed", "aborted") and row.finished_at is None:
        row.finished_at = now


async def load_runs(
    s: AsyncSession, campaign_id: int
) -> dict[str, tuple[CampaignStation, StationRun]]:
    rows = (
        await s.scalars(select(CampaignStation).where(CampaignStation.campaign_id == campaign_id))
    ).all()
    return {r.station_id: (r, run_from_row(r.run)) for r in rows}


def store_run(row: CampaignStation, run: StationRun, now: dt.datetime) -> None:
    row.stage = run.stage
    row.state = run.state
    row.request_id = run.request_id
    row.run = run_to_row(run)
    row.deferred = _deferred_charging(run)
    row.started_at = run.started_at
    row.finished_at = run.finished_at
    row.updated_at = now


def new_run_row(campaign_id: int, run: StationRun, now: dt.datetime) -> CampaignStation:
    row = CampaignStation(campaign_id=campaign_id, station_id=run.station_id, updated_at=now)
    store_run(row, run, now)
    return row


async def load_for_planning(
    s: AsyncSession, campaign_id: int
) -> tuple[dict[str, StationRun], dict[str, CampaignStation]]:
    """Every run for the planner, and the rows of the unfinished ones (the only ones it can
    change).  Finished runs are built from their columns alone: their stored history is not
    decoded, so a tick over a large campaign reads little more than its live stations."""
    done = (
        await s.execute(
            select(CampaignStation.station_id, CampaignStation.stage, CampaignStation.state).where(
                CampaignStation.campaign_id == campaign_id,
                CampaignStation.state.in_(sorted(TERMINAL)),
            )
        )
    ).all()
    runs = {sid: StationRun(sid, stage, cast(State, state)) for sid, stage, state in done}
    live = (
        await s.scalars(
            select(CampaignStation).where(
                CampaignStation.campaign_id == campaign_id,
                CampaignStation.state.not_in(sorted(TERMINAL)),
            )
        )
    ).all()
    rows = {r.station_id: r for r in live}
    runs.update({r.station_id: run_from_row(r.run) for r in live})
    return runs, rows


async def enrol(s: AsyncSession, campaign_id: int, station_ids: Sequence[str]) -> None:
    """Mark stations as in ``campaign_id`` (see ``Station.campaign_id``)."""
    for chunk in range(0, len(station_ids), 500):
        await s.execute(
            update(Station)
            .where(Station.id.in_(station_ids[chunk : chunk + 500]))
            .values(campaign_id=campaign_id)
        )


async def release_stations(s: AsyncSession, campaign_id: int) -> None:
    """A campaign ended: its stations are in no campaign any more."""
    await s.execute(
        update(Station).where(Station.campaign_id == campaign_id).values(campaign_id=None)
    )


async def get_campaign(s: AsyncSession, ref: str | int) -> Campaign:
    row = None
    number = inputs.row_id(ref)  # ASCII digits only: full-width 1 is no id (issue 26)
    if number is not None:
        row = await s.get(Campaign, number)
    if row is None:
        row = (await s.scalars(select(Campaign).where(Campaign.name == str(ref)))).first()
    if row is None:
        raise NotFound(f"no campaign {ref!r}")
    return row


async def fleet_facts(s: AsyncSession) -> list[StationFacts]:
    tags: dict[str, list[str]] = {}
    for sid, tag in (await s.execute(select(StationTag.station_id, StationTag.tag))).all():
        tags.setdefault(sid, []).append(tag)
    rows = (
        await s.execute(
            select(
                Station.id,
                Station.model,
                Station.hardware_revision,
                Station.firmware_version,
                Station.customer,
                Station.site_id,
            )
        )
    ).all()
    return [
        StationFacts(
            id=r[0],
            model=r[1],
            hardware_revision=r[2],
            firmware_version=r[3],
            customer=r[4],
            site_id=r[5],
            tags=tuple(tags.get(r[0], ())),
        )
        for r in rows
    ]


async def _busy_elsewhere(s: AsyncSession, campaign_id: int | None) -> set[str]:
    """Stations with an unfinished run in another live campaign."""
    q = (
        select(CampaignStation.station_id)
        .join(Campaign, Campaign.id == CampaignStation.campaign_id)
        .where(Campaign.status.in_(LIVE), CampaignStation.state.not_in(sorted(TERMINAL)))
    )
    if campaign_id is not None:
        q = q.where(CampaignStation.campaign_id != campaign_id)
    return set((await s.scalars(q)).all())


async def eligible(
    s: AsyncSession, spec: CampaignSpec, release: Release, campaign_id: int | None = None
) -> list[str]:
    """Stations the selector picks that can run ``release`` (its models) and are in no other
    live campaign than ``campaign_id``."""
    models = set(release.hardware_models["models"])
    busy = await _busy_elsewhere(s, campaign_id)
    facts = [f for f in await fleet_facts(s) if f.model is None or f.model in models]
    return [sid for sid in planner.targets(spec, facts) if sid not in busy]


# -- lifecycle ----------------------------------------------------------------------------------


async def create_campaign(
    s: AsyncSession,
    spec: CampaignSpec,
    *,
    actor: str,
    now: dt.datetime,
    approval_threshold: int = DEFAULT_APPROVAL_THRESHOLD,
    rollback_of: int | None = None,
) -> CampaignView:
    """Store a campaign with its targeted stations in stages; large ones await approval."""
    release = await s.get(Release, spec.release_id)
    if release is None:
        raise NotFound(f"no release {spec.release_id!r}")
    check_class(spec, release.release_class)
    if (await s.scalars(select(Campaign.id).where(Campaign.name == spec.name))).first():
        raise Conflict(f"a campaign named {spec.name!r} exists already")
    chosen = await eligible(s, spec, release)
    if not chosen:
        raise Conflict(
            "the target selects no station (or every one is in another running campaign)"
        )
    needs_approval = len(chosen) > approval_threshold
    row = Campaign(
        name=spec.name,
        release_id=release.id,
        release_class=release.release_class,
        spec=spec_document(spec),
        # BootNotification reports one firmwareVersion (component "main"): the release version,
        # which every image of a multi-image release carries in its signed header.
        expected={MAIN_COMPONENT: release.version},
        status="awaiting_approval" if needs_approval else "running",
        stage=0,
        stage_sizes=[],
        stage_started_at=None if needs_approval else now,
        gate_baseline=[0, 0],
        rollback_of=rollback_of,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    s.add(row)
    await s.flush()
    sizes, stage_of = planner.assign_stages(row.id, spec, chosen)
    row.stage_sizes = list(sizes)
    s.add_all(new_run_row(row.id, StationRun(sid, stage_of[sid]), now) for sid in chosen)
    await enrol(s, row.id, chosen)
    await audit.record(
        s,
        actor=actor,
        action="campaign.created",
        target=f"campaign:{row.id}",
        details={
            "name": spec.name,
            "release_id": release.id,
            "version": release.version,
            "stations": len(chosen),
            "stage_sizes": list(sizes),
            "needs_approval": needs_approval,
            "rollback_of": rollback_of,
        },
        now=now,
    )
    await s.flush()
    return await campaign_view(s, row.id)


async def _transition(
    s: AsyncSession, ref: str | int, *, actor: str, now: dt.datetime, action: str, **details: Any
) -> Campaign:
    row = await get_campaign(s, ref)
    await audit.record(
        s,
        actor=actor,
        action=f"campaign.{action}",
        target=f"campaign:{row.id}",
        details={"name": row.name, **details},
        now=now,
    )
    row.updated_at = now
    return row


async def approve(s: AsyncSession, ref: str | int, *, actor: str, now: dt.datetime) -> CampaignView:
    row = await get_campaign(s, ref)
    if row.status != "awaiting_approval":
        raise Conflict(f"campaign {row.name} is {row.status}, not awaiting approval")
    if actor == row.created_by:
        raise Conflict("the two-person rule: the campaign's creator cannot approve it")
    row = await _transition(s, ref, actor=actor, now=now, action="approved")
    row.status, row.approved_by, row.stage_started_at = "running", actor, now
    return await campaign_view(s, row.id)


async def pause(s: AsyncSession, ref: str | int, *, actor: str, now: dt.datetime) -> CampaignView:
    row = await get_campaign(s, ref)
    if row.status != "running":
        raise Conflict(f"campaign {row.name} is {row.status}, not running")
    row = await _transition(s, ref, actor=actor, now=now, action="paused")
    row.status, row.pause_reason = "paused", f"paused by {actor}"
    return await campaign_view(s, row.id)


async def resume(s: AsyncSession, ref: str | int, *, actor: str, now: dt.datetime) -> CampaignView:
    """Run again; the errors so far are acknowledged, so the gate counts only new ones."""
    row = await get_campaign(s, ref)
    if row.status != "paused":
        raise Conflict(f"campaign {row.name} is {row.status}, not paused")
    runs = [r for _, r in (await load_runs(s, row.id)).values() if r.stage <= row.stage]
    errors = sum(r.state in ERRORS for r in runs)
    finished = sum(r.state in TERMINAL for r in runs)
    row = await _transition(
        s, ref, actor=actor, now=now, action="resumed", acknowledged_errors=errors
    )
    row.status, row.pause_reason, row.gate_baseline = "running", None, [errors, finished]
    return await campaign_view(s, row.id)


async def abort(s: AsyncSession, ref: str | int, *, actor: str, now: dt.datetime) -> CampaignView:
    """Cancel every station not yet installing; those installing finish and are gated."""
    row = await get_campaign(s, ref)
    if row.status in ("aborted", "completed"):
        raise Conflict(f"campaign {row.name} is {row.status} already")
    c = to_planner(row)
    canceled = 0
    for station_row, run in (await load_runs(s, row.id)).values():
        new = machine.step(run, machine.Abort(now), c.policy)
        if new != run:
            canceled += 1
            store_run(station_row, new, now)
    row = await _transition(s, ref, actor=actor, now=now, action="aborted", canceled=canceled)
    row.status, row.finished_at = "aborted", now
    await release_stations(s, row.id)
    return await campaign_view(s, row.id)


async def retry_failed(
    s: AsyncSession, ref: str | int, *, actor: str, now: dt.datetime
) -> CampaignView:
    row = await get_campaign(s, ref)
    if row.status in ("aborted",):
        raise Conflict(f"campaign {row.name} is aborted")
    c = to_planner(row)
    retried = []
    for station_row, run in (await load_runs(s, row.id)).values():
        new = machine.step(run, machine.Retry(now), c.policy)
        if new != run:
            retried.append(run.station_id)
            store_run(station_row, new, now)
    if not retried:
        raise Conflict(f"campaign {row.name} has no failed station to retry")
    row = await _transition(s, ref, actor=actor, now=now, action="retried", stations=retried)
    if row.status == "completed":
        row.status, row.finished_at = "running", None
        await enrol(s, row.id, retried)
    return await campaign_view(s, row.id)


async def rollback(
    s: AsyncSession,
    ref: str | int,
    *,
    to_release: str,
    actor: str,
    now: dt.datetime,
    approval_threshold: int = DEFAULT_APPROVAL_THRESHOLD,
) -> CampaignView:
    """A new campaign installing ``to_release`` on the stations that took this one's release
    (succeeded, or still soaking); this one is aborted first if it still runs."""
    row = await get_campaign(s, ref)
    took = sorted(
        sid
        for sid, (_, run) in (await load_runs(s, row.id)).items()
        if run.state in ("succeeded", "soaking")
    )
    if not took:
        raise Conflict(f"no station of campaign {row.name} took its release; nothing to roll back")
    if row.status in ("running", "paused", "awaiting_approval"):
        await abort(s, row.id, actor=actor, now=now)
    spec = replace(
        stored_spec(row),
        name=f"{row.name}-rollback"[:64],
        release_id=to_release,
        selector=replace(stored_spec(row).selector, stations=tuple(took), version=None),
        dynamic=False,
    )
    return await create_campaign(
        s, spec, actor=actor, now=now, approval_threshold=approval_threshold, rollback_of=row.id
    )


async def join_security_campaign(
    s: AsyncSession, station: Station, version: str, *, now: dt.datetime
) -> int | None:
    """A station whose periodic check found security release ``version`` joins the running
    security campaign for that release and its model, at the campaign's current stage (still
    gated, still in its windows unless the campaign bypasses them).  Returns the campaign id."""
    q = (
        select(Campaign, Release)
        .join(Release, Release.id == Campaign.release_id)
        .where(
            Campaign.status.in_(("running", "paused")),
            Campaign.release_class == "security",
            Release.version == version,
        )
        .order_by(Campaign.id.desc())
    )
    for row, release in (await s.execute(q)).all():
        if station.model is not None and station.model not in release.hardware_models["models"]:
            continue
        if await s.get(CampaignStation, (row.id, station.id)) is not None:
            return row.id  # already in it
        if station.id in await _busy_elsewhere(s, row.id):
            return None
        run = StationRun(station.id, row.stage)
        s.add(new_run_row(row.id, run, now))
        _forget_runs(s)
        station.campaign_id = row.id
        await audit.record(
            s,
            actor=f"station:{station.id}",
            action="campaign.joined",
            target=f"campaign:{row.id}",
            details={"stations": [station.id], "count": 1, "reason": "security update reported"},
            now=now,
        )
        return row.id
    return None


# -- views ----------------------------------------------------------------------------------------


async def campaign_view(s: AsyncSession, ref: str | int) -> CampaignView:
    row = await get_campaign(s, ref)
    version = (await s.scalar(select(Release.version).where(Release.id == row.release_id))) or ""
    where = CampaignStation.campaign_id == row.id
    tally = (
        await s.execute(
            select(CampaignStation.stage, CampaignStation.state, func.count())
            .where(where)
            .group_by(CampaignStation.stage, CampaignStation.state)
        )
    ).all()
    per_stage: dict[int, dict[str, int]] = {}
    for stage, state, n in tally:
        per_stage.setdefault(stage, {})[state] = int(n)
    stages = [
        StageView(k, sum(per_stage.get(k, {}).values()), _all_states(per_stage.get(k, {})))
        for k in range(max(len(row.stage_sizes), 1))
    ]
    overall: dict[str, int] = {}
    for counts in per_stage.values():
        for state, n in counts.items():
            overall[state] = overall.get(state, 0) + n
    times = (
        await s.execute(
            select(CampaignStation.started_at, CampaignStation.finished_at).where(
                where, CampaignStation.state == "succeeded"
            )
        )
    ).all()
    durations = [(b - a).total_seconds() for a, b in times if a is not None and b is not None]
    deferred = await s.scalar(
        select(func.count()).select_from(CampaignStation).where(where, CampaignStation.deferred)
    )
    return CampaignView(
        id=row.id,
        name=row.name,
        release_id=row.release_id,
        version=version,
        release_class=row.release_class,
        status=row.status,
        stage=row.stage,
        stages=stages,
        counts=_all_states(overall),
        deferred_charging=int(deferred or 0),
        mean_time_to_update_s=sum(durations) / len(durations) if durations else None,
        pause_reason=row.pause_reason,
        created_by=row.created_by,
        approved_by=row.approved_by,
        created_at=row.created_at,
        spec=row.spec,
    )


def _all_states(counts: Mapping[str, int]) -> dict[str, int]:
    return {state: counts.get(state, 0) for state in machine.counts([])}


def _deferred_charging(run: StationRun) -> bool:
    """Held back by a charging session: by the planner, or by the station's own install gate
    (UpdateFirmware accepted, install waiting for the session to end, OCPP L01.FR.06/07)."""
    if run.state == "deferred":
        return True
    waiting_to_install = run.state in ("dispatched", "downloading", "installing")
    return run.charging_since is not None and waiting_to_install and run.last_status != "Installing"


async def list_campaigns(s: AsyncSession) -> list[CampaignView]:
    ids = (await s.scalars(select(Campaign.id).order_by(Campaign.id))).all()
    return [await campaign_view(s, i) for i in ids]


async def station_run(s: AsyncSession, ref: str | int, station_id: str) -> StationRun:
    row = await get_campaign(s, ref)
    found = await s.get(CampaignStation, (row.id, station_id))
    if found is None:
        raise NotFound(f"station {station_id} is not in campaign {row.name}")
    return run_from_row(found.run)


# -- station reports ------------------------------------------------------------------------------


RUNS_CACHE = "chargeward.campaign_runs"  # session.info: {station id: [(run row, campaign)]}


async def prefetch_runs(s: AsyncSession, station_ids: Sequence[str]) -> None:
    """Load the live-campaign runs of ``station_ids`` into the session in one query, for the
    :func:`on_station_event` calls of a group-commit batch (which then query nothing)."""
    cache: dict[str, list[tuple[CampaignStation, Campaign]]] = {sid: [] for sid in station_ids}
    if station_ids:
        rows = await s.execute(
            select(CampaignStation, Campaign)
            .join(Campaign, Campaign.id == CampaignStation.campaign_id)
            .where(CampaignStation.station_id.in_(sorted(station_ids)), Campaign.status.in_(LIVE))
        )
        for station_row, campaign_row in rows:
            cache[station_row.station_id].append((station_row, campaign_row))
    s.info[RUNS_CACHE] = cache


def _forget_runs(s: AsyncSession) -> None:
    """A run was added in this session: prefetched runs no longer tell the whole story."""
    s.info.pop(RUNS_CACHE, None)


async def _live_run(
    s: AsyncSession, station_id: str, request_id: int | None
) -> tuple[CampaignStation, Campaign] | None:
    """The run a report belongs to: by ``request_id`` when it names one, else the station's
    unfinished run in its newest live campaign."""
    cached = s.info.get(RUNS_CACHE, {}).get(station_id)
    if cached is not None:  # the same rule as the query below, on the loaded rows
        mine = [
            (r, c)
            for r, c in cached
            if c.status in LIVE
            and (r.request_id == request_id if request_id is not None else r.state not in TERMINAL)
        ]
        return max(mine, key=lambda rc: rc[1].id, default=None)
    q = (
        select(CampaignStation, Campaign)
        .join(Campaign, Campaign.id == CampaignStation.campaign_id)
        .where(CampaignStation.station_id == station_id, Campaign.status.in_(LIVE))
    )
    if request_id is not None:
        q = q.where(CampaignStation.request_id == request_id)
    else:
        q = q.where(CampaignStation.state.not_in(sorted(TERMINAL)))
    found = (await s.execute(q.order_by(CampaignStation.campaign_id.desc()).limit(1))).first()
    return None if found is None else (found[0], found[1])


async def on_station_event(
    s: AsyncSession,
    station_id: str,
    event: machine.Event,
    *,
    request_id: int | None = None,
) -> StationRun | None:
    """Apply a station's report to its run in a live campaign (by ``request_id`` when the
    report names one, so a status always reaches the campaign that sent the request)."""
    station = await s.get(Station, station_id)  # loaded already: no query
    if station is None or station.campaign_id is None:
        return None
    found = await _live_run(s, station_id, request_id)
    if found is None:
        return None
    station_row, campaign_row = found
    run = run_from_row(station_row.run)
    new = machine.step(run, event, to_planner(campaign_row).policy)
    if new != run:
        store_run(station_row, new, event.at)
        if new.state != run.state:
            await audit.record(
                s,
                actor=f"station:{station_id}",
                action="campaign.station",
                target=f"campaign:{campaign_row.id}",
                details={
                    "station": station_id,
                    "from": run.state,
                    "to": new.state,
                    "reason": new.reason,
                    "request_id": new.request_id,
                },
                now=event.at,
            )
    return new


# -- what the planner needs of the fleet ---------------------------------------------------------


async def fleet_now(
    s: AsyncSession, station_ids: Sequence[str]
) -> tuple[dict[str, planner.FleetStation], dict[str, planner.SiteNow]]:
    """The stations of a campaign and their sites as the planner sees them now."""
    rows = (
        await s.execute(
            select(Station.id, Station.site_id, Station.connected, Station.active_transactions)
        )
    ).all()
    updating = set(
        (
            await s.scalars(
                select(CampaignStation.station_id)
                .join(Campaign, Campaign.id == CampaignStation.campaign_id)
                .where(
                    Campaign.status.in_(LIVE),
                    CampaignStation.state.in_(sorted(planner.UPDATING)),
                )
            )
        ).all()
    )
    wanted = set(station_ids)
    fleet: dict[str, planner.FleetStation] = {}
    per_site: dict[str, list[int]] = {}  # site -> [available, updating]
    for sid, site, up, transactions in rows:
        if sid in wanted:
            fleet[sid] = planner.FleetStation(sid, site, bool(up), bool(transactions))
        if site is not None:
            tally = per_site.setdefault(site, [0, 0])
            if sid in updating:
                tally[1] += 1
            elif up:
                tally[0] += 1
    sites: dict[str, planner.SiteNow] = {}
    for site in (await s.scalars(select(Site).where(Site.id.in_(sorted(per_site))))).all():
        available, busy = per_site.get(site.id, [0, 0])
        sites[site.id] = planner.SiteNow(
            site.id,
            site.timezone,
            tuple(parse_windows(site.maintenance_windows or [])),
            available,
            busy,
        )
    return fleet, sites
