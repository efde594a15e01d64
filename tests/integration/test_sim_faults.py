"""The fleet simulator's fault scenarios, against a real server process: real agents (one
event loop), a simulated flash (power cuts at install steps) and a simulated link (drops,
corrupted bytes, latency, a bandwidth cap).

After each run: every station's active slot verifies on its flash, the campaign's counts add
up to the stations it targeted, and no station started installing outside its site's
maintenance window or while an EV was charging on it (the server's ``Installing`` receipts
against the scenario's windows and the sessions the simulator drove).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from chargeward.sim.runner import SimOptions, run_scenario
from chargeward.sim.scenario import parse_scenario, window_from_now

pytestmark = pytest.mark.slow  # about 100 simulated stations per scenario

HOURS_1 = dt.timedelta(hours=1)
HOURS_2 = dt.timedelta(hours=2)
MINUTES_10 = dt.timedelta(minutes=10)

FAULTS = b"""
seed = 20261121
duration = 80

[releases]
versions = ["1.0.0", "1.1.0"]
image_kib = 32

[campaign]
release = "1.1.0"
stages = { canary = 2, then = ["100%"] }
gates = { success = "50%", error = "100%" }  # faulted attempts are retried, not gated

[[sites]]
id = "london"
timezone = "Europe/London"
windows = "always"
link = { bandwidth = 4_000_000, latency_ms = 10 }

[[sites]]
id = "tokyo"
timezone = "Asia/Tokyo"
windows = "always"
link = { bandwidth = 2_000_000, latency_ms = 40 }

[[fleet]]
count = 50
site = "london"
firmware = "1.0.0"

[[fleet]]
count = 40
site = "tokyo"
firmware = "1.0.0"

[[fleet]]
count = 10
site = "london"
firmware = "1.0.0"
prefix = "BUSY"
sessions = { busy = [[0, 12]] }

[faults]
link_drop = { probability = 0.2, at_byte = [2_000, 30_000] }
corrupt = { probability = 0.1 }
power_loss = { probability = 0.2, step = "random" }
"""

BAD = b"""
seed = 7
duration = 60

[releases]
versions = ["1.0.0", "1.2.0"]
image_kib = 16

[campaign]
release = "1.2.0"
stages = { canary = 1, then = ["100%"] }
gates = { success = "100%", error = 1 }

[[sites]]
id = "depot"
timezone = "America/New_York"

[[fleet]]
count = 30
site = "depot"
firmware = "1.0.0"

