"""The dashboard says why stations wait: the campaign page's station table has a "waiting for"
column with each waiting station's reason and the status line counts them per code; a
station's page in the campaign shows its reason; the create form refuses a one-charger site
with ``keep_available = 1`` (the API's message on the page) unless its check box keeps the
station waiting."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from chargeward.server.http.web_campaigns import campaign_document
from chargeward.server.rollout import campaign_scheduler
from tests.support.accounts_api import NOW, accounts_api
from tests.support.campaigns import corner_and_offline
from tests.support.dashboard import CSRF, browser, log_in
from tests.support.fleet import MODEL, Pki
from tests.support.stored_releases import stored_release

SEEN = NOW - dt.timedelta(hours=2)


async def test_the_campaign_page_shows_why_each_station_waits(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pki = Pki.create(tmp_path / "pki")
    async with accounts_api(data) as env:
        db = env.state.db
        release = await stored_release(db, tmp_path, pki, "1.1.0", 2, NOW)
        await corner_and_offline(db, NOW, SEEN)
        olive = await env.add_user("olive", "operator")
        async with await browser(env) as c:
            await log_in(env, c, olive)
            page = await c.get("/campaigns")
            token = CSRF.search(page.text)
            assert token is not None
            assert 'name="allow_unreachable_sites"' in page.text
            form = {"csrf": token.group(1), "name": "c1", "release": release, "model": MODEL,
                    "canary": "100%", "stages": "", "jitter": "0"}  # fmt: skip
            refused = await c.post("/campaigns", data=form)
            assert refused.status_code == 422, refused.text[:500]
            assert "site corner has 1 charger and keep_available = 1 (CP-1)" in refused.text

            made = await c.post("/campaigns", data={**form, "allow_unreachable_sites": "on"})
            assert made.status_code == 303, made.text[:500]
            where = made.headers["location"]
            ref = int(where.rsplit("/", 1)[1])
            await campaign_scheduler.tick_campaign(env.state, ref)

            page = await c.get(where)
            assert page.status_code == 200, page.text[:500]
            assert '<th scope="col">waiting for</th>' in page.text
            cells = dict(re.findall(r'data-wait="([a-z_]+)"[^>]*>([^<]+)</span>', page.text))
            assert cells == {
                "site_floor": "site corner has 1 available charger; keep_available = 1",
                "offline": f"offline since {SEEN:%Y-%m-%d %H:%M} UTC",
            }
            assert 'id="waiting-counts">offline 1, site floor 1<' in page.text

            one = await c.get(f"{where}/stations/CP-2")
            assert one.status_code == 200, one.text[:500]
            assert 'id="waiting-reason"' in one.text and "offline since" in one.text


def test_the_create_forms_check_box_becomes_allow_unreachable_sites() -> None:
    doc = campaign_document({"name": "x", "release": "r", "allow_unreachable_sites": "on"})
    assert doc["allow_unreachable_sites"] is True
    assert "allow_unreachable_sites" not in campaign_document({"name": "x", "release": "r"})
