"""A campaign's station runs in the database: loading and storing them for the planner, and
the station reports that move a run on.

Station reports reach a run through :func:`on_station_event`, called by
:mod:`chargeward.server.stations.station_reports` inside the transaction that stores the
report, so a report and its effect on the campaign commit together.  The campaign service
(create, approve, pause, ..., views) is :mod:`chargeward.server.rollout.campaigns`.

Why a station waits (:class:`chargeward.campaign.planner.WaitReason`) is stored beside the run,
as the key ``waiting`` of the run's JSON (:func:`store_waiting`), which the run's codec does
not read: older rows without it parse as before, and a view shows it without planning again.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import cast

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.campaign import machine, planner
from chargeward.campaign.codec import run_from_row, run_to_row
from chargeward.campaign.machine import TERMINAL, State, StationRun
from chargeward.campaign.spec import (
    CampaignSpec,
    parse_spec,
)
from chargeward.model.firmware import MAIN_COMPONENT
from chargeward.model.reported import reports_release
from chargeward.server.store.tables import (
    Campaign,
    CampaignStation,
    FirmwareUpdate,
    Release,
    Station,
)

LIVE = ("running", "paused", "awaiting_approval")  # a station's reports go to these
WAITING = "waiting"  # the key of the stored WaitReason in a run's JSON
WAITS: frozenset[str] = frozenset({"pending", "waiting", "deferred"})  # states that keep it


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
    """Store ``run``; its stored wait reason stays while it still waits (until the next tick
    says otherwise), and goes once it is sent its update or ends."""
    before = row.run.get(WAITING) if row.run else None
    row.stage = run.stage
    row.state = run.state
    row.request_id = run.request_id
    row.run = run_to_row(run)
    if before is not None and run.state in WAITS:
        row.run[WAITING] = before
    row.deferred = _deferred_charging(run)
    row.started_at = run.started_at
    row.finished_at = run.finished_at
    row.updated_at = now


def store_waiting(
    row: CampaignStation, reason: planner.WaitReason | None, now: dt.datetime
) -> bool:
    """Store why the row's station waits (None: it does not); ``since`` is when it began to
    wait for this code (kept while the code stays).  Writes only a change; True if it did."""
    before = (row.run or {}).get(WAITING)
    if reason is None:
        if before is None:
            return False
        row.run = {k: v for k, v in row.run.items() if k != WAITING}  # a new dict: not tracked
        return True
    if isinstance(before, dict) and before.get("code") == reason.code:
        kept = before.get("since")
        since = dt.datetime.fromisoformat(kept) if isinstance(kept, str) else None
    else:
        since = None
    doc = replace(reason, since=since or reason.since or now).document()
    if doc == before:
        return False
    row.run = {**(row.run or {}), WAITING: doc}
    return True


def stored_reason(row: CampaignStation, campaign: Campaign) -> planner.WaitReason | None:
    """What the row's station waits for now (:func:`planner.current_reason`)."""
    run = row.run or {}
    stored = run.get(WAITING)
    return planner.current_reason(
        state=row.state,
        stage=row.stage,
        phase=run.get("phase"),
        reason=run.get("reason"),
        stored=stored if isinstance(stored, dict) else None,
        status=campaign.status,
        campaign_stage=campaign.stage,
        pause_reason=campaign.pause_reason,
    )


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


def _deferred_charging(run: StationRun) -> bool:
    """Held back by a charging session: by the planner, or by the station's own install gate
    (UpdateFirmware accepted, install waiting for the session to end, OCPP L01.FR.06/07)."""
    if run.state == "deferred":
        return True
    waiting_to_install = run.state in ("dispatched", "downloading", "installing")
    return run.charging_since is not None and waiting_to_install and run.last_status != "Installing"


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
            .order_by(CampaignStation.campaign_id, CampaignStation.station_id)  # lock order
            .with_for_update(of=CampaignStation)  # see _live_run
        )
        for station_row, campaign_row in rows:
            cache[station_row.station_id].append((station_row, campaign_row))
    s.info[RUNS_CACHE] = cache


def forget_runs(s: AsyncSession) -> None:
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
    # Locked as read (PostgreSQL): a campaign tick that changed the run since (timed it out,
    # completed its campaign) commits first and the report sees that, instead of stepping
    # the run it read before and writing over the tick's change (a lost update: a completed
    # campaign with a run still soaking).
    q = (
        select(CampaignStation, Campaign)
        .join(Campaign, Campaign.id == CampaignStation.campaign_id)
        .where(CampaignStation.station_id == station_id, Campaign.status.in_(LIVE))
        .with_for_update(of=CampaignStation)
    )
    if request_id is not None:
        q = q.where(CampaignStation.request_id == request_id)
    else:
        q = q.where(CampaignStation.state.not_in(sorted(TERMINAL)))
    found = (await s.execute(q.order_by(CampaignStation.campaign_id.desc()).limit(1))).first()
    return None if found is None else (found[0], found[1])


async def close_abandoned(
    s: AsyncSession, before: StationRun, after: StationRun, now: dt.datetime
) -> None:
    """A request the campaign gave up on (timed out, or the station idle after it went
    unanswered) is closed, so a retry may be sent."""
    if before.request_id is None or after.state not in ("waiting", "timed_out"):
        return
    if before.state not in planner.UPDATING:
        return
    row = await s.get(FirmwareUpdate, before.request_id)
    if row is not None and row.outcome == "pending":
        row.outcome = "timed_out"
        row.updated_at = now


async def _in_release_terms(
    s: AsyncSession, station: Station, campaign: Campaign, boot: machine.Boot
) -> machine.Boot:
    """``boot`` with its firmwareVersion as the campaign's release version when the station
    reports the release the way the release declares for its model (ADR 0037): the machine
    compares release versions, the translation from what stations say happens here."""
    want = campaign.expected.get(MAIN_COMPONENT)
    got = boot.versions.get(MAIN_COMPONENT)
    if want is None or got is None or got == want:
        return boot
    release = await s.get(Release, campaign.release_id)  # only for a boot that differs
    if release is None or not reports_release(release, station.model, got):
        return boot
    return replace(boot, versions={**boot.versions, MAIN_COMPONENT: want})


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
    if isinstance(event, machine.Boot):
        event = await _in_release_terms(s, station, campaign_row, event)
    run = run_from_row(station_row.run)
    new = machine.step(run, event, to_planner(campaign_row).policy)
    if new != run:
        await close_abandoned(s, run, new, event.at)
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
