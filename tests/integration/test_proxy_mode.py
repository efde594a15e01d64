"""Proxy mode (issue 31, ADR 0040) on loopback: a station (``ocpp`` library, strict schemas)
connects to the real listener in proxy mode; an independent upstream CSMS double, also built on
the ``ocpp`` library, sees exactly what the station sent, in order, while Chargeward sends its
own UpdateFirmware through the same connection.  2.0.1 and 1.6J."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from chargeward import audit
from chargeward.ocpp.csms import CsmsChargePoint, FirmwareOrder
from chargeward.server.fleet import station_registry
from chargeward.server.proxy import ApprovedImages, FirmwarePolicy, Proxy, ProxyConfig
from chargeward.server.proxy.records import REFUSED_ACTION, DbProxyHooks
from chargeward.server.stations.csms import CsmsListener
from chargeward.server.store import tables
from tests.support.api_app import Api, running_api

pytestmark = pytest.mark.timeout(20)
NOW = dt.datetime(2026, 12, 8, 9, 0, tzinfo=dt.UTC)
PASSWORD = "Station-Password-0123456789"
SID = "CP-PX-1"
UPSTREAM_INTERVAL = 77  # the upstream's heartbeat interval: tells its BootNotification answer


class Recording:
    """Keeps every raw frame a charge point receives and sends."""

    received: list[str]
    sent: list[str]

    async def route_message(self, raw_msg: Any) -> None:
        self.received.append(raw_msg)
        await super().route_message(raw_msg)  # type: ignore[misc]

    async def _send(self, message: Any) -> None:
        self.sent.append(message)
        await super()._send(message)  # type: ignore[misc]


class Upstream201(Recording, ChargePoint201):  # type: ignore[misc]
    """The operator's CSMS (2.0.1)."""

    def __init__(self, cid: str, ws: Any) -> None:
        super().__init__(cid, ws, response_timeout=5)
        self.received, self.sent = [], []

    @on("BootNotification")
    def on_boot(self, **_: Any) -> Any:
        return result201.BootNotification(
            current_time=NOW.isoformat(), interval=UPSTREAM_INTERVAL, status="Accepted"
        )

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        return result201.Heartbeat(current_time=NOW.isoformat())

    @on("StatusNotification")
    def on_status(self, **_: Any) -> Any:
        return result201.StatusNotification()

    @on("TransactionEvent")
    def on_tx(self, **_: Any) -> Any:
        return result201.TransactionEvent(total_cost=1.5)

    @on("FirmwareStatusNotification")
    def on_fw(self, **_: Any) -> Any:
        return result201.FirmwareStatusNotification()


class Upstream16(Recording, ChargePoint16):  # type: ignore[misc]
    """The operator's CSMS (1.6J)."""

    def __init__(self, cid: str, ws: Any) -> None:
        super().__init__(cid, ws, response_timeout=5)
        self.received, self.sent = [], []

    @on("BootNotification")
    def on_boot(self, **_: Any) -> Any:
        return result16.BootNotification(
            current_time=NOW.isoformat(), interval=UPSTREAM_INTERVAL, status="Accepted"
        )

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        return result16.Heartbeat(current_time=NOW.isoformat())

    @on("StartTransaction")
    def on_start(self, **_: Any) -> Any:
        return result16.StartTransaction(transaction_id=900, id_tag_info={"status": "Accepted"})

    @on("StopTransaction")
    def on_stop(self, **_: Any) -> Any:
        return result16.StopTransaction()

    @on("SignedFirmwareStatusNotification")
    def on_fw(self, **_: Any) -> Any:
        return result16.SignedFirmwareStatusNotification()


class Station201(Recording, ChargePoint201):  # type: ignore[misc]
    def __init__(self, ws: Any) -> None:
        super().__init__(SID, ws, response_timeout=5)
        self.received, self.sent = [], []
        self.updates: list[tuple[str, int]] = []  # (message id, requestId)

    @on("UpdateFirmware")
    def on_update(self, request_id: int, call_unique_id: str, **_: Any) -> Any:
        self.updates.append((call_unique_id, request_id))
        return result201.UpdateFirmware(status="Accepted")

    @on("TriggerMessage")
    def on_trigger(self, **_: Any) -> Any:
        return result201.TriggerMessage(status="Accepted")


class Station16(Recording, ChargePoint16):  # type: ignore[misc]
    def __init__(self, ws: Any) -> None:
        super().__init__(SID, ws, response_timeout=5)
        self.received, self.sent = [], []
        self.updates: list[tuple[str, int]] = []

    @on("SignedUpdateFirmware")
    def on_update(self, request_id: int, call_unique_id: str, **_: Any) -> Any:
        self.updates.append((call_unique_id, request_id))
        return result16.SignedUpdateFirmware(status="Accepted")


