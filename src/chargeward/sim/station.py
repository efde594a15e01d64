"""One simulated station: the real agent on a simulated flash, powered up again after a cut,
with its charging sessions and its time offline.

    st = SimStation(plan, flash, config)
    task = asyncio.create_task(st.run(started_at))
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chargeward.agent.agent import Agent
from chargeward.agent.config import AgentConfig
from chargeward.errors import ChargingUnavailable
from chargeward.ocpp.base import utc_now
from chargeward.sim.flash import Flash, PowerCut, run_on
from chargeward.sim.link import DownloadFault, SiteLink
from chargeward.sim.plan import StationPlan

LOG = logging.getLogger("chargeward.sim")
STOP_TIMEOUT = 15.0
CALL_TIMEOUT = 30.0


@dataclass
class Session:
    start: dt.datetime  # the EV was plugged in (the agent's session exists from here)
    end: dt.datetime | None = None  # the EV left (gone from the agent from here)


@dataclass(frozen=True)
class FirmwareEvent:
    """What the charger saw of firmware updates: an UpdateFirmware it answered (``kind``
    "request", ``value`` its answer) or a FirmwareStatusNotification it sent ("status")."""

    at: float  # time.monotonic()
    kind: str
    value: str
    request_id: int | None


@dataclass
class StationRecord:
    power_cuts: list[str] = field(default_factory=list)
    firmware: list[FirmwareEvent] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    refused_sessions: int = 0  # connector unavailable (held for an install, rebooting)
    downloads: int = 0
    offline_s: float = 0.0


class SimStation:
    def __init__(self, plan: StationPlan, flash: Flash, config: AgentConfig) -> None:
        self.plan = plan
        self.flash = flash
        self.config = config
        self.record = StationRecord()
        self.agent: Agent | None = None
        # Set once the sessions due at the start have begun (or been refused): a campaign
        # created after that finds those EVs charging, however slow the machine.
        self.opened = asyncio.Event()
        skew = dt.timedelta(seconds=plan.faults.clock_skew)
        self.clock: Callable[[], dt.datetime] = lambda: utc_now() + skew

    # -- what the link asks ---------------------------------------------------------------

    def next_download_fault(self) -> DownloadFault | None:
        """The planned fault hits the station's first download connection only."""
        self.record.downloads += 1
        f = self.plan.faults
        if self.record.downloads > 1 or (f.drop_at is None and f.corrupt_at is None):
            return None
        return DownloadFault(drop_at=f.drop_at, corrupt_at=f.corrupt_at)

    # -- life ------------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self.agent is not None and self.agent.online

    @property
    def version(self) -> str | None:
        return self.agent.firmware_version if self.agent is not None else None

    async def run(self, stop: asyncio.Event, link: SiteLink, t0: asyncio.Event) -> None:
        """Run the agent until ``stop``; after a power cut, a new agent on the same flash.

        Sessions and time offline count from ``t0`` (set when the campaign starts).
        """
        helpers = [
            asyncio.create_task(self._sessions(stop, t0)),
            asyncio.create_task(self._offline(stop, link, t0)),
        ]
        try:
            while not stop.is_set():
                self.flash.power_on()
                agent = self.agent = Agent(self.config, clock=self.clock)
                self._watch_firmware(agent)
                task = run_on(self.flash, agent.run())
                waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._cut())}
                await asyncio.wait({task, *waits}, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
                agent.stop()
                await _end(task)
                if self.flash.cuts and len(self.flash.cuts) > len(self.record.power_cuts):
                    self.record.power_cuts.append(self.flash.cuts[-1])
                    LOG.info("%s: power lost at %s", self.plan.station_id, self.flash.cuts[-1])
                    continue
                if not stop.is_set() and task.done():  # the agent ended on its own: restart
                    await asyncio.sleep(1)
        finally:
            for h in helpers:
                h.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    def _watch_firmware(self, agent: Agent) -> None:
        """Record each UpdateFirmware the agent answers and each firmware status it sends."""
        answer, send = agent.callbacks.update_firmware, agent._status
        events = self.record.firmware

        def update_firmware(request_id: int, *args: Any, **kw: Any) -> str:
            status = answer(request_id, *args, **kw)
            events.append(FirmwareEvent(time.monotonic(), "request", status, request_id))
            return status

        async def sent(status: str, request_id: int | None) -> None:
            events.append(FirmwareEvent(time.monotonic(), "status", status, request_id))
            await send(status, request_id)

        agent.callbacks.update_firmware = update_firmware  # type: ignore[method-assign]
        agent._status = sent  # type: ignore[method-assign]

    async def _cut(self) -> None:
        await self.flash.cut.wait()

    async def _sessions(self, stop: asyncio.Event, started: asyncio.Event) -> None:
        try:
            await self._drive_sessions(stop, started)
        finally:
            self.opened.set()

    async def _drive_sessions(self, stop: asyncio.Event, started: asyncio.Event) -> None:
        await started.wait()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for start, end in self.plan.sessions:
            if start > 0:
                self.opened.set()
            await asyncio.sleep(max(0.0, t0 + start - loop.time()))
            agent = self.agent
            if agent is None or stop.is_set():
                return
            session = Session(utc_now())
            try:
                await asyncio.wait_for(agent.start_session(1), CALL_TIMEOUT)
            except ChargingUnavailable:
                self.record.refused_sessions += 1
                continue
            except TimeoutError:
                LOG.info("%s: session start not acknowledged", self.plan.station_id)
            self.record.sessions.append(session)
            await asyncio.sleep(max(0.0, t0 + end - loop.time()))
            session.end = utc_now()
            if agent is not self.agent:  # rebooted by a power cut: the session ended then
                continue
            with contextlib.suppress(ChargingUnavailable, TimeoutError):
                await asyncio.wait_for(agent.end_session(1), CALL_TIMEOUT)

    async def _offline(self, stop: asyncio.Event, link: SiteLink, started: asyncio.Event) -> None:
        if self.plan.faults.offline is None:
            return
        await started.wait()
        at, duration = self.plan.faults.offline
        await asyncio.sleep(at)
        link.set_offline(self.plan.station_id, True)
        try:
            await asyncio.sleep(duration)
        finally:
            link.set_offline(self.plan.station_id, False)
            self.record.offline_s += duration


async def _end(task: asyncio.Task[None]) -> None:
    """Wait for an agent's run to end; cancel it if it does not stop in time."""
    done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT)
    if not done:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, PowerCut, Exception):
        await task
