"""REST API for the fleet registry, support periods, alerts and security events.

    GET|POST             /api/v1/sites            sites (IANA time zone, weekly maintenance windows)
    GET|PATCH|DELETE     /api/v1/sites/{id}
    GET|POST             /api/v1/models           charger models and their support periods
    GET|PATCH|DELETE     /api/v1/models/{id}
    PATCH                /api/v1/stations/{id}    site, tags, hardware revision, manufacture date,
                                                  expected firmware per component; proxy mode's
                                                  upstream_url, upstream_firmware_policy (ADR 0040)
    PUT                  /api/v1/stations/{id}/upstream-credentials  proxy mode: the station's
                                                  upstream Basic auth, stored sealed, write-only
    GET                  /api/v1/fleet/support?within_days=180
    GET                  /api/v1/alerts           ?state=active|open|acknowledged|resolved
    POST                 /api/v1/alerts/{id}/acknowledge
    GET                  /api/v1/security-events  ?station_id&type&since&until&critical
    GET                  /api/v1/stations/{id}/reports  last meter values per EVSE, NotifyEvent
                                                  entries, device model (ADR 0035)
    POST                 /api/v1/stations/{id}/reports/device-model  ask the station for its
                                                  device model (GetBaseReport, OCPP B07)

Every change is audited with the caller as actor.  Needs the operator bearer token of
:mod:`chargeward.server.http.api`.

    $ curl -H "Authorization: Bearer $TOKEN" "$API/api/v1/fleet/support?within_days=90"
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.errors import BundleError, Conflict
from chargeward.limits import DEFAULT_SERVER_LIMITS
from chargeward.model.fleet import check_id, check_tags, check_timezone, parse_windows
from chargeward.ocpp.csms16 import LEGACY_CONSEQUENCE
from chargeward.server.auth import tenancy
from chargeward.server.common import inputs
from chargeward.server.common.schemas import (
    AlertView,
    ChargerModelView,
    Offset,
    RowId,
    SecurityEventView,
    SiteView,
    StationSummary,
    SupportView,
)
from chargeward.server.fleet import alerts, fleet
from chargeward.server.http.api import Operator
from chargeward.server.proxy import settings as proxy_settings
from chargeward.server.rollout import link_budget
from chargeward.server.state import ServerState
from chargeward.server.stations import certificates, core_reports

router = APIRouter(tags=["fleet"])


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.chargeward
    return state


T = TypeVar("T")


async def _change(request: Request, call: Callable[[AsyncSession, dt.datetime], Awaitable[T]]) -> T:
    """Run one audited change in a transaction, at the server clock's now."""
    state = _state(request)
    return await state.db.write(lambda s: call(s, state.clock()))  # again if it lost a race


def _rule(check: Callable[[T], object]) -> AfterValidator:
    """A registry rule as a pydantic validator: a 422 that names the field, same message."""

    def run(value: T) -> T:
        try:
            check(value)
        except BundleError as e:
            # "timezone: 'X' is not..." -> "'X' is not...": the error names the field already.
            head, sep, rest = str(e).partition(": ")
            message = rest if sep and head.isidentifier() else str(e)
            raise PydanticCustomError("registry_rule", message) from e
        return value

    return AfterValidator(run)


def _windows(raw: list[dict[str, Any]]) -> None:
    parse_windows(raw)


def _download_windows(raw: list[dict[str, Any]]) -> None:
    parse_windows(raw, "download_windows")


SiteId = Annotated[str, _rule(lambda v: check_id("id", v))]
Timezone = Annotated[str, Field(max_length=64, examples=["Europe/London"]), _rule(check_timezone)]
Windows = Annotated[
    list[dict[str, Any]],
    Field(examples=[[{"days": ["mon", "tue"], "start": "01:00", "end": "05:00"}]]),
    _rule(_windows),
]
DownloadWindows = Annotated[
    list[dict[str, Any]],
    Field(examples=[[{"days": ["mon", "tue"], "start": "22:00", "end": "06:00"}]]),
    _rule(_download_windows),
]
FirmwareMap = Annotated[
    dict[str, str], _rule(lambda v: fleet.check_firmware_map("expected_firmware", v))
]
Tags = Annotated[list[str], Field(max_length=32), _rule(check_tags)]
UpstreamUrl = Annotated[
    str,
    Field(max_length=512, examples=["wss://csms.example/ocpp/{stationId}"]),
    _rule(lambda v: proxy_settings.check_field("upstream_url", v)),
]
UpstreamPolicy = Literal["relay", "refuse", "approved-only"]
PROXY_FIELDS = frozenset(proxy_settings.FIELDS)
_PROXY_DOC = "proxy mode (ADR 0040); null: the site's, else the server's --upstream option"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiteCreate(_Strict):
    id: SiteId
    name: str = Field(min_length=1, max_length=100)
    customer: str | None = Field(default=None, max_length=64)
    timezone: Timezone
    maintenance_windows: Windows = []
    bandwidth_note: str | None = Field(default=None, max_length=200)
    download_windows: DownloadWindows = []
    bandwidth_limit: int | None = Field(
        default=None, ge=link_budget.MIN_BANDWIDTH, le=10**12, description="bytes per second"
    )


