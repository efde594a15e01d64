"""A CSMS that stops answering is left, not waited on (OCPP 2.0.1 Part 4 reconnecting).

Seen against a production CSMS: with the socket open and the CSMS silent, the agent sent its
StatusNotification again every 30 s on the same connection, twenty times.  Here the real agent
runs against in-process CSMSs on 127.0.0.1 that go silent in two ways: the OCPP application
stops answering (websocket pongs still come), or the whole node hangs (no pongs either).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from chargeward.agent.agent import Agent
from chargeward.agent.config import AgentConfig
from chargeward.agent.device_model import PING_INTERVAL
from chargeward.agent.state import StateDir
from tests.support.agent_harness import Csms, provisioned_charger, running_csms
from tests.support.fleet import Pki
from tests.support.tufrepo import Clock

pytestmark = pytest.mark.timeout(60)
STATION = "CP-SILENT"


@pytest.fixture
def charger(tmp_path: Path, charger_factory: tuple[Pki, Path]) -> StateDir:
    return provisioned_charger(tmp_path, charger_factory, STATION)


@contextlib.asynccontextmanager
async def agent_running(state: StateDir, url: str, **config: float) -> AsyncIterator[Agent]:
    settings = {"reconnect_delay": 0.1, "reboot_delay": 0.05, "response_timeout": 30, **config}
    agent = Agent(AgentConfig(state_dir=state.root, csms_url=url, **settings), clock=Clock())  # type: ignore[arg-type]
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)


async def test_a_call_left_unanswered_ends_the_connection_and_goes_again_on_a_new_one(
    charger: StateDir,
) -> None:
    silent: list[str] = []

    async def application_silent(ws: ServerConnection) -> None:
        async for frame in ws:  # reads (and pongs) but never answers
            silent.append(str(frame)[:80])

    async with (
        running_csms(application_silent) as csms,
        agent_running(charger, csms.url, response_timeout=1.0) as agent,
    ):
        await csms.wait(lambda: csms.of("BootNotification"), "a BootNotification answered")
        # One BootNotification on the silent connection, not one every response timeout.
        assert len(silent) == 1 and "BootNotification" in silent[0]
        assert agent.unanswered_calls == 1
        await csms.wait(lambda: csms.of("StatusNotification"), "a normal session after it")


async def test_a_hung_csms_is_noticed_by_websocket_pings_at_the_configured_interval(
    charger: StateDir,
) -> None:
    hung, done = asyncio.Event(), asyncio.Event()

    async def node_hangs(ws: ServerConnection) -> None:
        await ws.recv()  # the BootNotification, then the node stops: no reads, no pongs
        ws.transport.pause_reading()
        hung.set()
        await done.wait()
        ws.transport.abort()  # the test is over: the hung node goes away

    # The CSMS set WebSocketPingInterval to 1 s on an earlier connection (kept on flash);
    # the agent's own default is 600 s and its response timeout a minute.
    charger.set_setting(PING_INTERVAL.key, 1)
    async with (
        running_csms(node_hangs) as csms,
        agent_running(
            charger, csms.url, ping_interval=600, ping_timeout=1.0, response_timeout=60
        ) as agent,
    ):
        await asyncio.wait_for(hung.wait(), 15)
        started = time.monotonic()
        await csms.wait(lambda: csms.of("BootNotification"), "the BootNotification, reconnected")
        assert time.monotonic() - started < 10  # ping 1 s + pong timeout 1 s, not 60 s
        assert agent.unanswered_calls == 0  # noticed by the pings, not by the call timeout
        done.set()


async def test_reconnects_back_off_as_the_device_model_says(charger: StateDir) -> None:
    attempts: list[float] = []

    def unavailable(_: ServerConnection, request: Request) -> Response:
        attempts.append(time.monotonic())
        return Response(503, "Service Unavailable", Headers(), b"")

    charger.set_setting("OCPPCommCtrlr/RetryBackOffRandomRange", 0)
    charger.set_setting("OCPPCommCtrlr/RetryBackOffRepeatTimes", 3)
    async with serve(
        lambda ws: ws.wait_closed(), "127.0.0.1", 0, process_request=unavailable
    ) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        url = f"ws://127.0.0.1:{port}/ocpp/"
        async with agent_running(charger, url, reconnect_delay=0.2) as agent:
            await Csms().wait(lambda: len(attempts) >= 6, "six connection attempts", 20)
            assert agent.reconnect_backoff(0) == pytest.approx(0.2)
    gaps = [b - a for a, b in itertools.pairwise(attempts)][:5]
    expected = [0.2, 0.4, 0.8, 1.6, 1.6]  # doubled 3 times, then kept
    for gap, want in zip(gaps, expected, strict=True):
        assert want * 0.9 <= gap < want + 1.0, (gaps, expected)


def test_the_back_off_is_the_minimum_doubled_plus_a_spread(charger: StateDir) -> None:
    agent = Agent(
        AgentConfig(state_dir=charger.root, csms_url="ws://127.0.0.1:9/ocpp/", reconnect_delay=5)
    )
    charger.set_setting("OCPPCommCtrlr/RetryBackOffRandomRange", 0)
    assert [agent.reconnect_backoff(n) for n in range(8)] == [5, 10, 20, 40, 80, 160, 160, 160]
    charger.set_setting("OCPPCommCtrlr/RetryBackOffRandomRange", 4)
    spread = [agent.reconnect_backoff(0) for _ in range(200)]
    assert 5 <= min(spread) < 6 and 8 < max(spread) <= 9  # chargers do not reconnect in step


async def test_a_reboot_waits_the_reboot_delay_before_connecting_again(
    charger: StateDir,
) -> None:
    async with (
        running_csms() as csms,
        agent_running(charger, csms.url, reboot_delay=1.5) as agent,
    ):
        await csms.wait(lambda: csms.of("StatusNotification"), "the first boot")
        rebooted = time.monotonic()
        agent.request_reboot("RemoteReset")
        await csms.wait(lambda: len(csms.of("BootNotification")) == 2, "the boot after it")
        assert time.monotonic() - rebooted >= 1.5
        assert csms.of("BootNotification")[1]["reason"] == "RemoteReset"
