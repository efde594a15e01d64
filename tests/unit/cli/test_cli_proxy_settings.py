"""Proxy mode's settings from the CLI (ADR 0040): ``station set --upstream-url/
--upstream-firmware-policy``, ``site set-upstream`` and ``station set-upstream-credentials``,
against the real API over HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargeward import audit
from chargeward.cli.main import app
from chargeward.server.proxy import settings
from chargeward.server.store.db import Database
from tests.unit.cli.test_cli_fleet import http_api

pytestmark = pytest.mark.timeout(20)


def test_proxy_settings_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "srv"
    runner = CliRunner()

    def cw(*args: str, code: int = 0) -> str:
        r = runner.invoke(app, [*args, "--data-dir", str(data)])
        assert r.exit_code == code, (args, r.output, r.exception)
        return r.output + (str(r.exception) if r.exception else "")

    with http_api(data) as (url, token):
        monkeypatch.setenv("CHARGEWARD_SERVER", url)
        monkeypatch.setenv("CHARGEWARD_API_TOKEN", token)
        cw("site", "add", "lon-1", "--name", "London", "--timezone", "Europe/London")
        cw("station", "add", "CP-1")
        cw("station", "set", "CP-1", "--site", "lon-1", "--upstream-firmware-policy", "refuse")
        bad = cw("station", "set", "CP-1", "--upstream-url", "wss://csms/fixed", code=1)
        assert "upstream_url" in bad and "{stationId}" in bad
        out = cw("site", "set-upstream", "lon-1", "--url", "wss://csms.example/{stationId}")
        assert "upstream_url=wss://csms.example/{stationId}" in out
        cw("station", "set", "CP-1", "--upstream-firmware-policy", "default")
        monkeypatch.setenv("CHARGEWARD_UPSTREAM_PASSWORD", "Up-Secret-123")
        out = cw("station", "set-upstream-credentials", "CP-1")
        assert "stored" in out and "Up-Secret-123" not in out

    async def check() -> None:
        db = await Database.open(data_dir=data)
        try:
            async with db.snapshot() as s:
                resolved = await settings.resolve(s, "CP-1", settings.load_or_create_key(data))
                actions = [e.action for e in await audit.entries(s, target="CP-1")]
        finally:
            await db.close()
        assert resolved.url_template == "wss://csms.example/{stationId}"  # the site's
        assert resolved.firmware_policy is None  # back to the server's
        assert resolved.credentials == ("CP-1", "Up-Secret-123")
        assert settings.CREDENTIALS_ACTION in actions

    asyncio.run(check())
