"""Support periods: 3 years of feature and 5 of security updates from manufacture by default
(ETSI EN 303 645 5.3-13, UK SI 2021/1467 Sch. 1 para 11), per-model overrides, boundaries."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chargeward.model.fleet import support_end
from chargeward.server.fleet import station_registry
from tests.support.api_app import Api, running_api

TODAY = dt.date(2026, 11, 22)
NOW = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path, NOW) as api:
        yield api


async def station(api: Api, sid: str, manufactured: dt.date | None, model: str = "AC22") -> None:
    async with api.db.session() as s:
        await station_registry.register_station(s, sid, actor="test", model=model, now=NOW)
    if manufactured is not None:
        await api.call(
            "PATCH", f"/api/v1/stations/{sid}", json={"manufactured_on": manufactured.isoformat()}
        )


async def report(api: Api, within: int) -> dict[str, dict[str, Any]]:
    rows = await api.call("GET", f"/api/v1/fleet/support?within_days={within}")
    return {r["station_id"]: r for r in rows}


def test_defaults_count_years_from_manufacture() -> None:
    assert support_end(dt.date(2023, 5, 1), years=3, explicit=None) == dt.date(2026, 5, 1)
    assert support_end(dt.date(2024, 2, 29), years=5, explicit=None) == dt.date(2029, 2, 28)
    assert support_end(None, years=5, explicit=None) is None
    assert support_end(None, years=5, explicit=dt.date(2030, 1, 1)) == dt.date(2030, 1, 1)


async def test_boundaries_of_the_feature_period(api: Api) -> None:
    three_years_ago = TODAY.replace(year=TODAY.year - 3)
    await station(api, "AT-END", three_years_ago)  # feature support ends today (last day)
    await station(api, "DAY-BEFORE", three_years_ago + dt.timedelta(days=1))  # ends tomorrow
    await station(api, "OUT", three_years_ago - dt.timedelta(days=1))  # ended yesterday
    await station(api, "NEW", TODAY - dt.timedelta(days=30))  # fine for years
    await station(api, "NO-DATE", None)

    r = await report(api, 0)
    assert set(r) == {"AT-END", "OUT", "NO-DATE"}
    assert r["AT-END"]["feature_state"] == "ending"
    assert r["AT-END"]["feature_days_left"] == 0
    assert r["AT-END"]["feature_support_end"] == TODAY.isoformat()
    assert r["OUT"]["feature_state"] == "ended" and r["OUT"]["feature_days_left"] == -1
    # Security support runs two more years for all of them.
    assert r["OUT"]["security_state"] == "supported"
    assert (
        r["OUT"]["security_support_end"]
        == (TODAY.replace(year=TODAY.year + 2) - dt.timedelta(days=1)).isoformat()
    )
    unknown = r["NO-DATE"]  # listed as unknown, not skipped
    assert (unknown["feature_state"], unknown["security_state"]) == ("unknown", "unknown")
    assert unknown["security_support_end"] is None and unknown["manufactured_on"] is None

    r = await report(api, 1)
    assert set(r) == {"AT-END", "DAY-BEFORE", "OUT", "NO-DATE"}
    assert r["DAY-BEFORE"]["feature_state"] == "ending"
    assert r["DAY-BEFORE"]["feature_days_left"] == 1


async def test_security_support_ends_five_years_after_manufacture(api: Api) -> None:
    five_years_ago = TODAY.replace(year=TODAY.year - 5)
    await station(api, "AT-END", five_years_ago)
    await station(api, "OUT", five_years_ago - dt.timedelta(days=1))
    r = await report(api, 0)
    assert (r["AT-END"]["security_state"], r["AT-END"]["security_days_left"]) == ("ending", 0)
    assert (r["OUT"]["security_state"], r["OUT"]["security_days_left"]) == ("ended", -1)


async def test_feature_support_ends_first(api: Api) -> None:
    three_years_ago = TODAY.replace(year=TODAY.year - 3)
    await station(api, "CP-1", three_years_ago + dt.timedelta(days=90))
    assert await report(api, 89) == {}
    r = await report(api, 90)
    assert r["CP-1"]["feature_state"] == "ending" and r["CP-1"]["feature_days_left"] == 90
    assert r["CP-1"]["security_state"] == "supported"


async def test_model_overrides(api: Api) -> None:
    manufactured = TODAY - dt.timedelta(days=365)
    await station(api, "LONG", manufactured, model="AC22")
    await station(api, "SHORT", manufactured, model="DC50")
    await station(api, "FIXED", None, model="HPC1")
    await api.call(
        "POST",
        "/api/v1/models",
        201,
        json={"id": "DC50", "feature_support_years": 1, "security_support_years": 2},
    )
    await api.call(
        "POST",
        "/api/v1/models",
        201,
        json={
            "id": "HPC1",
            "feature_support_end": "2026-12-31",
            "security_support_end": "2030-06-30",
        },
    )
    r = await report(api, 60)
    assert "LONG" not in r  # no model entry: the defaults, 3 and 5 years
    assert (
        r["SHORT"]["feature_support_end"]
        == (manufactured.replace(year=manufactured.year + 1)).isoformat()
    )
    assert r["SHORT"]["feature_state"] == "ending"
    # Explicit end dates apply even without a manufacture date.
    assert r["FIXED"]["feature_support_end"] == "2026-12-31"
    assert r["FIXED"]["feature_state"] == "ending"
    assert r["FIXED"]["security_state"] == "supported"

    await api.call("PATCH", "/api/v1/models/DC50", json={"feature_support_years": 4})
    assert "SHORT" not in await report(api, 60)
    detail = await api.call("GET", "/api/v1/stations/FIXED")
    assert detail["support"]["security_support_end"] == "2030-06-30"


async def test_within_days_is_checked(api: Api) -> None:
    r = await api.client.get("/api/v1/fleet/support?within_days=-1")
    assert r.status_code == 422 and r.json()["error"]["field"] == "within_days"
