"""The fleet CLI against the real API served over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from chargeward.cli.main import app
from chargeward.server.auth import tokens
from chargeward.server.http.api import create_app
from chargeward.server.state import ServerState
from chargeward.server.stations import station_reports
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.db import Database
from tests.support.api_app import MovableClock


@contextmanager
def http_api(data_dir: Path) -> Iterator[str]:
    """The REST API on 127.0.0.1 in a thread; yields the token, sets the server URL env."""
    box: dict[str, Any] = {}
    ready = threading.Event()

    async def main() -> None:
        db = await Database.open(data_dir=data_dir)
        now = dt.datetime.now(dt.UTC)
        async with db.session() as s:
            box["token"] = await tokens.create_token(s, "alice", actor="test", now=now)
        state = ServerState(
            data_dir=data_dir,
            db=db,
            blobs=BlobStore(data_dir / "blobs"),
            url_key=b"k" * 32,
            public_url="http://127.0.0.1",
            clock=MovableClock(now),
        )
        config = uvicorn.Config(
            create_app(state), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
        server = box["server"] = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        box["url"] = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        ready.set()
        try:
            await task
        finally:
            await db.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(20), "API did not start"
    try:
        yield box["url"], box["token"]  # type: ignore[misc]
    finally:
        box["server"].should_exit = True
        thread.join(20)


def record(
    data_dir: Path, station: str, *, version: str | None = None, event: str | None = None
) -> None:
    async def go() -> None:
        db = await Database.open(data_dir=data_dir)
        now = dt.datetime.now(dt.UTC)
        try:
            async with db.session() as s:
                if version:
                    await station_reports.record_boot(
                        s, station, reason="PowerUp", firmware_version=version, model="AC22",
                        vendor="ACME", serial_number=None, now=now,
                    )  # fmt: skip
                if event:
                    await station_reports.record_security_event(
                        s, station, type=event, timestamp=now, tech_info="lid", now=now
                    )
        finally:
            await db.close()

    asyncio.run(go())


def test_fleet_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "srv"
    monkeypatch.setenv("COLUMNS", "250")
    runner = CliRunner()

    def cw(*args: str, code: int = 0) -> str:
        r = runner.invoke(app, [*args, "--data-dir", str(data)])
        assert r.exit_code == code, (args, r.output, r.exception)
        return r.output + (str(r.exception) if r.exception else "")

    with http_api(data) as (url, token):
        monkeypatch.setenv("CHARGEWARD_SERVER", url)
        monkeypatch.setenv("CHARGEWARD_API_TOKEN", token)
        assert "every station is supported for at least 180 more days" in cw("fleet", "support")

        window = ("--window", "mon-fri 01:00-05:00")
        cw("site", "add", "lon-1", "--name", "London", "--timezone", "Europe/London", *window)
        bad = cw("site", "add", "x", "--name", "X", "--timezone", "Mars/Base", code=1)
        assert "timezone" in bad and "IANA" in bad
        assert "mon,tue,wed,thu,fri 01:00-05:00" in cw("site", "list")
        out = cw("site", "set-windows", "lon-1", "--window", "sat-sun 22:00-04:00")
        assert "sat,sun 22:00-04:00 (Europe/London)" in out
        out = cw("site", "set-link-budget", "lon-1", "--download-window", "mon-sun 23:00-05:00",
                 "--bandwidth-limit", "32000")  # fmt: skip
        assert "downloads mon,tue,wed,thu,fri,sat,sun 23:00-05:00, 32,000 bytes/s" in out
        shown = cw("site", "show", "lon-1")
        assert "downloads only: mon," in shown and "download cap: 32,000 bytes/s" in shown
        bad = cw("site", "set-link-budget", "lon-1", "--bandwidth-limit", "10", code=2)
        assert "1024" in bad
        out = cw("site", "set-link-budget", "lon-1", "--clear")
        assert "downloads any time, no cap" in out

        cw("model", "add", "AC22", "--vendor", "ACME", "--feature-years", "2")
        out = cw("model", "set-support", "AC22", "--security-end", "2030-01-31")
        assert "2 years from manufacture" in out and "2030-01-31" in out

        for sid in ("CP-1", "CP-2"):
            cw("station", "add", sid, "--model", "AC22")
        cw(
            "station", "set", "CP-1", "--site", "lon-1", "--tag", "pilot",
            "--manufactured", "2020-01-15", "--expected", "main=1.0",
        )  # fmt: skip
        listed = cw("station", "list", "--site", "lon-1")
        assert "CP-1" in listed and "pilot" in listed and "CP-2" not in listed
        assert "no stations match" in cw("station", "list", "--tag", "other")

        support = cw("fleet", "support", "--within", "30")
        assert "CP-1" in support and "ended: 2022-01-15" in support
        assert "CP-2" in support and "unknown (no manufacture date)" in support

        record(data, "CP-1", version="1.1", event="TamperDetectionActivated")
        alerts = cw("alerts", "list")
        assert "firmware_drift" in alerts and "security_event" in alerts
        assert "CP-1 runs main 1.1, expected 1.0" in alerts
        shown = cw("station", "show", "CP-1")
        assert "expected firmware: main=1.0" in shown and "reported firmware: main=1.1" in shown
        assert "support: feature ended (2022-01-15)" in shown and "[critical, open]" in shown
        assert "CP-1" in cw("events", "list", "--critical", "--station", "CP-1")
        assert "no security events match" in cw("events", "list", "--type", "MemoryExhaustion")
        assert "acknowledged by alice" in cw("alerts", "ack", "1", "--note", "seen")
        assert "alert 1 is acknowledged, not open" in cw("alerts", "ack", "1", code=1)
