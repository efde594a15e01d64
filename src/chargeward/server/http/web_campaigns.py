"""The dashboard's campaign pages: list and create (with a live preview of the stations the
selector matches), one campaign (stages, counts, outcomes over time, actions, roll back) and a
station's status timeline in it; the outcomes chart is computed here, drawn by the template.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from chargeward.server.common import inputs
from chargeward.server.http.web_page import (
    Fragment,
    Page,
    Posted,
    Refused,
    SignedIn,
    breakdown,
    seg,
)
from chargeward.server.rollout.campaign_protocols import LEGACY_CONSEQUENCE, NOT_MARKED, update_path

router = APIRouter(include_in_schema=False)
RUN_STATES = (
    "succeeded", "pending", "waiting", "dispatched", "downloading", "installing",
    "rebooting", "soaking", "failed", "rolled_back", "skipped", "cancelled",
)  # fmt: skip


@router.get("/campaigns")
async def campaign_list(page: SignedIn) -> Response:
    return await _campaigns_page(page)


async def _campaigns_page(
    page: Page, status: int = 200, error: str | None = None, form: Mapping[str, str] | None = None
) -> HTMLResponse:
    campaigns = await page.get("/api/v1/campaigns")
    # Only releases a campaign may use (published, with a TUF repository); those below some
    # stations' rollback floor are marked with how many would refuse them.
    releases = [r for r in await page.get("/api/v1/campaign-releases") if r["usable"]]
    stations = await page.get("/api/v1/stations")
    return page.render(
        "campaigns.html",
        status=status,
        campaigns=sorted(campaigns, key=lambda c: -c["id"]),
        releases=releases,
        models=sorted({s["model"] for s in stations if s["model"]}),
        sites=sorted({s["site_id"] for s in stations if s["site_id"]}),
        error=error,
        form=form or {},
    )


def campaign_document(data: Mapping[str, str]) -> dict[str, Any]:
    """The API's campaign document from the create form; the API validates every field."""
    target: dict[str, Any] = {}
    if data.get("model"):
        target["models"] = [data["model"]]
    if data.get("site"):
        target["sites"] = [data["site"]]
    doc: dict[str, Any] = {
        "name": data.get("name", "").strip(),
        "release": data.get("release", ""),
        "target": target,
        "stages": {
            "canary": _number_or_percent(data.get("canary", "1")),
            "then": [s.strip() for s in data.get("stages", "100%").split(",") if s.strip()],
        },
    }
    for name in ("soak", "jitter", "download_ahead"):
        if data.get(name, "").strip():
            doc[name] = data[name].strip()
    if data.get("bypass_windows") == "on":
        doc["bypass_windows"] = True  # the API refuses it for anything but a security release
    if data.get("allow_below_floor") == "on":
        doc["allow_below_floor"] = True  # the stations that would refuse it are left out
    if data.get("allow_unreachable_sites") == "on":
        doc["allow_unreachable_sites"] = True  # they stay in, waiting (reason site_floor)
    return doc


def _number_or_percent(text: str) -> int | str:
    text = text.strip()
    number = inputs.row_id(text)
    return text if number is None else number


@router.post("/campaigns")
async def create_campaign(page: SignedIn, data: Posted) -> Response:
    try:
        made = await page.call("POST", "/api/v1/campaigns", json=campaign_document(data))
    except Refused as e:
        return await _campaigns_page(page, status=e.status, error=e.message, form=data)
    return RedirectResponse(f"/campaigns/{made['id']}", status_code=303)


@router.get("/campaigns/preview")
async def campaign_preview(
    _: Fragment, page: SignedIn, model: str = "", site: str = ""
) -> Response:
    """How many stations the create form's selector matches (a fragment)."""
    params = {k: v for k, v in (("model", model), ("site", site)) if v}
    matched = await page.get("/api/v1/stations", **params)
    sites = {x["id"]: x for x in await page.get("/api/v1/sites")}
    per_site = breakdown(matched, "site_id")
    paths: dict[str, list[str]] = {"legacy": [], "refused": [], "signed": []}
    for x in matched:  # how each would be sent the release (ADR 0039)
        path = update_path(x.get("ocpp_version"), bool(x.get("legacy_firmware_update")),
                           x.get("signed_update_support"))  # fmt: skip
        paths[path].append(x["id"])
    return page.render(
        "preview.html", matched=len(matched), model=model, site=site, per_site=per_site,
        sites=sites, protocols=breakdown(matched, "ocpp_version"), paths=paths,
        legacy_consequence=LEGACY_CONSEQUENCE, not_marked=NOT_MARKED,
    )  # fmt: skip


