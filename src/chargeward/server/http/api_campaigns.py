"""REST API for rollout campaigns.

    POST   /api/v1/campaigns                       create from a campaign document (JSON; the
                                                   CLI also reads TOML); large ones await approval
    GET    /api/v1/campaigns                       every campaign with its counts
    GET    /api/v1/campaigns/{ref}                 one (by id or name): counts per stage, mean
                                                   time to update, stations per wait code
    GET    /api/v1/campaigns/{ref}/stations        per-station state ?state=failed, and why
                                                   each waiting one waits (waiting_reason)
    GET    /api/v1/campaigns/{ref}/stations/{id}   one station's run and timeline
    POST   /api/v1/campaigns/{ref}/approve         the two-person rule (not the creator)
    POST   /api/v1/campaigns/{ref}/pause|resume|abort|retry
    POST   /api/v1/campaigns/{ref}/rollback        {"release": <previous release id>} (default:
                                                   the newest release the stations accept)
    GET    /api/v1/campaign-releases               releases a campaign may use, and how many
                                                   stations (?campaign=<ref>: that one's) would
                                                   refuse each (rollback floor above it)

Every change is audited with the caller as actor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward.campaign.codec import run_to_row
from chargeward.campaign.planner import WaitReason
from chargeward.campaign.spec import parse_spec
from chargeward.errors import InvalidValue, NotFound
from chargeward.server.auth import tenancy
from chargeward.server.http.api import Operator
from chargeward.server.rollout import (
    campaign_releases,
    campaign_runs,
    campaigns,
    link_budget,
    local_cache,
)
from chargeward.server.rollout.campaigns import CampaignView
from chargeward.server.state import ServerState
from chargeward.server.store.tables import Release

router = APIRouter(tags=["campaigns"])


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.chargeward
    return state


class WaitingReasonOut(BaseModel):
    """Why a station is not being updated now (chargeward.campaign.planner.WAIT_CODES)."""

    code: str
    text: str
    since: str | None = None  # when it began to wait for this code, if known


class StationRunOut(BaseModel):
    station_id: str
    stage: int
    state: str
    attempts: int
    request_id: int | None
    last_status: str | None
    reason: str | None
    started_at: str | None
    finished_at: str | None
    timeline: list[list[str]]
    install_at: str | None = None  # installDateTime of the current request, if any
    reschedules: int = 0  # requests re-sent to keep the install inside a window
    waiting_reason: WaitingReasonOut | None = None  # None: in flight or finished


class StationBytesOut(BaseModel):
    station_id: str
    bytes_sent: int
    requests: int  # download requests (a resumed download is one more)


class SiteCacheOut(BaseModel):
    site_id: str
    station_id: str  # the Local Controller
    sha256: str
    status: str
    locations: list[str]
    reason: str | None


class CampaignDownloadsOut(BaseModel):
    """What the server sent for a campaign: per station (Local Controllers included) and in
    all, and the site caches it used."""

    campaign_id: int
    bytes_sent: int
    stations: list[StationBytesOut]
    local_caches: list[SiteCacheOut]


class RollbackIn(BaseModel):
    release: str | None = None  # default: the newest release the stations will accept


class CandidateOut(BaseModel):
    id: str
    version: str
    security_version: int
    hardware_models: list[str]
    state: str
    usable: bool  # a campaign may use it: published, or the server has no TUF repository
    below_floor: int  # stations whose known rollback floor is above it (they would refuse it)
    highest_floor: int


def _run_out(row: dict[str, Any], why: WaitReason | None = None) -> StationRunOut:
    fields = {k: row[k] for k in StationRunOut.model_fields if k != "waiting_reason"}
    reason = WaitingReasonOut(**why.document()) if why is not None else None
    return StationRunOut(**fields, waiting_reason=reason)


@router.post("/api/v1/campaigns", response_model=CampaignView, status_code=201)
async def create_campaign(
    request: Request, who: Operator, document: Annotated[dict[str, Any], Body()]
) -> CampaignView:
    """Create a campaign.  ``allow_below_floor: true`` beside the campaign document leaves out
    (and audits) the target stations whose rollback floor is above the release; without it
    such a release is refused, as is an unpublished one when the server has a TUF repository.
    A target site where ``keep_available`` leaves no charger to update is refused (422, field
    ``concurrency.keep_available``), or with ``allow_unreachable_sites: true`` its stations
    wait with reason ``site_floor`` and the answer's ``warnings`` say so (audited)."""
    state = _state(request)
    customer = tenancy.customer_of(request)
    document = dict(document)
    allow_below_floor = document.pop("allow_below_floor", False)
    if not isinstance(allow_below_floor, bool):
        raise InvalidValue("allow_below_floor must be true or false")
    allow_unreachable = document.pop("allow_unreachable_sites", False)
    if not isinstance(allow_unreachable, bool):
        raise InvalidValue("allow_unreachable_sites must be true or false")
    spec = tenancy.scope_campaign(parse_spec(document), customer)

    async def create(s: AsyncSession) -> CampaignView:
        await tenancy.check_release(s, spec.release_id, customer)
        return await campaigns.create_campaign(
            s,
            spec,
            actor=who,
            now=state.clock(),
            approval_threshold=state.campaign_approval_threshold,
            require_published=state.repository.initialized,
            allow_below_floor=allow_below_floor,
            allow_unreachable_sites=allow_unreachable,
        )

    return await state.db.write(create)  # run again if it loses to a concurrent write


