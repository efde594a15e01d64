"""The campaign API says why stations wait: ``POST /api/v1/campaigns`` refuses a site whose
``keep_available`` leaves no charger to update (422, the message naming the field, the site
and the fixes), or with ``allow_unreachable_sites: true`` creates it with a warning;
``GET .../stations`` gives each waiting station's ``waiting_reason`` and
``GET /api/v1/campaigns/{ref}`` counts them per code."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from chargeward.server.rollout import campaign_scheduler
from tests.support.api_app import Api, running_api
from tests.support.campaigns import corner_and_offline
from tests.support.fleet import MODEL, Pki
from tests.support.stored_releases import stored_release

NOW = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)
SEEN = dt.datetime(2026, 11, 1, 23, 30, tzinfo=dt.UTC)


async def _seed(api: Api, tmp_path: Path, pki: Pki) -> str:
    """CP-1 alone at site corner (connected); CP-2 without a site, offline since SEEN."""
    release = await stored_release(api.db, tmp_path, pki, "1.1.0", 2, NOW)
    await corner_and_offline(api.db, NOW, SEEN)
    return release


def _doc(release: str, **kw: Any) -> dict[str, Any]:
    return {"name": "c1", "release": release, "target": {"models": [MODEL]}, "jitter": 0,
            "stages": {"canary": "100%"}, **kw}  # fmt: skip


async def test_the_api_refuses_an_unreachable_site_and_shows_why_stations_wait(
    tmp_path: Path,
) -> None:
    pki = Pki.create(tmp_path / "pki")
    async with running_api(tmp_path / "data", NOW) as api:
        release = await _seed(api, tmp_path, pki)
        r = await api.client.post("/api/v1/campaigns", json=_doc(release))
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_bundle"
        assert error["message"].startswith(
            "concurrency.keep_available: no charger of 1 target site"
        )
        assert "site corner has 1 charger and keep_available = 1 (CP-1)" in error["message"]
        assert "--allow-unreachable-sites" in error["message"]
        bad = await api.client.post(
            "/api/v1/campaigns", json={**_doc(release), "allow_unreachable_sites": "yes"}
        )
        assert bad.status_code == 400, bad.text

        made = await api.call(
            "POST", "/api/v1/campaigns", 201,
            json={**_doc(release), "allow_unreachable_sites": True},
        )  # fmt: skip
        assert made["warnings"][0].startswith("site corner has 1 charger and keep_available = 1")
        assert made["waiting"] == {"next_tick": 1, "site_floor": 1}

        await campaign_scheduler.tick_campaign(api.state, made["id"])
        rows = await api.call("GET", f"/api/v1/campaigns/{made['id']}/stations")
        reasons = {r["station_id"]: r["waiting_reason"] for r in rows}
        assert reasons["CP-1"]["code"] == "site_floor"
        assert reasons["CP-1"]["text"] == "site corner has 1 available charger; keep_available = 1"
        assert reasons["CP-1"]["since"] == NOW.isoformat()  # kept from the creation
        assert reasons["CP-2"] == {
            "code": "offline",
            "text": "offline since 2026-11-01 23:30 UTC",
            "since": SEEN.isoformat(),
        }
        one = await api.call("GET", f"/api/v1/campaigns/{made['id']}/stations/CP-2")
        assert one["waiting_reason"]["code"] == "offline"
        summary = await api.call("GET", "/api/v1/campaigns/c1")
        assert summary["waiting"] == {"offline": 1, "site_floor": 1}

        await api.call("POST", "/api/v1/campaigns/c1/pause")
        rows = await api.call("GET", "/api/v1/campaigns/c1/stations")
        assert {r["waiting_reason"]["code"] for r in rows} == {"paused"}
        assert (await api.call("GET", "/api/v1/campaigns/c1"))["waiting"] == {"paused": 2}