class SitePatch(_Strict):
    name: str = Field(default="", min_length=1, max_length=100)
    customer: str | None = Field(default=None, max_length=64)
    timezone: Timezone = "UTC"
    maintenance_windows: Windows = []
    bandwidth_note: str | None = Field(default=None, max_length=200)
    download_windows: DownloadWindows = []
    bandwidth_limit: int | None = Field(
        default=None, ge=link_budget.MIN_BANDWIDTH, le=10**12, description="bytes per second"
    )
    upstream_url: UpstreamUrl | None = Field(default=None, description=_PROXY_DOC)
    upstream_firmware_policy: UpstreamPolicy | None = Field(default=None, description=_PROXY_DOC)


class ModelCreate(_Strict):
    id: str = Field(min_length=1, max_length=20)
    vendor: str | None = Field(default=None, max_length=50)
    feature_support_years: int = Field(default=fleet.DEFAULT_FEATURE_YEARS, ge=0, le=50)
    security_support_years: int = Field(default=fleet.DEFAULT_SECURITY_YEARS, ge=0, le=50)
    feature_support_end: dt.date | None = None
    security_support_end: dt.date | None = None


class ModelPatch(_Strict):
    vendor: str | None = Field(default=None, max_length=50)
    feature_support_years: int = Field(default=3, ge=0, le=50)
    security_support_years: int = Field(default=5, ge=0, le=50)
    feature_support_end: dt.date | None = None
    security_support_end: dt.date | None = None


class StationPatch(_Strict):
    """Only the fields sent change; ``null`` clears a field (tags: an empty list)."""

    site_id: str | None = Field(default=None, max_length=48)
    tags: Tags | None = None
    hardware_revision: str | None = Field(default=None, max_length=32)
    manufactured_on: dt.date | None = None
    expected_firmware: FirmwareMap | None = Field(
        default=None, examples=[{"main": "1.2.0"}], description="merged per component"
    )
    legacy_firmware_update: bool | None = Field(
        default=None,
        description=(
            "OCPP 1.6 only: send plain UpdateFirmware (no signature) to this station, never to "
            "one that has shown Security Whitepaper support; " + LEGACY_CONSEQUENCE
        ),
    )
    upstream_url: UpstreamUrl | None = Field(default=None, description=_PROXY_DOC)
    upstream_firmware_policy: UpstreamPolicy | None = Field(default=None, description=_PROXY_DOC)


class UpstreamCredentials(_Strict):
    """The station's Basic credentials on the upstream leg (``--upstream-credentials stored``);
    ``password`` null forgets them.  Write-only: never returned."""

    username: str = Field(min_length=1, max_length=proxy_settings.MAX_USERNAME)
    password: str | None = Field(min_length=1, max_length=proxy_settings.MAX_PASSWORD)


