"""Cluster leadership is a lease with fencing (issue 28, ADR 0034), on PostgreSQL.

The chaos test found a SIGSTOPped leader kept leading: its connection, and so its advisory
lock, stayed open for as long as it was paused, and the campaign scheduler (a leader job) with
it.  Here a node runs on an event loop of its own thread; blocking that thread pauses the
whole node as SIGSTOP would (its socket stays open, the kernel still answers keepalives).

* A paused leader is replaced once its lease has run out, not before.
* When it resumes, its leader job's next transaction is refused before it writes
  (``LeadershipLost``), it steps down, and nothing it writes lands after the new leader's
  first write.
* The database fence holds on its own: a lease taken over while the old leader's clock still
  says it leads refuses the old leader's next transaction.
* A leader whose lease connection is gone (a killed process) is replaced at once, long before
  its lease would run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text

from chargeward.server.cluster.cluster import Node
from chargeward.server.common.metrics import Metrics
from chargeward.server.stations.csms import Registry
from chargeward.server.store.db import LEADER_FENCE, Database, DatabaseTimeouts, LeadershipLost
from tests.support.campaigns import until
from tests.support.contention import lock_waiters
from tests.support.databases import PostgresTemplates, postgres_database

T = TypeVar("T")
LEASE = dt.timedelta(seconds=4)  # renewed every second; a busy machine may be late by some
IDLE_2S = DatabaseTimeouts(idle_in_transaction=2)


@pytest.fixture
def pg_url(postgres_templates: PostgresTemplates) -> AsyncIterator[str]:
    with postgres_database(postgres_templates.template()) as url:
        yield url


def probe_job(
    node: Node, wrote: asyncio.Event, stop_here: list[threading.Event]
) -> Callable[[], Awaitable[None]]:
    """A leader job that writes a row (its node, its epoch) every few milliseconds.  Given an
    event in ``stop_here``, it blocks its whole loop on it right before its next write: the
    process is stopped there, and that write is the first thing it does when it resumes."""

    async def job() -> None:
        while True:
            if stop_here:
                stop_here.pop().wait(60)  # SIGSTOP ... SIGCONT
            async with node.db.session() as s:
                await s.execute(
                    text("INSERT INTO fence_probe (node, epoch) VALUES (:n, :e)"),
                    {"n": node.id, "e": node.epoch},
                )
            wrote.set()
            await asyncio.sleep(0.02)  # pacing, not waiting for time to pass

    return job


class ThreadNode:
    """A :class:`Node` on its own thread's event loop: :meth:`pause` blocks that thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.node: Node | None = None
        self.wrote: asyncio.Event | None = None
        self.stop_here: list[threading.Event] = []

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def pause_before_next_write(self) -> threading.Event:
        """Block the node's loop in its leader job, right before its next write, until the
        returned event is set (SIGSTOP ... SIGCONT)."""
        resume = threading.Event()
        self.stop_here.append(resume)
        return resume

    async def start(self, url: str, data: Path, node_id: str) -> Node:
        async def start() -> Node:
            # A pause may catch its job inside a transaction: that transaction keeps the lease
            # row locked (FOR SHARE) and holds off the takeover until the database ends it.
            db = await Database.open(data_dir=data, url=url, timeouts=IDLE_2S)
            node = Node(db, Registry(), Metrics(), node_id=node_id)
            node.lease = LEASE
            self.wrote = asyncio.Event()
            await node.start({"probe": probe_job(node, self.wrote, self.stop_here)})
            return node

        self.node = await self.run(start())
        return self.node

    async def close(self) -> None:
        if self.node is not None:
            node = self.node

            async def stop() -> None:
                await node.stop()
                await node.db.close()

            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.run(stop()), 20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@contextlib.asynccontextmanager
async def two_nodes(url: str, tmp_path: Path) -> AsyncIterator[tuple[ThreadNode, ThreadNode]]:
    db = await Database.open(data_dir=tmp_path, url=url)
    try:
        async with db.session() as s:
            await s.execute(
                text(
                    "CREATE TABLE fence_probe (node text, epoch int,"
                    " at timestamptz DEFAULT clock_timestamp())"
                )
            )
    finally:
        await db.close()
    a, b = ThreadNode(), ThreadNode()
    try:
        yield a, b
    finally:
        await b.close()
        await a.close()


async def _rows(url: str, tmp_path: Path, sql: str, **params: Any) -> list[Any]:
    db = await Database.open(data_dir=tmp_path, url=url)
    try:
        async with db.session() as s:
            return list((await s.execute(text(sql), params)).all())
    finally:
        await db.close()


