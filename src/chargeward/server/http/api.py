"""REST API (``/api/v1``) and firmware downloads (``/firmware/sha256/<hex>``).

OpenAPI is served at ``/api/openapi.json``.  Every ``/api`` call needs a bearer token (a login
session, a scoped API token or a host token) whose role allows the route: one app-wide check
in :mod:`chargeward.server.http.authz`; downloads need the signed, expiring URL the station was
given.  Errors have one JSON shape with a stable code (:mod:`chargeward.server.http.problems`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from starlette.types import Receive, Scope, Send

from chargeward import audit
from chargeward.audit import sequencer as audit_sequencer
from chargeward.crypto.signature import sha256_file
from chargeward.errors import BundleError, Conflict, InvalidValue
from chargeward.model.reported import MAX_MODELS, ReportedVersions, parse_option
from chargeward.release.bundle import verify_bundle
from chargeward.server.auth import tenancy
from chargeward.server.common import urls
from chargeward.server.common.schemas import (
    AuditEntryView,
    ReleaseView,
    StationDetail,
    StationSummary,
    UpdateAccepted,
    UpdateRequest,
    UpdateView,
)
from chargeward.server.fleet.fleet import StationFilter
from chargeward.server.http import authz, problems
from chargeward.server.rollout import (
    deltas,
    link_budget,
    release_catalog,
    supply_chain,
    update_orders,
)
from chargeward.server.rollout.updates import send_update
from chargeward.server.state import ServerState
from chargeward.server.stations import station_reports

DOWNLOAD = "/firmware/sha256/{sha256}"  # signed, expiring firmware links (server.urls)


class FirmwareFile(FileResponse):
    """A blob read and sent 256 KiB at a time, not Starlette's 64 KiB (ADR 0013).

    Every read is a hop to a worker thread and back; at 64 KiB those hops held the server to
    a third to a half of nginx's throughput (``benchmarks/bench_download.py``).  The cost is
    memory: a slow station's connection holds up to one chunk unsent, 25 MiB for a
    campaign's default of 100 stations at once.

    With ``on_done`` the body bytes sent are counted and handed to it when the response ends;
    with ``pacer`` they are paced by the site's bandwidth cap (:mod:`server.link_budget`).
    """

    chunk_size = 256 * 1024

    def __init__(
        self,
        path: Path,
        *,
        pacer: link_budget.Pacer | None = None,
        on_done: Callable[[int], Awaitable[None]] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(path, **kw)
        self.pacer = pacer
        self.on_done = on_done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.on_done is None and self.pacer is None:
            await super().__call__(scope, receive, send)
            return
        await link_budget.respond(
            scope,
            receive,
            send,
            super().__call__,
            pacer=self.pacer,
            on_done=self.on_done or _ignore,
        )


async def _ignore(_: int) -> None:
    return None


async def operator(request: Request) -> str:
    """The API caller's name (for the audit log), as the app-wide authorization found it."""
    return authz.current_principal(request).name


Operator = Annotated[str, Depends(operator)]


def _refused(name: str, e: InvalidValue, value: object) -> RequestValidationError:
    """A 422 naming the query parameter ``name``."""
    message = str(e).removeprefix(f"{name}: ")
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", name), "msg": message, "input": value}]
    )


def reported_declaration(
    reported_version: Annotated[
        list[str], Query(max_length=4 * MAX_MODELS, description="MODEL=STRING, repeatable")
    ] = [],  # noqa: B006 (FastAPI copies a list default)
    reported_version_pattern: Annotated[
        list[str], Query(max_length=MAX_MODELS, description="MODEL=REGEX (matched in full)")
    ] = [],  # noqa: B006
) -> ReportedVersions:
    """How the release's stations report its version, besides the version (ADR 0037)."""
    out = ReportedVersions()
    for name, items in (
        ("reported_version", reported_version),
        ("reported_version_pattern", reported_version_pattern),
    ):
        try:
            out = out.merged(parse_option(name, items))
        except InvalidValue as e:
            raise _refused(name, e, items) from e
    return out