@router.get("/api/v1/campaign-releases", response_model=list[CandidateOut])
async def campaign_releases_list(
    request: Request, _: Operator, campaign: str | None = None
) -> list[CandidateOut]:
    """Every release with whether a campaign may use it and how many stations would refuse it
    (their known rollback floor is above it): of the fleet, or of the stations that took
    ``campaign``'s release (what a rollback of it would target)."""
    state = _state(request)
    customer = tenancy.customer_of(request)
    async with state.db.snapshot() as s:
        stations = None
        if campaign is not None:
            row = await campaigns.get_campaign(s, campaign)
            if customer is not None and tenancy.campaign_customer(row.spec) != customer:
                raise NotFound(f"no campaign {campaign!r}")  # worded as for one that is not
            runs = (await campaign_runs.load_runs(s, row.id)).values()
            stations = [r.station_id for _, r in runs if r.state in ("succeeded", "soaking")]
        elif customer is not None:
            stations = list((await s.scalars(tenancy.stations_of(customer))).all())
        found = await campaign_releases.candidates(
            s, require_published=state.repository.initialized, station_ids=stations
        )
        customers = dict((await s.execute(select(Release.id, Release.customer))).all())
    return [
        CandidateOut(**vars(c))
        for c in found
        if tenancy.release_visible(customers.get(c.id), customer)
    ]


@router.get("/api/v1/campaigns", response_model=list[CampaignView])
async def list_campaigns(request: Request, _: Operator) -> list[CampaignView]:
    customer = tenancy.customer_of(request)
    async with _state(request).db.snapshot() as s:
        found = await campaigns.list_campaigns(s)
    if customer is None:
        return found
    return [c for c in found if tenancy.campaign_customer(c.spec) == customer]


@router.get("/api/v1/campaigns/{ref}", response_model=CampaignView)
async def get_campaign(ref: str, request: Request, _: Operator) -> CampaignView:
    async with _state(request).db.snapshot() as s:
        return await campaigns.campaign_view(s, ref)


@router.get("/api/v1/campaigns/{ref}/stations", response_model=list[StationRunOut])
async def campaign_stations(
    ref: str, request: Request, _: Operator, state: str | None = None
) -> list[StationRunOut]:
    async with _state(request).db.snapshot() as s:
        found = await campaigns.station_runs(s, ref)
    return [_run_out(run_to_row(r), why) for r, why in found if state is None or r.state == state]


@router.get("/api/v1/campaigns/{ref}/stations/{station_id}", response_model=StationRunOut)
async def campaign_station(
    ref: str, station_id: str, request: Request, _: Operator
) -> StationRunOut:
    async with _state(request).db.snapshot() as s:
        ((run, why),) = await campaigns.station_runs(s, ref, station_id)
    return _run_out(run_to_row(run), why)


@router.get("/api/v1/campaigns/{ref}/downloads", response_model=CampaignDownloadsOut)
async def campaign_downloads(ref: str, request: Request, _: Operator) -> CampaignDownloadsOut:
    async with _state(request).db.snapshot() as s:
        campaign_id = (await campaigns.get_campaign(s, ref)).id
        usage = await link_budget.campaign_usage(s, campaign_id)
        caches = [
            SiteCacheOut(
                site_id=c.site_id,
                station_id=c.station_id,
                sha256=c.sha256,
                status=c.status,
                locations=[str(u) for u in c.locations],
                reason=c.reason,
            )
            for c in await local_cache.campaign_caches(s, campaign_id)
        ]
    return CampaignDownloadsOut(
        campaign_id=campaign_id,
        bytes_sent=sum(u.bytes_sent for u in usage),
        stations=[StationBytesOut(**vars(u)) for u in usage],
        local_caches=caches,
    )


async def _act(
    request: Request,
    ref: str,
    who: str,
    action: Callable[..., Awaitable[CampaignView]],
    **kw: Any,
) -> CampaignView:
    state = _state(request)
    return await state.db.write(lambda s: action(s, ref, actor=who, now=state.clock(), **kw))


# One route per lifecycle action, from this table (the permission of each is in authz).
ACTIONS: dict[str, Callable[..., Awaitable[CampaignView]]] = {
    "approve": campaigns.approve,
    "pause": campaigns.pause,
    "resume": campaigns.resume,
    "abort": campaigns.abort,
    "retry": campaigns.retry_failed,
}


def _action_route(name: str, action: Callable[..., Awaitable[CampaignView]]) -> None:
    async def route(ref: str, request: Request, who: Operator) -> CampaignView:
        return await _act(request, ref, who, action)

    route.__name__ = f"campaign_{name}"
    route.__doc__ = (action.__doc__ or name).split("\n")[0]
    router.add_api_route(
        f"/api/v1/campaigns/{{ref}}/{name}", route, methods=["POST"], response_model=CampaignView
    )


for _name, _action in ACTIONS.items():
    _action_route(_name, _action)


@router.post("/api/v1/campaigns/{ref}/rollback", response_model=CampaignView, status_code=201)
async def rollback(ref: str, body: RollbackIn, request: Request, who: Operator) -> CampaignView:
    state = _state(request)
    if body.release is not None:
        async with state.db.snapshot() as s:
            await tenancy.check_release(s, body.release, tenancy.customer_of(request))
    return await _act(
        request,
        ref,
        who,
        campaigns.rollback,
        to_release=body.release,
        approval_threshold=state.campaign_approval_threshold,
        require_published=state.repository.initialized,
    )