async def test_a_paused_leader_is_replaced_after_its_lease_and_fenced_when_it_resumes(
    pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "chargeward.cluster")
    async with two_nodes(pg_url, tmp_path) as (ta, tb):
        a = await ta.start(pg_url, tmp_path / "a", "node-a")
        await until(lambda: _true(a.is_leader), "node A to lead", 15)
        b = await tb.start(pg_url, tmp_path / "b", "node-b")
        assert ta.wrote is not None and tb.wrote is not None
        await until(lambda: _true(ta.wrote is not None and ta.wrote.is_set()), "A's job", 15)
        assert not b.is_leader
        first_epoch = a.epoch

        loop = asyncio.get_running_loop()
        resume = ta.pause_before_next_write()  # its connection stays open, it renews nothing
        await until(lambda: _true(not ta.stop_here), "A to stop", 30)
        paused_at = loop.time()
        try:
            await until(lambda: _true(b.is_leader), "node B to take the lease", 30)
            took = loop.time() - paused_at
            assert b.epoch == first_epoch + 1
            # It waited for the lease (A's connection and backend are alive throughout), and
            # for A's transaction in flight, if the pause caught one, to be ended.
            assert took >= LEASE.total_seconds() * 0.5, took
            await until(lambda: _true(tb.wrote is not None and tb.wrote.is_set()), "B's job", 15)
        finally:
            resume.set()  # SIGCONT

        await until(lambda: _true(not a.is_leader), "A to step down", 15)
        assert b.is_leader  # one leader
        rows = await _rows(
            pg_url,
            tmp_path,
            "SELECT (SELECT max(at) FROM fence_probe WHERE node = 'node-a'),"
            " (SELECT min(at) FROM fence_probe WHERE node = 'node-b'),"
            " (SELECT count(*) FROM fence_probe WHERE node = 'node-b' AND epoch <> :e)",
            e=first_epoch + 1,
        )
        last_a, first_b, b_other_epoch = rows[0]
        assert last_a < first_b, "the paused leader wrote after the new leader started"
        assert b_other_epoch == 0
    # Its first act after the pause was the write, and its own clock refused it, before any
    # query: the lease had run out while it was stopped.
    messages = [r.getMessage() for r in caplog.records]
    assert "leader job probe stopped: node node-a no longer holds the leader lease" in messages, (
        messages
    )


async def test_the_database_fence_refuses_a_leader_whose_lease_was_taken_over(
    pg_url: str, tmp_path: Path
) -> None:
    """A's clock still says it leads (its lease is long), but the row names another epoch:
    its next transaction is refused in the database, and it steps down."""
    db = await Database.open(data_dir=tmp_path, url=pg_url)
    node = Node(db, Registry(), Metrics(), node_id="node-a")
    node.lease = dt.timedelta(seconds=60)
    started = asyncio.Event()
    outcome: list[BaseException] = []

    async def job() -> None:
        started.set()
        await until(lambda: _true(taken.is_set()), "the takeover", 15)
        try:
            async with db.session() as s:  # fenced: this task runs as a leader job
                await s.execute(text("SELECT 1"))
        except LeadershipLost as e:
            outcome.append(e)
            raise

    taken = asyncio.Event()
    try:
        await node.start({"job": job})
        await until(lambda: _true(started.is_set()), "A to lead and run its job", 15)
        node.check_local()  # by its own clock it leads
        async with db.session() as s:  # not a leader job: not fenced
            await s.execute(
                text("UPDATE cluster_leader SET node_id = 'node-b', epoch = epoch + 1 WHERE id = 1")
            )
        taken.set()
        await until(lambda: _true(not node.is_leader), "A to step down", 15)
        assert outcome and "is no longer ours" in str(outcome[0]), outcome
    finally:
        await node.stop()
        await db.close()


async def test_a_leader_whose_connection_is_gone_is_replaced_without_waiting_its_lease(
    pg_url: str, tmp_path: Path
) -> None:
    """A killed node's connection closes and its backend ends: the next node takes the lease
    at once, though the lease itself would last a minute more."""
    db_a = await Database.open(data_dir=tmp_path, url=pg_url)
    db_b = await Database.open(data_dir=tmp_path, url=pg_url)
    a = Node(db_a, Registry(), Metrics(), node_id="node-a")
    b = Node(db_b, Registry(), Metrics(), node_id="node-b")
    a.lease = b.lease = dt.timedelta(seconds=60)
    try:
        await a.start({})
        await until(lambda: _true(a.is_leader), "A to lead", 15)
        await b.start({})
        assert a._main is not None
        loop = asyncio.get_running_loop()
        a._main.cancel()  # its lease connection is terminated, nothing handed over: a kill
        with contextlib.suppress(asyncio.CancelledError):
            await a._main
        a._main = None
        killed = loop.time()
        await until(lambda: _true(b.is_leader), "B to lead", 15)
        assert loop.time() - killed < 10  # far less than the 60 s lease
    finally:
        await b.stop()
        await a.stop()
        await db_a.close()
        await db_b.close()


async def _true(value: bool) -> bool:
    return value


async def test_a_leader_transaction_that_waited_on_a_renewal_begins_again(
    pg_url: str, tmp_path: Path
) -> None:
    """A serialized (REPEATABLE READ) leader transaction whose fence waited for a renewal of
    the lease that then committed: the row changed since its snapshot, a serialization
    failure; the fence begins the transaction again instead of failing the campaign tick."""
    db = await Database.open(data_dir=tmp_path, url=pg_url)
    node = Node(db, Registry(), Metrics(), node_id="node-a")
    node.lease = dt.timedelta(seconds=60)
    try:
        await node.start({})
        await until(lambda: _true(node.is_leader), "A to lead", 15)
        async with db.engine.connect() as renewal:  # a renewal, not yet committed
            await renewal.execute(
                text("UPDATE cluster_leader SET lease_until = lease_until + interval '1 s'")
            )

            async def tick() -> int:
                token = LEADER_FENCE.set(node)
                try:
                    async with db.serialized() as s:
                        return int(await s.scalar(text("SELECT 1")) or 0)
                finally:
                    LEADER_FENCE.reset(token)

            ticking = asyncio.create_task(tick())

            async def waiting() -> bool:
                return bool(await lock_waiters(db)) or ticking.done()

            await until(waiting, "the fence to wait for the renewal", 15)
            await renewal.commit()
        assert await asyncio.wait_for(ticking, 15) == 1
    finally:
        await node.stop()
        await db.close()