[faults]
bad_release = "1.2.0"
"""


async def run(
    doc: bytes, tmp: Path, *, https: bool = False, stations: int | None = None
) -> dict[str, Any]:
    scenario = parse_scenario(doc, "scenario.toml")
    opts = SimOptions(workdir=tmp, live=False, https=https, stations=stations)
    return await run_scenario(scenario, opts, Console(file=open(tmp / "view.txt", "w")))


def assert_common(summary: dict[str, Any]) -> None:
    checks = summary["checks"]
    assert checks["unverified"] == [], checks
    assert checks["counts_total"] == checks["targeted"] == summary["stations"]
    assert checks["outside_window"] == [] and checks["during_session"] == [], checks
    assert "unverified" not in summary["final_versions"]


async def test_drops_corruption_power_cuts_and_charging_all_end_verified(tmp_path: Path) -> None:
    s = await run(FAULTS, tmp_path)
    assert_common(s)
    c = s["campaign"]
    assert c["status"] == "completed", c
    # A power cut before the new slot ran leaves the old, verified slot running: the server
    # counts it rolled back (an error of that attempt, not retried by itself).
    counts, detail = c["counts"], s["stations_detail"]
    assert counts["succeeded"] + counts["rolled_back"] == 100, counts
    for sid, r in s["runs"].items():
        want = "1.1.0" if r["state"] == "succeeded" else "1.0.0"
        assert detail[sid]["verified_version"] == want, (sid, r, detail[sid])
        assert r["state"] == "succeeded" or detail[sid]["power_cuts"], (sid, detail[sid])
    assert counts["succeeded"] >= 80
    faults, link = s["faults"], s["faults"]["link"]
    # Every planned fault was injected, and the fleet still ended on the verified release.
    assert link.get("dropped", 0) >= faults["planned"]["link_drop"] > 0
    assert link.get("corrupted", 0) >= faults["planned"]["corrupt"] > 0
    assert faults["power_cuts"] > 0
    # The charging ones were deferred, then updated after their sessions.
    busy = {k: v for k, v in s["stations_detail"].items() if k.startswith("BUSY")}
    assert all(v["sessions"] for v in busy.values())
    assert s["checks"]["installs_seen"] >= counts["succeeded"]


async def test_over_https_the_links_tunnel_and_still_inject_drops_and_corruption(
    tmp_path: Path,
) -> None:
    """The server's HTTP listener on https (lab CA as the stations' CSMS root): every
    download crosses its site link in a CONNECT tunnel that the link terminates with the lab
    key, the planned faults hit the plaintext, and the fleet still ends verified."""
    s = await run(FAULTS, tmp_path, https=True, stations=40)
    assert_common(s)
    assert s["campaign"]["status"] == "completed", s["campaign"]
    faults, link = s["faults"], s["faults"]["link"]
    assert link.get("https tunnels", 0) >= s["stations"], link
    assert link.get("dropped", 0) >= faults["planned"]["link_drop"] > 0
    assert link.get("corrupted", 0) >= faults["planned"]["corrupt"] > 0
    assert link.get("tls refused", 0) == 0


async def test_bad_release_pauses_at_the_canary_and_leaves_the_rest(tmp_path: Path) -> None:
    s = await run(BAD, tmp_path)
    assert_common(s)
    c = s["campaign"]
    assert c["status"] == "paused" and "failed" in (c["pause_reason"] or ""), c
    assert c["counts"]["rolled_back"] == 1 and c["counts"]["pending"] == 29, c["counts"]
    assert s["final_versions"] == {"1.0.0": 30}  # the canary fell back to its verified slot
    canary = [sid for sid, r in s["runs"].items() if r["state"] == "rolled_back"]
    assert len(canary) == 1 and s["runs"][canary[0]]["stage"] == 0


def windows_scenario(now: dt.datetime) -> bytes:
    """Two sites: one whose maintenance window is open now, one whose window opens in three
    hours (both in local wall time, in time zones far apart)."""
    open_w = window_from_now("Asia/Tokyo", now, opens_in=-MINUTES_10, length=HOURS_2)
    shut_w = window_from_now("America/Chicago", now, opens_in=3 * HOURS_1, length=HOURS_1)

    def toml(w: dict[str, Any]) -> str:
        return f'[{{ days = {w["days"]!r}, start = "{w["start"]}", end = "{w["end"]}" }}]'

    return f"""
seed = 11
duration = 45
[releases]
versions = ["1.0.0", "1.1.0"]
image_kib = 16
[campaign]
release = "1.1.0"
stages = {{ canary = 1, then = ["100%"] }}
gates = {{ success = "90%", error = 1 }}
[[sites]]
id = "tokyo"
timezone = "Asia/Tokyo"
windows = {toml(open_w)}
[[sites]]
id = "chicago"
timezone = "America/Chicago"
windows = {toml(shut_w)}
[[fleet]]
count = 20
site = "tokyo"
firmware = "1.0.0"
prefix = "TYO"
[[fleet]]
count = 20
site = "chicago"
firmware = "1.0.0"
prefix = "CHI"
""".encode()


async def test_a_site_whose_window_is_shut_is_not_touched(tmp_path: Path) -> None:
    s = await run(windows_scenario(dt.datetime.now(dt.UTC)), tmp_path)
    assert_common(s)
    detail = s["stations_detail"]
    tokyo = {k: v for k, v in detail.items() if k.startswith("TYO")}
    chicago = {k: v for k, v in detail.items() if k.startswith("CHI")}
    assert len(tokyo) == len(chicago) == 20
    assert {v["verified_version"] for v in tokyo.values()} == {"1.1.0"}, tokyo
    # Chicago's window opens in three hours: not one download, still on its verified image,
    # its runs waiting.
    assert {v["verified_version"] for v in chicago.values()} == {"1.0.0"}
    assert all(v["downloads"] == 0 for v in chicago.values()), chicago
    assert {s["runs"][k]["state"] for k in chicago} == {"waiting"}, s["runs"]
    assert s["campaign"]["counts"]["succeeded"] == 20
    assert s["checks"]["installs_seen"] >= 20
