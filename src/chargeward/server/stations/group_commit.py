"""Group commit: many small station writes share one database transaction.

    writes = GroupCommit(db)
    booted = await writes.run(
        lambda s: station_registry.set_connected(s, sid, True, now=now), station_id=sid)

Each OCPP message a station sends is one small write (a connect record, a BootNotification
with its audit entry).  Ten thousand stations coming back after an outage make ten thousand
of them at once; one transaction each spends most of the time opening sessions, waiting for
SQLite's single write lock and committing (benchmarks/bench_connections.py, ADR 0007).

:meth:`GroupCommit.run` queues a write and waits until it is committed, so a caller still
answers its station only once the write is durable.  One worker takes every write queued so
far, loads what they will read in a few ``SELECT`` s (their stations, the updates their
requestIds name, pending updates, campaign runs: :func:`station_reports.prefetch_reports`), runs the
writes in queue order in one transaction and commits once.  With their reads answered from
the session, the writes reach the database together at the commit: one executemany per
table for the whole batch.  A batch starts :data:`GATHER_DELAY` (20 ms) after its first write
arrives, so the reports of that instant join it; while its transaction runs the next writes
queue up, so batches grow with the load and a lone write waits 20 ms at most.

A write that fails must not take the others down with it: when a batch fails, each of its
writes runs again in a transaction of its own, and only the one that fails gets the error.
Writes are therefore functions of the session alone, with no effect outside it.

Audit entries of these writes (every station report) are queued, not appended: on PostgreSQL
each session is marked with :func:`chargeward.audit.sequencer.defer`, so a batch inserts its
entries into ``audit_queue`` and never waits for the cluster-wide ``audit_tree_head`` row lock
(ADR 0033).  A write must therefore not read its own audit entries back from the log.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from chargeward.audit.sequencer import defer
from chargeward.server.stations.station_reports import ReportKeys, prefetch_reports
from chargeward.server.store.db import Database

LOG = logging.getLogger("chargeward.group_commit")
T = TypeVar("T")
Write = Callable[[AsyncSession], Awaitable[Any]]
MAX_BATCH = 500  # writes per transaction; bounds how long one transaction holds the lock
# Seconds a new batch waits for more writes before it starts (like PostgreSQL's commit_delay):
# under a moderate load batches of one or two writes would each pay a whole transaction.
GATHER_DELAY = 0.02


@dataclass
class _Queued:
    write: Write
    station_id: str | None
    request_id: int | None
    open_update: bool
    alerts: bool
    future: asyncio.Future[Any] = field(repr=False)


class GroupCommit:
    """One writer task that commits queued writes in batches (see the module docstring)."""

    def __init__(
        self, db: Database, max_batch: int = MAX_BATCH, gather_delay: float = GATHER_DELAY
    ) -> None:
        self.db = db
        self.max_batch = max_batch
        self.gather_delay = gather_delay
        self._queue: list[_Queued] = []
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0  # transactions committed, for tests and metrics
        self.writes = 0

    async def run(
        self,
        write: Callable[[AsyncSession], Awaitable[T]],
        *,
        station_id: str | None = None,
        request_id: int | None = None,
        open_update: bool = False,
        alerts: bool = False,
    ) -> T:
        """Queue ``write`` and return its result once its transaction has committed.

        What the write reads, so the batch can load it up front: ``station_id`` (the station
        and its live campaign runs), ``request_id`` (the FirmwareUpdate it names),
        ``open_update`` (the station's pending update) and ``alerts`` (its unresolved
        alerts).  A write may read anything else too; that only costs its own query.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(write, station_id, request_id, open_update, alerts, future))
        self._wake.set()
        if self._worker is None or self._worker.done():
            # A context of its own: the worker outlives its first caller, whose context
            # (a leader job's fence, a request's principal) must not apply to later batches.
            self._worker = asyncio.create_task(
                self._work(), name="group-commit", context=contextvars.Context()
            )
        return await future

    async def close(self) -> None:
        """Commit what is queued, then stop the worker."""
        self._closing = True
        self._wake.set()
        if self._worker is not None:
            await self._worker

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.gather_delay and len(self._queue) < self.max_batch and not self._closing:
                await asyncio.sleep(self.gather_delay)  # let the reports of this instant join
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                await self._commit(batch)
            if self._closing:
                return

    async def _commit(self, batch: list[_Queued]) -> None:
        live = [q for q in batch if not q.future.done()]  # a caller may have given up
        if not live:
            return
        try:
            results = await self._run_together(live)
        except Exception as e:
            if len(live) > 1:
                LOG.debug("batch of %d writes failed (%s); running them one by one", len(live), e)
                for queued in live:
                    await self._run_alone(queued)
                return
            _settle(live[0], error=e)
            return
        except asyncio.CancelledError:
            for queued in live:
                _settle(queued, error=ConnectionAbortedError("server shutting down"))
            raise
        self.batches += 1
        self.writes += len(live)
        for queued, result in zip(live, results, strict=True):
            _settle(queued, result=result)

    async def _run_together(self, batch: list[_Queued]) -> list[Any]:
        keys = ReportKeys(
            stations=frozenset(q.station_id for q in batch if q.station_id is not None),
            requests=frozenset(q.request_id for q in batch if q.request_id is not None),
            open_updates=frozenset(
                q.station_id for q in batch if q.open_update and q.station_id is not None
            ),
            alerts=frozenset(q.station_id for q in batch if q.alerts and q.station_id is not None),
        )
        async with self.db.writing() as s:
            defer(s)  # audit entries into the queue: no audit head lock (ADR 0033)
            # Into the identity map, where each write's session.get finds its rows.  The map
            # holds unchanged rows weakly: ``loaded`` keeps them alive for the batch.
            loaded = await prefetch_reports(s, keys)
            results = [await q.write(s) for q in batch]
            del loaded
            return results

    async def _run_alone(self, queued: _Queued) -> None:
        try:
            async with self.db.writing() as s:
                defer(s)
                result = await queued.write(s)
        except Exception as e:
            _settle(queued, error=e)
            return
        self.batches += 1
        self.writes += 1
        _settle(queued, result=result)


def _settle(queued: _Queued, *, result: Any = None, error: BaseException | None = None) -> None:
    if queued.future.done():
        return
    if error is not None:
        queued.future.set_exception(error)
    else:
        queued.future.set_result(result)
