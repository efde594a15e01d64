"""Site-local caching through the real server and real agents: a site's Local Controller
(OCPP PublishFirmware) downloads the image once and serves the site's chargers; a controller
that cannot publish leaves its site downloading from the server."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

from chargeward.sim.runner import free_port
from tests.support.campaigns import (
    ALL_DAY,
    agents,
    api,
    campaign_doc,
    status_is,
    until,
    upload_release,
)
from tests.support.fleet import Pki, Server, assert_no_crash, cli, running_server

LC = "LC-DEPOT"
CHARGERS = [f"CP-{i:02d}" for i in range(20)]


async def _site(srv: Server, stations: list[str], controller: str) -> None:
    await api(srv, "POST", "/api/v1/sites", json={
        "id": "depot", "name": "Depot", "timezone": "Europe/London",
        "maintenance_windows": ALL_DAY,
    })  # fmt: skip
    for sid in stations:
        await api(srv, "PATCH", f"/api/v1/stations/{sid}", json={"site_id": "depot"})
    await api(srv, "PATCH", f"/api/v1/stations/{controller}", json={"tags": ["local-controller"]})


async def _roll_out(srv: Server, release: dict[str, Any], stations: list[str]) -> dict[str, Any]:
    doc = campaign_doc("cached", release["id"])
    doc["target"] = {"stations": stations}  # the controller itself is not updated
    doc["concurrency"] = {"global": 50, "per_site": 50, "keep_available": 0}
    created = await api(srv, "POST", "/api/v1/campaigns", json=doc)
    done = await until(lambda: status_is(srv, created["id"], "completed"), "completion", 150)
    assert done["counts"]["succeeded"] == len(stations), done["counts"]
    downloads: dict[str, Any] = await api(
        srv, "GET", f"/api/v1/campaigns/{created['id']}/downloads"
    )
    return downloads


# Twenty-one real agents each flash, reboot, self-test and commit: the heaviest test in the
# suite, so it gets more than the default per-test time limit on a loaded 2-core machine.
@pytest.mark.slow  # 159 s beside the suite's other tests on 2 cores
@pytest.mark.timeout(300)
async def test_a_site_with_a_local_controller_downloads_the_image_once(
    tmp_path: Path, pki: Pki
) -> None:
    factory = pki.bundle(tmp_path / "acme-1.0.0.cwb", "1.0.0", 1)
    update = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2)
    port = free_port()
    lan = f"http://127.0.0.1:{port}"
    configs = {LC: {"local_cache_listen": f"127.0.0.1:{port}", "local_cache_url": lan}}
    with running_server(tmp_path, pki, extra_args=("--campaign-tick", "0.3")) as srv:
        release = await upload_release(srv, update, "1.1.0")
        [image] = release["images"]
        stations = [LC, *CHARGERS]
        async with agents(srv, tmp_path, pki, factory, stations, configs=configs) as running:
            await _site(srv, stations, LC)
            downloads = await _roll_out(srv, release, CHARGERS)
            # The server sent the image once, to the controller, for this campaign.
            assert downloads["stations"] == [
                {"station_id": LC, "bytes_sent": image["length"], "requests": 1}
            ]
            assert downloads["bytes_sent"] == image["length"]
            cache = running[LC].cache
            assert cache is not None
            assert cache.downloaded_bytes == image["length"]
            # Every charger got it from the controller over the site's LAN, and checked it.
            assert cache.served_bytes == len(CHARGERS) * image["length"]
            for sid in CHARGERS:
                assert running[sid].firmware_version == "1.1.0", sid
                [stats] = running[sid].download_stats
                assert stats.bytes_received == image["length"]
            # Published at the controller's location, taken down once the campaign ended.
            await until(lambda: _unpublished(srv, downloads["campaign_id"]), "unpublish", 30)
            assert cache.published() == []
            shown = await asyncio.to_thread(
                cli, "campaign", "downloads", str(downloads["campaign_id"]),
                "--data-dir", str(srv.data_dir),
            )  # fmt: skip
            assert f"server sent {image['length']:,} bytes to 1 station" in shown.stdout
            assert f"site depot: Local Controller {LC} Unpublished" in shown.stdout
            assert running[LC].firmware_version == "1.0.0"  # not a target
            trail = await api(srv, "GET", "/api/v1/audit?target=site:depot")
            statuses = [e["details"]["status"] for e in trail if e["action"] == "site_cache.status"]
            assert statuses == ["Published", "Unpublished"], statuses
            published_at = next(
                e["details"]["locations"]
                for e in trail
                if e["action"] == "site_cache.status" and e["details"]["status"] == "Published"
            )
            assert published_at == [f"{lan}/firmware/{_md5(srv, image)}.cwfw"]
    assert_no_crash(srv.proc.output())


async def _unpublished(srv: Server, campaign_id: int) -> bool:
    downloads = await api(srv, "GET", f"/api/v1/campaigns/{campaign_id}/downloads")
    return all(c["status"] == "Unpublished" for c in downloads["local_caches"])


def _md5(srv: Server, image: dict[str, Any]) -> str:
    blob = srv.data_dir / "blobs" / "sha256" / image["sha256"]
    return hashlib.md5(blob.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.mark.slow  # 45 s beside the suite's other tests on 2 cores
async def test_a_controller_that_cannot_publish_leaves_its_site_on_the_server(
    tmp_path: Path, pki: Pki
) -> None:
    factory = pki.bundle(tmp_path / "acme-1.0.0.cwb", "1.0.0", 1)
    update = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2)
    chargers = CHARGERS[:2]
    with running_server(tmp_path, pki, extra_args=("--campaign-tick", "0.3")) as srv:
        release = await upload_release(srv, update, "1.1.0")
        [image] = release["images"]
        stations = [LC, *chargers]
        # Tagged as the site's controller, but not running a firmware cache: it answers
        # PublishFirmware Rejected, like any charger that is no Local Controller.
        async with agents(srv, tmp_path, pki, factory, stations):
            await _site(srv, stations, LC)
            downloads = await _roll_out(srv, release, chargers)
    assert {s["station_id"]: s["bytes_sent"] for s in downloads["stations"]} == {
        sid: image["length"] for sid in chargers
    }
    [cache] = downloads["local_caches"]
    assert cache["status"] == "Failed"
    assert cache["reason"] == "PublishFirmware answered Rejected"
    assert_no_crash(srv.proc.output())
