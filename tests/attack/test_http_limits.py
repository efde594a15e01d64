"""Unbounded input on the HTTP listener (issue 26, point 2), over real sockets on loopback.

The API is served by uvicorn with the server's own protocol and limits
(:mod:`chargeward.server.http.limits`), with short timeouts here.  A 200 MB login body is refused
with 413 before the client has sent it (from its ``Content-Length``, or once a chunked body
passes the cap) and the connection is closed; a request head or body that stalls is closed
within its timeout, 150 at once too; and 5,000 random method tokens add no metric series.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import string
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chargeward.limits import DEFAULT_SERVER_LIMITS as LIMITS
from chargeward.server.http import limits
from chargeward.server.http.limits import BodyLimit, HttpLimits
from chargeward.server.stations.tls import limit_tls_handshake
from tests.support.accounts_api import AccountsApi, accounts_api
from tests.support.served_api import served_api
from tests.support.tls import TlsPki

pytestmark = pytest.mark.timeout(60)

SHORT = HttpLimits(head_timeout=0.5, body_timeout=0.5, limit_concurrency=1000, keep_alive=5)
BOUND = 3.0  # seconds: timeout plus scheduling slack on a loaded machine
MB = 1 << 20


async def _nothing(_: AccountsApi) -> None:
    return None


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, int]]:
    with served_api(tmp_path / "srv", _nothing, limits=SHORT) as (url, _):
        yield "127.0.0.1", int(url.rsplit(":", 1)[1])


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    return sock


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (EOF or reset)."""
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            got += chunk
    return got


def head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Pusher(threading.Thread):
    """Sends ``total`` bytes (chunked framing if asked) until the server stops taking them."""

    def __init__(self, sock: socket.socket, total: int, *, chunked: bool) -> None:
        super().__init__(daemon=True)
        self.sock, self.total, self.chunked = sock, total, chunked
        self.sent = 0  # body bytes the server took

    def run(self) -> None:
        piece = b"x" * 65536
        frame = b"%x\r\n%s\r\n" % (len(piece), piece) if self.chunked else piece
        with contextlib.suppress(OSError):
            while self.sent < self.total:
                self.sock.sendall(frame)
                self.sent += len(piece)


def response(raw: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head_part, _, body = raw.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body) if body else {}


# -- body size -----------------------------------------------------------------------------------


def test_a_200_mb_login_body_is_refused_from_its_length_before_it_is_sent(
    api: tuple[str, int],
) -> None:
    total = 200 * MB
    with connect(api) as sock:
        sock.sendall(
            head(
                "POST",
                "/api/v1/auth/login",
                "Content-Type: application/json",
                f"Content-Length: {total}",
            )
        )
        pusher = Pusher(sock, total, chunked=False)
        pusher.start()
        status, headers, body = response(until_closed(sock))
        pusher.join(10)
    assert status == 413 and headers["connection"] == "close"
    assert body["error"]["code"] == "too_large"  # type: ignore[index]
    # the server closed the connection: the client pushed socket buffers' worth, not 200 MB
    assert pusher.sent < 32 * MB, pusher.sent


def test_a_chunked_login_body_is_cut_off_once_past_the_cap(api: tuple[str, int]) -> None:
    total = 200 * MB
    with connect(api) as sock:
        sock.sendall(
            head(
                "POST",
                "/api/v1/auth/login",
                "Content-Type: application/json",
                "Transfer-Encoding: chunked",
            )
        )
        pusher = Pusher(sock, total, chunked=True)
        pusher.start()
        status, headers, body = response(until_closed(sock))
        pusher.join(10)
    assert status == 413 and headers["connection"] == "close"
    assert body["error"]["code"] == "too_large"  # type: ignore[index]
    assert pusher.sent < 32 * MB, pusher.sent


def test_a_json_route_refuses_more_than_the_default_cap(api: tuple[str, int]) -> None:
    with connect(api) as sock:
        sock.sendall(
            head(
                "POST",
                "/api/v1/campaigns",
                "Content-Type: application/json",
                f"Content-Length: {LIMITS.json_body_bytes + 1}",
            )
        )
        status, _, body = response(until_closed(sock))
    assert status == 413 and body["error"]["code"] == "too_large"  # type: ignore[index]


def test_uploads_keep_their_own_caps() -> None:
    from chargeward.server.http import api_logs

    body_limit = BodyLimit(None)  # type: ignore[arg-type]
    assert body_limit.cap_for("POST", "/api/v1/releases") == LIMITS.bundle_bytes
    log_cap = LIMITS.log_upload_bytes + api_logs.MULTIPART_OVERHEAD
    assert body_limit.cap_for("PUT", "/api/v1/log-uploads/abc") == log_cap
    assert body_limit.cap_for("POST", "/api/v1/auth/login") == LIMITS.login_body_bytes
    assert body_limit.cap_for("POST", "/login") == LIMITS.login_body_bytes
    assert body_limit.cap_for("POST", "/api/v1/releases/x/approvals") == LIMITS.json_body_bytes
    assert body_limit.cap_for("GET", "/api/v1/releases") == LIMITS.json_body_bytes