def _split(body: BaseModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields sent: (registry fields, proxy settings)."""
    sent = body.model_dump(exclude_unset=True)
    proxy = {k: sent.pop(k) for k in list(sent) if k in PROXY_FIELDS}
    return sent, proxy


class AcknowledgeRequest(_Strict):
    note: str | None = Field(default=None, max_length=300)


# -- sites ----------------------------------------------------------------------------------


@router.get("/api/v1/sites", response_model=list[SiteView])
async def list_sites(request: Request, _: Operator) -> list[SiteView]:
    customer = tenancy.customer_of(request)
    async with _state(request).db.snapshot() as s:
        found = await fleet.list_sites(s)
    return [site for site in found if customer is None or site.customer == customer]


@router.post("/api/v1/sites", response_model=SiteView, status_code=201)
async def create_site(body: SiteCreate, request: Request, who: Operator) -> SiteView:
    return await _change(
        request,
        lambda s, now: fleet.create_site(
            s, fleet.SiteInput(**body.model_dump()), actor=who, now=now
        ),
    )


@router.get("/api/v1/sites/{site_id}", response_model=SiteView)
async def get_site(site_id: str, request: Request, _: Operator) -> SiteView:
    async with _state(request).db.snapshot() as s:
        return await fleet.site_view(s, site_id)


@router.patch("/api/v1/sites/{site_id}", response_model=SiteView)
async def update_site(site_id: str, body: SitePatch, request: Request, who: Operator) -> SiteView:
    registry, proxy = _split(body)

    async def change(s: AsyncSession, now: dt.datetime) -> SiteView:
        view = await fleet.update_site(s, site_id, registry, actor=who, now=now)
        await proxy_settings.update(s, proxy_settings.SITE, site_id, proxy, actor=who, now=now)
        return view

    return await _change(request, change)


@router.delete("/api/v1/sites/{site_id}", status_code=204)
async def delete_site(site_id: str, request: Request, who: Operator) -> None:
    await _change(request, lambda s, now: fleet.delete_site(s, site_id, actor=who, now=now))


# -- charger models -------------------------------------------------------------------------


@router.get("/api/v1/models", response_model=list[ChargerModelView])
async def list_models(request: Request, _: Operator) -> list[ChargerModelView]:
    async with _state(request).db.snapshot() as s:
        return await fleet.list_models(s)


@router.post("/api/v1/models", response_model=ChargerModelView, status_code=201)
async def create_model(body: ModelCreate, request: Request, who: Operator) -> ChargerModelView:
    return await _change(
        request,
        lambda s, now: fleet.create_model(
            s, fleet.ModelInput(**body.model_dump()), actor=who, now=now
        ),
    )


@router.get("/api/v1/models/{model_id}", response_model=ChargerModelView)
async def get_model(model_id: str, request: Request, _: Operator) -> ChargerModelView:
    async with _state(request).db.snapshot() as s:
        return await fleet.model_view(s, model_id)


@router.patch("/api/v1/models/{model_id}", response_model=ChargerModelView)
async def update_model(
    model_id: str, body: ModelPatch, request: Request, who: Operator
) -> ChargerModelView:
    return await _change(
        request,
        lambda s, now: fleet.update_model(
            s, model_id, body.model_dump(exclude_unset=True), actor=who, now=now
        ),
    )


@router.delete("/api/v1/models/{model_id}", status_code=204)
async def delete_model(model_id: str, request: Request, who: Operator) -> None:
    await _change(request, lambda s, now: fleet.delete_model(s, model_id, actor=who, now=now))


# -- stations, support, alerts, security events ----------------------------------------------


@router.patch("/api/v1/stations/{station_id}", response_model=StationSummary)
async def update_station(
    station_id: str, body: StationPatch, request: Request, who: Operator
) -> StationSummary:
    registry, proxy = _split(body)

    async def change(s: AsyncSession, now: dt.datetime) -> StationSummary:
        summary = await fleet.update_station(s, station_id, registry, actor=who, now=now)
        await proxy_settings.update(
            s, proxy_settings.STATION, station_id, proxy, actor=who, now=now
        )
        return summary

    return await _change(request, change)


@router.put("/api/v1/stations/{station_id}/upstream-credentials", status_code=204)
async def set_upstream_credentials(
    station_id: str, body: UpstreamCredentials, request: Request, who: Operator
) -> None:
    """Proxy mode: store the station's upstream password sealed (AES-256-GCM, a key file in
    the data directory); audited without it."""
    key = proxy_settings.load_or_create_key(_state(request).data_dir)
    await _change(
        request,
        lambda s, now: proxy_settings.set_credentials(
            s, station_id, body.username, body.password, key=key, actor=who, now=now
        ),
    )


@router.get("/api/v1/fleet/support", response_model=list[SupportView])
async def support(
    request: Request,
    _: Operator,
    within_days: Annotated[int, Query(ge=0, le=36500)] = 180,
) -> list[SupportView]:
    """Stations whose support ended, ends within ``within_days`` (end day included), or is
    unknown (no manufacture date)."""
    state = _state(request)
    async with state.db.snapshot() as s:
        found = await fleet.support_report(s, today=state.clock().date(), within_days=within_days)
    customer = tenancy.customer_of(request)
    return [v for v in found if customer is None or v.customer == customer]


@router.get("/api/v1/alerts", response_model=list[AlertView])
async def list_alerts(
    request: Request,
    _: Operator,
    state: Annotated[str | None, Query(pattern="^(active|open|acknowledged|resolved)$")] = None,
    station_id: Annotated[str | None, Query(max_length=48)] = None,
    kind: Annotated[str | None, Query(max_length=30)] = None,
    limit: Annotated[int, Query(ge=1, le=DEFAULT_SERVER_LIMITS.page_rows)] = 100,
    offset: Offset = 0,
) -> list[AlertView]:
    async with _state(request).db.snapshot() as s:
        return await alerts.list_alerts(
            s,
            state=state,
            station_id=station_id,
            kind=kind,
            limit=limit,
            offset=offset,
            customer=tenancy.customer_of(request),
        )


@router.post("/api/v1/alerts/{alert_id}/acknowledge", response_model=AlertView)
async def acknowledge_alert(
    alert_id: RowId, request: Request, who: Operator, body: AcknowledgeRequest | None = None
) -> AlertView:
    return await _change(
        request,
        lambda s, now: alerts.acknowledge(
            s, alert_id, actor=who, note=body.note if body else None, now=now
        ),
    )


@router.get("/api/v1/security-events", response_model=list[SecurityEventView])
async def security_events(
    request: Request,
    _: Operator,
    station_id: Annotated[str | None, Query(max_length=48)] = None,
    type: Annotated[str | None, Query(max_length=50)] = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    critical: bool = False,
    limit: Annotated[int, Query(ge=1, le=DEFAULT_SERVER_LIMITS.page_rows)] = 100,
    offset: Offset = 0,
) -> list[SecurityEventView]:
    """Stored SecurityEventNotifications, newest first; ``since``/``until`` need an offset."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise BundleError(f"{name} needs a UTC offset (e.g. 2026-01-01T00:00:00Z)")
        if value is not None and not inputs.in_utc_range(value):
            raise inputs.invalid("query", name, "out of range once converted to UTC")
    async with _state(request).db.snapshot() as s:
        return await alerts.search_security_events(
            s,
            station_id=station_id,
            type=type,
            since=since,
            until=until,
            critical=critical,
            limit=limit,
            offset=offset,
            customer=tenancy.customer_of(request),
        )


