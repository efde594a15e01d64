"""Security events: every SecurityEventNotification stored and searchable; critical ones alert."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chargeward import audit
from chargeward.server.fleet import station_registry
from chargeward.server.stations import station_reports
from tests.support.api_app import Api, running_api

NOW = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path, NOW) as api:
        async with api.db.session() as s:
            for sid in ("CP-1", "CP-2"):
                await station_registry.register_station(s, sid, actor="test", model="AC22", now=NOW)
        yield api


async def event(api: Api, station: str, type: str, minutes: int, info: str | None = None) -> None:
    async with api.db.session() as s:
        await station_reports.record_security_event(
            s,
            station,
            type=type,
            timestamp=NOW + dt.timedelta(minutes=minutes),
            tech_info=info,
            now=NOW + dt.timedelta(minutes=minutes, seconds=1),
        )


async def test_events_are_stored_and_searchable(api: Api) -> None:
    await event(api, "CP-1", "StartupOfTheDevice", 0)
    await event(api, "CP-1", "FirmwareUpdated", 10, "1.1.0")
    await event(api, "CP-2", "StartupOfTheDevice", 20)
    await event(api, "CP-2", "InvalidFirmwareSignature", 30, "request 7")

    async def types(query: str) -> list[tuple[str, str]]:
        rows = await api.call("GET", f"/api/v1/security-events?{query}")
        return [(r["station_id"], r["type"]) for r in rows]

    assert await types("") == [  # newest first
        ("CP-2", "InvalidFirmwareSignature"),
        ("CP-2", "StartupOfTheDevice"),
        ("CP-1", "FirmwareUpdated"),
        ("CP-1", "StartupOfTheDevice"),
    ]
    assert await types("station_id=CP-1") == [
        ("CP-1", "FirmwareUpdated"),
        ("CP-1", "StartupOfTheDevice"),
    ]
    assert await types("type=StartupOfTheDevice") == [
        ("CP-2", "StartupOfTheDevice"),
        ("CP-1", "StartupOfTheDevice"),
    ]
    assert await types("since=2026-11-22T09:10:00Z&until=2026-11-22T09:20:00Z") == [
        ("CP-2", "StartupOfTheDevice"),
        ("CP-1", "FirmwareUpdated"),
    ]
    assert await types("critical=true") == [("CP-2", "InvalidFirmwareSignature")]
    assert await types("limit=1&offset=1") == [("CP-2", "StartupOfTheDevice")]
    [row] = await api.call("GET", "/api/v1/security-events?type=FirmwareUpdated")
    assert row["tech_info"] == "1.1.0" and row["critical"] is False
    assert row["timestamp"].startswith("2026-11-22T09:10:00")

    r = await api.client.get("/api/v1/security-events?since=2026-11-22T09:10:00")
    assert r.status_code == 422 and "since needs a UTC offset" in r.text
    r = await api.client.get("/api/v1/security-events?limit=0")
    assert r.status_code == 422 and r.json()["error"]["field"] == "limit"


async def test_critical_events_raise_alerts_and_routine_ones_do_not(api: Api) -> None:
    await event(api, "CP-1", "StartupOfTheDevice", 0)
    await event(api, "CP-1", "FirmwareUpdated", 1, "1.1.0")
    assert await api.call("GET", "/api/v1/alerts") == []

    await event(api, "CP-1", "TamperDetectionActivated", 2, "enclosure opened")
    await event(api, "CP-1", "TamperDetectionActivated", 3, "enclosure opened")  # counted
    await event(api, "CP-2", "InvalidTLSVersion", 4, "TLS 1.0 offered")
    tls, tamper = await api.call("GET", "/api/v1/alerts?kind=security_event")
    assert (tamper["station_id"], tamper["severity"], tamper["count"]) == ("CP-1", "critical", 2)
    assert tamper["message"] == "CP-1 reported TamperDetectionActivated: enclosure opened"
    assert (tls["station_id"], tls["severity"]) == ("CP-2", "warning")
    async with api.db.session() as s:
        raised = [e for e in await audit.entries(s, target="CP-1") if e.action == "alert.raise"]
    assert len(raised) == 1 and raised[0].details["type"] == "TamperDetectionActivated"

    # Acknowledged: the next tamper event is a new incident, with a new alert.
    await api.call("POST", f"/api/v1/alerts/{tamper['id']}/acknowledge", json={"note": "checked"})
    await event(api, "CP-1", "TamperDetectionActivated", 5)
    rows = await api.call("GET", "/api/v1/alerts?station_id=CP-1&state=open")
    assert len(rows) == 1 and rows[0]["id"] != tamper["id"]
    station = await api.call("GET", "/api/v1/stations/CP-1")
    assert station["open_alerts"] == 2  # one open, one acknowledged
    assert [e["critical"] for e in station["security_events"]] == [False, False, True, True, True]
    await api.call("POST", "/api/v1/alerts/999/acknowledge", 404)
    r = await api.client.get("/api/v1/alerts?state=closed")
    assert r.status_code == 422 and r.json()["error"]["field"] == "state"
