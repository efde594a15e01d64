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

When the server's HTTP listener speaks https (ADR 0025) the agents ask the proxy for a tunnel
(``CONNECT host:port``).  The link answers 200 and terminates the charger's TLS itself with the
lab server certificate and key (:class:`LinkTls`), reads the plaintext request as above
(station from ``?station=``, faults at plaintext body offsets, the same caps and latency) and
forwards it over its own TLS connection to the server, verifying the lab CA.  The link is part
of the lab's simulated network and so holds the lab key: a man in the middle by design, which
the chargers accept because they trust the lab CA as their CSMS root.  A real site proxy
tunnels the bytes and sees none of this.

    link = SiteLink("depot", upstream_ocpp, upstream_http, latency=0.02,
                    bandwidth=250_000, faults=faults)
    await link.start(); link.ocpp_url, link.proxy_url
    https = SiteLink(..., tls=LinkTls.from_pem(chain, key, ca))
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
import tempfile
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


@dataclass(frozen=True)
class LinkTls:
    """The link's two TLS roles for https downloads: ``server`` terminates the chargers' TLS
    inside a CONNECT tunnel (the lab server certificate and key), ``upstream`` connects to the
    server and verifies it against the lab CA."""

    server: ssl.SSLContext
    upstream: ssl.SSLContext

    @classmethod
    def from_pem(cls, chain_pem: str, key_pem: str, ca_pem: str) -> LinkTls:
        """From the lab certificate chain, its unencrypted key (PEM) and the lab CA."""
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.minimum_version = ssl.TLSVersion.TLSv1_2
        # ssl loads keys from files only: a private temporary file, removed at once.
        fd, name = tempfile.mkstemp(prefix="chargeward-link-", suffix=".pem")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(key_pem + chain_pem)
            server.load_cert_chain(name)
        finally:
            os.unlink(name)
        upstream = ssl.create_default_context(cadata=ca_pem)
        upstream.minimum_version = ssl.TLSVersion.TLSv1_2
        return cls(server, upstream)


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
        tls: LinkTls | None = None,
    ) -> None:
        self.site = site
        self.tls = tls  # CONNECT tunnels to the server's https listener
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
        # The connections' tasks, held here: a task waiting on a transport nothing else refers
        # to (an aborted TLS stream) would be garbage-collected while pending.
        self._handlers: set[asyncio.Task[None]] = set()
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
        handlers = list(self._handlers)
        for t in handlers:
            t.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    @property
    def open_connections(self) -> int:
        """Connections the link is still handling."""
        return len(self._handlers)

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

    def _tunnel_allowed(self, line: bytes) -> bool:
        """``CONNECT host:port``: to the server's https listener only (not the LAN)."""
        try:
            _, target, _ = line.split(b" ", 2)
            host, _, port = target.decode("latin-1").rpartition(":")
            where = (host.strip("[]"), int(port))
        except ValueError:
            return False
        return self.tls is not None and where == self.upstream["http"]

    async def _open_tunnel(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes:
        """Answer the CONNECT (its headers read), take over the charger's TLS with the lab
        certificate and return the first line of the plaintext request inside."""
        assert self.tls is not None
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.start_tls(self.tls.server, ssl_handshake_timeout=HEADER_TIMEOUT)
        return await reader.readuntil(b"\r\n")

    def _route(self, line: bytes, *, tunnel: bool = False) -> tuple[str, bytes, str] | None:
        """(upstream, request line to send, station) or None when refused.  In a tunnel the
        request is in origin-form and goes to the server's https listener."""
        try:
            method, target, version = line.split(b" ", 2)
        except ValueError:
            return None
        if tunnel:
            if not target.startswith(b"/"):
                return None
            query = urlsplit(target.decode("latin-1")).query
            return "http", line, (parse_qs(query).get("station") or [""])[0]
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
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        tunnel = False
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\r\n"), HEADER_TIMEOUT)
            if line.startswith(b"CONNECT "):
                if not self._tunnel_allowed(line):
                    self.stats["refused"] += 1
                    writer.transport.abort()
                    return
                tunnel = True
                line = await asyncio.wait_for(self._open_tunnel(reader, writer), HEADER_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            # OSError covers ssl.SSLError: a charger that does not trust the lab CA
            if tunnel:
                self.stats["tls refused"] += 1
            writer.transport.abort()
            return
        routed = self._route(line, tunnel=tunnel)
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
            if tunnel:
                assert self.tls is not None
                up_r, up_w = await asyncio.open_connection(
                    *upstream,
                    ssl=self.tls.upstream,
                    server_hostname=upstream[0],
                    ssl_handshake_timeout=HEADER_TIMEOUT,
                )
            else:
                up_r, up_w = await asyncio.open_connection(*upstream)
        except OSError:
            writer.transport.abort()
            return
        self.stats["lan connections" if lan else f"{kind} connections"] += 1
        if tunnel:
            self.stats["https tunnels"] += 1
        self._open.setdefault(station, set()).add(writer)
        up_w.write(line)
        pumps = {
            asyncio.ensure_future(self._pump(reader, up_w, None, shaped=False)),
            asyncio.ensure_future(
                self._pump(
                    up_r,
                    writer,
                    fault,
                    shaped=download,
                    line=self._line(station) if download else None,
                    counter="lan bytes" if lan else ("wan bytes" if download else None),
                )
            ),
        }
        try:
            # Both directions to their end; a drop or a broken side ends the whole connection
            # at once (a TLS stream may never see the other side's end after an abort).
            while pumps:
                done, pumps = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                if not all(t.result() for t in done):
                    break
        finally:
            self._open.get(station, set()).discard(writer)
            for w in (writer, up_w):
                w.transport.abort()
            for t in pumps:
                t.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        fault: DownloadFault | None,
        *,
        shaped: bool,
        line: _Bucket | None = None,
        counter: str | None = None,
    ) -> bool:
        """Forward until end of stream (then half-close ``dst``: True) or a drop or a broken
        connection (``dst`` aborted: False)."""
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
                        return False
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
            return False
        _eof(dst)
        return True

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
    """Half-close ``w``; a TLS stream cannot half-close (TLS has no half-close), so it is
    closed (close_notify)."""
    with contextlib.suppress(OSError, RuntimeError):
        if w.can_write_eof():
            w.write_eof()
        else:
            w.close()
