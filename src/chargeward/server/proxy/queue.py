"""The calls waiting for the upstream CSMS, in the order the station sent them.

Kept in memory, per station connection, up to ``cap`` entries (``ProxyConfig.queue_cap``).  A
station whose queue is full gets a CALLERROR for its next queued call instead of a local
answer: it keeps the message and sends it again later (OCPP 2.0.1 E13.FR.03, 1.6 section
4.1.8), so nothing it considers delivered is lost while the server runs.  What the queue holds
when the server stops is lost (the station was answered); see ADR 0040::

    q = UpstreamQueue(cap=2)
    q.push(Pending(Frame.parse('[2,"1","MeterValues",{}]'), live=False))   # True
    len(q), q.full                                                          # (1, False)
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from chargeward.server.proxy.frames import Frame


@dataclass(eq=False)
class Pending:
    """A station CALL on its way upstream; ``live``: the station waits for the upstream's
    answer (else Chargeward answered it and the upstream's answer is only logged)."""

    frame: Frame
    live: bool
    local: asyncio.Future[Frame] | None = None  # the charge point's answer to it
    answer: asyncio.Future[Frame | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class UpstreamQueue:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._items: deque[Pending] = deque()
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.cap

    def push(self, item: Pending) -> bool:
        """Append ``item``; False (not added) when the queue is full and it is not live."""
        if self.full and not item.live:
            return False
        self._items.append(item)
        self._changed.set()
        return True

    def head(self) -> Pending | None:
        return self._items[0] if self._items else None

    def pop(self) -> None:
        self._items.popleft()

    async def wait(self) -> None:
        """Until something is pushed (from now)."""
        self._changed.clear()
        await self._changed.wait()
