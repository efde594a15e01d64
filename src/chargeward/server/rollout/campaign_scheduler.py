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

Every station left waiting keeps why (the planner's ``WaitReason``, or what sending found:
the release is not published, the site's cache is not ready), stored with its run
(:func:`campaign_runs.store_waiting`) so the API, the CLI and the dashboard show it without
planning again.  A stage past its ``stage_deadline`` raises one ``campaign_stage_overdue``
alert (and pauses the campaign if the spec says so); the alert is also the mark that the stage
was reported, so a resumed campaign is not paused again for it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.audit import sequencer as audit_sequencer
from chargeward.campaign import machine, planner
from chargeward.campaign.machine import StationRun
from chargeward.errors import ChargewardError
from chargeward.server.fleet import alerts, delivery
from chargeward.server.rollout import (
    campaign_fleet,
    campaign_runs,
    local_cache,
    release_catalog,
    unanswered,
    update_orders,
)
from chargeward.server.rollout.updates import send_update
from chargeward.server.store.db import LeadershipLost, lost_to_concurrent
from chargeward.server.store.tables import (
    Campaign,
    CampaignStation,
    FirmwareUpdate,
    Release,
    Station,
)

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
    external: set[str] = set()  # an external CSMS sends theirs (ADR 0042, /integration)
    # One consistent state: a canary that finished between two of the planner's queries was
    # in neither, and its stage passed without it (the bad release went to the next stage).
    async with state.db.serialized() as s:
        # Its audit entries through the queue (PostgreSQL): the tick reads a snapshot, and
        # appending to the log would update the head that every other audited write moves,
        # a serialization failure whenever one committed since the tick began.
        audit_sequencer.defer(s)
        row = await s.get(Campaign, campaign_id)
        if row is None or row.status not in ("running", "paused"):
            return []
        c = campaign_runs.to_planner(row)
        c = replace(c, overdue_noted=await _overdue_noted(s, c, now))
        runs, rows = await campaign_runs.load_for_planning(s, row.id)
        join = join and row.status == "running"  # a paused one is only ticked for reschedules
        if join and c.spec.dynamic and await _join(s, row, c, set(runs), now):
            await s.flush()
            runs, rows = await campaign_runs.load_for_planning(s, row.id)
        fleet, sites = await campaign_fleet.fleet_now(s, list(runs))
        fleet = await _offline_since(s, row.id, fleet)
        result = planner.plan(c, runs, fleet, sites, now)
        confirm = unanswered.unanswered({**runs, **result.runs}.values())
        waits = dict(result.reasons)  # why each waiting station waits; sending adds more
        for sid, run in result.runs.items():
            await campaign_runs.close_abandoned(s, runs[sid], run, now)
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
        if result.overdue is not None:  # once per stage: the alert marks it reported
            await alerts.campaign_stage_overdue(s, row.id, row.name, result.overdue, now=now)
        paused_overdue = result.overdue is not None and result.overdue.paused
        if result.campaign.status == "paused" and c.status == "running" and not paused_overdue:
            await alerts.campaign_paused(
                s, row.id, row.name, result.campaign.pause_reason or "", now=now
            )
        moving = result.dispatch or result.reschedule
        image = await _primary_sha256(s, row.release_id) if moving else None
        for sid in result.dispatch:
            route = await router.route(s, sid, image) if image else local_cache.DIRECT
            if route.wait:  # the site's Local Controller is publishing the image
                waits[sid] = planner.WaitReason(
                    "site_cache", "the site's Local Controller is publishing the image"
                )
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
                waits[sid] = await _not_sent(s, state, row.release_id, e)
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
        if orders:
            external = await delivery.external_among(s, (o.station_id for o in orders))
        if result.assessed:  # every waiting station was looked at: store why each waits
            for sid, run_row in rows.items():
                if run_row.state != "pending":  # pending: its stage has not started
                    campaign_runs.store_waiting(run_row, waits.get(sid), now)
            for sid, why in waits.items():
                LOG.debug("%s: waits in campaign %s: %s", sid, row.name, why.text)
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
    await asyncio.gather(*(send(o) for o in orders if o.station_id not in external))
    await unanswered.ask(state, confirm)  # requests whose answer was lost: still at work?
    await asyncio.gather(*(local_cache.unpublish(state, i) for i in cached))
    return orders


async def _overdue_noted(s: AsyncSession, c: planner.Campaign, now: dt.datetime) -> bool:
    """Whether the current stage's deadline passed and was reported already (its alert, in
    any state, exists); only looked up once the deadline has passed."""
    started = c.stage_started_at
    if c.status != "running" or started is None or now < started + c.spec.stage_deadline:
        return False
    return await alerts.stage_overdue_raised(s, c.id, c.stage)


async def _offline_since(
    s: AsyncSession, campaign_id: int, fleet: dict[str, planner.FleetStation]
) -> dict[str, planner.FleetStation]:
    """``fleet`` with the last-seen time of the campaign's waiting stations that are offline
    (their wait reason says since when)."""
    seen = (
        await s.execute(
            select(Station.id, Station.last_seen)
            .join(CampaignStation, CampaignStation.station_id == Station.id)
            .where(
                CampaignStation.campaign_id == campaign_id,
                CampaignStation.state.in_(sorted(campaign_runs.WAITS)),
                Station.connected.is_(False),
            )
        )
    ).all()
    for sid, last_seen in seen:
        if sid in fleet and last_seen is not None:
            fleet[sid] = replace(fleet[sid], offline_since=last_seen)
    return fleet


async def _not_sent(
    s: AsyncSession, state: ServerState, release_id: str, e: ChargewardError
) -> planner.WaitReason:
    """Why a dispatch the planner chose could not be stored: an unpublished release (with a
    TUF repository), or what the refusal says."""
    if state.repository.initialized:
        published, _ = await release_catalog.publication(s, release_id)
        if published != "published":
            return planner.WaitReason("release_unpublished", str(e)[:300])
    return planner.WaitReason("not_sent", str(e)[:300])


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
        except LeadershipLost:  # another node leads now: stop, do not go on to the next
            raise
        except DBAPIError as e:
            if (why := lost_to_concurrent(e)) is None:
                LOG.exception("campaign %d: tick failed", campaign_id)
            else:  # nothing was written; the next round plans on what won
                LOG.info("campaign %d: tick lost to a concurrent write (%s)", campaign_id, why)
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