# Outcomes charted over a campaign's life: a station entering the state counts once.
OUTCOMES = ("succeeded", "failed", "rolled_back", "deferred")
CHART_POINTS = 24


def outcome_series(
    runs: Sequence[Mapping[str, Any]], start: dt.datetime, end: dt.datetime
) -> tuple[list[dt.datetime], dict[str, list[int]]]:
    """Cumulative count of stations that entered each of :data:`OUTCOMES`, at
    :data:`CHART_POINTS` times from ``start`` to ``end`` (from the runs' timelines)."""
    span = max((end - start).total_seconds(), 1.0)
    times = [
        start + dt.timedelta(seconds=span * i / (CHART_POINTS - 1)) for i in range(CHART_POINTS)
    ]
    first: dict[str, list[dt.datetime]] = {o: [] for o in OUTCOMES}
    for run in runs:
        entered: dict[str, dt.datetime] = {}
        for when, state, *_ in run.get("timeline", ()):
            if state in first and state not in entered:
                with contextlib.suppress(ValueError):
                    entered[state] = dt.datetime.fromisoformat(when)
        for state, when in entered.items():
            first[state].append(when)
    series = {o: [sum(w <= t for w in first[o]) for t in times] for o in OUTCOMES}
    return times, series


def chart(runs: Sequence[Mapping[str, Any]], campaign: Mapping[str, Any]) -> dict[str, Any]:
    """The outcomes-over-time chart of the campaign page: polylines in a 600x160 box."""
    start = dt.datetime.fromisoformat(campaign["created_at"])
    now = dt.datetime.now(dt.UTC)
    ends = [dt.datetime.fromisoformat(r["finished_at"]) for r in runs if r.get("finished_at")]
    end = max(ends) if campaign["status"] in ("completed", "aborted") and ends else now
    times, series = outcome_series(runs, start, end)
    top = max([len(runs), 1])
    lines = {
        o: " ".join(
            f"{600 * i / (CHART_POINTS - 1):.1f},{160 - 160 * v / top:.1f}"
            for i, v in enumerate(values)
        )
        for o, values in series.items()
    }
    return {"times": times, "series": series, "lines": lines, "top": top}


async def _campaign_context(page: Page, ref: int) -> dict[str, Any]:
    campaign = await page.get(f"/api/v1/campaigns/{seg(ref)}")
    runs = await page.get(f"/api/v1/campaigns/{seg(ref)}/stations")
    return {"c": campaign, "runs": runs, "run_states": RUN_STATES, "chart": chart(runs, campaign)}


async def _campaign_page(page: Page, ref: int, status: int = 200, error: str = "") -> Response:
    context = await _campaign_context(page, ref)
    releases = (
        await page.get("/api/v1/campaign-releases", campaign=ref)
        if page.can("campaigns:write")
        else []
    )
    # Only releases every station to roll back accepts: usable, at or above their floors.
    older = [
        r
        for r in releases
        if r["id"] != context["c"]["release_id"] and r["usable"] and not r["below_floor"]
    ]
    return page.render("campaign.html", status=status, error=error, rollback_to=older, **context)


@router.get("/campaigns/{ref}")
async def campaign_page(page: SignedIn, ref: int) -> Response:
    return await _campaign_page(page, ref)


@router.get("/campaigns/{ref}/live")
async def campaign_live(_: Fragment, page: SignedIn, ref: int) -> Response:
    return page.render("campaign_live.html", **await _campaign_context(page, ref))


@router.get("/campaigns/{ref}/stations/{station_id}")
async def station_run(page: SignedIn, ref: int, station_id: str) -> Response:
    campaign = await page.get(f"/api/v1/campaigns/{seg(ref)}")
    run = await page.get(f"/api/v1/campaigns/{seg(ref)}/stations/{seg(station_id)}")
    detail = await page.get(f"/api/v1/stations/{seg(station_id)}")
    return page.render("station_run.html", c=campaign, run=run, station=detail)


CAMPAIGN_ACTIONS = ("approve", "pause", "resume", "abort", "retry", "rollback")


@router.post("/campaigns/{ref}/{action}")
async def campaign_action(page: SignedIn, data: Posted, ref: int, action: str) -> Response:
    if action not in CAMPAIGN_ACTIONS:
        return page.render("error.html", status=404, message=f"no action {action!r}")
    body = {"json": {"release": data.get("release", "")}} if action == "rollback" else {}
    try:
        done = await page.call("POST", f"/api/v1/campaigns/{seg(ref)}/{seg(action)}", **body)
    except Refused as e:
        return await _campaign_page(page, ref, status=e.status, error=e.message)
    return RedirectResponse(f"/campaigns/{done['id']}", status_code=303)
