"""Proxy settings in the database (issue 31, ADR 0040): per station and per site through
``PATCH /api/v1/stations|sites/{id}`` (station over site over the server's options), bad input
a 422 naming the field, and stored upstream credentials: write-only, sealed at rest under a
0600 key file, audited without the secret."""

from __future__ import annotations

import base64
import datetime as dt
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chargeward import audit
from chargeward.errors import ConfigError
from chargeward.server.fleet import station_registry
from chargeward.server.proxy import FirmwarePolicy, ProxyConfig, settings
from chargeward.server.proxy.records import DbProxyHooks
from chargeward.server.proxy.upstream import CredentialMode
from chargeward.server.store.proxy_tables import StationUpstream
from tests.support.api_app import Api, running_api

pytestmark = pytest.mark.timeout(20)
NOW = dt.datetime(2026, 12, 8, 9, 0, tzinfo=dt.UTC)
SECRET = "Upstream-Secret-4711"
SITE_URL = "wss://site.example/ocpp/{stationId}"
OWN_URL = "ws://own.example/{stationId}"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path, NOW) as api:
        async with api.db.session() as s:
            for sid in ("CP-1", "CP-2"):
                await station_registry.register_station(
                    s, sid, actor="test", password="Station-Password-0123456789", now=NOW
                )
        site = {"id": "lon-1", "name": "London", "timezone": "Europe/London"}
        await api.call("POST", "/api/v1/sites", 201, json=site)
        for sid in ("CP-1", "CP-2"):
            await api.call("PATCH", f"/api/v1/stations/{sid}", json={"site_id": "lon-1"})
        yield api


async def test_station_overrides_site_overrides_the_server(api: Api) -> None:
    hooks = DbProxyHooks(api.db, lambda: NOW)
    server = ProxyConfig(url_template="ws://server.example/{stationId}")
    assert (
        server.url_for("CP-1", await hooks.station_settings("CP-1")) == "ws://server.example/CP-1"
    )
    site = {"upstream_url": SITE_URL, "upstream_firmware_policy": "refuse"}
    await api.call("PATCH", "/api/v1/sites/lon-1", json=site)
    await api.call(
        "PATCH",
        "/api/v1/stations/CP-1",
        json={"upstream_url": OWN_URL, "upstream_firmware_policy": "relay"},
    )
    one, two = await hooks.station_settings("CP-1"), await hooks.station_settings("CP-2")
    assert server.url_for("CP-1", one) == "ws://own.example/CP-1"
    assert server.policy_for("CP-1", one) is FirmwarePolicy.relay
    assert server.url_for("CP-2", two) == "wss://site.example/ocpp/CP-2"
    assert server.policy_for("CP-2", two) is FirmwarePolicy.refuse
    # null: back to the next level's
    await api.call("PATCH", "/api/v1/stations/CP-1", json={"upstream_firmware_policy": None})
    assert server.policy_for("CP-1", await hooks.station_settings("CP-1")) is FirmwarePolicy.refuse
    async with api.db.snapshot() as s:
        entries = await audit.entries(s, target="CP-1")
    changes = [
        {k: v for k, v in e.details.items() if k != "principal"}
        for e in entries
        if e.action == "station.registry_update"
    ]
    assert {
        "upstream_url": {"from": None, "to": OWN_URL},
        "upstream_firmware_policy": {"from": None, "to": "relay"},
    } in changes
    assert {"upstream_firmware_policy": {"from": "relay", "to": None}} in changes


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/api/v1/stations/CP-1", "upstream_firmware_policy", "sometimes"),
        ("/api/v1/stations/CP-1", "upstream_url", "wss://csms.example/ocpp/fixed"),
        ("/api/v1/stations/CP-1", "upstream_url", "https://csms.example/{stationId}"),
        ("/api/v1/sites/lon-1", "upstream_firmware_policy", "RELAY"),
        ("/api/v1/sites/lon-1", "upstream_url", "ftp://x/{stationId}"),
    ],
)
async def test_bad_proxy_settings_are_a_422_naming_the_field(
    api: Api, path: str, field: str, value: str
) -> None:
    r = await api.client.patch(path, json={field: value})
    assert r.status_code == 422, r.text
    assert field in r.text
    assert await settings_row("CP-1", api) is None


async def settings_row(sid: str, api: Api) -> StationUpstream | None:
    async with api.db.snapshot() as s:
        row = await s.get(StationUpstream, sid)
        if row is not None:
            s.expunge(row)
        return row


async def test_stored_credentials_are_sealed_write_only_and_audited_without_the_secret(
    api: Api,
) -> None:
    data_dir = api.state.data_dir
    body = {"username": "CP-1", "password": SECRET}
    assert (
        await api.call("PUT", "/api/v1/stations/CP-1/upstream-credentials", 204, json=body) is None
    )
    key_file = data_dir / settings.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    row = await settings_row("CP-1", api)
    assert row is not None and row.sealed_password is not None
    assert SECRET.encode() not in row.sealed_password
    for path in ("/api/v1/stations/CP-1", "/api/v1/stations"):
        assert SECRET not in (await api.client.get(path)).text
    async with api.db.snapshot() as s:
        entries = await audit.entries(s, target="CP-1")
    stored = [e for e in entries if e.action == settings.CREDENTIALS_ACTION]
    assert [e.details["username"] for e in stored] == ["CP-1"]
    assert stored[0].details["stored"] is True
    assert all(SECRET not in str(e.details) for e in entries)
    # the relay's Authorization header, stored mode
    hooks = DbProxyHooks(api.db, lambda: NOW, data_dir)
    cfg = ProxyConfig(url_template="ws://u/{stationId}", credential_mode=CredentialMode.stored)
    expected = "Basic " + base64.b64encode(f"CP-1:{SECRET}".encode()).decode()
    assert cfg.authorization("CP-1", None, await hooks.station_settings("CP-1")) == expected
    # bound to the station: the blob copied to another station does not open
    async with api.db.session() as s:
        s.add(
            StationUpstream(
                station_id="CP-2",
                username="CP-1",
                sealed_password=row.sealed_password,
                updated_at=NOW,
            )
        )
    assert (await hooks.station_settings("CP-2")).credentials is None
    # forgotten
    forget = {"username": "CP-1", "password": None}
    await api.call("PUT", "/api/v1/stations/CP-1/upstream-credentials", 204, json=forget)
    assert (await hooks.station_settings("CP-1")).credentials is None


async def test_credentials_for_an_unknown_station_are_a_404(api: Api) -> None:
    body = {"username": "X", "password": SECRET}
    await api.call("PUT", "/api/v1/stations/NOPE/upstream-credentials", 404, json=body)


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    key = settings.load_or_create_key(tmp_path)
    assert settings.load_or_create_key(tmp_path) == key
    os.chmod(tmp_path / settings.KEY_FILE, 0o644)
    with pytest.raises(ConfigError, match="owner only"):
        settings.load_or_create_key(tmp_path)
