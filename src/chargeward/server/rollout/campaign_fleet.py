"""What the campaign planner needs of the fleet: the stations a selector may pick (facts,
eligibility: not busy in another live campaign) and the stations and sites as they are now.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward.campaign import planner
from chargeward.campaign.machine import TERMINAL
from chargeward.campaign.spec import (
    CampaignSpec,
    StationFacts,
)
from chargeward.model.fleet import parse_windows
from chargeward.server.rollout.campaign_runs import LIVE
from chargeward.server.store.tables import (
    Campaign,
    CampaignStation,
    Release,
    Site,
    Station,
    StationTag,
)


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


async def busy_elsewhere(s: AsyncSession, campaign_id: int | None) -> set[str]:
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
    busy = await busy_elsewhere(s, campaign_id)
    facts = [f for f in await fleet_facts(s) if f.model is None or f.model in models]
    return [sid for sid in planner.targets(spec, facts) if sid not in busy]


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
