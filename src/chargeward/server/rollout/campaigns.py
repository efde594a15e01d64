"""Campaigns in the database: create, approve, pause, resume, abort, retry, roll back, views.

The decisions are in :mod:`chargeward.campaign` (pure); this module loads their inputs, stores
their outputs and writes the audit trail.  The runs of a campaign's stations and the station
reports that move them on are in :mod:`chargeward.server.rollout.campaign_runs`; what the
planner needs of the fleet in :mod:`chargeward.server.rollout.campaign_fleet`.

A campaign is refused at creation when ``keep_available`` leaves a target site no charger it
may ever update (a one-charger site with the default ``keep_available = 1``), unless it is
created with ``allow_unreachable_sites``: those stations then wait with reason ``site_floor``
and the view lists a warning (docs/adr/0032-campaign-waiting-reasons.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.campaign import machine, planner
from chargeward.campaign.codec import run_from_row
from chargeward.campaign.machine import ERRORS, TERMINAL, StationRun
from chargeward.campaign.spec import (
    CampaignSpec,
    CampaignSpecError,
    check_class,
    spec_document,
)
from chargeward.errors import Conflict, NotFound
from chargeward.model.firmware import MAIN_COMPONENT
from chargeward.server.common import inputs
from chargeward.server.rollout import campaign_protocols, campaign_releases
from chargeward.server.rollout.campaign_fleet import busy_elsewhere, eligible
from chargeward.server.rollout.campaign_runs import (
    enrol,
    forget_runs,
    load_runs,
    new_run_row,
    release_stations,
    store_run,
    store_waiting,
    stored_reason,
    stored_spec,
    to_planner,
)
from chargeward.server.store.tables import (
    Campaign,
    CampaignStation,
    Release,
    Station,
)

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
    # Unfinished stations per wait code (planner.WAIT_CODES): why they are not being updated.
    waiting: Mapping[str, int] = field(default_factory=dict)
    warnings: Sequence[str] = ()  # in the answer to its creation: what it cannot do


@dataclass(frozen=True)
class UnreachableSite:
    """A target site where ``keep_available`` leaves no charger that may be updated."""

    site_id: str
    chargers: int  # registered at the site, targeted or not
    stations: tuple[str, ...]  # the campaign's stations there

    def describe(self, keep_available: int) -> str:
        plural = "" if self.chargers == 1 else "s"
        return (
            f"site {self.site_id} has {self.chargers} charger{plural} and keep_available = "
            f"{keep_available} ({', '.join(self.stations[:5])}"
            f"{', ...' if len(self.stations) > 5 else ''})"
        )


async def unreachable_sites(
    s: AsyncSession, keep_available: int, stations: Sequence[str]
) -> list[UnreachableSite]:
    """The sites of ``stations`` whose registered chargers, less ``keep_available``, leave
    none to update: the availability floor can never be met there."""
    if keep_available <= 0:
        return []
    rows = (
        await s.execute(select(Station.id, Station.site_id).where(Station.site_id.is_not(None)))
    ).all()
    chosen = set(stations)
    chargers: dict[str, int] = {}
    mine: dict[str, list[str]] = {}
    for sid, site in rows:
        if site is None:  # not asked for; keeps the type narrow
            continue
        chargers[site] = chargers.get(site, 0) + 1
        if sid in chosen:
            mine.setdefault(site, []).append(sid)
    return [
        UnreachableSite(site, chargers[site], tuple(sorted(ids)))
        for site, ids in sorted(mine.items())
        if chargers[site] - keep_available < 1
    ]


def refuse_unreachable(sites: Sequence[UnreachableSite], keep_available: int) -> CampaignSpecError:
    named = "; ".join(u.describe(keep_available) for u in sites[:5])
    more = f" and {len(sites) - 5} more sites" if len(sites) > 5 else ""
    return CampaignSpecError(
        "concurrency.keep_available",
        f"no charger of {len(sites)} target site{'' if len(sites) == 1 else 's'} can ever be "
        f"updated, keep_available would be broken: {named}{more}. Lower "
        "concurrency.keep_available (0 lets a one-charger site update), target those sites "
        "in a campaign of their own with a lower keep_available, or create the campaign with "
        "allow_unreachable_sites (`--allow-unreachable-sites`) to keep their stations waiting "
        "(reason site_floor)",
    )


def _site_floor(site: UnreachableSite, keep_available: int) -> planner.WaitReason:
    return planner.WaitReason(
        "site_floor",
        f"site {site.site_id} has {site.chargers} charger{'' if site.chargers == 1 else 's'}; "
        f"keep_available = {keep_available}: none may be updated until the site has more",
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


# -- lifecycle ----------------------------------------------------------------------------------


async def create_campaign(
    s: AsyncSession,
    spec: CampaignSpec,
    *,
    actor: str,
    now: dt.datetime,
    approval_threshold: int = DEFAULT_APPROVAL_THRESHOLD,
    rollback_of: int | None = None,
    require_published: bool = False,
    allow_below_floor: bool = False,
    allow_unreachable_sites: bool = False,
) -> CampaignView:
    """Store a campaign with its targeted stations in stages; large ones await approval.

    ``require_published`` (the server has a TUF repository): refuse a release not yet
    published, as ``station update`` does.  A release below the known rollback floor of some
    target stations is refused, or with ``allow_below_floor`` those stations are left out (they
    would refuse it: dispatching to them only fails and trips the gates) and the override is
    recorded in the audit entry.  A target site where ``keep_available`` leaves no charger to
    update (:func:`unreachable_sites`) is refused, or with ``allow_unreachable_sites`` its
    stations stay in, waiting with reason ``site_floor``, the view's ``warnings`` say so and the
    audit entry records the override."""
    release = await s.get(Release, spec.release_id)
    if release is None:
        raise NotFound(f"no release {spec.release_id!r}")
    check_class(spec, release.release_class)
    await campaign_releases.check_usable(s, release, require_published=require_published)
    if (await s.scalars(select(Campaign.id).where(Campaign.name == spec.name))).first():
        raise Conflict(f"a campaign named {spec.name!r} exists already")
    chosen = await eligible(s, spec, release)
    protocols = await campaign_protocols.screen_protocols(s, chosen)  # 1.6 left out: why
    if not (chosen := [sid for sid in chosen if sid not in protocols.refused]):
        raise Conflict(
            "the target selects no station (or every one is in another running campaign)"
            + "".join(f"; {w}" for w in protocols.warnings())
        )
    below = await campaign_releases.below_floor(s, release, chosen)
    if below.floors and not allow_below_floor:
        raise campaign_releases.refuse_below_floor(below, len(chosen))
    chosen = [sid for sid in chosen if sid not in below.floors]
    if not chosen:
        raise Conflict(
            f"every target station has a rollback floor above release {release.version}'s "
            f"security version {release.security_version} ({below.describe()})"
        )
    keep = spec.concurrency.keep_available
    unreachable = await unreachable_sites(s, keep, chosen)
    if unreachable and not allow_unreachable_sites:
        raise refuse_unreachable(unreachable, keep)
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
    run_rows = {sid: new_run_row(row.id, StationRun(sid, stage_of[sid]), now) for sid in chosen}
    for site in unreachable:  # allowed: they wait, and say why from the start
        for sid in site.stations:
            store_waiting(run_rows[sid], _site_floor(site, keep), now)
    s.add_all(run_rows.values())
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
            **protocols.audit_details(),
            **(
                {"allow_below_floor": True, "left_out_below_floor": below.audit_details()}
                if allow_below_floor
                else {}
            ),
            **(
                {
                    "allow_unreachable_sites": True,
                    "unreachable_sites": {
                        u.site_id: {"chargers": u.chargers, "stations": list(u.stations[:1000])}
                        for u in unreachable
                    },
                }
                if unreachable
                else {}
            ),
        },
        now=now,
    )
    await s.flush()
    view = await campaign_view(s, row.id)
    warnings = protocols.warnings() + [
        f"{u.describe(keep)}: its {len(u.stations)} target station"
        f"{'' if len(u.stations) == 1 else 's'} wait (reason site_floor) until the site has "
        "more chargers"
        for u in unreachable
    ]
    if unreachable and spec.gates.success.percent and spec.gates.success.value >= 100:
        warnings.append(
            f"with the success gate at {spec.gates.success}, the stages of those stations "
            "cannot pass until they are updated (the stage deadline will report it)"
        )
    return replace(view, warnings=tuple(warnings)) if warnings else view


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
    to_release: str | None = None,
    actor: str,
    now: dt.datetime,
    approval_threshold: int = DEFAULT_APPROVAL_THRESHOLD,
    require_published: bool = False,
) -> CampaignView:
    """A new campaign installing ``to_release`` on the stations that took this one's release
    (succeeded, or still soaking); this one is aborted first if it still runs.

    Without ``to_release`` the newest release those stations will accept is chosen: another
    version than this campaign's, usable (published, with a TUF repository), for the same
    models, and at or above every one of their known rollback floors.  A release below a floor
    is refused before anything changes: the previous build must be re-signed with a new
    security version first."""
    row = await get_campaign(s, ref)
    took = sorted(
        sid
        for sid, (_, run) in (await load_runs(s, row.id)).items()
        if run.state in ("succeeded", "soaking")
    )
    if not took:
        raise Conflict(f"no station of campaign {row.name} took its release; nothing to roll back")
    floors = await campaign_releases.known_floors(s, took)
    target = await campaign_releases.rollback_release(
        s, row.release_id, to_release, floors, require_published=require_published
    )
    if row.status in ("running", "paused", "awaiting_approval"):
        await abort(s, row.id, actor=actor, now=now)
    spec = replace(
        stored_spec(row),
        name=f"{row.name}-rollback"[:64],
        release_id=target.id,
        selector=replace(stored_spec(row).selector, stations=tuple(took), version=None),
        dynamic=False,
    )
    return await create_campaign(
        s,
        spec,
        actor=actor,
        now=now,
        approval_threshold=approval_threshold,
        rollback_of=row.id,
        require_published=require_published,
        allow_unreachable_sites=True,  # never block a way back; the view warns
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
        if station.id in await busy_elsewhere(s, row.id):
            return None
        run = StationRun(station.id, row.stage)
        s.add(new_run_row(row.id, run, now))
        forget_runs(s)
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
    waiting = await _waiting_counts(s, row)
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
        waiting=waiting,
    )


async def _waiting_counts(s: AsyncSession, row: Campaign) -> dict[str, int]:
    """Unfinished stations per wait code, from the stored reasons (read in the database: the
    runs' JSON is not decoded here)."""
    code = CampaignStation.run[("waiting", "code")].as_string()
    phase = CampaignStation.run["phase"].as_string()
    found = (
        await s.execute(
            select(CampaignStation.state, CampaignStation.stage, code, phase, func.count())
            .where(
                CampaignStation.campaign_id == row.id,
                CampaignStation.state.not_in(sorted(TERMINAL)),
            )
            .group_by(CampaignStation.state, CampaignStation.stage, code, phase)
        )
    ).all()
    out: dict[str, int] = {}
    for state, stage, stored, run_phase, n in found:
        why = planner.current_reason(
            state=state,
            stage=stage,
            phase=run_phase,
            reason=None,
            stored={"code": stored} if stored else None,
            status=row.status,
            campaign_stage=row.stage,
            pause_reason=row.pause_reason,
        )
        if why is not None:
            out[why.code] = out.get(why.code, 0) + int(n)
    return dict(sorted(out.items()))


def _all_states(counts: Mapping[str, int]) -> dict[str, int]:
    return {state: counts.get(state, 0) for state in machine.counts([])}


async def list_campaigns(s: AsyncSession) -> list[CampaignView]:
    ids = (await s.scalars(select(Campaign.id).order_by(Campaign.id))).all()
    return [await campaign_view(s, i) for i in ids]


async def station_runs(
    s: AsyncSession, ref: str | int, station_id: str | None = None
) -> list[tuple[StationRun, planner.WaitReason | None]]:
    """The campaign's runs (or ``station_id``'s alone), by stage and station, each with what
    it waits for now (:func:`campaign_runs.stored_reason`)."""
    row = await get_campaign(s, ref)
    if station_id is None:
        found = [r for r, _ in (await load_runs(s, row.id)).values()]
    else:
        one = await s.get(CampaignStation, (row.id, station_id))
        if one is None:
            raise NotFound(f"station {station_id} is not in campaign {row.name}")
        found = [one]
    found.sort(key=lambda r: (r.stage, r.station_id))
    return [(run_from_row(r.run), stored_reason(r, row)) for r in found]


async def station_run(s: AsyncSession, ref: str | int, station_id: str) -> StationRun:
    row = await get_campaign(s, ref)
    found = await s.get(CampaignStation, (row.id, station_id))
    if found is None:
        raise NotFound(f"station {station_id} is not in campaign {row.name}")
    return run_from_row(found.run)
