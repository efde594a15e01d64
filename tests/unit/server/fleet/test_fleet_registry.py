"""The fleet registry over the real REST API: sites, models, station fields and filters."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chargeward import audit
from chargeward.errors import BundleError
from chargeward.model.fleet import in_window, parse_windows
from chargeward.server.fleet import fleet, station_registry
from chargeward.server.stations import station_reports
from tests.support.api_app import Api, running_api

NOW = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)
NIGHTS = [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "01:00", "end": "05:00"}]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path, NOW) as api:
        yield api


def site(**kw: object) -> dict[str, object]:
    return {"id": "lon-1", "name": "London depot", "timezone": "Europe/London", **kw}


def window(**kw: object) -> dict[str, object]:
    return site(maintenance_windows=[{**NIGHTS[0], **kw}])


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        (site(timezone="Europe/Londn"), "timezone", "not an IANA time zone"),
        (site(timezone="CET+1"), "timezone", "not an IANA time zone"),
        (window(start="25:00"), "maintenance_windows", "maintenance_windows[0].start must be"),
        (window(end="5:00"), "maintenance_windows", "maintenance_windows[0].end must be"),
        (window(days=["monday"]), "maintenance_windows", "maintenance_windows[0].days"),
        (window(end="01:00"), "maintenance_windows", "start and end are equal"),
        (site(id="no spaces"), "id", "id must be"),
    ],
)
async def test_bad_sites_are_refused_naming_the_field(
    api: Api, body: dict[str, object], field: str, says: str
) -> None:
    r = await api.client.post("/api/v1/sites", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == field and says in error["message"], error
    assert await api.call("GET", "/api/v1/sites") == []
    # The service refuses the same input for callers other than the API.
    entry = fleet.SiteInput(customer=None, **{"maintenance_windows": [], **body})  # type: ignore[arg-type]
    async with api.db.session() as s:
        with pytest.raises(BundleError, match=re.escape(says)):
            await fleet.create_site(s, entry, actor="test", now=NOW)


async def test_unknown_fields_are_refused(api: Api) -> None:
    r = await api.client.post("/api/v1/sites", json=site(timezon="Europe/Paris"))
    assert r.status_code == 422 and "timezon" in r.text


async def test_site_round_trip_is_audited(api: Api) -> None:
    created = await api.call(
        "POST", "/api/v1/sites", 201, json=site(maintenance_windows=NIGHTS, customer="acme")
    )
    assert created["maintenance_windows"] == [
        {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "01:00", "end": "05:00"}
    ]
    again = await api.client.post("/api/v1/sites", json=site())
    assert again.status_code == 409
    weekend = [{"days": ["sun", "sat"], "start": "22:00", "end": "04:00"}]  # crosses midnight
    patched = await api.call(
        "PATCH", "/api/v1/sites/lon-1", json={"maintenance_windows": weekend, "name": "Depot"}
    )
    assert patched["maintenance_windows"] == [
        {"days": ["sat", "sun"], "start": "22:00", "end": "04:00"}
    ]
    assert patched["name"] == "Depot" and patched["timezone"] == "Europe/London"
    assert [s["id"] for s in await api.call("GET", "/api/v1/sites")] == ["lon-1"]
    await api.call("DELETE", "/api/v1/sites/lon-1", 204)
    await api.call("GET", "/api/v1/sites/lon-1", 404)
    async with api.db.session() as s:
        actions = [e.action for e in await audit.entries(s, target="site:lon-1")]
    assert actions == ["site.create", "site.update", "site.delete"]


async def test_model_round_trip(api: Api) -> None:
    m = await api.call("POST", "/api/v1/models", 201, json={"id": "AC22", "vendor": "ACME"})
    assert (m["feature_support_years"], m["security_support_years"]) == (3, 5)
    m = await api.call("PATCH", "/api/v1/models/AC22", json={"security_support_end": "2031-12-31"})
    assert m["security_support_end"] == "2031-12-31" and m["vendor"] == "ACME"
    r = await api.client.post("/api/v1/models", json={"id": "X", "feature_support_years": -1})
    assert r.status_code == 422 and "feature_support_years" in r.text
    assert [x["id"] for x in await api.call("GET", "/api/v1/models")] == ["AC22"]


async def _stations(api: Api, *ids: str, model: str = "AC22") -> None:
    async with api.db.session() as s:
        for sid in ids:
            await station_registry.register_station(s, sid, actor="test", model=model, now=NOW)


async def test_station_registry_fields_and_filters(api: Api) -> None:
    await api.call("POST", "/api/v1/sites", 201, json=site())
    await _stations(api, "CP-1", "CP-2")
    await _stations(api, "CP-3", model="DC50")
    body = {
        "site_id": "lon-1",
        "tags": ["pilot", "depot:north"],
        "hardware_revision": "B2",
        "manufactured_on": "2024-03-01",
        "expected_firmware": {"main": "1.0.0"},
    }
    one = await api.call("PATCH", "/api/v1/stations/CP-1", json=body)
    assert one["tags"] == ["depot:north", "pilot"] and one["site_id"] == "lon-1"
    assert one["expected_firmware"] == {"main": "1.0.0"} and one["security_profile"] == 2
    await api.call("PATCH", "/api/v1/stations/CP-3", json={"tags": ["pilot"]})
    async with api.db.session() as s:
        await station_reports.record_boot(
            s, "CP-2", reason="PowerUp", firmware_version="1.0.0", model="AC22",
            vendor="ACME", serial_number="SN-2", now=NOW,
        )  # fmt: skip

    async def ids(query: str) -> list[str]:
        return [x["id"] for x in await api.call("GET", f"/api/v1/stations?{query}")]

    assert await ids("site=lon-1") == ["CP-1"]
    assert await ids("tag=pilot") == ["CP-1", "CP-3"]
    assert await ids("tag=pilot&model=DC50") == ["CP-3"]
    assert await ids("model=AC22") == ["CP-1", "CP-2"]
    assert await ids("firmware=1.0.0") == ["CP-2"]
    assert await ids("connected=false") == ["CP-1", "CP-2", "CP-3"]
    assert await ids("connected=true") == []
    assert await ids("tag=none") == []
    detail = await api.call("GET", "/api/v1/stations/CP-2")
    assert detail["reported_firmware"] == {"main": "1.0.0"} and detail["serial_number"] == "SN-2"
    assert detail["logs"] == "/api/v1/stations/CP-2/logs"

    # Clearing and refusing: null clears, unknown site 404, bad tag / field 422.
    cleared = await api.call("PATCH", "/api/v1/stations/CP-1", json={"site_id": None, "tags": []})
    assert cleared["site_id"] is None and cleared["tags"] == []
    await api.call("PATCH", "/api/v1/stations/CP-1", 404, json={"site_id": "nowhere"})
    r = await api.client.patch("/api/v1/stations/CP-1", json={"tags": ["has space"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "tags"
    r = await api.client.patch("/api/v1/stations/CP-1", json={"manufactured_on": "2024-13-01"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "manufactured_on"
    r = await api.client.patch("/api/v1/stations/CP-1", json={"expected_firmware": {"Main!": "1"}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "expected_firmware"
    await api.call("PATCH", "/api/v1/stations/CP-9", 404, json={"tags": []})

    async with api.db.session() as s:
        updates = [e for e in await audit.entries(s, target="CP-1") if "registry" in e.action]
    assert len(updates) == 2
    assert updates[0].actor == "alice"
    assert updates[0].details["hardware_revision"] == {"from": None, "to": "B2"}
    assert updates[1].details["site_id"] == {"from": "lon-1", "to": None}


async def test_a_site_with_stations_cannot_be_deleted(api: Api) -> None:
    await api.call("POST", "/api/v1/sites", 201, json=site())
    await _stations(api, "CP-1")
    await api.call("PATCH", "/api/v1/stations/CP-1", json={"site_id": "lon-1"})
    assert (await api.call("GET", "/api/v1/sites/lon-1"))["stations"] == 1
    r = await api.client.delete("/api/v1/sites/lon-1")
    assert r.status_code == 409 and "1 station" in r.text


def test_windows_follow_local_time_across_midnight_and_dst() -> None:
    windows = parse_windows([{"days": ["sat"], "start": "23:00", "end": "02:00"}])
    london = "Europe/London"
    # Saturday 28 March 2026, 23:30 GMT; clocks go forward at 01:00 GMT on Sunday.
    assert in_window(windows, london, dt.datetime(2026, 3, 28, 23, 30, tzinfo=dt.UTC))
    assert in_window(windows, london, dt.datetime(2026, 3, 29, 0, 30, tzinfo=dt.UTC))
    # 01:00 UTC is 02:00 BST: the window has closed.
    assert not in_window(windows, london, dt.datetime(2026, 3, 29, 1, 0, tzinfo=dt.UTC))
    # Friday night is not a listed start day.
    assert not in_window(windows, london, dt.datetime(2026, 3, 27, 23, 30, tzinfo=dt.UTC))
    with pytest.raises(BundleError, match=r"maintenance_windows\[0\]\.start"):
        parse_windows([{"days": ["sat"], "start": "24:00", "end": "02:00"}])
