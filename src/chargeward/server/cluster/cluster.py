"""Several server processes on one PostgreSQL database behave as one CSMS.

What a node does here:

* **Presence.** A node writes a heartbeat (``cluster_nodes``) every few seconds and records
  which stations it holds (``station_presence``).  A node whose heartbeat is older than
  :data:`NODE_STALE` is gone, and so are its stations.
* **Commands across nodes.** A REST call on node B for a station held by node A inserts a
  ``station_commands`` row (method name + JSON arguments) and ``NOTIFY``\\s A; A claims it with
  ``FOR UPDATE SKIP LOCKED``, sends the OCPP CALL over its websocket and writes the result row;
  B, woken by ``NOTIFY`` (or by polling if a notification is lost), returns it.  A live node
  claims within a second (its next round); a command still unclaimed after
  :data:`CLAIM_TIMEOUT` is withdrawn and fails at once with
  :class:`~chargeward.errors.CommandNotDelivered` (its node died or hangs within
  :data:`NODE_STALE`, so the station never saw it) instead of waiting out
  :data:`COMMAND_TIMEOUT`; so does a command whose station had left its node.  Call sites do
  not change: :meth:`Node.station` gives a :class:`RemoteStation` with the same async methods as
  :class:`~chargeward.ocpp.csms.CsmsChargePoint` for every name in :data:`COMMANDS`.
* **Leader.** The node holding the lease (the one ``cluster_leader`` row) runs the background
  jobs (campaign ticks, TUF timestamp renewal, housekeeping).  It renews the lease several
  times per :attr:`Node.lease`; another node takes it when it ran out, or at once when the
  leader's lease connection is gone (a killed node: failover within about a second).  Each
  new leader raises the ``epoch``.  A leader that hangs (SIGSTOP, a frozen VM) keeps its
  connection open but not its lease: another node takes over after the lease, and the old
  one is *fenced* (ADR 0034).  Its jobs run with :data:`~chargeward.server.store.db.LEADER_FENCE`
  set, so every transaction they open first checks, by this process's monotonic clock, that
  the lease cannot have run out, then in the database that the lease is still this node's
  epoch, and locks the row FOR SHARE until it commits (a takeover waits for it); station
  commands of a leader job check the clock first
  (:func:`~chargeward.server.store.db.assert_leading`).  A resumed leader therefore finds
  out before it writes or sends anything, and steps down.

On SQLite there is one process: the local registry is all there is and the node is the leader.

Nodes share the database and must also share ``blobs/``, ``tuf/``, ``trust/`` and the
download-URL key (``url.key``) of the data directory, e.g. one data directory on shared storage:
any node may serve a download signed by another.

    node = Node(db, registry, metrics)
    await node.start({"renew": renew_forever})
    cp = await node.station("CP-1")   # local, remote, or None
    answer = await cp.get_installed_certificate_ids(None)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward.errors import CommandNotDelivered, TransportError
from chargeward.ocpp.csms import CsmsChargePoint
from chargeward.server.cluster import lease as lease_row
from chargeward.server.cluster.calls import (
    COMMANDS,
    RemoteTimeout,
    call_hints,
    encode_call,
    error_result,
    from_json,
    invoke,
    raise_result,
)
from chargeward.server.common.metrics import Metrics
from chargeward.server.fleet import station_registry
from chargeward.server.stations.csms import Registry
from chargeward.server.stations.group_commit import GroupCommit
from chargeward.server.store.cluster_tables import (
    ClusterLeader,
    ClusterNode,
    StationCommand,
    StationPresence,
)
from chargeward.server.store.db import LEADER_FENCE, Database, LeadershipLost
from chargeward.server.store.tables import Station

LOG = logging.getLogger("chargeward.cluster")

LEASE = dt.timedelta(seconds=10)  # how long a leader leads without renewing (--leader-lease)
NOTIFY_COMMANDS = "chargeward_commands"  # payload: the node id that should look
NOTIFY_RESULTS = "chargeward_results"  # payload: the command id that finished
HEARTBEAT = dt.timedelta(seconds=2)
NODE_STALE = dt.timedelta(seconds=10)
POLL = 1.0  # seconds between looks when no notification arrives
COMMAND_TIMEOUT = dt.timedelta(seconds=40)  # the station's 30 s response timeout, plus slack
# A live holder claims a command at once on NOTIFY, or at its next round (POLL); one that has
# not claimed it after this is dead or hung, and the command is withdrawn undelivered.
CLAIM_TIMEOUT = dt.timedelta(seconds=5)
KEEP_COMMANDS = dt.timedelta(hours=1)

Job = Callable[[], Awaitable[None]]


# --- the node ------------------------------------------------------------------------------


class RemoteStation:
    """A station held by another node, with the command methods of ``CsmsChargePoint``."""

    def __init__(self, node: Node, station_id: str, holder: str) -> None:
        self.id = station_id
        self.holder = holder
        self._node = node

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name not in COMMANDS:
            raise AttributeError(f"{name} is not a station command")

        async def command(*args: Any, **kwargs: Any) -> Any:
            payload = encode_call(name, args, kwargs)
            value = await self._node.send(self.id, self.holder, name, payload)
            return from_json(call_hints(name).get("return", Any), value)

        return command


class Node:
    """This server process as a member of the cluster (PostgreSQL) or alone (SQLite)."""

    def __init__(
        self,
        db: Database,
        registry: Registry,
        metrics: Metrics,
        *,
        node_id: str | None = None,
        api_url: str | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.metrics = metrics
        self.id = node_id or str(uuid.uuid4())
        self.api_url = api_url
        self.clustered = db.dialect == "postgresql"
        self.is_leader = False
        self._jobs: dict[str, Job] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._waiting: dict[int, asyncio.Event] = {}
        self._main: asyncio.Task[None] | None = None
        self._last_heartbeat: float = 0.0
        self.claim_timeout = CLAIM_TIMEOUT
        self.lease = LEASE
        self.epoch = 0  # of this node's lease while it leads
        self._lease_valid_until = 0.0  # loop time: renewal sent + lease (the database's is later)
        self.failovers = 0  # times this node took the lease
        metrics.node.labels(self.id, db.dialect).set(1)

    # lifecycle

    async def forget_stale_connections(self) -> None:
        """Before the listener opens, alone (SQLite): a station the database calls connected
        was held by an earlier run that did not shut down cleanly, and is not connected now.
        (With PostgreSQL the housekeeping job does this for nodes whose heartbeat stopped.)"""
        if self.clustered:
            return
        async with self.db.session() as s:
            await s.execute(
                update(Station).where(Station.connected.is_(True)).values(connected=False)
            )

    async def start(self, jobs: dict[str, Job]) -> None:
        """Register (PostgreSQL) and start competing for leadership; ``jobs`` run on the leader."""
        self._jobs = dict(jobs)
        if not self.clustered:
            self._become_leader()
            return
        self._jobs.setdefault("cluster_housekeeping", self._housekeeping_forever)
        await self._heartbeat()
        self._main = asyncio.create_task(self._run(), name="cluster-node")

    async def stop(self) -> None:
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        leading, epoch = self.is_leader, self.epoch
        self._lose_leadership()
        for task in list(self._tasks):
            task.cancel()
        if self.clustered:
            with contextlib.suppress(Exception):  # best effort: the heartbeat expires anyway
                async with self.db.session() as s:
                    if leading:  # hand over at once: the next node need not wait the lease
                        await s.execute(
                            update(ClusterLeader)
                            .where(
                                ClusterLeader.id == lease_row.LEADER_ROW,
                                ClusterLeader.node_id == self.id,
                                ClusterLeader.epoch == epoch,
                            )
                            .values(node_id=None, backend_pid=None, lease_until=func.now())
                        )
                    await s.execute(
                        delete(StationPresence).where(StationPresence.node_id == self.id)
                    )
                    await s.execute(delete(ClusterNode).where(ClusterNode.id == self.id))

    @property
    def presence_id(self) -> str | None:
        """This node's id in ``station_presence`` rows (None alone: it writes none)."""
        return self.id if self.clustered else None

    def status(self) -> dict[str, object]:
        return {
            "node_id": self.id,
            "leader": self.is_leader,
            "clustered": self.clustered,
            "leader_epoch": self.epoch if self.is_leader else None,
        }

    # leadership

    def _become_leader(self) -> None:
        if self.is_leader:
            return
        self.is_leader = True
        self.metrics.leader.set(1)
        LOG.info("node %s is the leader: running %s", self.id, ", ".join(self._jobs) or "no jobs")
        for name, job in self._jobs.items():
            self._running[name] = asyncio.create_task(self._guard(name, job), name=name)

    # the fence (chargeward.server.store.db.Fence) of this node's leader jobs

    def check_local(self) -> None:
        if not self.clustered:
            return
        if not self.is_leader or asyncio.get_running_loop().time() >= self._lease_valid_until:
            raise LeadershipLost(f"node {self.id} no longer holds the leader lease")

    async def check(self, s: AsyncSession) -> None:
        self.check_local()
        if not await lease_row.held(s, self.id, self.epoch):
            raise LeadershipLost(
                f"node {self.id}: the leader lease of epoch {self.epoch} is no longer ours"
            )

    def _step_down(self, epoch: int) -> None:
        if self.is_leader and self.epoch == epoch:
            self._lose_leadership()

    def _lose_leadership(self) -> None:
        if self.is_leader:
            LOG.warning("node %s is no longer the leader", self.id)
        self.is_leader = False
        self.metrics.leader.set(0)
        for task in self._running.values():
            task.cancel()
        self._running.clear()

    async def _guard(self, name: str, job: Job) -> None:
        if self.clustered:
            LEADER_FENCE.set(self)  # this task's context: every transaction of the job fenced
        while True:
            try:
                await job()
                return
            except asyncio.CancelledError:
                raise
            except LeadershipLost as e:
                LOG.warning("leader job %s stopped: %s", name, e)
                asyncio.get_running_loop().call_soon(self._step_down, self.epoch)
                return
            except Exception:
                LOG.exception("leader job %s failed; restarting it in 5 s", name)
                await asyncio.sleep(5)

    # presence

    async def connected(self, station_id: str, writes: GroupCommit | None = None) -> None:
        """Record that this node holds the station; through ``writes`` (the station reports'
        group commit) when given, so a connect storm shares transactions and pool connections
        instead of taking one each (10,000 at once ran the pool dry)."""
        if not self.clustered:
            return

        async def upsert(s: AsyncSession) -> None:
            stmt = pg_insert(StationPresence).values(
                station_id=station_id, node_id=self.id, connected_at=func.now()
            )
            await s.execute(
                stmt.on_conflict_do_update(
                    index_elements=[StationPresence.station_id],
                    set_={"node_id": self.id, "connected_at": func.now()},
                )
            )

        if writes is not None:
            await writes.run(upsert, station_id=station_id)
            return
        async with self.db.session() as s:
            await upsert(s)

    async def disconnected(self, station_id: str) -> bool:
        """Forget the station here; True if another live node holds it now."""
        if not self.clustered:
            return False
        async with self.db.session() as s:
            await s.execute(
                delete(StationPresence).where(
                    StationPresence.station_id == station_id, StationPresence.node_id == self.id
                )
            )
        return await self._holder(station_id) is not None

    async def _holder(self, station_id: str) -> str | None:
        async with self.db.session() as s:
            holder = await s.scalar(
                select(StationPresence.node_id)
                .join(ClusterNode, ClusterNode.id == StationPresence.node_id)
                .where(
                    StationPresence.station_id == station_id,
                    StationPresence.node_id != self.id,
                    ClusterNode.heartbeat_at > func.now() - NODE_STALE,
                )
            )
        return holder

    async def station(self, station_id: str) -> CsmsChargePoint | None:
        """The station's command interface: local, through another node, or None."""
        cp = self.registry.get(station_id)
        if cp is not None or not self.clustered:
            return cp
        holder = await self._holder(station_id)
        if holder is None:
            return None
        # RemoteStation has exactly the COMMANDS methods of CsmsChargePoint, same signatures.
        return cast(CsmsChargePoint, RemoteStation(self, station_id, holder))

    # commands, caller side

    async def send(self, station_id: str, holder: str, method: str, args: dict[str, Any]) -> Any:
        done = asyncio.Event()
        async with self.db.session() as s:
            row = StationCommand(
                node_id=holder,
                station_id=station_id,
                method=method,
                args=args,
                state="pending",
                created_at=func.now(),
                deadline_at=func.now() + COMMAND_TIMEOUT,
            )
            s.add(row)
            await s.flush()
            command_id = row.id
            self._waiting[command_id] = done
            await s.execute(text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_COMMANDS, "p": holder})
        try:
            result = await self._await_result(command_id, station_id, holder, method, done)
        finally:
            self._waiting.pop(command_id, None)
        self.metrics.remote_commands.labels(method, result.get("error", "ok")).inc()
        if "error" in result:
            raise_result(result)
        return result.get("value")

    async def _await_result(
        self, command_id: int, station_id: str, holder: str, method: str, done: asyncio.Event
    ) -> dict[str, Any]:
        """The command's result row, once its holder wrote it.  A command still unclaimed after
        ``claim_timeout`` is withdrawn (:class:`CommandNotDelivered`); one unanswered after
        :data:`COMMAND_TIMEOUT` is marked expired (:class:`RemoteTimeout`).  Each decision is
        committed before it is raised."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + COMMAND_TIMEOUT.total_seconds()
        claim_by = loop.time() + self.claim_timeout.total_seconds()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), POLL)
            done.clear()
            failure: TransportError | None = None
            async with self.db.session() as s:
                state, result = (
                    await s.execute(
                        select(StationCommand.state, StationCommand.result).where(
                            StationCommand.id == command_id
                        )
                    )
                ).one()
                if state == "done" and result is not None:
                    return dict(result)
                if state == "pending" and loop.time() > claim_by:
                    # Only a row still pending matches: a holder claiming it now holds its
                    # lock (FOR UPDATE), so this waits, finds it running, and waits on.
                    withdrawn = await s.scalar(
                        update(StationCommand)
                        .where(StationCommand.id == command_id, StationCommand.state == "pending")
                        .values(state="expired", finished_at=func.now())
                        .returning(StationCommand.id)
                    )
                    if withdrawn is not None:
                        self.metrics.remote_commands.labels(method, "undelivered").inc()
                        failure = CommandNotDelivered(
                            f"node {holder} did not take {method} for station {station_id} "
                            f"within {self.claim_timeout.total_seconds():g} s: it is gone or "
                            "hung; not delivered"
                        )
                elif loop.time() > deadline:
                    await s.execute(
                        update(StationCommand)
                        .where(StationCommand.id == command_id, StationCommand.state != "done")
                        .values(state="expired", finished_at=func.now())
                    )
                    self.metrics.remote_commands.labels(method, "timeout").inc()
                    failure = RemoteTimeout(
                        f"station {station_id} (on node {holder}) did not answer {method} in time"
                    )
            if failure is not None:
                raise failure

    # commands, holder side

    async def _claim(self) -> None:
        async with self.db.session() as s:
            rows = (
                await s.scalars(
                    select(StationCommand)
                    .where(StationCommand.node_id == self.id, StationCommand.state == "pending")
                    .order_by(StationCommand.id)
                    .limit(20)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            now = await s.scalar(select(func.now()))
            claimed = []
            for row in rows:
                expired = now is not None and row.deadline_at <= now
                row.state = "expired" if expired else "running"
                if not expired:
                    claimed.append((row.id, row.station_id, row.method, dict(row.args)))
        for command in claimed:
            task = asyncio.create_task(self._execute(*command))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute(
        self, command_id: int, station_id: str, method: str, args: dict[str, Any]
    ) -> None:
        cp = self.registry.get(station_id)
        result: dict[str, Any]
        try:
            if cp is None:
                raise CommandNotDelivered(f"station {station_id} is no longer connected")
            result = {"value": await invoke(cp, method, args)}
        except Exception as e:  # every failure goes back to the caller
            result = error_result(e)
        LOG.info(
            "%s: %s for another node: %s",
            station_id,
            method,
            result.get("error", "ok"),
            extra={"station_id": station_id, "command_id": command_id},
        )
        async with self.db.session() as s:
            await s.execute(
                update(StationCommand)
                .where(StationCommand.id == command_id)
                .values(state="done", result=result, finished_at=func.now())
            )
            await s.execute(
                text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_RESULTS, "p": str(command_id)}
            )

    # the loop: heartbeat, leadership, commands

    def _notified(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        if channel == NOTIFY_COMMANDS and payload == self.id:
            self._wake.set()
        elif channel == NOTIFY_RESULTS and payload.isdigit():
            waiting = self._waiting.get(int(payload))
            if waiting is not None:
                waiting.set()

    async def _heartbeat(self) -> None:
        async with self.db.session() as s:
            stmt = pg_insert(ClusterNode).values(
                id=self.id, api_url=self.api_url, started_at=func.now(), heartbeat_at=func.now()
            )
            await s.execute(
                stmt.on_conflict_do_update(
                    index_elements=[ClusterNode.id], set_={"heartbeat_at": func.now()}
                )
            )
        self._last_heartbeat = asyncio.get_running_loop().time()

    async def _run(self) -> None:
        dsn = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            conn: asyncpg.Connection | None = None
            try:
                # The server's bounds and keepalives: a vanished peer is noticed at either
                # end.  The advisory lock is held outside any transaction, so the idle
                # transaction timeout never ends this connection.
                conn = await asyncpg.connect(
                    dsn, timeout=5, server_settings=self.db.timeouts.server_settings()
                )
                self.db.timeouts.keep_alive(conn)
                await conn.add_listener(NOTIFY_COMMANDS, self._notified)
                await conn.add_listener(NOTIFY_RESULTS, self._notified)
                while True:
                    await self._round(conn)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._interval())
                    self._wake.clear()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # database gone or restarted: retry, without leadership
                LOG.warning("cluster connection lost (%s); retrying", e)
                self._lose_leadership()
                await asyncio.sleep(POLL)
            finally:
                if conn is not None:
                    conn.terminate()  # the lease is free to others at once (its pid is gone)

    def _interval(self) -> float:
        """Seconds between rounds: the lease is renewed several times within it."""
        return min(POLL, self.lease.total_seconds() / 4)

    async def _round(self, conn: asyncpg.Connection) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_heartbeat >= HEARTBEAT.total_seconds():
            await self._heartbeat()
        await self._lead(conn)
        await self._claim()

    async def _lead(self, conn: asyncpg.Connection) -> None:
        """Renew this node's lease, or take it if it is free, ran out, or its holder's
        connection is gone."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        lease = self.lease.total_seconds()
        if self.is_leader:
            if sent >= self._lease_valid_until:  # paused past it: another may lead already
                LOG.warning("node %s: the leader lease ran out before it was renewed", self.id)
                self._lose_leadership()
                return
            renewed = await lease_row.renew(conn, self.id, self.epoch, lease=lease)
            if not renewed:
                self._lose_leadership()
            else:
                self._lease_valid_until = sent + lease
            return
        epoch = await lease_row.take(conn, self.id, lease=lease)
        if epoch is not None:
            self.epoch = epoch
            self._lease_valid_until = sent + lease
            self.failovers += 1
            self._become_leader()

    # leader job: forget what dead nodes held

    async def _housekeeping_forever(self) -> None:
        while True:
            await self.housekeeping()
            self.metrics.leader_job_runs.labels("cluster_housekeeping").inc()
            await asyncio.sleep(NODE_STALE.total_seconds() / 2)

    async def housekeeping(self) -> None:
        """Stations of stale nodes become disconnected; old commands and nodes are removed."""
        async with self.db.session() as s:
            stale = select(ClusterNode.id).where(
                ClusterNode.heartbeat_at <= func.now() - NODE_STALE
            )
            orphans = (
                await s.scalars(
                    delete(StationPresence)
                    .where(StationPresence.node_id.in_(stale))
                    .returning(StationPresence.station_id)
                )
            ).all()
            await s.execute(delete(ClusterNode).where(ClusterNode.id.in_(stale)))
            await s.execute(
                delete(StationCommand).where(StationCommand.created_at < func.now() - KEEP_COMMANDS)
            )
            now = dt.datetime.now(dt.UTC)
            for station_id in orphans:
                if self.registry.get(station_id) is None:
                    LOG.info("%s: its node stopped; marked disconnected", station_id)
                    await station_registry.set_connected(s, station_id, False, now=now)
