"""The fleet simulator's bandwidth scenarios against a real server process: 20 chargers on
one site with 256 kbit/s lines, a minor release (5 % of the image changed), rolled out with a
Local Controller (the image crosses the WAN once) and with deltas (each charger fetches a
small delta instead of the image).  Every station ends verified on the new release."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from chargeward.sim.runner import SimOptions, run_scenario
from chargeward.sim.scenario import parse_scenario

pytestmark = pytest.mark.slow  # two 20-station rollouts over capped lines

SITE = """
seed = 5
duration = 300
[releases]
versions = ["1.0.0", "1.1.0"]
image_kib = 64
change = 0.05
deltas = DELTAS
[campaign]
release = "1.1.0"
stages = { canary = 1, then = ["100%"] }
concurrency = { global = 50, per_site = 50, keep_available = 0 }
[[sites]]
id = "depot"
timezone = "Europe/London"
windows = "always"
local_controller = CONTROLLER
link = { latency_ms = 20, station_bandwidth = 32_000 }
[[fleet]]
count = 20
site = "depot"
firmware = "1.0.0"
"""


async def _run(tmp: Path, *, deltas: bool, controller: bool) -> dict[str, Any]:
    doc = SITE.replace("DELTAS", str(deltas).lower()).replace("CONTROLLER", str(controller).lower())
    scenario = parse_scenario(doc.encode(), "bandwidth.toml")
    s = await run_scenario(scenario, SimOptions(workdir=tmp, live=False), Console(quiet=True))
    assert s["campaign"]["status"] == "completed", s["campaign"]
    assert s["final_versions"] == {"1.1.0": 20}
    assert s["checks"]["unverified"] == []
    return s


async def test_a_local_controller_carries_the_image_over_the_wan_once(tmp_path: Path) -> None:
    s = await _run(tmp_path, deltas=False, controller=True)
    b = s["bytes"]
    image = b["image"]
    # One image (and its envelope) from the server, to the controller; 20 over the LAN.
    assert image < b["server_sent"] < image * 1.1, b
    assert image < b["wan"] < image * 1.2, b
    assert b["lan"] > 20 * image, b
    assert b["local_caches"] == ["Unpublished"]


async def test_deltas_cut_what_each_charger_downloads(tmp_path: Path) -> None:
    s = await _run(tmp_path, deltas=True, controller=False)
    b = s["bytes"]
    # 5 % of the image changed: each delta is a small fraction of a full download.
    assert b["server_sent"] < 20 * b["image"] * 0.15, b
    assert b["lan"] == 0 and b["local_caches"] == []
