"""The fleet registry's queries on SQLite and PostgreSQL: filters, alerts, event search."""

from __future__ import annotations

import datetime as dt

import pytest

from chargeward.server.fleet import alerts, fleet, station_registry
from chargeward.server.stations import station_reports
from chargeward.server.store.db import Database

NOW = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_registry_queries(db: Database) -> None:
    async with db.session() as s:
        await fleet.create_site(
            s, fleet.SiteInput("lon-1", "London", "acme", "Europe/London", []), actor="t", now=NOW
        )
        for sid in ("CP-1", "CP-2"):
            await station_registry.register_station(s, sid, actor="t", model="AC22", now=NOW)
    async with db.session() as s:
        await fleet.update_station(
            s,
            "CP-1",
            {"site_id": "lon-1", "tags": ["pilot"], "manufactured_on": dt.date(2020, 1, 1)},
            actor="t",
            now=NOW,
        )
        for version in ("1.0", "1.1", "1.1"):
            await station_reports.record_boot(
                s, "CP-1", reason="PowerUp", firmware_version=version, model="AC22",
                vendor="ACME", serial_number=None, now=NOW,
            )  # fmt: skip
        await station_reports.record_security_event(
            s, "CP-2", type="InvalidCsmsCertificate", timestamp=NOW, tech_info=None, now=NOW
        )
    async with db.snapshot() as s:
        rows = await fleet.list_stations(s, fleet.StationFilter(site="lon-1", tag="pilot"))
        assert [(r.id, r.open_alerts, r.tags) for r in rows] == [("CP-1", 1, ["pilot"])]
        assert [x.stations for x in await fleet.list_sites(s)] == [1]
        [drift] = await alerts.list_alerts(s, kind="firmware_drift", state="active")
        assert drift.count == 2
        events = await alerts.search_security_events(
            s, critical=True, since=NOW - dt.timedelta(minutes=1), until=NOW
        )
        assert [(e.station_id, e.critical) for e in events] == [("CP-2", True)]
        support = await fleet.support_report(s, today=NOW.date(), within_days=30)
        assert {(v.station_id, v.security_state, v.security_support_end) for v in support} == {
            ("CP-1", "ended", dt.date(2025, 1, 1)),
            ("CP-2", "unknown", None),
        }
