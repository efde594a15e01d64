"""The simulated site link on real loopback sockets: it forwards OCPP and proxied downloads to
the server only, shapes bandwidth, drops and corrupts downloads as planned, and takes stations
offline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from chargeward.agent import location
from chargeward.agent.location import LAB_LOOPBACK
from chargeward.local import LabTls
from chargeward.sim.link import DownloadFault, LinkTls, SiteLink

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


# -- https: CONNECT tunnels, the link terminating the chargers' TLS with the lab key ----------


@pytest.fixture(scope="module")
def lab() -> tuple[LabTls, LinkTls]:
    made = LabTls.create(days=1)
    return made, LinkTls.from_pem(made.certificate_pem, lab_key_pem(made), made.ca_pem)


def lab_key_pem(made: LabTls) -> str:
    return made.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
async def https_upstream(lab: tuple[LabTls, LinkTls]) -> AsyncIterator[Upstream]:
    """The server's https listener: the lab certificate (LinkTls.server is one such context)."""
    up = Upstream()
    up.server = await asyncio.start_server(up.handle, "127.0.0.1", 0, ssl=lab[1].server)
    up.port = int(up.server.sockets[0].getsockname()[1])
    yield up
    up.server.close()


def charger(made: LabTls, link: SiteLink, *, trust_lab: bool = True) -> httpx.AsyncClient:
    """The agent's download client: the link as its HTTP proxy, the lab CA as CSMS root."""
    roots = made.ca_pem.encode() if trust_lab else None
    return location.client(LAB_LOOPBACK, timeout=10, proxy=link.proxy_url, csms_roots=roots)


def https_url(up: Upstream, station: str) -> str:
    return f"https://127.0.0.1:{up.port}/firmware/abc.cwfw?station={station}&sig=x"


async def test_an_https_download_is_tunnelled_and_reaches_the_server_in_origin_form(
    lab: tuple[LabTls, LinkTls], https_upstream: Upstream
) -> None:
    link = await make_link(https_upstream, tls=lab[1])
    async with charger(lab[0], link) as client:
        r = await client.get(https_url(https_upstream, "CP-1"))
    await link.close()
    assert r.status_code == 200 and r.content == BODY
    assert https_upstream.lines == [b"GET /firmware/abc.cwfw?station=CP-1&sig=x HTTP/1.1\r\n"]
    assert link.stats["https tunnels"] == link.stats["http connections"] == 1


async def test_faults_hit_the_plaintext_body_inside_the_tunnel(
    lab: tuple[LabTls, LinkTls], https_upstream: Upstream
) -> None:
    plan = {"CP-1": DownloadFault(corrupt_at=100_000), "CP-2": DownloadFault(drop_at=50_000)}
    link = await make_link(https_upstream, tls=lab[1], faults=lambda sid: plan.pop(sid, None))

    async def fetch(station: str) -> bytes:  # one client per download, as the agent does
        async with charger(lab[0], link) as client:
            return (await client.get(https_url(https_upstream, station))).content

    corrupted = await fetch("CP-1")
    with pytest.raises(httpx.RemoteProtocolError, match="without sending complete message"):
        await fetch("CP-2")  # the connection drops mid-body
    again = await fetch("CP-2")
    for _ in range(500):  # every tunnel ends once its charger has gone, dropped ones too
        if not link.open_connections:
            break
        await asyncio.sleep(0.01)
    assert link.open_connections == 0
    await link.close()
    diff = [i for i, (a, b) in enumerate(zip(corrupted, BODY, strict=True)) if a != b]
    assert diff == [100_000] and corrupted[100_000] == BODY[100_000] ^ 0xFF
    assert again == BODY
    assert link.stats["corrupted"] == link.stats["dropped"] == 1


async def test_a_charger_without_the_lab_ca_refuses_the_link_and_nothing_reaches_the_server(
    lab: tuple[LabTls, LinkTls], https_upstream: Upstream
) -> None:
    link = await make_link(https_upstream, tls=lab[1])
    async with charger(lab[0], link, trust_lab=False) as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(https_url(https_upstream, "CP-1"))
    for _ in range(500):  # the link sees the charger's alert after the charger has raised
        if link.stats["tls refused"]:
            break
        await asyncio.sleep(0.01)
    await link.close()
    assert https_upstream.lines == [] and link.stats["tls refused"] == 1


async def test_connect_goes_to_the_servers_https_listener_only(
    lab: tuple[LabTls, LinkTls], https_upstream: Upstream
) -> None:
    plain = await make_link(https_upstream)  # no lab key: no tunnels at all
    tls = await make_link(https_upstream, tls=lab[1])
    for link, target in (
        (plain, f"127.0.0.1:{https_upstream.port}"),
        (tls, "127.0.0.1:1"),
        (tls, "example.org:443"),
        (tls, "nonsense"),
    ):
        r, w = await asyncio.open_connection("127.0.0.1", link.port)
        w.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        await w.drain()
        assert await asyncio.wait_for(r.read(), 10) == b""  # closed, no 200
        w.close()
    await plain.close()
    await tls.close()
    assert https_upstream.lines == []
    assert plain.stats["refused"] == 1 and tls.stats["refused"] == 3
