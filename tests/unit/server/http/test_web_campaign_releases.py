"""The dashboard's campaign forms offer only releases the chargers accept: the create form
leaves out unpublished releases and marks those below some stations' rollback floor; the roll
back form offers only releases at or above the floor of the stations to roll back, and says to
re-sign the earlier build when there is none."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace
from pathlib import Path

from chargeward.campaign.spec import parse_spec
from chargeward.server.fleet import station_registry
from chargeward.server.rollout import campaign_runs, campaigns
from chargeward.server.store.tables import FirmwareUpdate, Station
from tests.support.accounts_api import NOW, accounts_api
from tests.support.dashboard import browser, log_in
from tests.support.fleet import MODEL, Pki
from tests.support.stored_releases import mark_published, stored_release
from tests.support.trust import TufKeys

OPTION = re.compile(r"<option value=\"[0-9a-f]{64}\"[^>]*>([^<]*)</option>")


async def test_campaign_forms_offer_only_releases_the_stations_accept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    TufKeys.create(tmp_path / "keys").init_repo(data / "tuf", dt.datetime.now(dt.UTC))
    pki = Pki.create(tmp_path / "pki")
    async with accounts_api(data) as env:
        db = env.state.db
        old = await stored_release(db, tmp_path, pki, "1.0.0", 1, NOW)
        await stored_release(db, tmp_path, pki, "1.1.0", 2, NOW)  # pending
        new = await stored_release(db, tmp_path, pki, "1.2.0", 3, NOW)
        for release in (old, new):
            await mark_published(db, release, NOW)
        async with db.session() as s:
            await station_registry.register_station(s, "CP-1", actor="t", model=MODEL, now=NOW)
            row = await s.get(Station, "CP-1")
            assert row is not None
            row.firmware_version = "1.1.0"  # the pending release: its floor is 2
        olive = await env.add_user("olive", "operator")
        async with await browser(env) as c:
            await log_in(env, c, olive)
            page = await c.get("/campaigns")
            assert page.status_code == 200, page.text
            assert OPTION.findall(page.text) == [
                "1.2.0 (AC22; published)",
                "1.0.0 (AC22; published; below the rollback floor of 1 station)",
            ]  # 1.1.0 is not published: not offered
            assert "Leave out the stations whose rollback floor is above" in page.text

            # CP-1 took 1.2.0 (floor 3): nothing published is at or above it but 1.2.0.
            async with db.session() as s:
                view = await campaigns.create_campaign(
                    s,
                    parse_spec({"name": "fwd", "release": new, "target": {"models": [MODEL]}}),
                    actor="olive",
                    now=NOW,
                    require_published=True,
                )
                for r, run in (await campaign_runs.load_runs(s, view.id)).values():
                    campaign_runs.store_run(r, replace(run, state="succeeded"), NOW)
                s.add(FirmwareUpdate(
                    transaction_id="t-1", station_id="CP-1", release_id=new, component="main",
                    requested_by="campaign", outcome="succeeded", created_at=NOW, updated_at=NOW,
                ))  # fmt: skip
            page = await c.get(f"/campaigns/{view.id}")
            assert page.status_code == 200, page.text
            assert 'id="rollback-release"' not in page.text and 'id="no-rollback"' in page.text
            assert "chargeward release build --security-version" in page.text

            resigned = await stored_release(db, tmp_path, pki, "1.0.1", 3, NOW)
            await mark_published(db, resigned, NOW)
            page = await c.get(f"/campaigns/{view.id}")
            assert OPTION.findall(page.text) == ["1.0.1 (security version 3; published)"]
