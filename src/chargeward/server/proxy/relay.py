"""One station's two legs: the station's websocket to Chargeward, and Chargeward's to the
upstream CSMS (ADR 0040).

The charge point (2.0.1 or 1.6J, unchanged) reads from and writes to a
:class:`ProxiedConnection` instead of the station's websocket; the :class:`Relay` taps every
frame::

    relay = Relay(station_id, "ocpp2.0.1", websocket, config, hooks)
    cp = MeteredChargePoint(station_id, relay.connection, sink, metrics=metrics)
    relay.start()
    try:
        await cp.start()          # ends when the station's connection does
    finally:
        await relay.stop()

- A station CALL goes upstream as received (same id, same bytes, in order) and to the charge
  point, which processes it as without a proxy (campaigns, deferral, drift).  The station gets
  the upstream's answer; the charge point's is used only when the upstream cannot answer
  (down, catching up, silent), and the call is queued for the upstream if it is one the
  upstream must see (``frames.QUEUED``).  SignCertificate and Chargeward's vendor DataTransfer
  stay local.
- A charge point CALL (UpdateFirmware, certificates, GetLog, TriggerMessage...) goes to the
  station with a ``cw-`` id; its answer goes back to the charge point only.
- An upstream CALL goes to the station as received, but a firmware command only per the
  station's :class:`~chargeward.server.proxy.policy.FirmwarePolicy`; the station's answer goes
  upstream as received.
- CALLs to the station go one at a time (OCPP-J: no CALL before the previous was answered or
  timed out), Chargeward's and the upstream's in the order they came.
- OCPP 1.6: a StartTransaction Chargeward answered (the upstream away) gave the station
  Chargeward's transactionId; once the upstream has answered its replay, the station's
  StopTransaction and MeterValues of that transaction go upstream with the upstream's id
  (``transactions``: Chargeward's id -> the upstream's, kept per station across connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from chargeward.ocpp.v16_map import SUBPROTOCOL_16
from chargeward.server.proxy import frames
from chargeward.server.proxy.frames import CALL, Frame, OwnIds
from chargeward.server.proxy.policy import ApprovedImages, FirmwarePolicy, decide, refusal
from chargeward.server.proxy.queue import Pending, UpstreamQueue
from chargeward.server.proxy.upstream import (
    SERVER_DEFAULTS,
    ProxyConfig,
    StationSettings,
    open_upstream,
)

LOG = logging.getLogger("chargeward.proxy")
MAX_MAPPED_TRANSACTIONS = 64  # per station: Chargeward's transactionId -> the upstream's
_TX_CARRIERS = frozenset({"StopTransaction", "MeterValues"})  # 1.6 calls naming a transaction


class ProxyHooks(Protocol):
    """What the relay asks of the server: the station's settings, approved images, and where
    refusals are audited."""

    async def station_settings(self, station_id: str) -> StationSettings: ...
    async def approved_images(self) -> ApprovedImages: ...
    async def refused(self, station_id: str, reason: str, details: dict[str, Any]) -> None: ...


class StationSocket(Protocol):
    """The station's websocket, as the relay uses it (``ServerConnection``)."""

    async def recv(self) -> str | bytes: ...
    async def send(self, message: str) -> None: ...
    async def close(self, code: int = 1000, reason: str = "") -> None: ...
    async def wait_closed(self) -> None: ...


@dataclass
class RelayCounters:
    """What one relay did, for tests, logs and the benchmark."""

    upstream_connects: int = 0
    forwarded_up: int = 0  # station frames sent upstream (replays included)
    forwarded_down: int = 0  # upstream frames sent to the station
    answered_locally: int = 0  # station calls answered with the charge point's answer
    refused_firmware: int = 0
    queue_full: int = 0
    upstream_answers_dropped: list[str] = field(default_factory=list)  # replayed calls' answers


