"""The HTTP listener over TLS (ADR 0025): the OCPP certificate serves both listeners by
default, and a replaced certificate is loaded without a restart (SIGHUP or a changed file),
for new connections only; a bad pair keeps the old one."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from chargeward.local import start_server
from tests.support.fleet import TEST_PASSPHRASE, Pki
from tests.support.tls import TlsPki

pytestmark = pytest.mark.timeout(90)


def _der(pem: Path) -> bytes:
    return x509.load_pem_x509_certificate(pem.read_bytes()).public_bytes(Encoding.DER)


def _connect(url: str, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    u = urlsplit(url)
    raw = socket.create_connection((u.hostname, u.port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname=u.hostname)


def _peer(url: str, ctx: ssl.SSLContext) -> bytes:
    with _connect(url, ctx) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def _get(tls: ssl.SSLSocket) -> bytes:
    """One request on ``tls`` and its whole response (head and Content-Length body)."""
    tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += tls.recv(65536)
    head, body = got.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += tls.recv(65536)
    return head


def _until(pred: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _live_copy(tls_pki: TlsPki, d: Path) -> tuple[Path, Path]:
    d.mkdir()
    cert, key = d / "tls.pem", d / "tls.key"
    shutil.copy(tls_pki.server_cert, cert)
    shutil.copy(tls_pki.server_key.removeprefix("file:"), key)
    return cert, key


def _replace(cert: Path, key: Path, new: TlsPki) -> None:
    """Install the new pair as an operator would: each file renamed into place."""
    for src, dst in ((new.server_key.removeprefix("file:"), key), (new.server_cert, cert)):
        tmp = dst.with_suffix(".new")
        shutil.copy(src, tmp)
        os.replace(tmp, dst)


@pytest.mark.parametrize("trigger", ["sighup", "file-change"])
def test_replaced_certificate_is_served_to_new_connections_without_restart(
    tmp_path: Path, pki: Pki, tls_pki: TlsPki, trigger: str
) -> None:
    cert, key = _live_copy(tls_pki, tmp_path / "live")
    interval = "0" if trigger == "sighup" else "0.1"
    proc, info = start_server(
        tmp_path / "srv",
        pki.root_pem,
        tmp_path / "srv.log",
        env={"CHARGEWARD_KEY_PASSPHRASE": TEST_PASSPHRASE},
        extra_args=(
            *("--tls-cert", str(cert), "--tls-key", f"file:{key}"),
            *("--tls-reload-interval", interval),
        ),
    )
    try:
        api, ocpp = str(info["api_url"]), str(info["ocpp_url"])
        assert api.startswith("https://") and ocpp.startswith("wss://")
        assert str(info["download_base_url"]).startswith("https://")
        ctx = tls_pki.client_context()
        old = _der(tls_pki.server_cert)
        assert _peer(api, ctx) == old and _peer(ocpp, ctx) == old
        kept = _connect(api, ctx)  # open across the reload
        assert b" 200 " in _get(kept)

        new = tls_pki.with_server_certificate(tmp_path / "new", "127.0.0.1", days=40)
        _replace(cert, key, new)
        if trigger == "sighup":
            proc.popen.send_signal(signal.SIGHUP)
        _until(lambda: _peer(api, ctx) == _der(new.server_cert), "the new HTTP certificate")
        _until(lambda: _peer(ocpp, ctx) == _der(new.server_cert), "the new OCPP certificate")
        assert kept.getpeercert(binary_form=True) == old
        assert b" 200 " in _get(kept)  # the open connection keeps working
        kept.close()

        # A bad pair (the new certificate with the old key) keeps the current one.
        shutil.copy(tls_pki.server_key.removeprefix("file:"), key)
        if trigger == "sighup":
            proc.popen.send_signal(signal.SIGHUP)
        _until(lambda: "not reloaded, keeping the old one" in proc.output(), "the error")
        assert _peer(api, ctx) == _der(new.server_cert)
        assert _peer(ocpp, ctx) == _der(new.server_cert)
    finally:
        proc.stop()
