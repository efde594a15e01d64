"""Fleet simulator benchmark: a rollout over N simulated stations (real agents in one process)
through the real server.

Run ``python -m benchmarks.bench_sim`` (default 1,000 stations; ``--stations 10000``).
Reports wall time (campaign start to completion), server CPU per station (user + system,
``/proc``, over the same span) and the simulator's memory per connected station (RSS growth
from before the agents started to all connected).  Figures are merged into
``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console

from benchmarks.report import RESULTS_DIR, write_results
from chargeward.sim.runner import SimOptions, run_scenario
from chargeward.sim.scenario import parse_scenario

SCENARIO = b"""
seed = 1
duration = 1800
[releases]
versions = ["1.0.0", "1.1.0"]
image_kib = 32
[campaign]
release = "1.1.0"
stages = { canary = "1%", then = ["25%", "100%"] }
gates = { success = "95%", error = "5%" }
soak = "1s"
concurrency = { global = 1000, per_site = 1000, keep_available = 0 }
[[sites]]
id = "bench"
timezone = "UTC"
[[fleet]]
count = 1000
site = "bench"
firmware = "1.0.0"
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=1000)
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 100))
    scenario = parse_scenario(SCENARIO, "bench_sim").scaled(args.stations)
    summary = asyncio.run(run_scenario(scenario, SimOptions(checks=False, live=True), console))
    out: dict[str, Any] = {
        "stations": summary["stations"],
        "status": summary["campaign"]["status"],
        "succeeded": summary["campaign"]["counts"]["succeeded"],
        "setup_s": summary["setup_s"],
        "wall_s": summary["wall_s"],
        "server_cpu_ms_per_station": round(summary["server_cpu_ms_per_station"], 2),
        "sim_memory_kib_per_station": round(summary["memory"]["per_station_kib"], 1),
        "pass": summary["campaign"]["counts"]["succeeded"] == summary["stations"],
    }
    console.print(out)
    write_results(RESULTS_DIR / "latest.json", {f"sim_rollout_{args.stations}": out})
    return 0 if out["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
