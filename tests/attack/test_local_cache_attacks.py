"""Attack through the site cache: a compromised Local Controller that serves its site other
bytes than it fetched (a backdoored image with a valid MD5 of its own).  The charger checks
the OCPP signature over what it downloaded, refuses it, reports it, and keeps its running
slot; the campaign's error gate stops the rollout at the canary."""

from __future__ import annotations

from pathlib import Path

import pytest

from chargeward.agent.state import StateDir
from chargeward.sim.runner import free_port
from tests.support.campaigns import (
    ALL_DAY,
    agents,
    api,
    campaign_doc,
    runs,
    status_is,
    until,
    upload_release,
)
from tests.support.fleet import Pki, running_server

LC = "LC-DEPOT"
CHARGERS = ["CP-01", "CP-02"]


@pytest.mark.slow  # 33 s beside the suite's other tests on 2 cores
async def test_a_controller_serving_other_bytes_gets_them_refused_by_the_charger(
    tmp_path: Path, pki: Pki
) -> None:
    factory = pki.bundle(tmp_path / "acme-1.0.0.cwb", "1.0.0", 1)
    update = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2)
    port = free_port()
    configs = {
        LC: {
            "local_cache_listen": f"127.0.0.1:{port}",
            "local_cache_url": f"http://127.0.0.1:{port}",
        }
    }
    with running_server(tmp_path, pki, extra_args=("--campaign-tick", "0.3")) as srv:
        release = await upload_release(srv, update, "1.1.0")
        stations = [LC, *CHARGERS]
        async with agents(srv, tmp_path, pki, factory, stations, configs=configs) as running:
            cache = running[LC].cache
            assert cache is not None
            honest = cache.notify

            async def compromised(status: str, request_id: int, where: list[str] | None) -> None:
                if status == "Published":  # swap in a backdoored image before anyone fetches
                    [md5] = cache.published()
                    served = cache.directory / f"{md5}.cwfw"
                    served.write_bytes(served.read_bytes() + b"backdoor")
                await honest(status, request_id, where)

            cache.notify = compromised
            await api(srv, "POST", "/api/v1/sites", json={
                "id": "depot", "name": "Depot", "timezone": "UTC", "maintenance_windows": ALL_DAY,
            })  # fmt: skip
            for sid in stations:
                await api(srv, "PATCH", f"/api/v1/stations/{sid}", json={"site_id": "depot"})
            await api(srv, "PATCH", f"/api/v1/stations/{LC}", json={"tags": ["local-controller"]})
            doc = campaign_doc("poisoned", release["id"])
            doc["target"] = {"stations": CHARGERS}
            created = await api(srv, "POST", "/api/v1/campaigns", json=doc)
            paused = await until(lambda: status_is(srv, created["id"], "paused"), "the pause", 90)
            by_station = await runs(srv, created["id"])
            [canary] = [sid for sid, r in by_station.items() if r["state"] == "failed"]
            assert paused["counts"]["succeeded"] == 0
            assert cache.served_bytes > 0  # the canary did fetch the poisoned file
            events = [e.type for e in running[canary].security_log.entries()]
            assert "InvalidFirmwareSignature" in events
            assert all(running[sid].firmware_version == "1.0.0" for sid in CHARGERS)
            detail = await api(srv, "GET", f"/api/v1/stations/{canary}")
    statuses = [e["status"] for e in detail["firmware_statuses"]]
    assert "InvalidSignature" in statuses and "Installing" not in statuses, statuses
    for sid in CHARGERS:  # no slot holds the backdoor
        for slot in ("a", "b"):
            image = StateDir(tmp_path / sid).slot_image(slot)
            assert not image.exists() or b"backdoor" not in image.read_bytes()
