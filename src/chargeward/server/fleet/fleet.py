"""The fleet registry: sites, charger models with support periods, and per-station inventory.

Every change is audited in the same transaction.  The rules themselves (time zones, windows,
support arithmetic) live in :mod:`chargeward.model.fleet`; this module stores and queries.

    await create_site(s, SiteInput("lon-1", "London depot", None, "Europe/London", []),
                      actor="alice", now=now)
    await list_stations(s, StationFilter(site="lon-1", tag="pilot"))
    await support_report(s, today=now.date(), within_days=180)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.errors import BundleError, Conflict, NotFound
from chargeward.limits import DEFAULT_SERVER_LIMITS
from chargeward.model.firmware import check_component
from chargeward.model.fleet import (
    add_years,
    check_id,
    check_tags,
    check_timezone,
    parse_windows,
    support_end,
    support_state,
)
from chargeward.server.common import inputs
from chargeward.server.common.schemas import ChargerModelView, SiteView, StationSummary, SupportView
from chargeward.server.fleet import alerts
from chargeward.server.store.tables import Alert, ChargerModel, Site, Station, StationTag

DEFAULT_FEATURE_YEARS = 3
DEFAULT_SECURITY_YEARS = 5
MAX_VERSION_CHARS = 50  # as BootNotification firmwareVersion
_CHUNK = 500  # bounded IN lists


# -- sites ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteInput:
    id: str
    name: str
    customer: str | None
    timezone: str
    maintenance_windows: Sequence[object]
    bandwidth_note: str | None = None
    download_windows: Sequence[object] = ()
    bandwidth_limit: int | None = None


def _site_view(row: Site, stations: int = 0) -> SiteView:
    return SiteView(
        id=row.id,
        name=row.name,
        customer=row.customer,
        timezone=row.timezone,
        maintenance_windows=list(row.maintenance_windows),
        bandwidth_note=row.bandwidth_note,
        download_windows=list(row.download_windows or []),
        bandwidth_limit=row.bandwidth_limit,
        stations=stations,
    )


async def _site(s: AsyncSession, site_id: str) -> Site:
    row = await s.get(Site, site_id)
    if row is None:
        raise NotFound(f"no site {site_id!r}")
    return row


async def _record_changes(
    s: AsyncSession,
    view: Callable[[], BaseModel],
    changes: Mapping[str, Any],
    change: Callable[[str, Any], None],
    *,
    action: str,
    target: str,
    actor: str,
    now: dt.datetime,
) -> None:
    """Apply ``change`` to each of ``changes`` and audit what ``view`` shows changed, if any:
    ``{field: {"from": ..., "to": ...}}``."""
    before = view().model_dump(mode="json")
    for name, value in changes.items():
        change(name, value)
    after = view().model_dump(mode="json")
    diff = {k: {"from": before[k], "to": after[k]} for k in after if before[k] != after[k]}
    if diff:
        await audit.record(s, actor=actor, action=action, target=target, details=diff, now=now)


async def create_site(
    s: AsyncSession, site: SiteInput, *, actor: str, now: dt.datetime
) -> SiteView:
    check_id("id", site.id)
    check_timezone(site.timezone)
    windows = [w.as_dict() for w in parse_windows(site.maintenance_windows)]
    if await s.get(Site, site.id) is not None:
        raise Conflict(f"site {site.id!r} exists")
    row = Site(
        id=site.id,
        name=site.name,
        customer=site.customer,
        timezone=site.timezone,
        maintenance_windows=windows,
        bandwidth_note=site.bandwidth_note,
        download_windows=[
            w.as_dict() for w in parse_windows(site.download_windows, "download_windows")
        ],
        bandwidth_limit=site.bandwidth_limit,
        created_at=now,
    )
    s.add(row)
    await audit.record(
        s,
        actor=actor,
        action="site.create",
        target=f"site:{site.id}",
        details={"name": site.name, "timezone": site.timezone, "windows": windows},
        now=now,
    )
    return _site_view(row)


async def update_site(
    s: AsyncSession, site_id: str, changes: Mapping[str, Any], *, actor: str, now: dt.datetime
) -> SiteView:
    """Change ``name``, ``customer``, ``timezone``, ``maintenance_windows``, ``bandwidth_note``,
    ``download_windows``, ``bandwidth_limit``."""
    row = await _site(s, site_id)

    def change(name: str, value: Any) -> None:
        if name == "timezone":
            row.timezone = check_timezone(value)
        elif name in ("maintenance_windows", "download_windows"):
            setattr(row, name, [w.as_dict() for w in parse_windows(value, name)])
        elif name in ("name", "customer", "bandwidth_note", "bandwidth_limit"):
            setattr(row, name, value)
        else:
            raise BundleError(f"{name}: not a site field")

    await _record_changes(
        s,
        lambda: _site_view(row),
        changes,
        change,
        action="site.update",
        target=f"site:{site_id}",
        actor=actor,
        now=now,
    )
    return await site_view(s, site_id)


async def delete_site(s: AsyncSession, site_id: str, *, actor: str, now: dt.datetime) -> None:
    row = await _site(s, site_id)
    n = await s.scalar(select(func.count()).where(Station.site_id == site_id))
    if n:
        raise Conflict(f"site {site_id!r} still has {n} station(s); move them first")
    await s.delete(row)
    await audit.record(s, actor=actor, action="site.delete", target=f"site:{site_id}", now=now)


async def site_view(s: AsyncSession, site_id: str) -> SiteView:
    row = await _site(s, site_id)
    n = await s.scalar(select(func.count()).where(Station.site_id == site_id))
    return _site_view(row, n or 0)


async def list_sites(s: AsyncSession) -> list[SiteView]:
    counts = dict(
        (await s.execute(select(Station.site_id, func.count()).group_by(Station.site_id))).all()
    )
    rows = (await s.scalars(select(Site).order_by(Site.id))).all()
    return [_site_view(r, counts.get(r.id, 0)) for r in rows]


# -- charger models -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInput:
    id: str
    vendor: str | None = None
    feature_support_years: int = DEFAULT_FEATURE_YEARS
    security_support_years: int = DEFAULT_SECURITY_YEARS
    feature_support_end: dt.date | None = None
    security_support_end: dt.date | None = None


def _model_view(row: ChargerModel) -> ChargerModelView:
    return ChargerModelView(
        id=row.id,
        vendor=row.vendor,
        feature_support_years=row.feature_support_years,
        security_support_years=row.security_support_years,
        feature_support_end=row.feature_support_end,
        security_support_end=row.security_support_end,
    )


# Registry dates are checked against the server clock (issue 26, point 7): a manufacture date
# from 1990 to a year ahead, a support end from 1990 to a century ahead.  A year-9999 date once
# made every page that computes support periods fail; those pages also bear stored ones.
EARLIEST_DATE = dt.date(1990, 1, 1)
DATE_AHEAD = {"manufactured_on": 1, "feature_support_end": 100, "security_support_end": 100}


def check_date(name: str, value: object, now: dt.datetime) -> None:
    """A registry date within its sane range (:data:`DATE_AHEAD`), else a 422 naming it."""
    if value is None:
        return
    if not isinstance(value, dt.date):
        raise inputs.invalid("body", name, "must be a date (YYYY-MM-DD)")
    latest = add_years(now.date(), DATE_AHEAD[name])
    if not EARLIEST_DATE <= value <= latest:
        raise inputs.invalid(
            "body", name, f"must be a date from {EARLIEST_DATE} to {latest} (server clock)"
        )


def _check_years(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 50:
        raise BundleError(f"{name} must be a whole number of years, 0-50")
    return value


async def _model(s: AsyncSession, model_id: str) -> ChargerModel:
    row = await s.get(ChargerModel, model_id)
    if row is None:
        raise NotFound(f"no charger model {model_id!r}")
    return row


async def create_model(
    s: AsyncSession, model: ModelInput, *, actor: str, now: dt.datetime
) -> ChargerModelView:
    if not 1 <= len(model.id) <= 20:
        raise BundleError("id must be the hardware model, 1-20 characters")
    _check_years("feature_support_years", model.feature_support_years)
    check_date("feature_support_end", model.feature_support_end, now)
    check_date("security_support_end", model.security_support_end, now)
    _check_years("security_support_years", model.security_support_years)
    if await s.get(ChargerModel, model.id) is not None:
        raise Conflict(f"charger model {model.id!r} exists")
    row = ChargerModel(**vars(model), created_at=now)
    s.add(row)
    view = _model_view(row)
    await audit.record(
        s,
        actor=actor,
        action="model.create",
        target=f"model:{model.id}",
        details=view.model_dump(mode="json"),
        now=now,
    )
    return view


async def update_model(
    s: AsyncSession, model_id: str, changes: Mapping[str, Any], *, actor: str, now: dt.datetime
) -> ChargerModelView:
    row = await _model(s, model_id)

    def change(name: str, value: Any) -> None:
        if name in ("feature_support_years", "security_support_years"):
            setattr(row, name, _check_years(name, value))
        elif name in ("vendor", "feature_support_end", "security_support_end"):
            if name != "vendor":
                check_date(name, value, now)
            setattr(row, name, value)
        else:
            raise BundleError(f"{name}: not a charger model field")

    await _record_changes(
        s,
        lambda: _model_view(row),
        changes,
        change,
        action="model.update",
        target=f"model:{model_id}",
        actor=actor,
        now=now,
    )
    return _model_view(row)


async def delete_model(s: AsyncSession, model_id: str, *, actor: str, now: dt.datetime) -> None:
    await s.delete(await _model(s, model_id))
    await audit.record(s, actor=actor, action="model.delete", target=f"model:{model_id}", now=now)


async def model_view(s: AsyncSession, model_id: str) -> ChargerModelView:
    return _model_view(await _model(s, model_id))


async def list_models(s: AsyncSession) -> list[ChargerModelView]:
    rows = (await s.scalars(select(ChargerModel).order_by(ChargerModel.id))).all()
    return [_model_view(r) for r in rows]


# -- stations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StationFilter:
    """Station list filters; ``None`` means any.  ``firmware`` is the main component."""

    model: str | None = None
    site: str | None = None
    customer: str | None = None
    tag: str | None = None
    connected: bool | None = None
    firmware: str | None = None

    def apply(self, q: Select[Station]) -> Select[Station]:
        for column, value in (
            (Station.model, self.model),
            (Station.site_id, self.site),
            (Station.customer, self.customer),
            (Station.connected, self.connected),
            (Station.firmware_version, self.firmware),
        ):
            if value is not None:
                q = q.where(column == value)
        if self.tag is not None:
            q = q.where(
                Station.id.in_(select(StationTag.station_id).where(StationTag.tag == self.tag))
            )
        return q


@dataclass
class _Extras:
    tags: dict[str, list[str]] = field(default_factory=dict)
    open_alerts: dict[str, int] = field(default_factory=dict)


async def _extras(s: AsyncSession, ids: Sequence[str]) -> _Extras:
    out = _Extras()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        for sid, tag in (
            await s.execute(
                select(StationTag.station_id, StationTag.tag)
                .where(StationTag.station_id.in_(chunk))
                .order_by(StationTag.tag)
            )
        ).all():
            out.tags.setdefault(sid, []).append(tag)
        counts = await s.execute(
            select(Alert.station_id, func.count())
            .where(Alert.station_id.in_(chunk), Alert.state != "resolved")
            .group_by(Alert.station_id)
        )
        out.open_alerts.update(dict(counts.all()))
    return out


def _summary(row: Station, extras: _Extras) -> StationSummary:
    return StationSummary(
        id=row.id,
        model=row.model,
        vendor=row.vendor,
        firmware_version=row.firmware_version,
        connected=row.connected,
        last_seen=row.last_seen,
        last_boot_reason=row.last_boot_reason,
        serial_number=row.serial_number,
        hardware_revision=row.hardware_revision,
        customer=row.customer,
        site_id=row.site_id,
        tags=extras.tags.get(row.id, []),
        manufactured_on=row.manufactured_on,
        reported_firmware=dict(row.reported_firmware or {}),
        expected_firmware=dict(row.expected_firmware or {}),
        security_profile=row.security_profile,
        certificate_expires_at=row.certificate_expires_at,
        open_alerts=extras.open_alerts.get(row.id, 0),
        ocpp_version=row.ocpp_version,
        legacy_firmware_update=bool(row.legacy_firmware_update),
        signed_update_support=row.signed_update_support,
    )


async def summaries(s: AsyncSession, rows: Sequence[Station]) -> list[StationSummary]:
    extras = await _extras(s, [r.id for r in rows])
    return [_summary(r, extras) for r in rows]


async def list_stations(
    s: AsyncSession, filters: StationFilter | None = None
) -> list[StationSummary]:
    q = select(Station).order_by(Station.id)
    if filters is not None:
        q = filters.apply(q)
    return await summaries(s, (await s.scalars(q)).all())


async def station_tags(s: AsyncSession, station_id: str) -> list[str]:
    q = select(StationTag.tag).where(StationTag.station_id == station_id).order_by(StationTag.tag)
    return list((await s.scalars(q)).all())


def check_firmware_map(name: str, value: object) -> dict[str, str]:
    most = DEFAULT_SERVER_LIMITS.station_components
    if not isinstance(value, dict) or len(value) > most:
        raise BundleError(f"{name} must map at most {most} components to versions")
    for component, version in value.items():
        try:
            check_component(component)
        except BundleError as e:
            raise BundleError(f"{name}: {e}") from e
        if not isinstance(version, str) or not 1 <= len(version) <= MAX_VERSION_CHARS:
            raise BundleError(f"{name}.{component} must be a version of 1-50 characters")
    return dict(value)


REGISTRY_FIELDS = frozenset(
    {
        "site_id",
        "tags",
        "hardware_revision",
        "manufactured_on",
        "expected_firmware",
        "legacy_firmware_update",  # plain OCPP 1.6 UpdateFirmware (ADR 0039)
    }
)


async def update_station(
    s: AsyncSession,
    station_id: str,
    changes: Mapping[str, Any],
    *,
    actor: str,
    now: dt.datetime,
) -> StationSummary:
    """Change a station's registry fields (:data:`REGISTRY_FIELDS`); one audit entry."""
    row = await s.get(Station, station_id)
    if row is None:
        raise NotFound(f"no station {station_id!r}")
    diff: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in REGISTRY_FIELDS:
            raise BundleError(
                f"{name}: not a registry field ({', '.join(sorted(REGISTRY_FIELDS))})"
            )
        if name == "tags":
            if value is None:
                value = []
            tags = check_tags(value)
            old = await station_tags(s, station_id)
            if tags != old:
                await s.execute(delete(StationTag).where(StationTag.station_id == station_id))
                s.add_all(StationTag(station_id=station_id, tag=t) for t in tags)
                diff["tags"] = {"from": old, "to": tags}
            continue
        if name == "site_id" and value is not None:
            await _site(s, value)
        if name == "expected_firmware":
            value = {**(row.expected_firmware or {}), **check_firmware_map(name, value or {})}
        if name == "manufactured_on":
            check_date(name, value, now)
        if name == "legacy_firmware_update" and not isinstance(value, bool):
            raise BundleError("legacy_firmware_update must be true or false")
        if name == "hardware_revision" and value is not None and len(value) > 32:
            raise BundleError("hardware_revision must be at most 32 characters")
        old_value = getattr(row, name)
        if old_value != value:
            setattr(row, name, value)
            diff[name] = {"from": _jsonable(old_value), "to": _jsonable(value)}
    if diff:
        await audit.record(
            s,
            actor=actor,
            action="station.registry_update",
            target=station_id,
            details=diff,
            now=now,
        )
    if "expected_firmware" in diff:
        # A new expectation is judged against what the station last reported.
        reported = dict(row.reported_firmware or {})
        changed = diff["expected_firmware"]["to"]
        await alerts.check_drift(
            s, row, {c: v for c, v in reported.items() if c in changed}, now=now
        )
    await s.flush()
    return (await summaries(s, [row]))[0]