# -- slow clients --------------------------------------------------------------------------------


def test_half_a_request_head_is_closed_within_the_head_timeout(api: tuple[str, int]) -> None:
    with connect(api) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        got = until_closed(sock)
        took = time.monotonic() - started
    assert got == b"" and took < SHORT.head_timeout + BOUND, took


def test_a_head_trickled_a_byte_at_a_time_is_closed_within_the_head_timeout(
    api: tuple[str, int],
) -> None:
    stop = threading.Event()
    with connect(api) as sock:

        def trickle() -> None:
            with contextlib.suppress(OSError):
                for byte in head("GET", "/healthz", *[f"X-Pad-{i}: y" for i in range(100)]):
                    if stop.wait(0.05):
                        return
                    sock.sendall(bytes([byte]))

        t = threading.Thread(target=trickle, daemon=True)
        started = time.monotonic()
        t.start()
        got = until_closed(sock)
        took = time.monotonic() - started
        stop.set()
        t.join(5)
    assert got == b"" and took < SHORT.head_timeout + BOUND, took


def test_a_stalled_body_is_closed_within_the_body_timeout(api: tuple[str, int]) -> None:
    with connect(api) as sock:
        started = time.monotonic()
        sock.sendall(
            head(
                "POST",
                "/api/v1/auth/login",
                "Content-Type: application/json",
                "Content-Length: 100",
            )
        )
        sock.sendall(b'{"username": ')
        got = until_closed(sock)
        took = time.monotonic() - started
    assert b" 200 " not in got.split(b"\r\n", 1)[0]
    assert took < SHORT.body_timeout + BOUND, took


def test_150_slow_header_connections_are_all_closed_and_a_good_client_is_served(
    api: tuple[str, int],
) -> None:
    socks = [connect(api) for _ in range(150)]
    try:
        started = time.monotonic()
        for sock in socks:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: ")
        r = httpx.get(f"http://{api[0]}:{api[1]}/healthz", timeout=10)
        assert r.status_code == 200
        for sock in socks:
            assert until_closed(sock) == b""
        took = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
    assert took < SHORT.head_timeout + 2 * BOUND, took


def test_a_stalled_tls_handshake_is_closed_within_the_head_timeout(
    tmp_path: Path, tls_pki: TlsPki
) -> None:
    """A client that opens TLS and never finishes its ClientHello: asyncio would hold it 60 s
    before the server's own head timeout could start (run_server sets this bound)."""
    before = asyncio.constants.SSL_HANDSHAKE_TIMEOUT
    limit_tls_handshake(SHORT.head_timeout)
    try:
        with served_api(tmp_path / "srv", _nothing, limits=SHORT, tls=tls_pki.server_context()) as (
            url,
            _,
        ):
            assert url.startswith("https://")
            with connect(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as sock:
                started = time.monotonic()
                sock.sendall(b"\x16\x03\x01\x02\x00")  # a ClientHello's record header, then nothing
                got = until_closed(sock)
                took = time.monotonic() - started
    finally:
        limit_tls_handshake(before)
    assert got == b"" and took < SHORT.head_timeout + BOUND, took


def test_the_server_applies_the_limits_to_uvicorn() -> None:
    options = limits.uvicorn_options(HttpLimits())
    assert issubclass(options["http"], limits.GuardedH11Protocol)
    assert options["http"].head_timeout == 10.0 and options["http"].body_timeout == 30.0
    assert options["limit_concurrency"] == 1000 and options["timeout_keep_alive"] == 5


# -- metrics labels ------------------------------------------------------------------------------


async def test_5000_random_methods_add_no_metric_series(tmp_path: Path) -> None:
    rng = random.Random(26)
    alphabet = string.ascii_uppercase + string.digits + "!#$%&'*+-.^_`|~"
    async with accounts_api(tmp_path / "srv") as env:
        c = await env.client()
        for _ in range(5000):
            method = "".join(rng.choices(alphabet, k=rng.randint(3, 12)))
            await c.request(method, "/api/v1/stations")
        r = await c.get("/metrics", headers=env.bearer(env.admin_token))
    assert r.status_code == 200
    series = [
        line for line in r.text.splitlines() if line.startswith("chargeward_http_requests_total{")
    ]
    methods = {line.split('method="', 1)[1].split('"', 1)[0] for line in series}
    assert methods <= {"other", "GET"}, methods
    assert len(series) <= 5, series
