"""Commands relayed through PostgreSQL to the node holding a station fail fast, and say so,
when that node cannot have delivered them (issue: dispatches to dead nodes burnt attempts).

A node that died a moment ago still looks alive for up to ``NODE_STALE``: its heartbeat is
fresh and its stations' presence rows name it.  A command relayed to it used to sit
``pending`` for ``COMMAND_TIMEOUT`` (40 s) and then count as the station's silence.  Now a
command its holder does not claim within ``claim_timeout`` is withdrawn and raises
``CommandNotDelivered``; a holder that no longer has the station answers the same.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import func, select

from chargeward.errors import CommandNotDelivered
from chargeward.ocpp.csms import FirmwareOrder
from chargeward.server.cluster.cluster import COMMAND_TIMEOUT, Node, RemoteStation
from chargeward.server.common.metrics import Metrics
from chargeward.server.stations.csms import Registry
from chargeward.server.store.cluster_tables import ClusterNode, StationCommand, StationPresence
from chargeward.server.store.db import Database

STATION = "CP-RELAY-1"
NOW = dt.datetime(2026, 12, 7, 3, 0, tzinfo=dt.UTC)


async def _held_by(db: Database, node_id: str) -> None:
    """``node_id`` looks alive (fresh heartbeat) and holds the station."""
    async with db.session() as s:
        s.add(ClusterNode(id=node_id, api_url=None, started_at=func.now(), heartbeat_at=func.now()))
        s.add(StationPresence(station_id=STATION, node_id=node_id, connected_at=func.now()))


async def _states(db: Database) -> list[str]:
    async with db.snapshot() as s:
        return list((await s.scalars(select(StationCommand.state))).all())


async def test_a_command_to_a_node_that_died_fails_fast_as_undelivered(pg: Database) -> None:
    await _held_by(pg, "dead-node")  # died a moment ago: no process claims anything
    sender = Node(pg, Registry(), Metrics(), node_id="sender")
    sender.claim_timeout = dt.timedelta(seconds=0.5)
    cp = await sender.station(STATION)
    assert isinstance(cp, RemoteStation) and cp.holder == "dead-node"

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(CommandNotDelivered, match="node dead-node did not take update_firmware"):
        await asyncio.wait_for(
            cp.update_firmware(  # type: ignore[attr-defined]
                FirmwareOrder(7, "https://x/fw", "c2ln", "-----BEGIN CERTIFICATE-----", NOW)
            ),
            COMMAND_TIMEOUT.total_seconds(),
        )
    # Within a few polls of the claim timeout, not the 40 s command timeout.
    assert loop.time() - started < COMMAND_TIMEOUT.total_seconds() / 4
    assert await _states(pg) == ["expired"]  # withdrawn: a late holder will not run it
    undelivered = sender.metrics.remote_commands.labels("update_firmware", "undelivered")
    assert undelivered._value.get() == 1


async def test_a_holder_without_the_station_answers_undelivered(pg: Database) -> None:
    holder = Node(pg, Registry(), Metrics(), node_id="holder")  # alive, station gone from it
    await holder.start({})
    try:
        async with pg.session() as s:
            s.add(StationPresence(station_id=STATION, node_id="holder", connected_at=func.now()))
        sender = Node(pg, Registry(), Metrics(), node_id="sender")
        cp = await sender.station(STATION)
        assert isinstance(cp, RemoteStation)
        with pytest.raises(CommandNotDelivered, match="no longer connected"):
            await asyncio.wait_for(
                cp.get_installed_certificate_ids(None),  # type: ignore[attr-defined]
                COMMAND_TIMEOUT.total_seconds(),
            )
        assert await _states(pg) == ["done"]  # claimed and answered by the holder
    finally:
        await holder.stop()
