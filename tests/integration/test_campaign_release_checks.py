"""Campaigns only on releases the chargers accept, from the CLI against a real server process.

- with a TUF repository, ``chargeward campaign create`` on an unpublished release fails with the
  server's reason (publish it first), as ``station update`` does;
- a fleet rollback with real agents: the stations took 1.1.0 (security version 2, their floor
  now), so rolling back to 1.0.0 (security version 1) is refused with the re-signing to do, and
  so is a new campaign on it; the previous build re-signed with security version 2 is chosen by
  ``campaign rollback`` without ``--release`` and the rollback campaign completes.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chargeward.cli.main import app
from tests.support.campaigns import (
    ALL_DAY,
    STATIONS,
    agents,
    api,
    campaign_doc,
    status_is,
    until,
)
from tests.support.fleet import Pki, running_server
from tests.support.trust import TufKeys


def _run(data: Path, *args: str, code: int = 0) -> str:
    r = CliRunner().invoke(app, [*args, "--data-dir", str(data)])
    assert (r.exit_code == 0) == (code == 0), (r.output, r.exception)
    # An error reaches the entry point as the exception it prints as one line.
    return r.output + (str(r.exception) if r.exception else "")


def _file(tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / f"{doc['name']}.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_campaign_create_refuses_an_unpublished_release(tmp_path: Path, pki: Pki) -> None:
    TufKeys.create(tmp_path / "tuf-keys").init_cli(tmp_path / "server-data")
    with running_server(tmp_path, pki) as srv:
        release = srv.upload(pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2))
        assert release["state"] == "pending"
        out = _run(srv.data_dir, "campaign", "create",
                   _file(tmp_path, campaign_doc("early", release["id"])), code=1)  # fmt: skip
        assert "409 conflict" in out and "release 1.1.0 is not published" in out
        assert "`chargeward release publish` first" in out
        assert srv.api("GET", "/api/v1/campaigns") == []


@pytest.mark.slow  # 23 s beside the suite's other tests on 2 cores
async def test_fleet_rollback_goes_to_a_re_signed_build_and_completes(
    tmp_path: Path, pki: Pki, factory_bundle: Path
) -> None:
    stations = STATIONS[:2]
    doc = {**campaign_doc("forward", ""), "soak": "1s"}
    with running_server(tmp_path, pki, extra_args=("--campaign-tick", "0.3")) as srv:
        data = srv.data_dir
        old = srv.upload(factory_bundle)["id"]  # 1.0.0, security version 1: what they run
        new = srv.upload(pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2))["id"]
        await api(srv, "POST", "/api/v1/sites", json={
            "id": "depot", "name": "Depot", "timezone": "Europe/London",
            "maintenance_windows": ALL_DAY,
        })  # fmt: skip
        async with agents(srv, tmp_path, pki, factory_bundle, stations):
            for sid in stations:
                await api(srv, "PATCH", f"/api/v1/stations/{sid}", json={"site_id": "depot"})
            forward = await api(srv, "POST", "/api/v1/campaigns", json={**doc, "release": new})
            await until(lambda: status_is(srv, forward["id"], "completed"), "1.1.0 installed", 25)

            # Their rollback floor is 2 now: 1.0.0 would be refused by every one of them.
            refused = await asyncio.to_thread(
                _run, data, "campaign", "rollback", "forward", "--release", old, code=1
            )
            assert (
                "409 conflict" in refused and "below the rollback floor 2 of 2 stations" in refused
            )
            assert "chargeward release build --version 1.0.0 --security-version 2" in refused
            assert "409 conflict" in await asyncio.to_thread(
                _run, data, "campaign", "create",
                _file(tmp_path, {**doc, "name": "down", "release": old}), code=1,
            )  # fmt: skip

            resigned = pki.bundle(tmp_path / "acme-1.0.1.cwb", "1.0.1", 2)
            back_id = srv.upload(resigned)["id"]
            out = await asyncio.to_thread(_run, data, "campaign", "rollback", "forward")
            assert "created rollback campaign forward-rollback" in out
            back = await api(srv, "GET", "/api/v1/campaigns/forward-rollback")
            assert back["release_id"] == back_id
            await until(lambda: status_is(srv, back["id"], "completed"), "rollback installed", 25)
            for sid in stations:
                assert srv.station(sid)["firmware_version"] == "1.0.1"
