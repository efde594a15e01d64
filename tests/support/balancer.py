"""A loopback TCP balancer in front of several server nodes, for cluster chaos tests.

Two listeners, one for OCPP websockets and one for HTTP (API and downloads); each new
connection goes to the next node marked up (round robin) and is then only forwarded, bytes
both ways.  The test marks a node down before it kills or pauses it and up once it is back
(:meth:`Balancer.set_node` with its new ports after a restart).  Connections already open to
a node stay with it: those to a killed node end when its sockets do, those to a paused node
hang until it resumes, as they would behind a real TCP load balancer.

An OCPP connection's request line names its station (``GET /ocpp/<id>``): :meth:`holder`
tells which node a station is connected to, :meth:`pin` sends a station's next connections to
a chosen node and :meth:`cut` drops its open ones (a network blip; the agent reconnects).

    lb = Balancer()
    await lb.start()
    lb.set_node("a", ocpp=("127.0.0.1", 9001), http=("127.0.0.1", 8081))
    lb.ocpp_url, lb.http_url
    lb.mark("a", up=False)
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from dataclasses import dataclass, field

_OCPP_PATH = re.compile(rb"^GET /ocpp/([^/?\s]+)")
HEADER_TIMEOUT = 30.0
CHUNK = 64 * 1024
Address = tuple[str, int]


@dataclass
class _Node:
    ocpp: Address
    http: Address
    up: bool = True


@dataclass
class _Conn:
    node: str
    station: str | None
    writers: tuple[asyncio.StreamWriter, asyncio.StreamWriter]


@dataclass
class Balancer:
    nodes: dict[str, _Node] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)
    _next: int = 0
    _pins: dict[str, str] = field(default_factory=dict)
    _open: set[asyncio.Task[None]] = field(default_factory=set)
    _conns: dict[asyncio.Task[None], _Conn] = field(default_factory=dict)
    _servers: list[asyncio.Server] = field(default_factory=list)
    ocpp_port: int = 0
    http_port: int = 0

    @property
    def ocpp_url(self) -> str:
        return f"ws://127.0.0.1:{self.ocpp_port}/ocpp/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def start(self) -> None:
        ocpp = await asyncio.start_server(self._ocpp, "127.0.0.1", 0, backlog=1024)
        http = await asyncio.start_server(self._http, "127.0.0.1", 0, backlog=1024)
        self._servers = [ocpp, http]
        self.ocpp_port = int(ocpp.sockets[0].getsockname()[1])
        self.http_port = int(http.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        tasks = list(self._open)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- what the test does ------------------------------------------------------------------

    def set_node(self, name: str, *, ocpp: Address, http: Address) -> None:
        """Add a node, or give a restarted one its new ports; it is up."""
        self.nodes[name] = _Node(ocpp, http)

    def mark(self, name: str, *, up: bool) -> None:
        self.nodes[name].up = up

    def pin(self, station: str, node: str | None) -> None:
        """Send ``station``'s next OCPP connections to ``node`` while it is up (None: unpin)."""
        if node is None:
            self._pins.pop(station, None)
        else:
            self._pins[station] = node

    def cut(self, station: str) -> int:
        """Drop ``station``'s open OCPP connections; returns how many."""
        n = 0
        for conn in list(self._conns.values()):
            if conn.station == station:
                for w in conn.writers:
                    w.transport.abort()
                n += 1
        return n

    def holder(self, station: str) -> str | None:
        """The node of ``station``'s newest open OCPP connection."""
        found = [c.node for c in self._conns.values() if c.station == station]
        return found[-1] if found else None

    def stations_on(self, node: str) -> set[str]:
        return {c.station for c in self._conns.values() if c.node == node and c.station}

    # -- forwarding --------------------------------------------------------------------------

    def _choose(self, station: str | None) -> list[str]:
        """The up nodes to try, in order: the pinned one first, then round robin."""
        up = [n for n, node in self.nodes.items() if node.up]
        if not up:
            return []
        self._next += 1
        start = self._next % len(up)
        order = up[start:] + up[:start]
        pinned = self._pins.get(station or "")
        if pinned in order:
            order.remove(pinned)
            order.insert(0, pinned)
        return order

    async def _ocpp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await asyncio.wait_for(reader.readuntil(b"\r\n"), HEADER_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.transport.abort()
            return
        m = _OCPP_PATH.match(first)
        await self._forward("ocpp", reader, writer, first, m.group(1).decode() if m else None)

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._forward("http", reader, writer, b"", None)

    async def _forward(
        self,
        kind: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        first: bytes,
        station: str | None,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        try:
            for name in self._choose(station):
                node = self.nodes[name]
                try:
                    up_r, up_w = await asyncio.wait_for(
                        asyncio.open_connection(*(node.ocpp if kind == "ocpp" else node.http)), 5
                    )
                except (OSError, TimeoutError):
                    self.stats[f"{kind} connect failed"] += 1
                    continue
                break
            else:
                self.stats[f"{kind} refused"] += 1
                writer.transport.abort()
                return
            self.stats[f"{kind} to {name}"] += 1
            self._conns[task] = _Conn(name, station, (writer, up_w))
            up_w.write(first)
            pumps = [
                asyncio.ensure_future(_pump(reader, up_w)),
                asyncio.ensure_future(_pump(up_r, writer)),
            ]
            try:
                pending: set[asyncio.Future[bool]] = set(pumps)
                while pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    if not all(t.result() for t in done):
                        break
            finally:
                for w in (writer, up_w):
                    w.transport.abort()
                for t in pumps:
                    t.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._conns.pop(task, None)
            self._open.discard(task)


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> bool:
    """Forward until end of stream (half-close ``dst``: True) or a broken side (False)."""
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, OSError):
        return False
    with contextlib.suppress(OSError, RuntimeError):
        if dst.can_write_eof():
            dst.write_eof()
    return True