class ProxiedConnection:
    """The connection a charge point gets in proxy mode: ``recv`` gives it what the relay lets
    through, ``send`` hands its frames to the relay.  Anything else is the station's."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    async def recv(self) -> str:
        raw = await self._relay._cp_inbox.get()
        if raw is None:
            raise ConnectionClosed(None, None)
        return raw

    async def send(self, message: str) -> None:
        await self._relay._from_cp(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._relay.station.close(code, reason)

    async def wait_closed(self) -> None:
        await self._relay.station.wait_closed()

    def __getattr__(self, name: str) -> Any:  # subprotocol, request, remote_address...
        return getattr(self._relay.station, name)


class Relay:
    def __init__(
        self,
        station_id: str,
        subprotocol: str,
        station: StationSocket,
        config: ProxyConfig,
        hooks: ProxyHooks,
        *,
        station_headers: Headers | None = None,
        transactions: dict[int, int] | None = None,
    ) -> None:
        self.station_id = station_id
        self.subprotocol = subprotocol
        self.version = "1.6" if subprotocol == SUBPROTOCOL_16 else "2.0.1"
        self.station = station
        self.config = config
        self.hooks = hooks
        self.station_headers = station_headers
        self.connection = ProxiedConnection(self)
        self.transactions = transactions if transactions is not None else {}
        self.counters = RelayCounters()
        self.queue = UpstreamQueue(config.queue_cap)
        self.upstream: ClientConnection | None = None
        self.settings = SERVER_DEFAULTS  # the database's, read before each upstream connection
        self._up_connected = asyncio.Event()
        self._up_changed = asyncio.Event()  # set whenever ``upstream`` changes
        self._first_attempt = asyncio.Event()  # the first upstream connection tried
        self._cp_inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._own = OwnIds()
        self._local: dict[str, asyncio.Future[Frame]] = {}  # the charge point's answers
        self._upstream_calls: set[str] = set()  # upstream CALLs the station has not answered
        self._station_lock = asyncio.Lock()  # one CALL at a time to the station
        self._station_inflight: tuple[str, asyncio.Future[None]] | None = None
        self._up_inflight: tuple[str, asyncio.Future[Frame | None]] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []

    # -- life ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._station_loop()),
            asyncio.create_task(self._upstream_loop()),
            asyncio.create_task(self._pump()),
        ]

    async def stop(self) -> None:
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        if self.upstream is not None:
            await self.upstream.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the station's leg -----------------------------------------------------------------------

    async def _station_loop(self) -> None:
        try:
            while True:
                raw = await self.station.recv()
                await self._from_station(raw if isinstance(raw, str) else raw.decode())
        except ConnectionClosed:
            pass
        finally:
            self._cp_inbox.put_nowait(None)  # the charge point's recv: connection closed

    async def _from_station(self, raw: str) -> None:
        frame = Frame.parse(raw)
        if frame is None:  # not OCPP-J: the charge point answers it, as without a proxy
            self._cp_inbox.put_nowait(raw)
            return
        if frame.kind != CALL:
            self._station_answered(frame)
            return
        if frame.local_only:
            self._cp_inbox.put_nowait(raw)
            return
        if not self._first_attempt.is_set():  # a station's first call goes upstream too
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_attempt.wait(), self.config.open_timeout)
        local: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._local[frame.message_id] = local
        self._cp_inbox.put_nowait(raw)
        queued = frame.action in frames.QUEUED[self.version]
        if self.upstream is not None and not len(self.queue):
            item = Pending(frame, live=True, local=local)
            self.queue.push(item)
            self._spawn(self._answer_live(item, local))
            return
        # In order behind what waits for the upstream; a call the upstream need not see is
        # not queued while it is away.
        behind = queued or self.upstream is not None
        if behind and not self.queue.push(Pending(frame, live=False, local=local)) and queued:
            # The station keeps it and sends it again (OCPP 2.0.1 E13.FR.03).
            self.counters.queue_full += 1
            LOG.warning("%s: upstream queue full, %s refused", self.station_id, frame.action)
            error = frames.call_error(
                frame.message_id, "InternalError", "CSMS unreachable, queue full"
            )
            await self.station.send(error)
            return
        self._spawn(self._answer_locally(frame.message_id, local))

    def _station_answered(self, frame: Frame) -> None:
        inflight = self._station_inflight
        if inflight is not None and inflight[0] == frame.message_id and not inflight[1].done():
            inflight[1].set_result(None)
        cp_id = self._own.take(frame.message_id)
        if cp_id is not None:  # Chargeward's call: never upstream
            self._cp_inbox.put_nowait(frames.with_message_id(frame.raw, cp_id))
            return
        self._upstream_calls.discard(frame.message_id)
        if self.upstream is not None:
            self._spawn(self._send_up(frame.raw))
        else:
            LOG.info("%s: answer %s for a gone upstream dropped", self.station_id, frame.message_id)

    async def _call_station(self, raw: str, message_id: str) -> None:
        """Send a CALL once the station has answered (or not, in time) the one before."""
        async with self._station_lock:
            answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._station_inflight = (message_id, answered)
            try:
                await self.station.send(raw)
                await asyncio.wait_for(answered, self.config.station_timeout)
            except (TimeoutError, ConnectionClosed):
                pass
            finally:
                self._station_inflight = None

    async def _answer_live(self, item: Pending, local: asyncio.Future[Frame]) -> None:
        answer = await item.answer
        if answer is None:  # the upstream could not answer: Chargeward does
            await self._answer_locally(item.frame.message_id, local)
            return
        self.counters.forwarded_down += 1
        await self.station.send(answer.raw)

    async def _answer_locally(self, message_id: str, local: asyncio.Future[Frame]) -> None:
        try:
            answer = await asyncio.wait_for(asyncio.shield(local), self.config.answer_timeout)
            raw = answer.raw
        except TimeoutError:
            raw = frames.call_error(message_id, "InternalError", "no answer in time")
        self.counters.answered_locally += 1
        await self.station.send(raw)

    # -- the charge point ------------------------------------------------------------------------

    async def _from_cp(self, raw: str) -> None:
        frame = Frame.parse(raw)
        if frame is not None and frame.kind == CALL:
            ours = self._own.issue(frame.message_id, self._upstream_calls)
            self._spawn(self._call_station(frames.with_message_id(raw, ours), ours))
            return
        local = self._local.pop(frame.message_id, None) if frame is not None else None
        if local is not None and frame is not None:  # the relay decides whether it is sent
            if not local.done():
                local.set_result(frame)
            return
        await self.station.send(raw)  # a local-only call's answer, or a malformed frame's

    # -- the upstream's leg ----------------------------------------------------------------------

    async def _upstream_loop(self) -> None:
        delay = self.config.reconnect_initial
        while True:
            try:
                await self._read_settings()
                up = await open_upstream(
                    self.config,
                    self.station_id,
                    self.subprotocol,
                    self.station_headers,
                    self.settings,
                )
            except (OSError, InvalidHandshake, TimeoutError) as e:
                self._first_attempt.set()
                LOG.warning("%s: upstream not reachable: %s", self.station_id, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.reconnect_max)
                continue
            self._first_attempt.set()
            if up.subprotocol != self.subprotocol:
                LOG.warning("%s: upstream refused %s", self.station_id, self.subprotocol)
                await up.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.reconnect_max)
                continue
            delay = self.config.reconnect_initial
            self.counters.upstream_connects += 1
            LOG.info("%s: upstream connected", self.station_id)
            self.upstream = up
            self._up_connected.set()
            self._first_attempt.set()
            try:
                async for raw in up:
                    await self._from_upstream(raw if isinstance(raw, str) else raw.decode())
            except ConnectionClosed:
                pass
            finally:
                self.upstream = None
                self._up_connected.clear()
                self._up_changed.set()
                self._upstream_calls.clear()
                inflight = self._up_inflight
                if inflight is not None and not inflight[1].done():
                    inflight[1].set_result(None)
            LOG.warning("%s: upstream connection lost", self.station_id)
            await asyncio.sleep(delay)

    async def _read_settings(self) -> None:
        """The station's settings from the database; the last ones read if that fails."""
        try:
            self.settings = await self.hooks.station_settings(self.station_id)
        except Exception:  # the database or the key file: keep the relay running
            LOG.exception("%s: proxy settings not read", self.station_id)

    async def _send_up(self, raw: str) -> None:
        up = self.upstream
        if up is None:
            return
        try:
            await up.send(raw)
            self.counters.forwarded_up += 1
        except ConnectionClosed:
            pass

    async def _from_upstream(self, raw: str) -> None:
        frame = Frame.parse(raw)
        if frame is None:
            LOG.warning("%s: upstream sent a malformed frame, dropped", self.station_id)
            return
        if frame.kind != CALL:
            inflight = self._up_inflight
            if inflight is not None and inflight[0] == frame.message_id:
                if not inflight[1].done():
                    inflight[1].set_result(frame)
            else:
                LOG.info("%s: upstream answer %s unexpected", self.station_id, frame.message_id)
            return
        if frame.message_id in self._own:
            error = frames.call_error(frame.message_id, "RpcFrameworkError", "messageId in use")
            await self._send_up(error)
            return
        if frame.action in frames.FIRMWARE_COMMANDS and not await self._firmware_allowed(frame):
            return
        self._upstream_calls.add(frame.message_id)
        self.counters.forwarded_down += 1
        self._spawn(self._call_station(frame.raw, frame.message_id))

    async def _firmware_allowed(self, frame: Frame) -> bool:
        policy = self.config.policy_for(self.station_id, self.settings)
        assert frame.action is not None
        approved = (
            await self.hooks.approved_images() if policy is FirmwarePolicy.approved_only else None
        )
        decision = decide(policy, frame.action, frame.payload, approved)
        if decision.relay:
            return True
        self.counters.refused_firmware += 1
        LOG.warning("%s: upstream %s refused: %s", self.station_id, frame.action, decision.reason)
        await self.hooks.refused(self.station_id, decision.reason, decision.details)
        payload = refusal(self.version, frame.action)
        await self._send_up(
            frames.call_result(frame.message_id, payload)
            if payload is not None
            else frames.call_error(frame.message_id, "SecurityError", "refused by policy")
        )
        return False

    async def _pump(self) -> None:
        """Send the queue upstream, one call at a time, in order (OCPP-J)."""
        while True:
            item = self.queue.head()
            if item is None:
                await self.queue.wait()
                continue
            up = self.upstream
            if up is None:
                await self._up_connected.wait()
                continue
            answer: asyncio.Future[Frame | None] = asyncio.get_running_loop().create_future()
            self._up_inflight = (item.frame.message_id, answer)
            try:
                await up.send(self._outbound(item.frame))
                self.counters.forwarded_up += 1
                got = await asyncio.wait_for(answer, self.config.answer_timeout)
            except ConnectionClosed:
                got = None
            except TimeoutError:  # sent and not answered: not sent again
                LOG.warning("%s: upstream did not answer %s", self.station_id, item.frame.action)
                self._settle(item, None)
                self.queue.pop()
                continue
            finally:
                self._up_inflight = None
            if got is not None:
                if self.version == "1.6" and not item.live:
                    await self._map_transaction(item, got)
                self._settle(item, got)
                self.queue.pop()
                continue
            # The upstream left: Chargeward answers; what it must see is sent again later.
            self._settle(item, None)
            if item.frame.action not in frames.QUEUED[self.version]:
                self.queue.pop()
            else:
                item.live = False
                while self.upstream is up:  # until the reader has seen it go
                    self._up_changed.clear()
                    await self._up_changed.wait()

    def _outbound(self, frame: Frame) -> str:
        """The frame as it goes upstream: as received, but for a 1.6 transaction the upstream
        knows by another id (started while it was away) with the upstream's id."""
        if self.version != "1.6" or frame.action not in _TX_CARRIERS:
            return frame.raw
        ours = frames.transaction_id_of(frame.payload)
        theirs = self.transactions.get(ours) if ours is not None else None
        if theirs is None:
            return frame.raw
        if frame.action == "StopTransaction":
            del self.transactions[ours]  # type: ignore[arg-type]
        return frames.with_payload(frame.raw, {**frame.payload, "transactionId": theirs})

    async def _map_transaction(self, item: Pending, answer: Frame) -> None:
        """A replayed StartTransaction the station had Chargeward's answer to: remember the
        upstream's transactionId for Chargeward's."""
        if item.frame.action != "StartTransaction" or item.local is None:
            return
        try:
            local = await asyncio.wait_for(asyncio.shield(item.local), self.config.answer_timeout)
        except TimeoutError:
            return
        ours = frames.transaction_id_of(local.payload)
        theirs = frames.transaction_id_of(answer.payload)
        if ours is None or theirs is None or ours == theirs:
            return
        self.transactions[ours] = theirs
        while len(self.transactions) > MAX_MAPPED_TRANSACTIONS:
            del self.transactions[next(iter(self.transactions))]
        LOG.info("%s: transaction %d is %d upstream", self.station_id, ours, theirs)

    def _settle(self, item: Pending, answer: Frame | None) -> None:
        if item.live and not item.answer.done():
            item.answer.set_result(answer)
        elif answer is not None and item.frame.action == "BootNotification":
            status = answer.payload.get("status") if isinstance(answer.payload, dict) else None
            if status != "Accepted":  # a replayed boot: the station was answered already
                self.counters.upstream_answers_dropped.append(f"BootNotification {status}")
                LOG.warning("%s: upstream answered the replayed boot %s", self.station_id, status)
