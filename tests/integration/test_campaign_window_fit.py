"""An install must end inside its window: the real server process (scheduler on the leader,
SQLite) and a real agent over OCPP 2.0.1 on loopback.

The site's window closes one to two minutes from now (windows are HH:MM) and the campaign's
install takes 5 minutes: the scheduler runs round after round (its metrics counter) and never
sends the station UpdateFirmware.  Once the site's window leaves half an hour, the station is
sent its update and downloads it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from chargeward.model.fleet import DAYS
from tests.support.campaigns import (
    api,
    campaign_doc,
    one_station,
    runs,
    scheduler_ticks,
    until,
)
from tests.support.fleet import Pki

ZONE = "Asia/Kolkata"


def window_around(now: dt.datetime, minutes_left: int) -> dict[str, object]:
    """A daily window that opened a minute ago and closes ``minutes_left`` whole minutes from
    the start of the current minute."""
    local = now.astimezone(ZoneInfo(ZONE)).replace(second=0, microsecond=0)
    start, end = local - dt.timedelta(minutes=1), local + dt.timedelta(minutes=minutes_left)
    return {"days": list(DAYS), "start": f"{start:%H:%M}", "end": f"{end:%H:%M}"}


async def test_a_station_with_too_little_window_left_is_not_sent_its_update(
    tmp_path: Path, pki: Pki, factory_bundle: Path
) -> None:
    async with one_station(tmp_path, pki, factory_bundle) as (srv, release_id, sent):
        await api(srv, "POST", "/api/v1/sites", json={
            "id": "pune", "name": "Pune", "timezone": ZONE,
            "maintenance_windows": [window_around(dt.datetime.now(dt.UTC), 2)],
        })  # fmt: skip
        await api(srv, "PATCH", "/api/v1/stations/CP-A", json={"site_id": "pune"})
        doc = {**campaign_doc("fit", release_id), "install_duration": "5m"}
        cid = (await api(srv, "POST", "/api/v1/campaigns", json=doc))["id"]

        # Three full scheduler rounds after the campaign exists: nothing was sent.
        after = await scheduler_ticks(srv) + 3

        async def rounds() -> bool:
            return await scheduler_ticks(srv) >= after

        await until(rounds, "three scheduler rounds", 20)
        run = (await runs(srv, cid))["CP-A"]
        assert (run["state"], run["attempts"], run["request_id"]) == ("waiting", 0, None)
        assert sent == []

        # Half an hour of window left: sent at once, installing inside the window.
        await api(srv, "PATCH", "/api/v1/sites/pune", json={
            "maintenance_windows": [window_around(dt.datetime.now(dt.UTC), 30)],
        })  # fmt: skip

        async def downloading() -> bool:
            return any(status == "Downloading" for status, _ in sent)

        await until(downloading, "UpdateFirmware in a window long enough", 20)
        run = (await runs(srv, cid))["CP-A"]
        assert run["attempts"] == 1 and run["install_at"] is None
