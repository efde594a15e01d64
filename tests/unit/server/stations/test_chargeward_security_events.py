"""Chargeward's own security events (issue 29): an agent sends them as OCPP-listed types with
its own name first in techInfo; the server stores, audits and acts on them under that name,
and still accepts the old type names from older agents."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chargeward import audit
from chargeward.ocpp.security_events import CHARGEWARD_TYPES, OCPP_TYPES, on_the_wire
from chargeward.server.fleet import station_registry
from chargeward.server.stations import station_reports
from tests.support.api_app import Api, running_api

NOW = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path, NOW) as api:
        async with api.db.session() as s:
            await station_registry.register_station(s, "CP-1", actor="test", model="AC22", now=NOW)
        yield api


async def record(api: Api, type: str, info: str, minutes: int) -> None:
    async with api.db.session() as s:
        await station_reports.record_security_event(
            s,
            "CP-1",
            type=type,
            timestamp=NOW + dt.timedelta(minutes=minutes),
            tech_info=info,
            now=NOW + dt.timedelta(minutes=minutes, seconds=1),
        )


@pytest.mark.parametrize("name", sorted(CHARGEWARD_TYPES))
async def test_a_chargeward_event_sent_as_a_listed_type_is_recorded_under_its_name(
    api: Api, name: str
) -> None:
    wire_type, wire_info = on_the_wire(name, "the detail")
    assert wire_type in OCPP_TYPES and wire_info == f"{name}: the detail"
    await record(api, wire_type, wire_info, 0)
    await record(api, name, "from an older agent", 1)  # the old type name still accepted

    rows = await api.call("GET", "/api/v1/security-events?station_id=CP-1")
    assert [(r["type"], r["tech_info"]) for r in rows] == [
        (name, "from an older agent"),
        (name, "the detail"),
    ]
    async with api.db.session() as s:
        entries = [
            e.details
            for e in await audit.entries(s, target="CP-1")
            if e.action == "station.security_event"
        ]
    assert [(d["type"], d["tech_info"], d.get("ocpp_type")) for d in entries] == [
        (name, "the detail", wire_type),
        (name, "from an older agent", None),
    ]
    # Chargeward's events raise no security-event alert, as before (a critical listed
    # type such as InvalidFirmwareSignature would).
    assert await api.call("GET", "/api/v1/alerts?kind=security_event") == []


async def test_a_listed_type_with_another_events_name_is_kept_as_sent(api: Api) -> None:
    await record(api, "InvalidFirmwareSignature", "FirmwareRollbackRefused: not its type", 0)
    [row] = await api.call("GET", "/api/v1/security-events?station_id=CP-1")
    assert row["type"] == "InvalidFirmwareSignature"
    assert row["tech_info"] == "FirmwareRollbackRefused: not its type"
