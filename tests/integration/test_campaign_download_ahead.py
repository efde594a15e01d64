"""Download ahead of the window, install only inside it: the real server process (scheduler on
the leader, SQLite) and a real agent over OCPP 2.0.1 on loopback.

Once the agent is connected, the site's window (in Asia/Kolkata, UTC+05:30) is set to open at
the next whole minute at least 6 s away (windows are HH:MM).  The campaign's
``download_ahead`` lets the scheduler send UpdateFirmware at once with ``installDateTime`` =
the window's start: the agent downloads and verifies the image before the window, reports
``InstallScheduled``, and reports ``Installing`` only at or after the window's start.  The
test takes about 15-75 s, mostly waiting for that minute.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from chargeward.model.fleet import DAYS
from tests.support.campaigns import (
    api,
    campaign_doc,
    one_station,
    runs,
    state_is,
    until,
)
from tests.support.fleet import Pki

ZONE = "Asia/Kolkata"
LEAD_S = 6  # at least this long to create the campaign, send it and download the image


def next_minute(after: dt.datetime) -> dt.datetime:
    return after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)


def window_at(opens: dt.datetime) -> dict[str, object]:
    local = opens.astimezone(ZoneInfo(ZONE))
    end = local + dt.timedelta(minutes=15)
    return {"days": [DAYS[local.weekday()]], "start": f"{local:%H:%M}", "end": f"{end:%H:%M}"}


@pytest.mark.slow  # 80 s beside the suite's other tests on 2 cores
async def test_a_station_downloads_before_its_window_and_installs_only_inside_it(
    tmp_path: Path, pki: Pki, factory_bundle: Path
) -> None:
    async with one_station(tmp_path, pki, factory_bundle) as (srv, release_id, sent):
        opens = next_minute(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=LEAD_S))
        await api(srv, "POST", "/api/v1/sites", json={
            "id": "mumbai", "name": "Mumbai", "timezone": ZONE,
            "maintenance_windows": [window_at(opens)],
        })  # fmt: skip
        await api(srv, "PATCH", "/api/v1/stations/CP-A", json={"site_id": "mumbai"})
        doc = {**campaign_doc("ahead", release_id), "download_ahead": "5m"}
        cid = (await api(srv, "POST", "/api/v1/campaigns", json=doc))["id"]

        # Before the window: sent, downloaded, verified, and waiting for installDateTime.
        await until(lambda: _has(sent, "InstallScheduled"), "the download ahead of the window", 30)
        assert dt.datetime.now(dt.UTC) < opens, "the window opened before the download"
        run = (await runs(srv, cid))["CP-A"]
        assert run["state"] == "installing" and run["last_status"] == "InstallScheduled"
        assert dt.datetime.fromisoformat(run["install_at"]) == opens
        assert run["attempts"] == 1 and run["reschedules"] == 0
        statuses = [s for s, _ in sent]
        assert statuses[: statuses.index("InstallScheduled") + 1] == [
            "Downloading", "Downloaded", "SignatureVerified", "InstallScheduled",
        ]  # fmt: skip
        assert all(at < opens for _, at in sent)

        # The install starts at the window's start, not before.
        await until(lambda: _has(sent, "Installing"), "the install in the window", 75)
        installing_at = next(at for s, at in sent if s == "Installing")
        assert opens <= installing_at < opens + dt.timedelta(seconds=10)
        await until(lambda: state_is(srv, cid, "CP-A", "succeeded"), "the soak", 60)

        station = await api(srv, "GET", "/api/v1/stations/CP-A")
        assert station["firmware_version"] == "1.1.0"
        trail = await api(srv, "GET", "/api/v1/audit", params={"target": "CP-A"})
        installing = [
            e for e in trail
            if e["action"] == "station.firmware_status"
            and e["details"].get("status") == "Installing"
        ]  # fmt: skip
        assert len(installing) == 1
        assert dt.datetime.fromisoformat(str(installing[0]["time"])) >= opens


async def _has(sent: list[tuple[str, dt.datetime]], status: str) -> bool:
    return any(s == status for s, _ in sent)
