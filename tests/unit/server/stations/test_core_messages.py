"""Authorize, MeterValues, NotifyEvent and NotifyReport from a real station on loopback are
answered (not CALLERROR NotImplemented) and kept within their bounds (ADR 0035)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ocpp.v201 import ChargePoint, call
from sqlalchemy import func, select
from websockets.asyncio.client import connect

from chargeward.limits import ServerLimits
from chargeward.server.fleet import station_registry
from chargeward.server.stations import core_reports
from chargeward.server.stations.csms import CsmsListener, Registry
from chargeward.server.store import tables
from chargeward.server.store.db import Database
from tests.support.api_app import running_api

NOW = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
PASSWORD = "Station-Password-0123456789"
SID = "CP-CORE-1"


@dataclasses.dataclass
class Loopback:
    db: Database
    listener: CsmsListener
    cp: ChargePoint


@pytest.fixture
async def station(tmp_path: Path) -> AsyncIterator[Loopback]:
    """A booted ``ocpp`` ChargePoint connected to a CsmsListener on loopback."""
    db = await Database.open(data_dir=tmp_path)
    async with db.session() as s:
        await station_registry.register_station(s, SID, actor="test", password=PASSWORD, now=NOW)
        (await s.get(tables.Station, SID)).security_profile = 1  # type: ignore[union-attr]
    listener = CsmsListener(db, Registry(), allow_profile_1=True)
    server = await listener.serve("127.0.0.1", 0)
    port = next(iter(server.sockets)).getsockname()[1]
    auth = base64.b64encode(f"{SID}:{PASSWORD}".encode()).decode()
    try:
        async with connect(
            f"ws://127.0.0.1:{port}/ocpp/{SID}",
            subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Basic {auth}"},
            open_timeout=10,
        ) as ws:
            cp = ChargePoint(SID, ws, response_timeout=10)
            reader = asyncio.create_task(cp.start())
            await cp.call(
                call.BootNotification(
                    charging_station={"model": "AC22", "vendor_name": "ACME"}, reason="PowerUp"
                ),
                suppress=False,
            )
            try:
                yield Loopback(db, listener, cp)
            finally:
                reader.cancel()
    finally:
        server.close()
        await server.wait_closed()
        await db.close()


async def _reports(db: Database) -> dict[str, Any]:
    async with db.session() as s:
        return await core_reports.core_reports(s, SID, now=NOW + dt.timedelta(minutes=5))


def _event(event_id: int, *, value: str = "Faulted") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "timestamp": "2026-12-07T09:00:00Z",
        "trigger": "Delta",
        "actual_value": value,
        "event_notification_type": "HardWiredNotification",
        "component": {"name": "Connector", "evse": {"id": 1, "connector_id": 1}},
        "variable": {"name": "AvailabilityState"},
        "tech_code": "E42",
    }


def _meter(timestamp: str, wh: float) -> dict[str, Any]:
    return {
        "timestamp": timestamp,
        "sampled_value": [
            {
                "value": wh,
                "measurand": "Energy.Active.Import.Register",
                "unit_of_measure": {"unit": "Wh"},
            }
        ],
    }


def _variable(component: str, variable: str, value: str) -> dict[str, Any]:
    return {
        "component": {"name": component},
        "variable": {"name": variable},
        "variable_attribute": [{"type": "Actual", "value": value}],
    }


async def test_authorize_is_answered_with_the_configured_status(station: Loopback) -> None:
    token = {"id_token": "04A2B3C4", "type": "ISO14443"}
    answer = await station.cp.call(call.Authorize(id_token=token), suppress=False)
    assert answer.id_token_info["status"] == "Accepted"  # the default (--authorize accept)
    station.listener.sink.authorize_status = "Unknown"  # --authorize unknown
    answer = await station.cp.call(call.Authorize(id_token=token), suppress=False)
    assert answer.id_token_info["status"] == "Unknown"


async def test_meter_values_keep_the_newest_value_per_evse(station: Loopback) -> None:
    cp = station.cp
    await cp.call(
        call.MeterValues(
            evse_id=1,
            meter_value=[
                _meter("2026-12-07T09:00:00Z", 100.0),
                _meter("2026-12-07T09:01:00Z", 150),
            ],
        ),
        suppress=False,
    )
    await cp.call(
        call.MeterValues(evse_id=2, meter_value=[_meter("2026-12-07T09:00:00Z", 7)]),
        suppress=False,
    )
    # An older reading (sent late, e.g. from the charger's queue) does not replace it.
    await cp.call(
        call.MeterValues(evse_id=1, meter_value=[_meter("2026-12-07T08:00:00Z", 1)]),
        suppress=False,
    )
    kept = (await _reports(station.db))["meter_values"]
    assert set(kept) == {"1", "2"}
    assert kept["1"]["timestamp"] == "2026-12-07T09:01:00+00:00"
    assert kept["1"]["sampled_value"] == [
        {"value": 150, "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
    ]


async def test_meter_values_of_ever_new_evses_are_bounded(station: Loopback) -> None:
    station.listener.sink.limits = ServerLimits(meter_evses=3, meter_samples=2)
    many = {**_meter("2026-12-07T09:00:00Z", 1)}
    many["sampled_value"] = many["sampled_value"] * 10
    for evse in range(1, 11):  # every one answered
        await station.cp.call(call.MeterValues(evse_id=evse, meter_value=[many]), suppress=False)
    kept = (await _reports(station.db))["meter_values"]
    assert set(kept) == {"1", "2", "3"}
    assert all(len(v["sampled_value"]) == 2 for v in kept.values())


async def test_notify_event_is_stored(station: Loopback) -> None:
    await station.cp.call(
        call.NotifyEvent(
            generated_at="2026-12-07T09:00:00Z", seq_no=0, event_data=[_event(1), _event(2)]
        ),
        suppress=False,
    )
    events = (await _reports(station.db))["events"]
    assert [e["event_id"] for e in events] == [2, 1]  # newest first
    assert events[0] | {"received_at": None} == {
        "event_id": 2,
        "timestamp": "2026-12-07T09:00:00+00:00",
        "trigger": "Delta",
        "notification_type": "HardWiredNotification",
        "component": "Connector",
        "variable": "AvailabilityState",
        "actual_value": "Faulted",
        "tech_code": "E42",
        "tech_info": None,
        "cleared": False,
        "received_at": None,
    }


async def test_a_notify_event_flood_keeps_at_most_the_cap(station: Loopback) -> None:
    station.listener.sink.limits = ServerLimits(station_events=5)
    for i in range(12):  # one at a time, and a batch larger than the cap: all answered
        await station.cp.call(
            call.NotifyEvent(generated_at="2026-12-07T09:00:00Z", seq_no=i, event_data=[_event(i)]),
            suppress=False,
        )
    await station.cp.call(
        call.NotifyEvent(
            generated_at="2026-12-07T09:00:00Z",
            seq_no=12,
            event_data=[_event(100 + i) for i in range(8)],
        ),
        suppress=False,
    )
    async with station.db.session() as s:
        rows = (
            await s.scalars(
                select(tables.StationEvent.event_id)
                .where(tables.StationEvent.station_id == SID)
                .order_by(tables.StationEvent.id)
            )
        ).all()
    assert rows == [103, 104, 105, 106, 107]  # the newest five


async def test_station_events_older_than_the_age_limit_are_pruned(tmp_path: Path) -> None:
    db = await Database.open(data_dir=tmp_path)
    try:
        async with db.session() as s:
            await station_registry.register_station(
                s, SID, actor="test", password=PASSWORD, now=NOW
            )
        row = {
            "event_id": 1,
            "timestamp": NOW,
            "trigger": "Alerting",
            "notification_type": "HardWiredNotification",
            "component": "Connector",
            "variable": "Problem",
            "actual_value": "true",
        }
        async with db.session() as s:
            await core_reports.record_station_events(s, SID, [row], now=NOW)
        later = NOW + dt.timedelta(days=31)
        async with db.session() as s:
            await core_reports.record_station_events(s, SID, [{**row, "event_id": 2}], now=later)
        async with db.session() as s:
            ids = (await s.scalars(select(tables.StationEvent.event_id))).all()
        assert ids == [2]
    finally:
        await db.close()


async def test_notify_report_parts_are_assembled_per_request_id(station: Loopback) -> None:
    cp = station.cp
    part = {"request_id": 7, "generated_at": "2026-12-07T09:00:00Z"}
    await cp.call(
        call.NotifyReport(
            **part,
            seq_no=0,
            tbc=True,
            report_data=[_variable("ChargingStation", "Model", "AC22")],
        ),
        suppress=False,
    )
    # Another report interleaved: assembled apart.
    await cp.call(
        call.NotifyReport(
            request_id=8,
            generated_at="2026-12-07T09:00:00Z",
            seq_no=0,
            tbc=True,
            report_data=[_variable("Other", "X", "1")],
        ),
        suppress=False,
    )
    assert (await _reports(station.db))["device_model"] is None  # not complete yet
    await cp.call(
        call.NotifyReport(
            **part,
            seq_no=1,
            report_data=[_variable("SecurityCtrlr", "SecurityProfile", "1")],
        ),
        suppress=False,
    )
    model = (await _reports(station.db))["device_model"]
    assert model["request_id"] == 7 and model["complete"] and model["truncated"] == 0
    assert [(v["component"], v["variable"], v["attributes"]) for v in model["variables"]] == [
        ("ChargingStation", "Model", {"Actual": "AC22"}),
        ("SecurityCtrlr", "SecurityProfile", {"Actual": "1"}),
    ]


async def test_a_notify_report_flood_keeps_at_most_the_cap(station: Loopback) -> None:
    station.listener.sink.limits = ServerLimits(device_model_vars=10, device_model_reports=2)
    cp = station.cp
    data = [_variable("C", f"V{i}", "x") for i in range(8)]
    for seq in range(5):  # 40 variables in five parts
        await cp.call(
            call.NotifyReport(
                request_id=1,
                generated_at="2026-12-07T09:00:00Z",
                seq_no=seq,
                tbc=seq < 4,
                report_data=data,
            ),
            suppress=False,
        )
    for request_id in range(100, 150):  # unfinished reports: only two assembled at a time
        await cp.call(
            call.NotifyReport(
                request_id=request_id,
                generated_at="2026-12-07T09:00:00Z",
                seq_no=0,
                tbc=True,
                report_data=data,
            ),
            suppress=False,
        )
    model = (await _reports(station.db))["device_model"]
    assert len(model["variables"]) == 10 and model["truncated"] == 30
    assert len(station.listener.sink._reports[SID]) == 2
    async with station.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(tables.StationEvent)) == 0


async def test_the_station_api_shows_what_the_core_messages_left(tmp_path: Path) -> None:
    async with running_api(tmp_path, NOW) as api:
        async with api.db.session() as s:
            await station_registry.register_station(s, SID, actor="test", model="AC22", now=NOW)
            await core_reports.record_meter_values(
                s, SID, evse_id=1, timestamp=NOW, sampled=[{"value": 5}], now=NOW
            )
            await core_reports.record_device_model(
                s, SID, {"request_id": 3, "variables": []}, now=NOW
            )
        body = await api.call("GET", f"/api/v1/stations/{SID}/reports")
        assert body["meter_values"]["1"]["sampled_value"] == [{"value": 5}]
        assert body["device_model"]["request_id"] == 3 and body["events"] == []
        missing = await api.call("GET", "/api/v1/stations/CP-NONE/reports", expect=404)
        assert missing is not None