Reported = Annotated[ReportedVersions, Depends(reported_declaration)]


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(
        title="Chargeward",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url=None,  # Swagger UI came from a CDN: third-party script (ADR 0025)
        redoc_url=None,
        dependencies=[Depends(authz.authorize)],  # every route: token, then ROUTE_PERMISSIONS
    )
    app.state.chargeward = state
    problems.install(app)
    problems.document(app)

    from chargeward.server.common.metrics import instrument
    from chargeward.server.http import web
    from chargeward.server.http.api_accounts import router as accounts_router
    from chargeward.server.http.api_audit import router as audit_router
    from chargeward.server.http.api_campaigns import router as campaign_router
    from chargeward.server.http.api_certificates import router as certificate_router
    from chargeward.server.http.api_fleet import router as fleet_router
    from chargeward.server.http.api_integration import router as integration_router
    from chargeward.server.http.api_logs import router as log_router
    from chargeward.server.http.api_reported import router as reported_router
    from chargeward.server.http.api_repository import router as repository_router
    from chargeward.server.http.api_station_import import router as station_import_router
    from chargeward.server.http.api_station_security import router as station_security_router
    from chargeward.server.http.api_supply import router as supply_router
    from chargeward.server.http.api_vendor import router as vendor_router
    from chargeward.server.http.limits import BodyLimit

    app.include_router(accounts_router)
    app.include_router(repository_router)
    app.include_router(certificate_router)
    app.include_router(log_router)
    app.include_router(station_import_router)
    app.include_router(fleet_router)
    app.include_router(campaign_router)
    app.include_router(station_security_router)
    app.include_router(audit_router)
    app.include_router(supply_router)
    app.include_router(reported_router)
    app.include_router(vendor_router)  # vendors' own signed firmware (ADR 0041)
    app.include_router(integration_router)  # an external CSMS delivers updates (ADR 0042)
    web.install(app)  # the dashboard at /, a client of the routes above
    # each request body within its route's cap (server.http.limits, state.limits)
    app.add_middleware(BodyLimit, limits=state.limits)
    instrument(app, state.metrics, operator)  # GET /metrics and request counting

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, object]:
        node = state.node.status() if state.node is not None else {}
        return {"status": "ok", **node}

    @app.get("/api/v1/stations", response_model=list[StationSummary])
    async def list_stations(
        request: Request, _: Operator, filters: Annotated[StationFilter, Depends()]
    ) -> list[StationSummary]:
        customer = tenancy.customer_of(request)
        if customer is not None:
            if filters.customer not in (None, customer):
                return []
            filters = dataclasses.replace(filters, customer=customer)
        async with state.db.snapshot() as s:
            return await station_reports.list_stations(s, filters)

    @app.get("/api/v1/stations/{station_id}", response_model=StationDetail)
    async def get_station(station_id: str, _: Operator) -> StationDetail:
        async with state.db.snapshot() as s:
            return await station_reports.station_detail(s, station_id, now=state.clock())

    @app.post(
        "/api/v1/releases",
        response_model=ReleaseView,
        status_code=201,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    async def upload_release(request: Request, who: Operator, reported: Reported) -> ReleaseView:
        work = Path(tempfile.mkdtemp(prefix="upload-", dir=state.data_dir / "tmp"))
        try:
            bundle = work / "bundle.cwb"
            await _receive(request.stream(), bundle, state.limits.bundle_bytes)
            digest = await asyncio.to_thread(sha256_file, bundle)
            roots = state.manufacturer_roots()
            verified = await asyncio.to_thread(
                verify_bundle, bundle, roots, workdir=work / "x", now=state.clock()
            )
            try:
                reported.check_models(verified.manifest.hardware_models)
            except InvalidValue as e:
                raise _refused("reported_version", e, reported.document()) from e
            await supply_chain.check_upload(
                state.db,
                state.data_dir,
                verified,
                actor=who,
                now=state.clock(),
                policy=state.gate_policy,
            )
            async with state.db.session() as s:
                view = await release_catalog.store_release(
                    s,
                    verified,
                    state.blobs,
                    actor=who,
                    now=state.clock(),
                    bundle_sha256=digest.sha256,
                    reported=reported,
                )
            # Before anyone proposes it: the deltas are targets of the release (server.deltas).
            made = await deltas.make_release_deltas(
                state.db, state.blobs, view.id, work, actor=who, now=state.clock()
            )
            if not made:
                return view
            async with state.db.snapshot() as s:
                return await release_catalog.release_view(s, view.id)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @app.get("/api/v1/releases", response_model=list[ReleaseView])
    async def list_releases(request: Request, _: Operator) -> list[ReleaseView]:
        customer = tenancy.customer_of(request)
        async with state.db.snapshot() as s:
            found = await release_catalog.list_releases(s)
        return [r for r in found if tenancy.release_visible(r.customer, customer)]

    @app.get("/api/v1/releases/{release_id}", response_model=ReleaseView)
    async def get_release(release_id: str, _: Operator) -> ReleaseView:
        async with state.db.snapshot() as s:
            return await release_catalog.release_view(s, release_id)

    @app.post(
        "/api/v1/stations/{station_id}/firmware-updates",
        response_model=UpdateAccepted,
        status_code=202,
    )
    async def update_station(station_id: str, body: UpdateRequest, who: Operator) -> UpdateAccepted:
        cp = await state.station(station_id)
        if cp is None:
            raise Conflict(f"station {station_id} is not connected")
        now = state.clock()
        order = await state.db.write(  # the order is committed before the station hears of it
            lambda s: update_orders.create_update(
                s,
                station_id,
                body.release_id,
                actor=who,
                now=now,
                require_published=state.repository.initialized,
            )
        )
        response = await send_update(
            state, order, retries=body.retries, retry_interval=body.retry_interval
        )
        return UpdateAccepted(
            transaction_id=order.transaction_id,
            request_id=order.request_id,
            station_response=response,
        )

    @app.get("/api/v1/firmware-updates/{transaction_id}", response_model=UpdateView)
    async def get_update(transaction_id: str, _: Operator) -> UpdateView:
        async with state.db.snapshot() as s:
            return await update_orders.update_view(s, transaction_id)

    @app.get("/api/v1/audit", response_model=list[AuditEntryView])
    async def get_audit(
        _: Operator,
        transaction_id: str | None = None,
        target: str | None = None,
        start: Annotated[int, Query(ge=0, le=2**63 - 1, description="first leaf index")] = 0,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    ) -> list[AuditEntryView]:
        await audit_sequencer.settle(state.db.session)  # station reports' queue first (ADR 33)
        async with state.db.snapshot() as s:
            rows = await audit.entries(
                s, transaction_id=transaction_id, target=target, start=start, limit=limit
            )
        return [AuditEntryView(**{**vars(r), "leaf_hash": r.leaf_hash.hex()}) for r in rows]

    usage = link_budget.Usage(state.db, state.clock)

    @app.get(DOWNLOAD, include_in_schema=False)
    async def download(
        sha256: str, station: str, expires: int, sig: str, req: int = 0
    ) -> FileResponse:
        now = state.clock()
        if not urls.check(
            state.url_key, sha256, station, expires, sig, int(now.timestamp()), request=req
        ):
            raise HTTPException(403, "download link invalid or expired")
        budget = await state.budgets.get(state.db, station)
        wait = budget.closed_for(now)
        if wait is not None:
            raise HTTPException(
                503,
                f"outside site {budget.site_id}'s download windows; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )

        async def counted(sent: int) -> None:
            await usage.add(station, req, sha256, sent)

        return FirmwareFile(
            state.blobs.path(sha256),
            media_type="application/octet-stream",
            filename=f"{sha256[:16]}.cwfw",
            pacer=state.pacers.get(budget),
            on_done=counted,
        )

    # Every charger of a rollout fetches its image: match this route first, not after the
    # whole API (route matching was a visible share of a download's cost, ADR 0009).
    routes = app.router.routes
    first = next(i for i, r in enumerate(routes) if getattr(r, "path", None) == DOWNLOAD)
    routes.insert(0, routes.pop(first))
    return app


async def _receive(chunks: AsyncIterator[bytes], dest: Path, cap: int) -> None:
    size = 0
    with dest.open("wb") as fh:
        async for chunk in chunks:
            size += len(chunk)
            if size > cap:
                raise BundleError(f"bundle larger than {cap} bytes")
            fh.write(chunk)
    if size == 0:
        raise BundleError("empty upload: send the bundle file as the request body")