async def record_reported_firmware(
    s: AsyncSession, row: Station, reported: Mapping[str, str], *, now: dt.datetime
) -> None:
    """Store what a station reports per component (BootNotification: ``main``) and check drift.

    Components not in ``reported`` keep their last report.
    """
    reported = {c: v[:MAX_VERSION_CHARS] for c, v in reported.items()}
    row.reported_firmware = {**(row.reported_firmware or {}), **reported}
    await alerts.check_drift(s, row, reported, now=now)


def _jsonable(value: object) -> object:
    return value.isoformat() if isinstance(value, dt.date) else value


# -- support periods ------------------------------------------------------------------------


async def support_report(
    s: AsyncSession, *, today: dt.date, within_days: int, station_id: str | None = None
) -> list[SupportView]:
    """Stations whose feature or security support has ended, ends within ``within_days``, or
    cannot be computed (no manufacture date) — or the one ``station_id``, whatever its state."""
    if not 0 <= within_days <= 36500:
        raise BundleError("within_days must be 0-36500")
    models = {m.id: m for m in (await s.scalars(select(ChargerModel))).all()}
    q = select(Station).order_by(Station.id)
    if station_id is not None:
        q = q.where(Station.id == station_id)
    out: list[SupportView] = []
    for row in (await s.scalars(q)).all():
        view = support_of(row, models.get(row.model or ""), today, within_days)
        flagged = view.feature_state != "supported" or view.security_state != "supported"
        if flagged or station_id is not None:
            out.append(view)
    return out


def support_of(
    row: Station, model: ChargerModel | None, today: dt.date, within_days: int
) -> SupportView:
    feature_end = support_end(
        row.manufactured_on,
        years=model.feature_support_years if model else DEFAULT_FEATURE_YEARS,
        explicit=model.feature_support_end if model else None,
    )
    security_end = support_end(
        row.manufactured_on,
        years=model.security_support_years if model else DEFAULT_SECURITY_YEARS,
        explicit=model.security_support_end if model else None,
    )
    return SupportView(
        station_id=row.id,
        model=row.model,
        site_id=row.site_id,
        customer=row.customer,
        manufactured_on=row.manufactured_on,
        feature_support_end=feature_end,
        feature_state=support_state(feature_end, today, within_days),
        feature_days_left=(feature_end - today).days if feature_end else None,
        security_support_end=security_end,
        security_state=support_state(security_end, today, within_days),
        security_days_left=(security_end - today).days if security_end else None,
    )
