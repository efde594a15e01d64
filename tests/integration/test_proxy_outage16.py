"""Proxy mode on loopback (issue 31, ADR 0040), what the database and an outage change: the
relay connects to the upstream named by the station's settings in the database, with the
password stored sealed for it; and an OCPP 1.6 transaction started while the upstream was away
is stopped (and metered) upstream under the upstream's own transactionId."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from websockets.asyncio.client import connect

from chargeward.server.proxy import Proxy, ProxyConfig
from chargeward.server.proxy.records import DbProxyHooks
from chargeward.server.proxy.upstream import CredentialMode
from chargeward.server.stations.csms import CsmsListener
from tests.integration.test_proxy_mode import (
    NOW,
    PASSWORD,
    SID,
    Station16,
    Upstream16,
    UpstreamCsms,
    api,
    until,
)
from tests.support.api_app import Api

pytestmark = pytest.mark.timeout(20)
__all__ = ["api"]  # the fixture
UPSTREAM_TX = 900  # Upstream16's transactionId


class Metered16(Upstream16):
    @on("MeterValues")
    def on_meter(self, **_: Any) -> Any:
        return result16.MeterValues()


@asynccontextmanager
async def station_via(api: Api, cfg: ProxyConfig) -> AsyncIterator[tuple[Any, Proxy]]:
    """A 1.6 station connected to a listener in proxy mode on the database's hooks."""
    proxy = Proxy(cfg, DbProxyHooks(api.db, lambda: NOW, api.state.data_dir))
    listener = CsmsListener(api.db, api.state.registry, allow_profile_1=True, proxy=proxy)
    server = await listener.serve("127.0.0.1", 0)
    port = next(iter(server.sockets)).getsockname()[1]
    auth = base64.b64encode(f"{SID}:{PASSWORD}".encode()).decode()
    try:
        async with connect(
            f"ws://127.0.0.1:{port}/ocpp/{SID}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Basic {auth}"},
        ) as ws:
            station = Station16(ws)
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


def fast(url: str, **kw: Any) -> ProxyConfig:
    return ProxyConfig(
        url_template=url, reconnect_initial=0.05, reconnect_max=0.1, answer_timeout=3, **kw
    )


async def test_the_station_settings_and_stored_password_choose_the_upstream(api: Api) -> None:
    upstream = UpstreamCsms(Upstream16, "ocpp1.6")
    await upstream.start()
    own = f"ws://127.0.0.1:{upstream.port}/own/{{stationId}}"
    await api.call("PATCH", f"/api/v1/stations/{SID}", json={"upstream_url": own})
    body = {"username": "cp-upstream", "password": "Stored-Upstream-1"}
    await api.call("PUT", f"/api/v1/stations/{SID}/upstream-credentials", 204, json=body)
    # The server's template names a port nobody listens on: only the database's is reachable.
    cfg = fast("ws://127.0.0.1:9/nowhere/{stationId}", credential_mode=CredentialMode.stored)
    async with station_via(api, cfg) as (station, _):
        await station.call(
            call16.BootNotification(charge_point_model="AC22", charge_point_vendor="ACME")
        )
        await until(lambda: bool(upstream.peers), "the upstream connection")
        expected = base64.b64encode(b"cp-upstream:Stored-Upstream-1").decode()
        assert upstream.auth == [f"Basic {expected}"]
        assert upstream.paths == [f"/own/{SID}"]
    await upstream.stop()


async def test_a_16_transaction_started_offline_is_stopped_upstream_under_its_own_id(
    api: Api,
) -> None:
    upstream = UpstreamCsms(Metered16, "ocpp1.6")
    await upstream.start()
    cfg = fast(f"ws://127.0.0.1:{upstream.port}/ocpp/{{stationId}}")
    async with station_via(api, cfg) as (station, proxy):
        await station.call(
            call16.BootNotification(charge_point_model="AC22", charge_point_vendor="ACME")
        )
        await upstream.stop()
        relay = proxy.relays[SID]
        await until(lambda: relay.upstream is None, "the outage")
        start = await station.call(
            call16.StartTransaction(
                connector_id=1, id_tag="TAG", meter_start=0, timestamp=NOW.isoformat()
            )
        )
        ours = start.transaction_id
        assert ours != UPSTREAM_TX  # Chargeward's answer
        meter = [{"timestamp": NOW.isoformat(), "sampled_value": [{"value": "5"}]}]
        await station.call(
            call16.MeterValues(connector_id=1, transaction_id=ours, meter_value=meter)
        )
        await station.call(
            call16.StopTransaction(meter_stop=10, timestamp=NOW.isoformat(), transaction_id=ours)
        )
        await upstream.start()

        def replay() -> list[list[Any]]:
            return [json.loads(f) for f in upstream.peers[-1].received if json.loads(f)[0] == 2]

        await until(lambda: len(upstream.peers) == 2 and len(replay()) >= 3, "the replay")
        replayed = {c[2]: c[3] for c in replay()}
        assert "transactionId" not in replayed["StartTransaction"]
        assert replayed["MeterValues"]["transactionId"] == UPSTREAM_TX
        assert replayed["StopTransaction"]["transactionId"] == UPSTREAM_TX
        assert [c[2] for c in replay()] == ["StartTransaction", "MeterValues", "StopTransaction"]
        assert relay.transactions == {}  # stopped: forgotten
    await upstream.stop()
