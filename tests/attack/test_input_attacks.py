"""Oversized and compressed input: a gzip bomb uploaded as a release, a huge OCPP frame.

Bundles are uncompressed tars, so a compressed one is refused from its first bytes; the bomb
here inflates to 1 GiB from about 1 MiB and is refused by the real upload route without
zlib ever being asked to inflate it.  OCPP frames are capped (``ServerLimits.frame_bytes``): a
larger one closes that connection with 1009 and the listener keeps serving, over real TLS.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chargeward.limits import DEFAULT_SERVER_LIMITS
from chargeward.server.state import TRUST_FILE
from tests.support.api_app import running_api
from tests.support.fleet import Pki, basic
from tests.support.tls import TlsPki, running_csms, try_connect

PASSWORD = "frame-test-password-0123"


def gzip_bomb(inflated: int, chunk: int = 16 << 20) -> bytes:
    """A multi-member gzip file that inflates to ``inflated`` bytes of zeros."""
    member = gzip.compress(b"\0" * chunk, compresslevel=9)
    return member * (inflated // chunk)


async def test_gzip_bomb_bundle_refused_without_inflating(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = gzip_bomb(1 << 30)
    assert len(bomb) < 2 << 20

    def no_inflating(*args: Any, **kw: Any) -> Any:
        raise AssertionError("the bundle was inflated")

    monkeypatch.setattr(zlib, "decompressobj", no_inflating)
    monkeypatch.setattr(zlib, "decompress", no_inflating)
    monkeypatch.setattr(gzip, "GzipFile", no_inflating)
    (tmp_path / "tmp").mkdir()  # the server's upload spool and trust, made by its runtime
    (tmp_path / TRUST_FILE).parent.mkdir()
    (tmp_path / TRUST_FILE).write_bytes(pki.root_pem.read_bytes())
    async with running_api(tmp_path, dt.datetime.now(dt.UTC)) as api:
        r = await api.client.post("/api/v1/releases", content=bomb)
        assert r.status_code == 422, r.text
        assert "not an uncompressed tar" in r.json()["error"]["message"]
        assert await api.call("GET", "/api/v1/releases") == []


async def test_oversized_ocpp_frame_closes_only_that_connection(
    tmp_path: Path, tls_pki: TlsPki
) -> None:
    async with running_csms(tmp_path / "srv", tls_pki) as csms:
        await csms.add_station("CP-BIG", PASSWORD, 2)
        url = csms.url + "CP-BIG"
        auth = {"Authorization": basic("CP-BIG", PASSWORD)}
        ctx = tls_pki.client_context()
        async with connect(
            url, ssl=ctx, subprotocols=["ocpp2.0.1"], additional_headers=auth, open_timeout=5
        ) as ws:  # type: ignore[list-item]
            note = "x" * (DEFAULT_SERVER_LIMITS.frame_bytes + 1)
            await ws.send(json.dumps([2, "big", "Heartbeat", {"note": note}]))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # too big
        assert await try_connect(url, ssl_context=ctx, auth=auth["Authorization"]) == 101
