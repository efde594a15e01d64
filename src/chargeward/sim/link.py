"""The simulated link: one loopback proxy per site, between its chargers and the server.

The chargers of a site connect their OCPP websocket to the proxy (``ws://127.0.0.1:<port>/ocpp/``)
and use it as their HTTP proxy for firmware downloads (absolute-form requests, rewritten to
origin-form for the server).  The proxy reads the request line of each connection to learn
the station (``/ocpp/<id>``, or ``?station=<id>`` in a signed download URL) and then only
forwards bytes, adding:

- one-way latency in both directions;
- a bandwidth cap on what the server sends, shared by every connection of the site, and one
  for each station's own line (a cellular modem each);
- the site's LAN: a download from a host on it (its Local Controller, :meth:`add_lan`) goes
  there directly, not over the WAN link (no caps, counted apart: ``lan bytes``);
- per station faults on downloads (:class:`DownloadFault`): the connection drops after N
  bytes, or one byte of the body is flipped;
- stations offline: their connections are cut and new ones refused until they are back.

    >>> link = SiteLink("depot", upstream_ocpp, upstream_http, latency=0.02,
    ...                 bandwidth=250_000, faults=faults)             # doctest: +SKIP
    >>> await link.start(); link.ocpp_url, link.proxy_url           # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

_OCPP_PATH = re.compile(rb"^/ocpp/([^/?\s]+)")
CHUNK = 16 * 1024
HEADER_TIMEOUT = 30.0


@dataclass(frozen=True)
class DownloadFault:
    drop_at: int | None = None  # bytes from the server (headers included) before the drop
    corrupt_at: int | None = None  # offset in the response body of the flipped byte


FaultPlan = Callable[[str], DownloadFault | None]  # station id -> the fault of its next download


class _Bucket:
    """A shared bandwidth cap: each chunk waits for the line to be free."""

    def __init__(self, rate: int | None) -> None:
        self.rate = rate
        self._free_at = 0.0

    async def take(self, n: int) -> None:
        if self.rate is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._free_at)
        self._free_at = start + n / self.rate
        if self._free_at > now:
            await asyncio.sleep(self._free_at - now)


class SiteLink:
    def __init__(
        self,
        site: str,
        ocpp: tuple[str, int],
        http: tuple[str, int],
        *,
        latency: float = 0.0,
        bandwidth: int | None = None,
        station_bandwidth: int | None = None,
        faults: FaultPlan | None = None,
    ) -> None:
        self.site = site
        self.upstream = {"ocpp": ocpp, "http": http}
        self.latency = latency
        self.bucket = _Bucket(bandwidth)
        self.station_bandwidth = station_bandwidth
        self._lines: dict[str, _Bucket] = {}  # each station's own line
        self._lan: set[tuple[str, int]] = set()
        self.faults = faults
        self.stats: Counter[str] = Counter()
        self._offline: set[str] = set()
        self._open: dict[str, set[asyncio.StreamWriter]] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=4096)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writers in self._open.values():
            for w in writers:
                w.transport.abort()

    @property
    def ideal(self) -> bool:
        """No latency and no bandwidth cap: only per-station faults need this proxy."""
        return not self.latency and self.bucket.rate is None and self.station_bandwidth is None

    def add_lan(self, host: str, port: int) -> None:
        """A server on the site's LAN (a Local Controller's firmware cache)."""
        self._lan.add((host, port))

    def _line(self, station: str) -> _Bucket | None:
        if self.station_bandwidth is None:
            return None
        line = self._lines.get(station)
        if line is None:
            line = self._lines[station] = _Bucket(self.station_bandwidth)
        return line

    @property
    def ocpp_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp/"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_offline(self, station: str, offline: bool) -> None:
        """Take a station off the link (its connections drop at once) or bring it back."""
        if offline:
            self._offline.add(station)
            for w in self._open.get(station, set()):
                w.transport.abort()
            self.stats["offline"] += 1
        else:
            self._offline.discard(station)

    def _route(self, line: bytes) -> tuple[str, bytes, str] | None:
        """(upstream, request line to send, station) or None when refused."""
        try:
            method, target, version = line.split(b" ", 2)
        except ValueError:
            return None
        if target.startswith(b"http://"):  # proxy request: the server's HTTP side or the LAN
            url = urlsplit(target.decode("latin-1"))
            where = (url.hostname or "", url.port or 80)
            if where != self.upstream["http"] and where not in self._lan:
                return None
            path = url.path + (f"?{url.query}" if url.query else "")
            station = (parse_qs(url.query).get("station") or [""])[0]
            kind = "http" if where == self.upstream["http"] else f"lan:{where[0]}:{where[1]}"
            return kind, b" ".join((method, path.encode("latin-1"), version)), station
        m = _OCPP_PATH.match(target)
        if m is None:
            return None
        return "ocpp", line, m.group(1).decode("latin-1")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\r\n"), HEADER_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.transport.abort()
            return
        routed = self._route(line)
        if routed is None or routed[2] in self._offline:
            self.stats["refused"] += 1
            writer.transport.abort()
            return
        kind, line, station = routed
        fault = None
        download = kind == "http" and b"/firmware/" in line
        if download and self.faults is not None:
            fault = self.faults(station)
        lan = kind.startswith("lan:")
        if lan:
            _, host, port = kind.split(":")
            upstream = (host, int(port))
        else:
            upstream = self.upstream[kind]
        try:
            up_r, up_w = await asyncio.open_connection(*upstream)
        except OSError:
            writer.transport.abort()
            return
        self.stats["lan connections" if lan else f"{kind} connections"] += 1
        self._open.setdefault(station, set()).add(writer)
        up_w.write(line)
        try:
            await asyncio.gather(
                self._pump(reader, up_w, None, shaped=False),
                self._pump(
                    up_r,
                    writer,
                    fault,
                    shaped=download,
                    line=self._line(station) if download else None,
                    counter="lan bytes" if lan else ("wan bytes" if download else None),
                ),
            )
        finally:
            self._open.get(station, set()).discard(writer)
            for w in (writer, up_w):
                w.transport.abort()

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        fault: DownloadFault | None,
        *,
        shaped: bool,
        line: _Bucket | None = None,
        counter: str | None = None,
    ) -> None:
        """Forward until end of stream (then half-close ``dst``) or a drop (abort)."""
        sent = 0
        head = b""  # the stream's first bytes, until the end of the response headers
        body_at: int | None = None
        try:
            while data := await src.read(CHUNK):
                if self.latency:
                    await asyncio.sleep(self.latency)
                if fault is not None:
                    if body_at is None:
                        head += data
                        end = head.find(b"\r\n\r\n")
                        body_at = end + 4 if end >= 0 else None
                    cut = self._apply(fault, data, sent, body_at)
                    if cut is None:
                        dst.transport.abort()
                        return
                    data = cut
                if shaped:
                    await self.bucket.take(len(data))
                    if line is not None:
                        await line.take(len(data))
                dst.write(data)
                await dst.drain()
                sent += len(data)
                if counter is not None:
                    self.stats[counter] += len(data)
        except (ConnectionError, OSError):
            dst.transport.abort()
            return
        _eof(dst)

    def _apply(
        self, fault: DownloadFault, data: bytes, sent: int, body_at: int | None
    ) -> bytes | None:
        if fault.corrupt_at is not None and body_at is not None:
            at = body_at + fault.corrupt_at - sent
            if 0 <= at < len(data):
                data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
                self.stats["corrupted"] += 1
        if fault.drop_at is not None and sent + len(data) >= fault.drop_at:
            self.stats["dropped"] += 1
            return None
        return data


def _eof(w: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        if w.can_write_eof():
            w.write_eof()
