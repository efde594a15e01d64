"""The agent's connection to the CSMS dies at the worst moments: it always reconnects.

A CSMS under load may drop a connection while the charger waits for its BootNotification
answer, or while a firmware status is on its way.  Seen with 10,000 simulated chargers: an agent
that kept re-sending on the dead connection never came back.  The real agent runs here against
an in-process OCPP CSMS on 127.0.0.1 that drops the first connection on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection

from chargeward.agent.agent import Agent
from chargeward.agent.config import AgentConfig
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from tests.support.agent_harness import PASSWORD, Csms, running_csms
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import Clock

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def charger_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Path]:
    d = tmp_path_factory.mktemp("connection-loss")
    pki = Pki.create(d / "pki")
    return pki, pki.bundle(d / "factory.cwb", "1.0.0", 1)


@contextlib.asynccontextmanager
async def dropping_csms(
    drop_after: int, *, hang: bool = False
) -> AsyncIterator[tuple[Csms, list[str]]]:
    """A CSMS whose first connection reads ``drop_after`` messages, answers none and closes
    (or, with ``hang``, keeps it open and silent); later connections are served normally.
    Yields it and what the first connection received."""
    received: list[str] = []

    async def drop(ws: ServerConnection) -> None:
        for _ in range(drop_after):
            received.append(str(await ws.recv())[:60])
        if hang:
            await ws.wait_closed()
        await ws.close(1011, "server overloaded")

    async with running_csms(drop) as csms:
        yield csms, received


def charger(tmp_path: Path, charger_pki: tuple[Pki, Path]) -> StateDir:
    pki, factory = charger_pki
    provision(
        tmp_path / "charger",
        identity=Identity("CP-DROP", MODEL, "T", "CP-DROP"),
        password=PASSWORD,
        roots_pem=pki.root_pem.read_bytes(),
        factory_bundle=factory,
    )
    return StateDir(tmp_path / "charger")


async def test_a_connection_dropped_during_the_boot_notification_is_retried_on_a_new_one(
    tmp_path: Path, charger_pki: tuple[Pki, Path]
) -> None:
    state = charger(tmp_path, charger_pki)
    async with dropping_csms(drop_after=1) as (csms, log):
        config = AgentConfig(
            state_dir=state.root, csms_url=csms.url, reconnect_delay=0.1, response_timeout=30
        )
        agent = Agent(config, clock=Clock())
        task = asyncio.create_task(agent.run())
        try:
            await csms.wait(lambda: csms.of("BootNotification"), "a BootNotification", 15)
            assert len(log) == 1 and "BootNotification" in log[0]  # the dropped one
            assert len(csms.of("BootNotification")) == 1  # one reconnect, not a storm of them
            # The session that followed is a normal one: status reported, heartbeats sent.
            await csms.wait(lambda: csms.of("StatusNotification"), "a StatusNotification", 10)
        finally:
            agent.stop()
            await asyncio.wait_for(task, 15)


async def test_a_reboot_while_the_boot_notification_waits_for_an_answer_happens_at_once(
    tmp_path: Path, charger_pki: tuple[Pki, Path]
) -> None:
    state = charger(tmp_path, charger_pki)
    async with dropping_csms(drop_after=1, hang=True) as (csms, log):
        config = AgentConfig(
            state_dir=state.root,
            csms_url=csms.url,
            reconnect_delay=0.1,
            reboot_delay=0.05,
            response_timeout=60,
        )
        agent = Agent(config, clock=Clock())
        task = asyncio.create_task(agent.run())
        try:
            await csms.wait(lambda: log, "the first BootNotification", 15)
            assert agent.boots == 1
            agent.request_reboot("RemoteReset")  # e.g. the install just wrote its slot
            # Not after the 60 s response timeout: the session ends, the charger boots again.
            await csms.wait(lambda: agent.boots == 2, "the second boot", 10)
            await csms.wait(lambda: csms.of("BootNotification"), "a BootNotification", 15)
            assert csms.of("BootNotification")[0]["reason"] == "RemoteReset"
        finally:
            agent.stop()
            await asyncio.wait_for(task, 15)
