"""The link budget on SQLite and PostgreSQL: a site's download windows and bandwidth cap, the
``retrieveDateTime`` a charger is sent, and the bytes counted per station and campaign."""

from __future__ import annotations

import datetime as dt

import pytest

from chargeward.errors import BundleError
from chargeward.server.fleet import fleet, station_registry
from chargeward.server.rollout import link_budget
from chargeward.server.store.db import Database
from chargeward.server.store.tables import SiteCache

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)  # a Monday, noon in London
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
NIGHTS = [{"days": EVERY_DAY, "start": "22:00", "end": "06:00"}]


async def _site_with_station(db: Database, **site: object) -> None:
    async with db.session() as s:
        await fleet.create_site(
            s,
            fleet.SiteInput("depot", "Depot", None, "Europe/London", [], **site),  # type: ignore[arg-type]
            actor="t",
            now=NOW,
        )
        await station_registry.register_station(s, "CP-1", actor="t", model="AC22", now=NOW)
    async with db.session() as s:
        await fleet.update_station(s, "CP-1", {"site_id": "depot"}, actor="t", now=NOW)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_site_downloads_only_in_its_windows(db: Database) -> None:
    await _site_with_station(db, download_windows=NIGHTS, bandwidth_limit=32_000)
    async with db.snapshot() as s:
        budget = await link_budget.site_budget(s, "CP-1")
        assert (await link_budget.site_budget(s, "CP-unknown")) == link_budget.NO_BUDGET
    assert budget.bandwidth == 32_000
    # Noon: closed for ten hours; the charger is told to start downloading at 22:00 local.
    assert budget.closed_for(NOW) == 10 * 3600 + 1
    assert link_budget.retrieve_at(budget, NOW) == dt.datetime(2026, 12, 7, 22, tzinfo=dt.UTC)
    night = dt.datetime(2026, 12, 7, 23, tzinfo=dt.UTC)
    assert budget.closed_for(night) is None
    assert link_budget.retrieve_at(budget, night) == night
    # No windows: any time.
    assert link_budget.NO_BUDGET.closed_for(NOW) is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_bad_download_windows_are_refused_and_named(db: Database) -> None:
    with pytest.raises(BundleError, match=r"download_windows\[0\]\.start must be a time"):
        await _site_with_station(
            db, download_windows=[{"days": ["mon"], "start": "25:00", "end": "06:00"}]
        )


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_bytes_are_added_per_link_and_counted_per_campaign(db: Database) -> None:
    await _site_with_station(db)
    sha = "ab" * 32
    async with db.session() as s:  # a Local Controller's publication for campaign 7
        s.add(SiteCache(id=41, station_id="CP-1", site_id="depot", sha256=sha, md5="0" * 32,
                        campaign_id=7, status="Accepted", locations=[], requested_at=NOW,
                        updated_at=NOW))  # fmt: skip
    usage = link_budget.Usage(db, lambda: NOW)
    await usage.add("CP-1", 41, sha, 1000)  # cut after 1,000 bytes
    await usage.add("CP-1", 41, sha, 3000)  # the resumed request sends the rest
    await usage.add("CP-1", 0, sha, 500)  # a link of no update
    async with db.snapshot() as s:
        per_campaign = await link_budget.campaign_usage(s, 7)
        station = await link_budget.station_usage(s, "CP-1")
    assert per_campaign == [link_budget.StationUsage("CP-1", 4000, 2)]
    assert station == {"bytes_sent": 4500, "requests": 3, "campaigns": {"7": 4000}}


async def test_the_pacer_holds_a_site_to_its_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = link_budget.Pacer(64_000, clock=lambda: now[0], sleep=sleep)
    for _ in range(40):  # 40 chunks of 16 KiB from the site's downloads together
        await pacer.take(16_384)
    sent = 40 * 16_384
    # The first burst goes at once; everything after it at the rate.
    assert now[0] == pytest.approx((sent - pacer.burst) / 64_000, rel=1e-6)
    assert max(slept) <= 16_384 / 64_000 + 1e-9
