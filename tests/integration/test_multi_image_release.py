"""A two-image release (``main`` + ``modem``) end to end: built, approved from the bundle by two
approvers, published in the real server's TUF repository, rolled out by a campaign over OCPP
2.0.1 to a real agent with TUF checks on, which installs both images as one slot group,
reboots, passes its health check and commits."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from chargeward.agent.state import StateDir
from chargeward.release.bundle import verify_bundle
from tests.support.campaigns import (
    ALL_DAY,
    agents,
    api,
    campaign_doc,
    state_is,
    status_is,
    until,
)
from tests.support.fleet import Pki, assert_no_crash, cli, running_server
from tests.support.trust import TufKeys, person_tokens

STATION = "CP-MULTI"


@pytest.mark.slow  # 78 s beside the suite's other tests on 2 cores
async def test_two_image_release_reaches_the_agent_as_one_slot_group(
    tmp_path: Path, pki: Pki
) -> None:
    data = tmp_path / "server-data"
    root_json = tmp_path / "root.json"
    keys = TufKeys.create(tmp_path / "tuf-keys")
    keys.init_cli(data, root_out=root_json)

    def release(version: str, sv: int) -> Path:
        images = {
            "main": f"app {version}".encode() * 4000,
            "modem": f"modem {version}".encode() * 3000,
        }
        return pki.bundle(tmp_path / f"acme-{version}.cwb", version, sv, components=images)

    factory, update = release("1.0.0", 1), release("1.1.0", 2)
    expected = verify_bundle(update, [pki.root_cert], workdir=tmp_path / "expected")
    with running_server(tmp_path, pki, extra_args=("--campaign-tick", "0.3")) as srv:
        tokens = await asyncio.to_thread(person_tokens, data)

        def as_(who: str, *args: str) -> str:
            env = {"CHARGEWARD_API_TOKEN": tokens[who]}
            return cli(*args, "--data-dir", str(data), env=env).stdout

        await asyncio.to_thread(as_, "carol", "release", "upload", str(update))
        rid = (await api(srv, "GET", "/api/v1/releases"))[0]["id"]
        for who in ("alice", "bob"):  # each recomputes the targets from the bundle in hand
            await asyncio.to_thread(
                as_, who, "release", "approve", rid, "--key", keys.uri(who),
                "--bundle", str(update), "--root", str(pki.root_pem),
            )  # fmt: skip
        await asyncio.to_thread(as_, "carol", "release", "publish", rid)

        tuf_root = root_json.read_bytes()
        async with agents(srv, tmp_path, pki, factory, [STATION], tuf_root=tuf_root):
            await api(srv, "POST", "/api/v1/sites", json={
                "id": "depot", "name": "Depot", "timezone": "Europe/London",
                "maintenance_windows": ALL_DAY,
            })  # fmt: skip
            await api(srv, "PATCH", f"/api/v1/stations/{STATION}", json={"site_id": "depot"})
            created = await api(srv, "POST", "/api/v1/campaigns", json=campaign_doc("multi", rid))
            cid = created["id"]
            await until(lambda: state_is(srv, cid, STATION, "succeeded"), "the station to succeed")
            await until(lambda: status_is(srv, cid, "completed"), "the campaign to complete")
        detail = srv.station(STATION)
        server_log = srv.proc.output()

    state = StateDir(tmp_path / STATION)
    assert detail["firmware_version"] == "1.1.0"
    assert detail["updates"][-1]["outcome"] == "succeeded"
    assert [e["type"] for e in detail["security_events"]] == ["FirmwareUpdated"]
    bc = state.boot_control()
    assert bc.active == "b" and not bc.trial and state.rollback_floor() == 2
    info = state.slot_info("b")
    assert info is not None and info.version == "1.1.0" and info.component == "main"
    assert [c.component for c in info.components] == ["modem"]
    for image in expected.images:  # both images of the new release, byte for byte
        path = state.image_of("b", info, image.component)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == image.sha256
    assert_no_crash(server_log)
