"""The HTTP listener as a perimeter (issue 26, points 1 and 10), attacked from the network.

Each test starts the real server (``chargeward server`` as its own process, loopback only) and
sends what an attacker would: plain HTTP on a public bind, a TLS 1.0/1.1 handshake, a login
without ``Secure`` cookies or HSTS, 25 failed logins behind rotating ``X-Forwarded-For``
headers, and a look at ``/api/docs`` for third-party script.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from chargeward.local import Process, start_server
from tests.support.fleet import TEST_PASSPHRASE, Pki
from tests.support.tls import TlsPki

pytestmark = pytest.mark.timeout(90)

ENV = {"CHARGEWARD_KEY_PASSPHRASE": TEST_PASSPHRASE}
HSTS = "max-age=31536000"


@contextlib.contextmanager
def server(
    tmp: Path, pki: Pki, extra: Sequence[str] = (), name: str = "srv"
) -> Iterator[tuple[Process, dict[str, Any]]]:
    proc, info = start_server(
        tmp / name, pki.root_pem, tmp / f"{name}.log", env=ENV, extra_args=tuple(extra)
    )
    try:
        yield proc, info
    finally:
        proc.stop()


def https_args(tls: TlsPki) -> list[str]:
    return ["--http-tls-cert", str(tls.server_cert), "--http-tls-key", tls.server_key]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chargeward", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **ENV},
    )


def audit_addresses(data_dir: Path) -> list[str]:
    """The ``address`` of every login audit entry (the database, read after the server)."""
    import sqlite3

    rows = sqlite3.connect(data_dir / "chargeward.db").execute(
        "SELECT action, details FROM audit_entries WHERE action LIKE 'auth.login%'"
    )
    out = []
    for _, details in rows:
        d = json.loads(details) if isinstance(details, str) else details
        out.append(str(d.get("address")))
    return out


# -- plain HTTP beyond loopback ------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "csms.example"])  # noqa: S104
def test_plain_http_on_a_non_loopback_bind_is_refused(tmp_path: Path, pki: Pki, host: str) -> None:
    """``--host 0.0.0.0`` without an HTTP certificate: refused before anything listens."""
    r = cli(
        "server",
        *("--data-dir", str(tmp_path / "d")),
        *("--host", host),
        *("--ocpp-port", "0", "--http-port", "0"),
        *("--manufacturer-root", str(pki.root_pem)),
        "--allow-insecure-profile-1",
    )
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "without TLS" in out and "--http-tls-cert" in out and "--allow-insecure-http" in out
    assert not (tmp_path / "d" / "server.json").exists()


def test_lab_flag_allows_plain_http_beyond_loopback_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from chargeward.server.http.http_security import check_http_binding

    check_http_binding("127.0.0.1", tls=False, allow_insecure_http=False)  # a proxy on the host
    check_http_binding("::1", tls=False, allow_insecure_http=False)
    check_http_binding("localhost", tls=False, allow_insecure_http=False)
    check_http_binding("0.0.0.0", tls=True, allow_insecure_http=False)  # noqa: S104
    with caplog.at_level("WARNING"):
        check_http_binding("0.0.0.0", tls=False, allow_insecure_http=True)  # noqa: S104
    assert "WITHOUT TLS" in caplog.text


def test_http_public_url_with_tls_is_refused(tmp_path: Path, pki: Pki, tls_pki: TlsPki) -> None:
    """Download and log-upload links must not fall back to clear text behind a TLS listener."""
    r = cli(
        "server",
        *("--data-dir", str(tmp_path / "d")),
        *("--ocpp-port", "0", "--http-port", "0"),
        *("--manufacturer-root", str(pki.root_pem)),
        "--allow-insecure-profile-1",
        *https_args(tls_pki),
        *("--public-url", "http://csms.example:8080"),
    )
    assert r.returncode != 0
    assert "--public-url" in r.stdout + r.stderr and "https://" in r.stdout + r.stderr


# -- TLS on the HTTP listener -----------------------------------------------------------------


def _handshake(port: int, ctx: ssl.SSLContext) -> str:
    import socket

    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return str(tls.version())


def test_http_listener_refuses_tls_1_0_and_1_1(tmp_path: Path, pki: Pki, tls_pki: TlsPki) -> None:
    with server(tmp_path, pki, https_args(tls_pki)) as (_, info):
        assert str(info["api_url"]).startswith("https://127.0.0.1:")
        assert str(info["download_base_url"]).startswith("https://")
        port = int(str(info["api_url"]).rsplit(":", 1)[1])
        assert _handshake(port, tls_pki.client_context()) in ("TLSv1.2", "TLSv1.3")
        tls12 = tls_pki.client_context(maximum=ssl.TLSVersion.TLSv1_2)
        assert _handshake(port, tls12) == "TLSv1.2"
        for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            old = tls_pki.client_context(minimum=version, maximum=version)
            with pytest.raises(ssl.SSLError):
                _handshake(port, old)
        # and the API answers over TLS, verified against the CSMS root
        r = httpx.get(f"{info['api_url']}/healthz", verify=tls_pki.client_context())
        assert r.status_code == 200


def test_cookie_is_secure_and_hsts_is_sent_over_https(
    tmp_path: Path, pki: Pki, tls_pki: TlsPki
) -> None:
    with (
        server(tmp_path, pki, https_args(tls_pki)) as (_, info),
        httpx.Client(base_url=str(info["api_url"]), verify=tls_pki.client_context()) as c,
    ):
        login = c.get("/login")
        assert login.status_code == 200
        cookie = login.headers["set-cookie"]
        assert "; secure" in cookie.lower() and "httponly" in cookie.lower()
        for path in ("/login", "/healthz", "/api/openapi.json", "/no-such-page"):
            r = c.get(path)
            assert r.headers.get("strict-transport-security") == HSTS, path


def test_untrusted_forwarded_headers_are_ignored(tmp_path: Path, pki: Pki) -> None:
    """25 failed logins from 127.0.0.1, each with another X-Forwarded-For: the address lock
    (20 failures) still triggers on 127.0.0.1, and the audit log records 127.0.0.1."""
    with server(tmp_path, pki) as (_, info), httpx.Client(base_url=str(info["api_url"])) as c:
        statuses = []
        for i in range(25):
            r = c.post(
                "/api/v1/auth/login",
                json={"username": f"nobody{i}", "password": "wrong-password-123456"},
                headers={
                    "X-Forwarded-For": f"198.51.100.{i + 1}",
                    "X-Forwarded-Proto": "https",
                },
            )
            statuses.append(r.status_code)
        assert statuses[:20] == [401] * 20
        assert set(statuses[20:]) == {429}, statuses
        page = c.get("/login", headers={"X-Forwarded-Proto": "https"})
        assert "secure" not in page.headers["set-cookie"].lower()
        assert "strict-transport-security" not in page.headers
    addresses = audit_addresses(tmp_path / "srv")
    assert addresses and set(addresses) == {"127.0.0.1"}, addresses


def test_trusted_proxy_forwarded_headers_are_used(tmp_path: Path, pki: Pki) -> None:
    """With ``--trusted-proxy 127.0.0.1`` the proxy's X-Forwarded-For names the client (the
    rightmost address the proxy did not add itself) and X-Forwarded-Proto the scheme."""
    with (
        server(tmp_path, pki, ["--trusted-proxy", "127.0.0.1"]) as (_, info),
        httpx.Client(base_url=str(info["api_url"])) as c,
    ):
        r = c.post(
            "/api/v1/auth/login",
            json={"username": "nobody", "password": "wrong-password-123456"},
            headers={"X-Forwarded-For": "10.9.9.9, 203.0.113.7"},  # forged, then real
        )
        assert r.status_code == 401
        page = c.get("/login", headers={"X-Forwarded-Proto": "https"})
        assert "secure" in page.headers["set-cookie"].lower()
        assert page.headers["strict-transport-security"] == HSTS
    assert audit_addresses(tmp_path / "srv") == ["203.0.113.7"]


# -- third-party script ------------------------------------------------------------------------


def test_api_docs_carry_no_third_party_script(tmp_path: Path, pki: Pki) -> None:
    with server(tmp_path, pki) as (_, info), httpx.Client(base_url=str(info["api_url"])) as c:
        docs = c.get("/api/docs")
        for origin in ("cdn.jsdelivr.net", "unpkg.com", "cdnjs", "https://", "http://"):
            assert origin not in docs.text, origin
        assert "default-src 'self'" in docs.headers.get("content-security-policy", "")
        spec = c.get("/api/openapi.json")
        assert spec.status_code == 200 and spec.json()["info"]["title"] == "Chargeward"
        assert "default-src 'self'" in spec.headers.get("content-security-policy", "")


# -- the charger's https downloads ------------------------------------------------------------


async def test_agent_https_download_trusts_its_csms_roots_and_nothing_else(
    tmp_path: Path, tls_pki: TlsPki
) -> None:
    """The agent fetches an https image from a server whose certificate chains to its CSMS
    root (``secure/csms-roots.pem``); without that root, or with another CSMS's root, the
    handshake is refused and nothing is written."""
    import asyncio

    from chargeward.agent import download
    from chargeward.agent.location import LAB_LOOPBACK
    from chargeward.errors import TransportError

    body = b"firmware image bytes" * 100

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await reader.readuntil(b"\r\n\r\n")
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()

    srv = await asyncio.start_server(
        answer, "127.0.0.1", 0, ssl=tls_pki.server_context(), ssl_handshake_timeout=5
    )
    url = f"https://127.0.0.1:{srv.sockets[0].getsockname()[1]}/image.bin"
    other = TlsPki.create(tmp_path / "other-csms")
    try:
        for name, roots in (("system CAs only", None), ("another CSMS", other.csms_ca_pem)):
            part = tmp_path / f"{name}.part"
            with pytest.raises(TransportError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
                await download.fetch(
                    url,
                    part,
                    max_bytes=1 << 20,
                    retries=0,
                    retry_interval=0,
                    policy=LAB_LOOPBACK,
                    csms_roots=roots.read_bytes() if roots else None,
                )
            assert not part.exists() or part.stat().st_size == 0
        part = tmp_path / "trusted.part"
        await download.fetch(
            url,
            part,
            max_bytes=1 << 20,
            retries=0,
            retry_interval=0,
            policy=LAB_LOOPBACK,
            csms_roots=tls_pki.csms_ca_pem.read_bytes(),
        )
        assert part.read_bytes() == body
    finally:
        srv.close()
        await srv.wait_closed()
