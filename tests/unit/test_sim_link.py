"""The simulated site link on real loopback sockets: it forwards OCPP and proxied downloads to
the server only, shapes bandwidth, drops and corrupts downloads as planned, and takes stations
offline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from chargeward.sim.link import DownloadFault, SiteLink

BODY = bytes(range(256)) * 1024  # 256 KiB, every byte position recognisable


class Upstream:
    """A tiny HTTP server: every request gets BODY; the request lines it saw are kept."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.lines.append(await r.readuntil(b"\r\n"))
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
        await w.drain()
        w.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    await up.start()
    yield up
    assert up.server is not None
    up.server.close()


async def make_link(up: Upstream, **kw: object) -> SiteLink:
    link = SiteLink("depot", ("127.0.0.1", up.port), ("127.0.0.1", up.port), **kw)  # type: ignore[arg-type]
    await link.start()
    return link


async def get(link: SiteLink, target: str) -> tuple[bytes, bytes]:
    """Send one request through the link; (response head, body) as far as it came."""
    r, w = await asyncio.open_connection("127.0.0.1", link.port)
    w.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await w.drain()
    data = b""
    try:
        while chunk := await asyncio.wait_for(r.read(65536), 10):
            data += chunk
    except ConnectionError:
        pass
    w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def download_url(up: Upstream, station: str) -> str:
    return f"http://127.0.0.1:{up.port}/firmware/abc.cwfw?station={station}&sig=x"


async def test_a_proxied_download_reaches_the_server_in_origin_form(upstream: Upstream) -> None:
    link = await make_link(upstream)
    head, body = await get(link, download_url(upstream, "CP-1"))
    await link.close()
    assert head.startswith(b"HTTP/1.1 200") and body == BODY
    assert upstream.lines == [b"GET /firmware/abc.cwfw?station=CP-1&sig=x HTTP/1.1\r\n"]
    assert link.stats["http connections"] == 1


async def test_proxy_requests_to_any_other_host_and_unknown_paths_are_refused(
    upstream: Upstream,
) -> None:
    link = await make_link(upstream)
    for target in ("http://127.0.0.1:1/firmware/x", "http://example.org/firmware/x", "/admin"):
        head, body = await get(link, target)
        assert head == body == b""
    await link.close()
    assert upstream.lines == [] and link.stats["refused"] == 3


async def test_the_bandwidth_cap_holds_a_download_to_the_sites_rate(upstream: Upstream) -> None:
    rate = 1_000_000  # bytes per second: BODY takes at least 0.26 s
    link = await make_link(upstream, bandwidth=rate)
    started = time.perf_counter()
    _, body = await get(link, download_url(upstream, "CP-1"))
    elapsed = time.perf_counter() - started
    await link.close()
    assert body == BODY
    assert elapsed >= 0.9 * len(BODY) / rate


async def test_a_planned_drop_cuts_the_download_and_hits_that_station_only(
    upstream: Upstream,
) -> None:
    plan = {"CP-1": DownloadFault(drop_at=50_000)}
    link = await make_link(upstream, faults=lambda sid: plan.pop(sid, None))
    _, cut = await get(link, download_url(upstream, "CP-1"))
    _, again = await get(link, download_url(upstream, "CP-1"))  # the fault was used up
    _, other = await get(link, download_url(upstream, "CP-2"))
    await link.close()
    assert len(cut) < 50_000 and BODY.startswith(cut)
    assert again == other == BODY
    assert link.stats["dropped"] == 1


async def test_a_planned_corruption_flips_one_byte_of_the_body(upstream: Upstream) -> None:
    link = await make_link(upstream, faults=lambda sid: DownloadFault(corrupt_at=100_000))
    _, body = await get(link, download_url(upstream, "CP-1"))
    await link.close()
    assert len(body) == len(BODY)
    diff = [i for i, (a, b) in enumerate(zip(body, BODY, strict=True)) if a != b]
    assert diff == [100_000] and body[100_000] == BODY[100_000] ^ 0xFF
    assert link.stats["corrupted"] == 1


async def test_an_offline_station_is_cut_off_and_refused_until_it_is_back(
    upstream: Upstream,
) -> None:
    link = await make_link(upstream)
    r, w = await asyncio.open_connection("127.0.0.1", link.port)
    w.write(b"GET /ocpp/CP-1 HTTP/1.1\r\nHost: x\r\n\r\n")
    await w.drain()
    await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)  # connected through the link
    link.set_offline("CP-1", True)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(r.readexactly(len(BODY) + 1), 10)
    w.close()
    head, _ = await get(link, "/ocpp/CP-1")
    assert head == b""  # refused while offline
    other, _ = await get(link, "/ocpp/CP-2")
    assert other.startswith(b"HTTP/1.1 200")
    link.set_offline("CP-1", False)
    back, _ = await get(link, "/ocpp/CP-1")
    await link.close()
    assert back.startswith(b"HTTP/1.1 200")


async def test_a_link_without_latency_or_cap_is_ideal() -> None:
    up = ("127.0.0.1", 9)
    assert SiteLink("s", up, up).ideal
    assert not SiteLink("s", up, up, latency=0.01).ideal
    assert not SiteLink("s", up, up, bandwidth=1000).ideal
