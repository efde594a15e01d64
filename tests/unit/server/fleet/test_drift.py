"""Firmware drift: a station reporting firmware that no update from Chargeward explains."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ocpp.v201 import ChargePoint, call
from websockets.asyncio.client import connect

from chargeward import audit
from chargeward.server.fleet import alerts, fleet, station_registry
from chargeward.server.rollout import update_orders
from chargeward.server.stations import station_reports
from chargeward.server.stations.csms import CsmsListener, Registry
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Release, ReleaseImage, Station
from tests.support.api_app import Api, running_api

NOW = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC)
PASSWORD = "Station-Password-0123456789"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    db = await Database.open(data_dir=tmp_path)
    async with db.session() as s:
        await station_registry.register_station(
            s, "CP-1", actor="test", model="AC22", password=PASSWORD, now=NOW
        )
    yield db
    await db.close()


async def boot(
    db: Database, version: str, *, reason: str = "PowerUp", at: dt.datetime = NOW
) -> None:
    async with db.session() as s:
        await station_reports.record_boot(
            s, "CP-1", reason=reason, firmware_version=version, model="AC22",
            vendor="ACME", serial_number="SN-1", now=at,
        )  # fmt: skip


async def drift_alerts(db: Database) -> list[alerts.AlertView]:
    async with db.session() as s:
        return await alerts.list_alerts(s, kind="firmware_drift")


async def actions(db: Database, action: str) -> list[audit.Entry]:
    async with db.session() as s:
        return [e for e in await audit.entries(s, target="CP-1") if e.action == action]


async def expected(db: Database) -> dict[str, str]:
    async with db.session() as s:
        row = await s.get(Station, "CP-1")
        assert row is not None
        return dict(row.expected_firmware)


async def test_a_station_without_expectation_adopts_its_first_report(db: Database) -> None:
    await boot(db, "1.0")
    assert await expected(db) == {"main": "1.0"}
    assert await drift_alerts(db) == []


async def test_drift_raises_one_alert_until_the_expected_version_returns(db: Database) -> None:
    await boot(db, "1.0")
    await boot(db, "1.1")
    [alert] = await drift_alerts(db)
    assert (alert.state, alert.severity, alert.station_id) == ("open", "critical", "CP-1")
    assert alert.details == {"component": "main", "expected": "1.0", "reported": "1.1"}
    [entry] = await actions(db, "station.firmware_drift")
    assert entry.details["alert_id"] == alert.id and entry.details["reported"] == "1.1"

    await boot(db, "1.1", at=NOW + dt.timedelta(hours=1))  # the same drift again
    [alert] = await drift_alerts(db)
    assert alert.count == 2 and alert.last_seen_at == NOW + dt.timedelta(hours=1)
    assert len(await actions(db, "station.firmware_drift")) == 1

    await boot(db, "1.0")  # back on the expected version
    [alert] = await drift_alerts(db)
    assert alert.state == "resolved" and alert.resolved_at == NOW
    assert len(await actions(db, "alert.resolve")) == 1
    assert await expected(db) == {"main": "1.0"}  # drift never moves the expectation


async def test_a_different_drift_supersedes_the_open_alert(db: Database) -> None:
    await boot(db, "1.0")
    await boot(db, "1.1")
    await boot(db, "1.2")
    newest, older = await drift_alerts(db)
    assert older.state == "resolved" and older.details["reported"] == "1.1"
    assert newest.state == "open" and newest.details["reported"] == "1.2"


async def _sent_update(
    db: Database, version: str, components: tuple[str, ...] = ("main",)
) -> update_orders.UpdateOrder:
    """An UpdateFirmware Chargeward sent for ``version`` (a release of ``components``)."""
    release_id = version.encode().hex().ljust(64, "0")
    async with db.session() as s:
        s.add(
            Release(
                id=release_id, version=version, security_version=2,
                hardware_models={"models": ["AC22"]}, signing_certificate_pem="",
                manifest_json="{}", uploaded_by="test", uploaded_at=NOW,
            )
        )  # fmt: skip
        await s.flush()
        s.add_all(
            ReleaseImage(
                release_id=release_id, component=c, sha256="0" * 64, length=1, signature=f"{c}-sig"
            )
            for c in components
        )
        await s.flush()
        order = await update_orders.create_update(
            s, "CP-1", release_id, actor="alice", now=NOW, require_published=False
        )
    return order


async def test_an_update_chargeward_sent_moves_the_expectation(db: Database) -> None:
    await boot(db, "1.0")
    tid = (await _sent_update(db, "1.1")).transaction_id
    async with db.session() as s:
        for status in ("Downloading", "Downloaded", "Installing", "InstallRebooting"):
            await station_reports.record_firmware_status(
                s, "CP-1", status=status, request_id=1, now=NOW
            )
    await boot(db, "1.1", reason="FirmwareUpdate")
    assert await drift_alerts(db) == []
    assert await expected(db) == {"main": "1.1"}
    [moved] = await actions(db, "station.expected_firmware")
    assert moved.transaction_id == tid and moved.details == {
        "component": "main",
        "from": "1.0",
        "to": "1.1",
    }
    async with db.session() as s:
        await station_reports.record_firmware_status(
            s, "CP-1", status="Installed", request_id=1, now=NOW
        )
    await boot(db, "1.1", at=NOW + dt.timedelta(days=3))  # later reboots: still no drift
    assert await drift_alerts(db) == []


async def test_an_update_for_another_version_does_not_explain_drift(db: Database) -> None:
    await boot(db, "1.0")
    await _sent_update(db, "1.1")
    await boot(db, "1.3", reason="FirmwareUpdate")
    [alert] = await drift_alerts(db)
    assert alert.details["reported"] == "1.3" and await expected(db) == {"main": "1.0"}


async def test_accepting_the_reported_version_resolves_the_drift(db: Database) -> None:
    await boot(db, "1.0")
    await boot(db, "1.1")
    async with db.session() as s:
        await fleet.update_station(
            s, "CP-1", {"expected_firmware": {"main": "1.1"}}, actor="alice", now=NOW
        )
    [alert] = await drift_alerts(db)
    assert alert.state == "resolved"


# -- over real OCPP -------------------------------------------------------------------------


async def _boot_over_ocpp(port: int, version: str) -> str:
    auth = base64.b64encode(f"CP-1:{PASSWORD}".encode()).decode()
    async with connect(
        f"ws://127.0.0.1:{port}/ocpp/CP-1",
        subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Basic {auth}"},
    ) as ws:
        cp = ChargePoint("CP-1", ws)
        reader = asyncio.create_task(cp.start())
        try:
            result = await cp.call(
                call.BootNotification(
                    charging_station={
                        "model": "AC22",
                        "vendor_name": "ACME",
                        "firmware_version": version,
                    },
                    reason="PowerUp",
                )
            )
        finally:
            reader.cancel()
    return str(result.status)


async def test_drift_reported_in_a_real_boot_notification(tmp_path: Path) -> None:
    async with running_api(tmp_path, NOW) as api:
        await _drift_over_ocpp(api)


async def _drift_over_ocpp(api: Api) -> None:
    async with api.db.session() as s:
        await station_registry.register_station(
            s, "CP-1", actor="test", model="AC22", password=PASSWORD, now=NOW
        )
        row = await s.get(Station, "CP-1")
        assert row is not None
        row.security_profile = 1  # plain ws on loopback for this test
    await api.call("PATCH", "/api/v1/stations/CP-1", json={"expected_firmware": {"main": "1.0"}})
    listener = CsmsListener(api.db, Registry(), allow_profile_1=True)
    server = await listener.serve("127.0.0.1", 0)
    port = next(iter(server.sockets)).getsockname()[1]
    try:
        assert await _boot_over_ocpp(port, "1.1") == "Accepted"
        [alert] = await api.call("GET", "/api/v1/alerts?state=open&kind=firmware_drift")
        assert alert["station_id"] == "CP-1" and alert["details"]["reported"] == "1.1"
        acked = await api.call(
            "POST", f"/api/v1/alerts/{alert['id']}/acknowledge", json={"note": "on site"}
        )
        assert acked["state"] == "acknowledged" and acked["acknowledged_by"] == "alice"
        await api.call("POST", f"/api/v1/alerts/{alert['id']}/acknowledge", 409)

        assert await _boot_over_ocpp(port, "1.1") == "Accepted"  # same drift: no new alert
        [alert] = await api.call("GET", "/api/v1/alerts?state=active")
        assert alert["count"] == 2 and alert["state"] == "acknowledged"
        station = await api.call("GET", "/api/v1/stations/CP-1")
        assert station["reported_firmware"] == {"main": "1.1"} and station["open_alerts"] == 1
        assert [a["id"] for a in station["alerts"]] == [alert["id"]]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_multi_image_release_sends_its_primary_and_explains_the_new_version(
    db: Database,
) -> None:
    await boot(db, "1.0")
    order = await _sent_update(db, "1.1", ("ui", "app", "modem"))  # no "main": "app" is primary
    assert order.signature == "app-sig"
    await boot(db, "1.1", reason="FirmwareUpdate")  # firmwareVersion: the release version
    assert await drift_alerts(db) == []
    assert await expected(db) == {"main": "1.1"}