class StationReportsView(BaseModel):
    """What a station's MeterValues, NotifyEvent and NotifyReport left (ADR 0035)."""

    station_id: str
    meter_values: dict[str, Any]  # {evse id: {"timestamp", "sampled_value", "received_at"}}
    events: list[dict[str, Any]]  # newest first, within the retention age
    device_model: dict[str, Any] | None  # the last complete NotifyReport


@router.get("/api/v1/stations/{station_id}/reports", response_model=StationReportsView)
async def station_reports_view(
    station_id: str,
    request: Request,
    _: Operator,
    limit: Annotated[int, Query(ge=1, le=DEFAULT_SERVER_LIMITS.station_events)] = 100,
) -> StationReportsView:
    state = _state(request)
    async with state.db.snapshot() as s:
        found = await core_reports.core_reports(s, station_id, limit=limit, now=state.clock())
    return StationReportsView(**found)


class DeviceModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    report_base: Literal["FullInventory", "ConfigurationInventory", "SummaryInventory"] = (
        "FullInventory"
    )


class DeviceModelAnswer(BaseModel):
    station_id: str
    request_id: int
    station_response: str  # Accepted: the NotifyReport parts follow into /reports


@router.post("/api/v1/stations/{station_id}/reports/device-model", response_model=DeviceModelAnswer)
async def request_device_model(
    station_id: str, request: Request, who: Operator, body: DeviceModelRequest | None = None
) -> DeviceModelAnswer:
    """Send GetBaseReport; the station's NotifyReport parts are assembled and kept as its
    device model (``GET …/reports``).  Audited as ``station.device_model_requested``."""
    state = _state(request)
    base = (body or DeviceModelRequest()).report_base
    async with state.db.session() as s:
        await certificates.require_station(s, station_id)
    cp = await state.station(station_id)
    if cp is None:
        raise Conflict(f"station {station_id} is not connected")
    request_id = secrets.randbelow(2**31 - 1) + 1
    answer = await cp.get_base_report(request_id, base)
    await state.db.write(
        lambda s: audit.record(
            s,
            actor=who,
            action="station.device_model_requested",
            target=station_id,
            details={"report_base": base, "request_id": request_id, "answer": answer},
            now=state.clock(),
        )
    )
    return DeviceModelAnswer(station_id=station_id, request_id=request_id, station_response=answer)
