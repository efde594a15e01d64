"""The faults of a cluster chaos test, and the operator's API client it watches them with.

:class:`Chaos` runs a :class:`Schedule` while a campaign runs: the leader SIGKILLed and
restarted ``kills`` times, 10-20 s apart (sooner only once the campaign has moved on), and
after ``pause_after`` kills the leader SIGSTOPped for ``pause_s`` with a charging charger
moved onto it, whose session ends during the pause.  At each fault one more charging session
ends (on the faulted node when a charging charger is there).  What happened is kept in
``kills`` and ``pause``.

    chaos = Chaos(nodes, watch, api, ev_stations, Schedule(pause_s=7, lease=3))
    chaos.succeeded = ...   # the campaign's counts, kept fresh by the caller
    await chaos.run()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from chargeward.agent.agent import Agent
from chargeward.errors import TransportError
from chargeward.ocpp.base import utc_now
from chargeward.sim import server as backend
from chargeward.sim.station import SimStation
from tests.support.cluster_nodes import ClusterNodes, LeaderWatch

LOG = logging.getLogger("chaos")


@dataclass(frozen=True)
class Schedule:
    pause_s: float  # how long the paused node stays stopped
    lease: float | None  # the leader lease the nodes run with (None: no lease option)
    kills: int = 4
    pause_after: int = 3  # the pause comes after this many kills
    gap: tuple[float, float] = (10.0, 20.0)  # seconds between faults: at least, at most
    milestones: tuple[int, ...] = (5, 30, 55, 75, 95)  # succeeded stations before each fault
    failover_timeout: float = 30.0
    first_fault_timeout: float = 60.0  # for every charging charger to be deferred


class Api:
    """The operator's API client through the balancer: a new connection per request (so a
    paused node's kept-alive connection is never reused), GETs retried across a kill, and
    every 5xx counted."""

    def __init__(self, base_url: str, token: str) -> None:
        self.errors: Counter[int] = Counter()
        self.requests = 0

        async def count(r: httpx.Response) -> None:
            self.requests += 1
            if r.status_code >= 500:
                self.errors[r.status_code] += 1
                LOG.error("HTTP %s from %s %s", r.status_code, r.request.method, r.request.url)

        self.client = httpx.AsyncClient(
            base_url=base_url,
            timeout=60,
            headers={"Authorization": f"Bearer {token}"},
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=0),
            event_hooks={"response": [count]},
        )

    async def get(self, path: str) -> Any:
        for attempt in range(5):
            try:
                return await backend.call(self.client, "GET", path)
            except TransportError as e:
                if " HTTP 4" in str(e) or attempt == 4:
                    raise
                # The node behind that connection was just killed (or answered 5xx: counted).
                await asyncio.sleep(0.5)
        raise AssertionError("unreachable")


async def wait_for(what: str, timeout: float, pred: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.2)


def offered(agent: Agent) -> Callable[[], bool]:
    """Started up: its connector is offered for charging."""
    return lambda: agent.connector_status.get(1) == "Available"


async def wait_for_async(what: str, timeout: float, pred: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.2)


class Chaos:
    """The faults, in order, while the campaign runs; what happened goes in ``figures``."""

    def __init__(
        self,
        nodes: ClusterNodes,
        watch: LeaderWatch,
        api: Api,
        ev: list[SimStation],
        schedule: Schedule,
    ) -> None:
        self.nodes, self.watch, self.api, self.ev = nodes, watch, api, ev
        self.schedule = schedule
        self.kills: list[dict[str, Any]] = []
        self.pause: dict[str, Any] = {}
        self.ended: list[asyncio.Task[None]] = []
        # the campaign's counts, kept fresh by the test's follow loop
        self.succeeded = 0
        self.deferred = 0

    def charging(self) -> list[SimStation]:
        return [st for st in self.ev if st.record.sessions and st.record.sessions[-1].end is None]

    def end_session(self, st: SimStation, why: str) -> None:
        """The EV leaves; the TransactionEvent goes out on whatever connection there is."""
        agent = st.agent
        assert agent is not None
        st.record.sessions[-1].end = utc_now()
        LOG.info("%s: session ends (%s)", st.plan.station_id, why)

        async def end() -> None:
            await asyncio.wait_for(agent.end_session(1), 90)

        self.ended.append(asyncio.create_task(end()))

    def end_one(self, on_node: str, why: str) -> str | None:
        """End a session, on a charger connected to ``on_node`` if there is one."""
        open_ = self.charging()
        if not open_:
            return None
        there = self.nodes.balancer.stations_on(on_node)
        st = next((s for s in open_ if s.plan.station_id in there), open_[0])
        self.end_session(st, why)
        return st.plan.station_id

    async def gap(self, since: float, milestone: int) -> None:
        """``gap[0]`` s at least after ``since``; then until ``milestone`` stations succeeded,
        or ``gap[1]`` s passed."""
        least, most = self.schedule.gap
        deadline = since + most
        await wait_for("the gap", most + 1, lambda: time.monotonic() >= since + least)
        await wait_for(
            "the gap",
            most + 1,
            lambda: self.succeeded >= milestone or time.monotonic() >= deadline,
        )

    async def kill_leader(self) -> None:
        leader = await self.watch.wait_leader(timeout=self.schedule.failover_timeout)
        name = leader.leader
        await self.nodes.kill(name)
        killed = time.monotonic()
        session = self.end_one(name, f"node {name} killed")
        new = await self.watch.wait_leader(
            other_than=leader.node_id, timeout=self.schedule.failover_timeout
        )
        failover = new.at - killed
        await self.nodes.start(name)  # rejoins on the same data directory
        self.kills.append(
            {
                "node": name,
                "failover_s": round(failover, 2),
                "new_leader": new.leader,
                "session_ended": session,
                "restarted_after_s": round(time.monotonic() - killed, 1),
            }
        )
        LOG.info("killed leader %s; %s leads after %.2f s", name, new.leader, failover)

    async def pause_leader(self) -> None:
        """Pause the leader with a charging charger on it; the session ends during the pause."""
        leader = await self.watch.wait_leader(timeout=self.schedule.failover_timeout)
        name = leader.leader
        lb = self.nodes.balancer
        st = self.charging()[0]
        sid = st.plan.station_id
        if lb.holder(sid) != name:  # move it there: a network blip, then it reconnects
            lb.pin(sid, name)
            lb.cut(sid)
            await wait_for(f"{sid} to reconnect to node {name}", 30, lambda: lb.holder(sid) == name)
            # Back online with its connector status sent (the server knows it is charging).
            await wait_for(f"{sid} online", 30, lambda: st.online)
            # The server's record may lag (or be wrong: see the connected check at the end).
            with contextlib.suppress(AssertionError):
                await wait_for_async(f"{sid} connected on the server", 30, lambda: self.seen(sid))
        self.nodes.pause(name)
        paused = time.monotonic()
        self.end_session(st, f"node {name} paused")
        # The pause itself is the fault: it lasts pause_s, whatever happens meanwhile.
        await wait_for(
            "the pause",
            self.schedule.pause_s + 5,
            lambda: time.monotonic() >= paused + self.schedule.pause_s,
        )
        after = self.watch.leaders[-1]
        self.nodes.resume(name)
        lb.pin(sid, None)
        took_over = after.node_id != leader.node_id
        self.pause = {
            "node": name,
            "seconds": round(time.monotonic() - paused, 1),
            "lease_s": self.schedule.lease,
            "station": sid,
            "failover_s": round(after.at - paused, 2) if took_over else None,
            "new_leader": after.leader if took_over else None,
        }
        LOG.info("paused %s for %.1f s (%s)", name, self.pause["seconds"], self.pause)

    async def seen(self, sid: str) -> bool:
        return bool((await self.api.get(f"/api/v1/stations/{sid}")).get("connected"))

    async def run(self) -> None:
        t = time.monotonic()
        # First every EV charger's stage has started and the campaign deferred it (bounded).
        await wait_for(
            "the EV chargers deferred",
            self.schedule.first_fault_timeout,
            lambda: (
                self.deferred >= len(self.ev)
                or time.monotonic() > t + self.schedule.first_fault_timeout - 1
            ),
        )
        plan = self.schedule
        for k in range(plan.kills):
            await self.gap(
                t, plan.milestones[min(k + (k >= plan.pause_after), len(plan.milestones) - 1)]
            )
            await self.kill_leader()
            t = time.monotonic()
            if k + 1 == plan.pause_after:
                await self.gap(t, plan.milestones[min(plan.pause_after, len(plan.milestones) - 1)])
                await self.pause_leader()
                t = time.monotonic()
        for st in self.charging():  # none should be left; end any so the campaign can finish
            self.end_session(st, "after the faults")