class UpstreamCsms:
    """A websocket server on a fixed loopback port: the ``ocpp`` charge point of each
    connection in ``peers`` (newest last)."""

    def __init__(self, kind: type[Any], subprotocol: str) -> None:
        self.kind, self.subprotocol = kind, subprotocol
        self.peers: list[Any] = []
        self.auth: list[str | None] = []
        self.paths: list[str] = []
        self.server: Server | None = None
        self.port = 0

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.auth.append(ws.request.headers.get("Authorization"))
        self.paths.append(ws.request.path)
        cp = self.kind(ws.request.path.rsplit("/", 1)[-1], ws)
        self.peers.append(cp)
        with contextlib.suppress(ConnectionClosed):
            await cp.start()

    async def start(self) -> None:
        self.server = await serve(
            self._handler, "127.0.0.1", self.port, subprotocols=[self.subprotocol]
        )
        self.port = next(iter(self.server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def calls(self) -> list[list[Any]]:
        return [json.loads(f) for p in self.peers for f in p.received if json.loads(f)[0] == 2]


class FixedApproved(DbProxyHooks):
    approved = ApprovedImages(signatures=frozenset({"QVBQUk9WRUQ="}))

    async def approved_images(self) -> ApprovedImages:
        return self.approved


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path, NOW) as api:
        async with api.db.session() as s:
            await station_registry.register_station(
                s, SID, actor="test", password=PASSWORD, now=NOW
            )
            (await s.get(tables.Station, SID)).security_profile = 1  # type: ignore[union-attr]
        yield api


@asynccontextmanager
async def proxied(
    api: Api, upstream: UpstreamCsms, station_kind: type[Any], **config: Any
) -> AsyncIterator[tuple[Any, Proxy]]:
    cfg = ProxyConfig(
        url_template=f"ws://127.0.0.1:{upstream.port}/ocpp/{{stationId}}",
        reconnect_initial=0.05,
        reconnect_max=0.1,
        answer_timeout=3,
        **config,
    )
    proxy = Proxy(cfg, FixedApproved(api.db, lambda: NOW))
    listener = CsmsListener(api.db, api.state.registry, allow_profile_1=True, proxy=proxy)
    server = await listener.serve("127.0.0.1", 0)
    port = next(iter(server.sockets)).getsockname()[1]
    auth = base64.b64encode(f"{SID}:{PASSWORD}".encode()).decode()
    try:
        async with connect(
            f"ws://127.0.0.1:{port}/ocpp/{SID}",
            subprotocols=[upstream.subprotocol],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Basic {auth}"},
        ) as ws:
            station = station_kind(ws)
            reader = asyncio.create_task(station.start())
            try:
                await until(lambda: bool(proxy.relays.get(SID)), "the relay")
                yield station, proxy
            finally:
                reader.cancel()
    finally:
        server.close()
        await server.wait_closed()
        await listener.sink.close()


async def until(check: Callable[[], bool], what: str) -> None:
    for _ in range(250):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def station_calls(station: Any) -> list[list[Any]]:
    return [json.loads(f) for f in station.sent if json.loads(f)[0] == 2]


def update_order(request_id: int) -> FirmwareOrder:
    return FirmwareOrder(
        request_id=request_id,
        location="https://cw.example/firmware/sha256/" + "a" * 64,
        signature="c2ln",
        signing_certificate="-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n",
        retrieve_at=NOW,
    )


def tx_event(kind: str, seq: int) -> Any:
    return call201.TransactionEvent(
        event_type=kind,
        timestamp=NOW.isoformat(),
        trigger_reason="Authorized" if kind == "Started" else "MeterValuePeriodic",
        seq_no=seq,
        transaction_info={"transaction_id": "T-1"},
        evse={"id": 1, "connector_id": 1},
    )


async def test_every_station_frame_reaches_the_upstream_and_chargeward_updates_alongside(
    api: Api,
) -> None:
    upstream = UpstreamCsms(Upstream201, "ocpp2.0.1")
    await upstream.start()
    async with proxied(api, upstream, Station201) as (station, _):
        boot = await station.call(
            call201.BootNotification(
                charging_station={"model": "AC22", "vendor_name": "ACME"}, reason="PowerUp"
            )
        )
        assert boot.interval == UPSTREAM_INTERVAL  # the upstream's answer, not Chargeward's
        cp = api.state.registry.stations[SID]
        assert isinstance(cp, CsmsChargePoint)
        chargeward = asyncio.create_task(cp.update_firmware(update_order(41)))
        await station.call(call201.Heartbeat())
        answer = await station.call(tx_event("Started", 0))
        assert answer.total_cost == 1.5  # the upstream's
        assert await chargeward == "Accepted"
        await station.call(call201.FirmwareStatusNotification(status="Downloading", request_id=41))
        await station.call(tx_event("Ended", 1))
        sent = station_calls(station)
        await until(lambda: len(upstream.calls()) == len(sent), "the upstream")
        assert upstream.calls() == sent  # same ids, same order, same payloads
        assert upstream.auth == [f"Basic {base64.b64encode(f'{SID}:{PASSWORD}'.encode()).decode()}"]
        own = [mid for mid, _ in station.updates]
        assert [r for _, r in station.updates] == [41] and own[0].startswith("cw-")
        upstream_frames = [json.loads(f) for f in upstream.peers[0].received]
        assert all(not str(f[1]).startswith("cw-") for f in upstream_frames)  # no reply leaked
        async with api.db.snapshot() as s:
            row = await s.get(tables.Station, SID)
            assert row is not None and row.model == "AC22"  # processed by Chargeward too
    await upstream.stop()


@pytest.mark.parametrize(
    ("policy", "signature", "relayed"),
    [
        (FirmwarePolicy.relay, "b3RoZXI=", True),
        (FirmwarePolicy.refuse, "QVBQUk9WRUQ=", False),
        (FirmwarePolicy.approved_only, "b3RoZXI=", False),
        (FirmwarePolicy.approved_only, "QVBQUk9WRUQ=", True),
    ],
)
async def test_the_upstreams_update_firmware_follows_the_station_policy(
    api: Api, policy: FirmwarePolicy, signature: str, relayed: bool
) -> None:
    upstream = UpstreamCsms(Upstream201, "ocpp2.0.1")
    await upstream.start()
    async with proxied(api, upstream, Station201, station_policies={SID: policy}) as (station, _):
        await station.call(
            call201.BootNotification(
                charging_station={"model": "AC22", "vendor_name": "ACME"}, reason="PowerUp"
            )
        )
        await until(lambda: bool(upstream.peers), "the upstream connection")
        order = call201.UpdateFirmware(
            request_id=7,
            firmware={
                "location": "https://vendor.example/fw.bin",
                "retrieve_date_time": NOW.isoformat(),
                "signature": signature,
            },
        )
        answer = await upstream.peers[0].call(order)
        assert answer.status == ("Accepted" if relayed else "Rejected")
        assert [r for _, r in station.updates] == ([7] if relayed else [])
        if relayed:  # the upstream's own message id reached the station
            assert not station.updates[0][0].startswith("cw-")
        async with api.db.snapshot() as s:
            refused = await audit.entries(s, target=SID)
        assert [e.action for e in refused if e.action == REFUSED_ACTION] == (
            [] if relayed else [REFUSED_ACTION]
        )
    await upstream.stop()


async def test_an_upstream_outage_loses_no_transaction_event_and_keeps_the_station(
    api: Api,
) -> None:
    upstream = UpstreamCsms(Upstream201, "ocpp2.0.1")
    await upstream.start()
    async with proxied(api, upstream, Station201) as (station, proxy):
        await station.call(
            call201.BootNotification(
                charging_station={"model": "AC22", "vendor_name": "ACME"}, reason="PowerUp"
            )
        )
        await station.call(tx_event("Started", 0))
        await upstream.stop()  # the operator's CSMS goes away
        relay = proxy.relays[SID]
        await until(lambda: relay.upstream is None, "the outage")
        for seq in (1, 2, 3):
            answer = await station.call(tx_event("Updated", seq))
            assert answer.total_cost is None  # Chargeward's own answer
        cp = api.state.registry.stations[SID]
        assert await cp.update_firmware(update_order(42)) == "Accepted"  # still managed
        await upstream.start()  # back, same port
        await until(lambda: relay.counters.upstream_connects == 2, "the reconnect")
        ended = await station.call(tx_event("Ended", 4))
        await until(lambda: len(upstream.peers[-1].received) >= 4, "the replay")
        replayed = [json.loads(f)[3]["seqNo"] for f in upstream.peers[-1].received]
        assert replayed == [1, 2, 3, 4]  # in order, none lost, the live one last
        assert ended is not None
        assert SID in api.state.registry.stations  # the station stayed connected
    await upstream.stop()


async def test_ocpp16_through_the_proxy(api: Api) -> None:
    upstream = UpstreamCsms(Upstream16, "ocpp1.6")
    await upstream.start()
    async with proxied(api, upstream, Station16) as (station, proxy):
        boot = await station.call(
            call16.BootNotification(charge_point_model="AC22", charge_point_vendor="ACME")
        )
        assert boot.interval == UPSTREAM_INTERVAL
        cp = api.state.registry.stations[SID]
        chargeward = asyncio.create_task(cp.update_firmware(update_order(43)))
        start = await station.call(
            call16.StartTransaction(
                connector_id=1, id_tag="TAG", meter_start=0, timestamp=NOW.isoformat()
            )
        )
        assert start.transaction_id == 900  # the upstream's
        assert await chargeward == "Accepted"
        assert station.updates[0][0].startswith("cw-")
        await upstream.stop()
        relay = proxy.relays[SID]
        await until(lambda: relay.upstream is None, "the outage")
        await station.call(
            call16.StopTransaction(meter_stop=10, timestamp=NOW.isoformat(), transaction_id=900)
        )
        await upstream.start()
        await until(lambda: relay.counters.upstream_connects == 2, "the reconnect")
        await until(lambda: bool(upstream.peers[-1].received), "the replay")
        first = [json.loads(f) for f in upstream.peers[0].received if json.loads(f)[0] == 2]
        assert [f[2] for f in first] == ["BootNotification", "StartTransaction"]
        assert json.loads(upstream.peers[-1].received[0])[2] == "StopTransaction"
        assert all(not str(f[1]).startswith("cw-") for f in first)
    await upstream.stop()
