"""A station that moves to another node stays recorded as connected (issue 28, found by the
chaos test), on PostgreSQL.

A charger rebooting after its install reconnects within milliseconds, often to another node.
The node it left deleted its presence row, saw no other holder yet, and recorded the
disconnection after the new node had recorded the connection: 2 to 9 of 125 chargers per run
were connected but stored as disconnected, and the campaign waited on them.  Now the new node
records its presence before the connection, and the old node locks the station's row before
it reads presence afresh, in the transaction that records the disconnection.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, text, update

from chargeward.server.fleet import station_registry
from chargeward.server.store.cluster_tables import ClusterNode, StationPresence
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Station
from tests.support.campaigns import until
from tests.support.contention import lock_waiters
from tests.support.databases import PostgresTemplates, postgres_database

NOW = dt.datetime(2026, 12, 7, 3, 0, tzinfo=dt.UTC)
SID = "CP-MOVE-1"


@pytest.fixture
async def pg(postgres_templates: PostgresTemplates, tmp_path: Path) -> AsyncIterator[Database]:
    with postgres_database(postgres_templates.template()) as url:
        db = await Database.open(data_dir=tmp_path, url=url)
        try:
            async with db.session() as s:
                await station_registry.register_station(s, SID, actor="t", now=NOW)
                for node in ("node-old", "node-new"):
                    s.add(
                        ClusterNode(
                            id=node, api_url=None, started_at=func.now(), heartbeat_at=func.now()
                        )
                    )
            yield db
        finally:
            await db.close()


async def _connected(db: Database) -> bool:
    async with db.snapshot() as s:
        row = await s.get(Station, SID)
        assert row is not None
        return row.connected


async def _disconnect_from_old_node(db: Database) -> None:
    async with db.session() as s:
        await station_registry.set_connected(s, SID, False, now=NOW, node_id="node-old")


async def test_a_disconnect_after_another_node_took_the_station_changes_nothing(
    pg: Database,
) -> None:
    async with pg.session() as s:
        s.add(StationPresence(station_id=SID, node_id="node-new", connected_at=func.now()))
        await station_registry.set_connected(s, SID, True, now=NOW)
    await _disconnect_from_old_node(pg)
    assert await _connected(pg)


async def test_a_disconnect_racing_the_takeover_waits_for_it_and_changes_nothing(
    pg: Database,
) -> None:
    """The takeover's transaction holds the station's row (presence written, connection
    recorded, not committed) when the old node records its disconnection: that waits for the
    row, then reads presence as committed by then."""
    async with pg.session() as s:  # held by the old node
        await s.execute(update(Station).where(Station.id == SID).values(connected=True))
    async with pg.engine.connect() as takeover:
        await takeover.execute(
            text("INSERT INTO station_presence VALUES (:s, 'node-new', now())"), {"s": SID}
        )
        await takeover.execute(
            text("UPDATE stations SET connected = true WHERE id = :s"), {"s": SID}
        )
        old = asyncio.create_task(_disconnect_from_old_node(pg))

        async def waits_for_the_row() -> bool:
            return bool(await lock_waiters(pg)) or old.done()

        await until(waits_for_the_row, "the old node's write to wait for the row", 15)
        assert not old.done(), "the disconnection did not wait for the takeover"
        await takeover.commit()
    await asyncio.wait_for(old, 15)
    assert await _connected(pg), "a station held by another node was recorded as disconnected"


async def test_a_disconnect_with_no_other_holder_is_recorded(pg: Database) -> None:
    async with pg.session() as s:
        s.add(StationPresence(station_id=SID, node_id="node-old", connected_at=func.now()))
        await station_registry.set_connected(s, SID, True, now=NOW)
    await _disconnect_from_old_node(pg)  # its own row does not count
    assert not await _connected(pg)
