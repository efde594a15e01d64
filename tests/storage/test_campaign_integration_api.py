"""Integration API (issue 31 part 2, ADR 0042): a station delivered by an external CSMS is
never sent UpdateFirmware by Chargeward; its order is listed with OCPP's own parameters, and
what the external CSMS reports drives the campaign to ``succeeded`` through the station reports.
Refusals (unknown station, wrong requestId, bad status) and retried webhooks are checked too."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from chargeward.errors import Conflict, InvalidValue, NotFound
from chargeward.server.fleet import delivery
from chargeward.server.rollout import campaign_runs, campaign_scheduler
from chargeward.server.stations import integration
from chargeward.server.stations.integration import StationEvent
from chargeward.server.store.db import Database
from chargeward.server.store.tables import FirmwareUpdate
from tests.support.campaigns import one_station_campaign
from tests.support.fleet import Pki

T0 = dt.datetime.now(dt.UTC).replace(microsecond=0)


async def _event(db: Database, sid: str, ev: StationEvent, at: dt.datetime) -> bool:
    return await db.write(lambda s: integration.record_event(s, sid, ev, actor="glue", now=at))


async def test_an_external_csms_completes_a_campaign_from_the_api(
    db: Database, tmp_path: Path, pki: Pki
) -> None:
    state, cid = await one_station_campaign(
        db, tmp_path, pki, T0, "ext", soak="10m", timeouts={"response": "5m"}
    )
    state.clock = lambda: T0
    await db.write(lambda s: delivery.set_delivery(s, "CP-1", "external", actor="a", now=T0))
    [order] = await campaign_scheduler.tick_campaign(state, cid)
    async with db.snapshot() as s:
        assert (await s.get(FirmwareUpdate, order.request_id)).response_status is None  # type: ignore[union-attr]
        [pending] = await integration.pending_orders(s, campaign_id=cid)
    payloads = integration.order_payloads(pending, "https://x/fw", T0)
    v201 = payloads["ocpp201"]["payload"]
    assert v201["requestId"] == order.request_id and v201["retries"] == 3
    assert set(v201["firmware"]) >= {
        "location",
        "retrieveDateTime",
        "signature",
        "signingCertificate",
    }
    assert payloads["ocpp16"]["action"] == "SignedUpdateFirmware"

    steps = [
        StationEvent("m1", "UpdateFirmwareResponse", {"status": "Accepted"}, order.request_id),
        *(
            StationEvent(
                f"s{i}", "FirmwareStatusNotification", {"status": st, "requestId": order.request_id}
            )
            for i, st in enumerate(["Downloading", "Downloaded", "Installing", "InstallRebooting"])
        ),
        StationEvent(
            "b1",
            "BootNotification",
            {
                "reason": "FirmwareUpdate",
                "chargingStation": {"model": "m", "vendorName": "v", "firmwareVersion": "1.1.0"},
            },
        ),
        StationEvent(
            "s9",
            "FirmwareStatusNotification",
            {"status": "Installed", "requestId": order.request_id},
        ),
    ]
    for ev in steps:
        assert await _event(db, "CP-1", ev, T0 + dt.timedelta(seconds=1))
    assert not await _event(db, "CP-1", steps[0], T0 + dt.timedelta(seconds=2))  # a retry
    async with db.snapshot() as s:
        assert await integration.pending_orders(s) == []
        run = (await campaign_runs.load_runs(s, cid))["CP-1"][1]
    assert run.state == "soaking", run
    state.clock = lambda: T0 + dt.timedelta(minutes=15)
    assert await campaign_scheduler.tick_campaign(state, cid) == []
    async with db.snapshot() as s:
        run = (await campaign_runs.load_runs(s, cid))["CP-1"][1]
    assert run.state == "succeeded", run


async def test_bad_reports_are_refused(db: Database, tmp_path: Path, pki: Pki) -> None:
    state, cid = await one_station_campaign(db, tmp_path, pki, T0, "bad")
    state.clock = lambda: T0
    ev = StationEvent("m1", "FirmwareStatusNotification", {"status": "Downloading", "requestId": 1})
    with pytest.raises(Conflict, match="over OCPP"):  # not marked external
        await _event(db, "CP-1", ev, T0)
    await db.write(lambda s: delivery.set_delivery(s, "CP-1", "external", actor="a", now=T0))
    [order] = await campaign_scheduler.tick_campaign(state, cid)
    with pytest.raises(NotFound):
        await _event(db, "CP-9", ev, T0)
    wrong = {"status": "Downloading", "requestId": order.request_id + 7}
    with pytest.raises(Conflict, match="not station CP-1's update"):
        await _event(db, "CP-1", StationEvent("m2", "FirmwareStatusNotification", wrong), T0)
    bad = {"status": "Exploded", "requestId": order.request_id}
    with pytest.raises(InvalidValue, match="status"):
        await _event(db, "CP-1", StationEvent("m3", "FirmwareStatusNotification", bad), T0)
    with pytest.raises(InvalidValue, match="action"):
        await _event(db, "CP-1", StationEvent("m4", "Reset", {}), T0)
    with pytest.raises(InvalidValue):
        await delivery_set(db, "carrier-pigeon")


async def delivery_set(db: Database, how: str) -> None:
    await db.write(lambda s: delivery.set_delivery(s, "CP-1", how, actor="a", now=T0))
