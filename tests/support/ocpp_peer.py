"""A raw OCPP-J peer for fuzzing, and an event loop in a thread for synchronous drivers.

:class:`Peer` sends any frame, well formed or not, over a real websocket and tells what came
back (:class:`Outcome`), while it answers the calls the other side makes meanwhile (the CSMS
side of a charger, or a station's BootNotification).  A frame that must not be answered is
followed by a probe call, so that silence is seen at once instead of waited for::

    peer = Peer(ws)
    (await peer.exchange('[2, "m1", "Nope", {}]')).kind
    # -> 'callerror'

:class:`LoopThread` runs the servers and peers of a hypothesis test, whose examples are
synchronous, in an event loop of their own::

    with LoopThread() as loop:
        csms = loop.enter(running_csms(data_dir, pki))
        loop.run(peer.exchange(frame))
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from tests.support.ocpp_frames import REFUSAL_CODES, expected_reply

T = TypeVar("T")
Answer = Callable[[str, dict[str, Any]], dict[str, Any]]
PROBE = "ChargewardProbe"  # an action no OCPP version has: always a CALLERROR


@dataclass(frozen=True)
class Outcome:
    """What a frame got: ``callerror``, ``callresult``, ``silent`` or ``closed``."""

    kind: str
    reply: list[Any] | None = None
    close_code: int | None = None


def check_refused(raw: str | bytes, outcome: Outcome, max_frame: int) -> None:
    """``outcome`` is what OCPP-J demands for a frame that cannot be accepted: a CALLERROR
    for its message id, nothing for a response, close code 1009 when over ``max_frame``."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > max_frame:
        assert (outcome.kind, outcome.close_code) == ("closed", 1009), outcome
        return
    expected = expected_reply(raw)
    if not expected.answered:
        assert outcome.kind == "silent", outcome
        return
    assert outcome.kind == "callerror", outcome
    assert outcome.reply is not None
    assert outcome.reply[1] == expected.uid, outcome
    assert outcome.reply[2] in REFUSAL_CODES, outcome


@dataclass
class Peer:
    """One end of an OCPP-J connection driven frame by frame."""

    ws: Connection
    answer: Answer = lambda action, payload: {}
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _responses: asyncio.Queue[list[Any]] = field(default_factory=asyncio.Queue)
    _reader: asyncio.Task[None] | None = None
    _probes: itertools.count[int] = field(default_factory=itertools.count)

    def start(self) -> Peer:
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                msg = json.loads(raw)
                if msg[0] == 2:
                    self.calls.append((msg[2], msg[3]))
                    await self.ws.send(json.dumps([3, msg[1], self.answer(msg[2], msg[3])]))
                else:
                    self._responses.put_nowait(msg)

    async def response(self, timeout: float = 10) -> list[Any] | None:
        """The next CALLRESULT or CALLERROR; None once the connection is closed."""
        assert self._reader is not None, "start() the peer first"
        get = asyncio.ensure_future(self._responses.get())
        try:
            await asyncio.wait({get, self._reader}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            get.cancel()
        if get.done() and not get.cancelled():
            return get.result()
        if self._reader.done():
            self._reader.result()  # the other side sent what is not OCPP-J: raise it here
            return None
        raise TimeoutError(f"no response within {timeout} s")

    async def exchange(self, raw: str | bytes, timeout: float = 10) -> Outcome:
        """Send ``raw``; a probe follows a frame that must not be answered."""
        probe = f"~probe-{next(self._probes)}"
        try:
            await self.ws.send(raw)
            if not expected_reply(raw).answered:
                await self.ws.send(json.dumps([2, probe, PROBE, {}]))
            reply = await self.response(timeout)
        except ConnectionClosed:
            reply = None
        if reply is None:
            await self.ws.wait_closed()
            return Outcome("closed", close_code=self.ws.close_code)
        if reply[1] == probe:
            return Outcome("silent", reply)
        if not expected_reply(raw).answered:  # answered what must not be: take the probe's
            await self.response(timeout)
        return Outcome("callerror" if reply[0] == 4 else "callresult", reply)

    async def call(self, uid: str, action: str, payload: dict[str, Any]) -> Outcome:
        return await self.exchange(json.dumps([2, uid, action, payload]))


class LoopThread:
    """An event loop in a daemon thread.  Async context managers given to :meth:`enter` are
    left in reverse order when the ``with`` block ends."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._stack = contextlib.AsyncExitStack()

    def __enter__(self) -> LoopThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self._stack.aclose())
        finally:
            self.run(_cancel_the_rest())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def enter(self, cm: contextlib.AbstractAsyncContextManager[T]) -> T:
        return self.run(self._stack.enter_async_context(cm))


async def _cancel_the_rest() -> None:
    """Cancel and await what is still running (e.g. a server's background flushes)."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
