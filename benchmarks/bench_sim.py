"""Fleet simulator benchmark: rollouts to 1,000 and 10,000 simulated stations (the real agent
code, one process) through the real server.

Run ``make bench`` or ``python -m benchmarks.bench_sim`` (``--stations 200 --rollouts 2``
for a quick look; ``--database sqlite`` or ``postgresql`` per fleet size).

For each fleet size one server process is started (by default SQLite for 1,000 stations,
PostgreSQL on 127.0.0.1:5432 for 10,000: the embedded default and the configuration for
scale) and the fleet is registered, provisioned with 1.0.0 and connected.  Then
``--rollouts`` campaigns run one after the other (1.0.0 -> 1.1.0 -> 1.2.0 ...), each canary
1 %, then 25 %, then 100 %, every station downloading, verifying, installing into its
inactive slot, rebooting, reconnecting and committing.  Per rollout:

- wall time from ``campaign create`` to completed (every station succeeded, and every
  station's flash then verifies the new version);
- server CPU (user + system, ``/proc``) over the same span, per station; the baseline in the
  same run is the server's CPU per station for the fleet's first connect + BootNotification;
- the simulator's own CPU per station (the agents' side: TLS-free OCPP, download, verify,
  flash writes).

Memory: the simulator's RSS growth from before the agents started to all connected, per
station.  Medians over the rollouts, with min and max.  Figures are merged into
``benchmarks/results/latest.json`` (``sim_rollout_<N>``) and ``latest.md`` (``sim_rollout``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from benchmarks.fixtures import scratch_postgres
from benchmarks.report import RESULTS_DIR, markdown_table, verdict, write_markdown, write_results
from benchmarks.timing import Stats
from chargeward.procinfo import raise_fd_limit
from chargeward.sim import flash as flash_mod
from chargeward.sim import server as backend
from chargeward.sim.releases import make_releases
from chargeward.sim.runner import CAMPAIGN_DEFAULTS, SimOptions, Simulation, log_to
from chargeward.sim.scenario import Scenario, parse_scenario

MODEL = "AC22"  # the scenario's default model

SCENARIO = b"""
seed = 1
duration = 3600
[releases]
versions = ["1.0.0"]
image_kib = 32
[campaign]
release = "1.0.0"
[[sites]]
id = "bench"
timezone = "UTC"
[[fleet]]
count = 1
site = "bench"
firmware = "1.0.0"
"""
CAMPAIGN = {
    "stages": {"canary": "1%", "then": ["25%", "100%"]},
    "gates": {"success": "95%", "error": "5%"},
    "soak": "1s",
    "concurrency": {"global": 1000, "per_site": 1000, "keep_available": 0},
}


def fleet(stations: int, rollouts: int, image_kib: int) -> Scenario:
    base = parse_scenario(SCENARIO, "bench_sim").scaled(stations)
    versions = [f"1.{n}.0" for n in range(rollouts + 1)]
    return Scenario(**{**base.__dict__, "versions": versions, "image_bytes": image_kib << 10})


@contextlib.asynccontextmanager
async def database(kind: str) -> AsyncIterator[str | None]:
    if kind == "sqlite":
        yield None
        return
    async with scratch_postgres() as url:
        yield url


async def one_fleet(
    console: Console, stations: int, rollouts: int, kind: str, image_kib: int
) -> dict[str, Any]:
    raise_fd_limit()
    scenario = fleet(stations, rollouts, image_kib)
    with tempfile.TemporaryDirectory(prefix="cw-bench-sim-") as tmp:
        work = Path(tmp)
        made = make_releases(
            work, scenario.versions, image_bytes=scenario.image_bytes, models=[MODEL]
        )
        root = flash_mod.flash_root("cw-bench-sim-")
        async with database(kind) as url:
            srv = backend.Backend.start(
                work / "server", made.root_pem, work / "server.log", made.passphrase,
                database_url=url,
            )  # fmt: skip
            sim = Simulation(scenario, SimOptions(checks=False), console)
            log_to(work / "agents.log")
            flash_mod.install_hook()
            try:
                return await _rollouts(console, sim, srv, made.bundles, made.root_pem, root)
            finally:
                await sim.shut_down()
                flash_mod.remove_hook()
                srv.stop()
                flash_mod.remove_root(root)


async def _rollouts(
    console: Console,
    sim: Simulation,
    srv: backend.Backend,
    bundles: dict[str, Path],
    root_pem: Path,
    root: Path,
) -> dict[str, Any]:
    n = len(sim.plans)
    runs: list[dict[str, Any]] = []
    async with srv.client() as api:
        ids = await backend.upload_releases(api, bundles)
        await sim.bring_up(srv, api, bundles, root_pem.read_bytes(), root)
        if sim.connected < n:
            raise RuntimeError(f"only {sim.connected} of {n} stations connected")
        console.print(
            f"{n:,} stations connected in {sim.figures['connect_s']:.1f} s "
            f"(setup {sim.figures['setup_s']:.0f} s)"
        )
        for version in sim.scenario.versions[1:]:
            doc = {**CAMPAIGN_DEFAULTS, **CAMPAIGN, "name": f"bench-{version}"}
            doc |= {"release": ids[version], "target": {"models": [MODEL]}}
            made = await backend.call(api, "POST", "/api/v1/campaigns", json=doc)
            c = await sim.follow(srv, api, made["id"], f"rollout of {version} to {n:,} stations")
            on_flash = sum(st.flash.verified_version() == version for st in sim.stations)
            runs.append({
                "version": version,
                "status": c["status"],
                "succeeded": c["counts"]["succeeded"],
                "verified_on_flash": on_flash,
                "wall_s": c["wall_s"],
                "server_cpu_ms_per_station": c["cpu_s"] / n * 1000,
                "sim_cpu_ms_per_station": c["sim_cpu_s"] / n * 1000,
            })  # fmt: skip
            console.print(
                f"{version}: {c['status']}, {c['counts']['succeeded']:,} succeeded, "
                f"{on_flash:,} verified on flash, {c['wall_s']:.1f} s, server CPU "
                f"{runs[-1]['server_cpu_ms_per_station']:.1f} ms per station"
            )
    f = sim.figures
    return {
        "runs": runs,
        "connect_s": f["connect_s"],
        "setup_s": f["setup_s"],
        "server_cpu_ms_per_connect": f["server_cpu_connect_s"] / n * 1000,
        "sim_memory_kib_per_station": (f["rss_connected_kib"] - f["rss_before_stations_kib"]) / n,
    }


def summarize(stations: int, kind: str, measured: dict[str, Any]) -> dict[str, Any]:
    runs = measured["runs"]

    def stats(key: str) -> Stats:
        return Stats(tuple(r[key] for r in runs))

    cpu = stats("server_cpu_ms_per_station")
    base = measured["server_cpu_ms_per_connect"]
    complete = all(
        r["status"] == "completed" and r["succeeded"] == r["verified_on_flash"] == stations
        for r in runs
    )
    return {
        "stations": stations,
        "database": kind,
        "rollouts": len(runs),
        "all_completed": complete,
        "wall_s": stats("wall_s").to_dict(),
        "stations_per_s": round(stations / statistics.median(r["wall_s"] for r in runs), 1),
        "server_cpu_ms_per_station": _ms(cpu),
        "baseline_server_cpu_ms_per_connect": round(base, 2),
        "ratio": round(cpu.median / base, 1) if base else None,
        "sim_cpu_ms_per_station": _ms(stats("sim_cpu_ms_per_station")),
        "sim_memory_kib_per_station": round(measured["sim_memory_kib_per_station"], 1),
        "connect_s": round(measured["connect_s"], 1),
        "setup_s": round(measured["setup_s"], 1),
        "runs": runs,
        "pass": complete,
    }


def _ms(s: Stats) -> dict[str, Any]:
    return {"median_ms": round(s.median, 2), "min_ms": round(s.min, 2), "max_ms": round(s.max, 2)}


def _range(d: dict[str, Any], unit: str) -> str:
    keys = ("median_s", "min_s", "max_s") if "median_s" in d else ("median_ms", "min_ms", "max_ms")
    med, lo, hi = (d[k] for k in keys)
    return f"{med:,.1f} {unit} ({lo:,.1f}-{hi:,.1f})"


def rows(results: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            f"{r['stations']:,} ({r['database']}, {r['rollouts']} rollouts)",
            _range(r["wall_s"], "s"),
            _range(r["server_cpu_ms_per_station"], "ms"),
            f"{r['baseline_server_cpu_ms_per_connect']:.1f} ms",
            f"{r['ratio']}",
            _range(r["sim_cpu_ms_per_station"], "ms"),
            f"{r['sim_memory_kib_per_station']:,.0f} KiB",
            "yes" if r["all_completed"] else "NO",
        ]
        for r in results
    ]


HEADERS = [
    "stations",
    "rollout wall time",
    "server CPU per station",
    "baseline: server CPU per connect + boot",
    "ratio",
    "simulator CPU per station",
    "simulator RSS per station",
    "all on the new version",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--rollouts", type=int, default=3, help="campaigns per fleet")
    parser.add_argument(
        "--database",
        choices=("auto", "sqlite", "postgresql"),
        default="auto",
        help="auto: SQLite up to 2,000 stations, PostgreSQL above",
    )
    parser.add_argument("--image-kib", type=int, default=32)
    args = parser.parse_args(argv)
    if args.rollouts < 1 or any(n < 1 for n in args.stations):
        parser.error("--stations and --rollouts must be at least 1")
    console = Console(width=max(Console().width, 120))
    results = []
    for n in args.stations:
        kind = args.database if args.database != "auto" else "sqlite" if n <= 2000 else "postgresql"
        console.rule(f"{n:,} simulated stations, {kind}, {args.rollouts} rollouts")
        measured = asyncio.run(one_fleet(console, n, args.rollouts, kind, args.image_kib))
        results.append(summarize(n, kind, measured))
        write_results(RESULTS_DIR / "latest.json", {f"sim_rollout_{n}": results[-1]})
    table = Table(title="simulated rollouts through the real server (median, min-max)")
    for h in HEADERS:
        table.add_column(h, justify="left" if h == "stations" else "right")
    for row in rows(results):
        table.add_row(*row)
    console.print(table)
    write_markdown(RESULTS_DIR / "latest.md", "sim_rollout", markdown_table(HEADERS, rows(results)))
    ok = all(r["pass"] for r in results)
    console.print(f"every rollout completed with every station verified: {verdict(ok)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
