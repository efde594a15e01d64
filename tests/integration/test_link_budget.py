"""A site's link budget at the real server's download route and in what a real charger is
sent: no bytes outside the download windows (503 with Retry-After; UpdateFirmware's
retrieveDateTime is the window's opening), the site's downloads together held to its
bandwidth cap, and every byte sent counted for the station."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from chargeward.agent.agent import Agent
from chargeward.server.common import urls
from tests.support.campaigns import agents, api, until, upload_release
from tests.support.fleet import Pki, Server, assert_no_crash, running_server

STATION = "CP-0001"
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
RATE = 200_000  # bytes/s for the whole site


def _closed_now() -> tuple[list[dict[str, Any]], dt.datetime]:
    """A daily UTC window opening in two hours, and that opening."""
    now = dt.datetime.now(dt.UTC)
    opens = (now + dt.timedelta(hours=2)).replace(second=0, microsecond=0)
    closes = opens + dt.timedelta(hours=1)
    window = {"days": EVERY_DAY, "start": opens.strftime("%H:%M"), "end": closes.strftime("%H:%M")}
    return [window], opens


def _link(srv: Server, sha256: str, station: str, request: int = 0) -> str:
    key = (srv.data_dir / urls.KEY_FILE).read_bytes()
    expires = int(time.time()) + 3600
    return srv.api_url + urls.signed_path(key, sha256, station, expires, request)


async def test_outside_the_download_windows_nothing_is_sent_and_the_charger_waits(
    tmp_path: Path, pki: Pki
) -> None:
    factory = pki.bundle(tmp_path / "acme-1.0.0.cwb", "1.0.0", 1)
    update = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2)
    windows, opens = _closed_now()
    with running_server(tmp_path, pki) as srv:
        release = await upload_release(srv, update, "1.1.0")
        [image] = release["images"]
        async with agents(srv, tmp_path, pki, factory, [STATION]) as running:
            await api(srv, "POST", "/api/v1/sites", json={
                "id": "depot", "name": "Depot", "timezone": "UTC", "download_windows": windows,
            })  # fmt: skip
            await api(srv, "PATCH", f"/api/v1/stations/{STATION}", json={"site_id": "depot"})
            # The route refuses before a byte, saying when to come back.
            async with httpx.AsyncClient() as http:
                r = await http.get(_link(srv, image["sha256"], STATION))
            assert r.status_code == 503, r.text
            wait = int(r.headers["retry-after"])
            assert 0 < wait - (opens - dt.datetime.now(dt.UTC)).total_seconds() < 90
            assert "download windows" in r.json()["error"]["message"]
            # An update is accepted for the window: the charger holds it, downloading nothing.
            sent = await api(srv, "POST", f"/api/v1/stations/{STATION}/firmware-updates",
                             json={"release_id": release["id"]})  # fmt: skip
            assert sent["station_response"] == "Accepted"
            agent = running[STATION]
            assert agent.updates.task is not None
            await until(_scheduled(srv, sent["request_id"]), "DownloadScheduled", 20)
            waits = await until(_waiting_until(agent), "the charger to wait", 20)
            assert waits == opens  # the window's opening: nothing is fetched before it
            assert agent.download_stats == []
            assert not agent.updates.task.done()
        detail = await api(srv, "GET", f"/api/v1/stations/{STATION}")
    assert detail["firmware_version"] == "1.0.0"
    assert detail["downloads"]["bytes_sent"] == 0
    statuses = [e["status"] for e in detail["firmware_statuses"]]
    assert statuses == ["DownloadScheduled"], statuses
    assert_no_crash(srv.proc.output())


def _waiting_until(agent: Agent) -> Callable[[], Awaitable[dt.datetime | None]]:
    """When the charger's update job sleeps until (its retrieveDateTime), once it does."""

    async def waiting_until() -> dt.datetime | None:
        return agent.updates.waiting_until

    return waiting_until


def _scheduled(srv: Server, request_id: int) -> Callable[[], Awaitable[bool]]:
    async def scheduled() -> bool:
        view = await api(srv, "GET", f"/api/v1/stations/{STATION}")
        return any(
            e["status"] == "DownloadScheduled" and e["request_id"] == request_id
            for e in view["firmware_statuses"]
        )

    return scheduled


@pytest.mark.slow  # 33 s beside the suite's other tests on 2 cores
async def test_a_sites_downloads_share_its_bandwidth_cap_and_every_byte_is_counted(
    tmp_path: Path, pki: Pki
) -> None:
    payload = os.urandom(300_000)  # incompressible, so the bytes on the wire are the file's
    update = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2, payload=payload)
    with running_server(tmp_path, pki) as srv:
        release = await upload_release(srv, update, "1.1.0")
        [image] = release["images"]
        await api(srv, "POST", "/api/v1/sites", json={
            "id": "depot", "name": "Depot", "timezone": "UTC", "bandwidth_limit": RATE,
        })  # fmt: skip
        for sid in ("CP-A", "CP-B"):
            await asyncio.to_thread(srv.add_station, sid)
            await api(srv, "PATCH", f"/api/v1/stations/{sid}", json={"site_id": "depot"})
        async with httpx.AsyncClient(timeout=60) as http:
            start = time.monotonic()
            got = await asyncio.gather(
                *(http.get(_link(srv, image["sha256"], sid, 5)) for sid in ("CP-A", "CP-B"))
            )
            elapsed = time.monotonic() - start
            # A resumed download: the second half only.
            half = image["length"] // 2
            rest = await http.get(
                _link(srv, image["sha256"], "CP-A", 5), headers={"Range": f"bytes={half}-"}
            )
        assert [r.status_code for r in got] == [200, 200] and rest.status_code == 206
        assert all(len(r.content) == image["length"] for r in got)
        # Both stations' bytes went through the site's one bucket: never faster than the cap
        # (less its first burst).
        assert elapsed >= (2 * image["length"] - 64_000) / RATE, elapsed
        await until(lambda: _counted(srv, "CP-A", image["length"] * 2 - half), "the count", 10)
        b = await api(srv, "GET", "/api/v1/stations/CP-B")
        assert b["downloads"] == {"bytes_sent": image["length"], "requests": 1, "campaigns": {}}
    assert_no_crash(srv.proc.output())


async def _counted(srv: Server, station: str, expected: int) -> bool:
    view = await api(srv, "GET", f"/api/v1/stations/{station}")
    return bool(view["downloads"]["bytes_sent"] == expected)
