"""The campaign scheduler: the leader's loop that plans each running campaign and dispatches.

Each tick, per running campaign, in one transaction: load the runs and the fleet, let stations
that now match join (dynamic targeting), run the pure planner, store every changed run and the
campaign, and store each dispatch (``update_orders.create_update`` plus the run's ``Dispatched``
state with its ``requestId``).  Only after that commit are the UpdateFirmware requests sent
(:func:`chargeward.server.rollout.updates.send_update`), so every transition is persisted before it
acts: a crash between the two leaves a run waiting for an answer that never comes, which its
response timeout turns into one more attempt, never into an extra request beyond the policy.
A new leader simply runs the next tick from what is stored.

A dispatch sent ahead of its window carries ``installDateTime`` (the window's start).  A
station that has not started installing when its window closes is sent the same release
again with the next window's start (:func:`_reschedule`), stored first like every dispatch;
paused campaigns are ticked for that alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.campaign import machine, planner
from chargeward.campaign.machine import StationRun
from chargeward.errors import ChargewardError
from chargeward.server.fleet import alerts
from chargeward.server.rollout import (
    campaign_fleet,
    campaign_runs,
    local_cache,
    release_catalog,
    update_orders,
)
from chargeward.server.rollout.updates import send_update
from chargeward.server.store.tables import Campaign, CampaignStation, FirmwareUpdate, Release

if TYPE_CHECKING:  # the server state holds this layer's services; typing only
    from chargeward.server.state import ServerState

LOG = logging.getLogger("chargeward.campaigns")
JOIN_EVERY_S = 30.0
SEND_CONCURRENCY = 50  # UpdateFirmware requests in flight at once per tick


async def _join(
    s: AsyncSession, row: Campaign, c: planner.Campaign, present: set[str], now: dt.datetime
) -> list[str]:
    """Stations that match the selector now and are in no other live campaign join at the
    last stage (hawkBit/Mender dynamic groups)."""
    release = await s.get(Release, row.release_id)
    if release is None:
        return []
    joined = [
        sid
        for sid in await campaign_fleet.eligible(s, c.spec, release, row.id)
        if sid not in present
    ]
    last = max(len(c.stage_sizes) - 1, 0)
    for sid in joined:  # the planner starts them with their stage
        s.add(campaign_runs.new_run_row(row.id, StationRun(sid, last), now))
    await campaign_runs.enrol(s, row.id, joined)
    if joined:
        await audit.record(
            s,
            actor=audit.SYSTEM,
            action="campaign.joined",
            target=f"campaign:{row.id}",
            details={"stations": joined[:1000], "count": len(joined)},
            now=now,
        )
    return joined


async def tick_campaign(
    state: ServerState, campaign_id: int, *, join: bool = True
) -> list[update_orders.UpdateOrder]:
    """Plan ``campaign_id`` once and send what it dispatches; returns the orders sent.

    ``join``: let newly matching stations join first (dynamic targeting).
    """
    now = state.clock()
    orders: list[update_orders.UpdateOrder] = []
    install_at: dict[int, dt.datetime | None] = {}  # requestId -> installDateTime
    via: dict[int, str | None] = {}  # requestId -> the site's Local Controller location
    router = local_cache.Router(state, campaign_id, now)
    cached: list[int] = []  # publications to take down (the campaign completed)
    # One consistent state: a canary that finished between two of the planner's queries was
    # in neither, and its stage passed without it (the bad release went to the next stage).
    async with state.db.serialized() as s:
        row = await s.get(Campaign, campaign_id)
        if row is None or row.status not in ("running", "paused"):
            return []
        c = campaign_runs.to_planner(row)
        runs, rows = await campaign_runs.load_for_planning(s, row.id)
        join = join and row.status == "running"  # a paused one is only ticked for reschedules
        if join and c.spec.dynamic and await _join(s, row, c, set(runs), now):
            await s.flush()
            runs, rows = await campaign_runs.load_for_planning(s, row.id)
        fleet, sites = await campaign_fleet.fleet_now(s, list(runs))
        result = planner.plan(c, runs, fleet, sites, now)
        for sid, why in result.waiting.items():  # e.g. too little of its window left
            LOG.debug("%s: waits in campaign %s: %s", sid, row.name, why)
        for sid, run in result.runs.items():
            await _close_abandoned(s, runs[sid], run, now)
            campaign_runs.store_run(rows[sid], run, now)
            if run.skipped:  # deferred past max_deferral: reported, no longer waited on
                await alerts.campaign_station_skipped(
                    s, row.id, row.name, sid, run.reason or "", now=now
                )
        if row.status == "running":
            campaign_runs.store_campaign(row, result.campaign, now)
        if result.campaign.status == "completed":
            await campaign_runs.release_stations(s, row.id)
            cached = await local_cache.unpublish_after(s, row.id)
        for note in result.notes:
            await audit.record(
                s,
                actor=audit.SYSTEM,
                action="campaign.progress",
                target=f"campaign:{row.id}",
                details={"name": row.name, "note": note, "stage": result.campaign.stage},
                now=now,
            )
        if result.campaign.status == "paused" and c.status == "running":
            await alerts.campaign_paused(
                s, row.id, row.name, result.campaign.pause_reason or "", now=now
            )
        moving = result.dispatch or result.reschedule
        image = await _primary_sha256(s, row.release_id) if moving else None
        for sid in result.dispatch:
            route = await router.route(s, sid, image) if image else local_cache.DIRECT
            if route.wait:  # the site's Local Controller is publishing the image
                continue
            try:
                order = await update_orders.create_update(
                    s,
                    sid,
                    row.release_id,
                    actor=f"campaign:{row.name}",
                    now=now,
                    require_published=state.repository.initialized,
                )
            except ChargewardError as e:  # e.g. an operator's own update is in progress
                LOG.info("%s: not dispatched for campaign %s: %s", sid, row.name, e)
                continue
            install_at[order.request_id] = result.install_at.get(sid)
            via[order.request_id] = route.location
            run = machine.step(
                result.runs.get(sid, runs[sid]),
                machine.Dispatched(now, order.request_id, install_at[order.request_id]),
                c.policy,
            )
            campaign_runs.store_run(rows[sid], run, now)
            orders.append(order)
        for sid, move in result.reschedule.items():
            moved = await _reschedule(
                s, state, row, c, rows[sid], result.runs.get(sid, runs[sid]), move, now
            )
            if moved is not None:
                install_at[moved.request_id] = move.install_at
                if image:  # the same source as before; a held publication: the server
                    via[moved.request_id] = (await router.route(s, sid, image)).location
                orders.append(moved)
    gate = asyncio.Semaphore(SEND_CONCURRENCY)

    async def send(order: update_orders.UpdateOrder) -> None:
        async with gate:
            await send_update(
                state,
                order,
                retries=c.spec.retries,
                retry_interval=c.spec.retry_interval,
                install_at=install_at.get(order.request_id),
                via=via.get(order.request_id),
            )

    await router.send()  # PublishFirmware to Local Controllers, after the commit
    await asyncio.gather(*(send(o) for o in orders))
    await asyncio.gather(*(local_cache.unpublish(state, i) for i in cached))
    return orders


async def _primary_sha256(s: AsyncSession, release_id: str) -> str | None:
    try:
        return (await release_catalog.primary_image(s, release_id)).sha256
    except ChargewardError:  # no image: create_update says why, per station
        return None


async def _reschedule(
    s: AsyncSession,
    state: ServerState,
    row: Campaign,
    c: planner.Campaign,
    run_row: CampaignStation,
    run: StationRun,
    move: planner.Reschedule,
    now: dt.datetime,
) -> update_orders.UpdateOrder | None:
    """Store a reschedule: the old request is closed, a new one for the same release with
    ``installDateTime`` = ``move.install_at`` is stored with the run (not an attempt)."""
    old = await s.get(FirmwareUpdate, run.request_id) if run.request_id is not None else None
    was = old.outcome if old is not None else None
    if old is not None and old.outcome == "pending":
        old.outcome, old.updated_at = "rescheduled", now
    try:
        order = await update_orders.create_update(
            s,
            run.station_id,
            row.release_id,
            actor=f"campaign:{row.name}",
            now=now,
            require_published=state.repository.initialized,
        )
    except ChargewardError as e:
        if old is not None and was is not None:
            old.outcome = was
        LOG.info("%s: not rescheduled for campaign %s: %s", run.station_id, row.name, e)
        return None
    new = machine.step(
        run, machine.Rescheduled(now, order.request_id, move.install_at, move.reason), c.policy
    )
    campaign_runs.store_run(run_row, new, now)
    await audit.record(
        s,
        actor=audit.SYSTEM,
        action="campaign.rescheduled",
        target=f"campaign:{row.id}",
        details={
            "station": run.station_id,
            "reason": move.reason,
            "install_at": move.install_at.isoformat(),
            "request_id": order.request_id,
            "replaces": run.request_id,
        },
        now=now,
    )
    return order


async def _close_abandoned(
    s: AsyncSession, before: StationRun, after: StationRun, now: dt.datetime
) -> None:
    """A request the campaign gave up on (timed out) is closed, so a retry may be sent."""
    if before.request_id is None or after.state not in ("waiting", "timed_out"):
        return
    if before.state not in planner.UPDATING:
        return
    update = await s.get(FirmwareUpdate, before.request_id)
    if update is not None and update.outcome == "pending":
        update.outcome = "timed_out"
        update.updated_at = now


async def tick(state: ServerState, *, join: bool = True) -> int:
    """One round over every running campaign; returns how many UpdateFirmware were sent."""
    async with state.db.snapshot() as s:
        ids = (
            await s.scalars(select(Campaign.id).where(Campaign.status.in_(("running", "paused"))))
        ).all()
    sent = 0
    for campaign_id in ids:
        try:
            sent += len(await tick_campaign(state, campaign_id, join=join))
        except Exception:  # one campaign's trouble must not stop the others
            LOG.exception("campaign %d: tick failed", campaign_id)
    return sent


async def run_forever(state: ServerState, interval: float) -> None:
    """The leader job (``server.cluster``): a tick every ``interval`` seconds; new stations
    are looked for every :data:`JOIN_EVERY_S` seconds (it reads the whole fleet)."""
    join_every = max(1, round(JOIN_EVERY_S / interval))
    for n in itertools.count():
        await tick(state, join=n % join_every == 0)
        state.metrics.leader_job_runs.labels("campaign_scheduler").inc()
        await asyncio.sleep(interval)
