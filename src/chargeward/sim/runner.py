"""Run a scenario: server, releases, sites, stations, campaign, faults, checks, summary.

>>> summary = asyncio.run(run_scenario(scenario, SimOptions(start_server=True)))
...                                                                   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from chargeward.agent.agent import AgentConfig
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity
from chargeward.errors import ConfigError
from chargeward.model.firmware import ImageHeader
from chargeward.procinfo import cpu_seconds, raise_fd_limit, rss_kib
from chargeward.sim import flash as flash_mod
from chargeward.sim import server as backend
from chargeward.sim.checks import check_run
from chargeward.sim.link import SiteLink
from chargeward.sim.plan import StationPlan, plan_fleet
from chargeward.sim.releases import make_releases
from chargeward.sim.scenario import Scenario
from chargeward.sim.station import SimStation
from chargeward.sim.view import live, snapshot, summary_table

CAMPAIGN_DEFAULTS: dict[str, Any] = {
    "name": "sim",
    "stages": {"canary": 1, "then": ["100%"]},
    "gates": {"success": "90%", "error": 1},
    "soak": "2s",
    "jitter": 0,
    "download_ahead": 0,
    "retry_interval": 2,
    "concurrency": {"global": 500, "per_site": 500, "keep_available": 0},
    "timeouts": {"response": "60s", "download": "300s", "install": "120s", "reboot": "120s"},
}
FINISHED = ("completed", "paused", "aborted")


@dataclass
class SimOptions:
    start_server: bool = True
    server_url: str | None = None
    data_dir: Path | None = None
    stations: int | None = None
    seed: int | None = None
    until_version: str | None = None
    duration: float | None = None
    checks: bool = True
    live: bool = True
    workdir: Path | None = None


def self_test_for(bad: str | None) -> Callable[[ImageHeader], str | None] | None:
    if bad is None:
        return None

    def self_test(header: ImageHeader) -> str | None:
        if header.version == bad:
            return f"charging application of {bad} crashed at start-up"
        return None

    return self_test


def _provision(
    plans: list[StationPlan], root: Path, passwords: Mapping[str, str], **kw: Any
) -> None:
    for p in plans:
        provision(
            root / p.station_id,
            identity=Identity(p.station_id, p.model, "Demo Chargers Ltd", p.station_id),
            password=passwords[p.station_id],
            factory_bundle=kw["bundles"][p.firmware],
            roots_pem=kw["roots_pem"],
        )


def _log_to(path: Path) -> None:
    """The agents' logs go to a file in the work directory, not over the live view."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("chargeward")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def _configure(scenario: Scenario, opts: SimOptions) -> Scenario:
    if opts.stations is not None:
        scenario = scenario.scaled(opts.stations)
    if opts.seed is not None:
        scenario = Scenario(**{**scenario.__dict__, "seed": opts.seed})
    if opts.duration is not None:
        scenario = Scenario(**{**scenario.__dict__, "duration": opts.duration})
    if opts.until_version is not None and opts.until_version not in scenario.versions:
        raise ConfigError(f"--until-version {opts.until_version} is not in releases.versions")
    return scenario


class Simulation:
    def __init__(self, scenario: Scenario, opts: SimOptions, console: Console) -> None:
        self.scenario = scenario
        self.opts = opts
        self.console = console
        self.plans = plan_fleet(scenario)
        self.links: dict[str, SiteLink] = {}
        self.stations: list[SimStation] = []
        self.by_id: dict[str, SimStation] = {}

    def link_stats(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for link in self.links.values():
            total.update(link.stats)
        return total

    async def start_links(self, srv: backend.Backend) -> None:
        ocpp, http = srv.upstreams()
        for site in self.scenario.sites.values():
            link = SiteLink(
                site.id,
                ocpp,
                http,
                latency=site.link.latency_ms / 1000,
                bandwidth=site.link.bandwidth,
                faults=lambda sid: (
                    self.by_id[sid].next_download_fault() if sid in self.by_id else None
                ),
            )
            await link.start()
            self.links[site.id] = link

    def make_stations(self, root: Path) -> None:
        test = self_test_for(self.scenario.faults.bad_release)
        for p in self.plans:
            link = self.links[p.site]
            rng = random.Random(f"{self.scenario.seed}:{p.station_id}:reconnect")  # noqa: S311
            config = AgentConfig(
                state_dir=root / p.station_id,
                csms_url=link.ocpp_url,
                reconnect_delay=1.0 + rng.random() * 2,
                response_timeout=60,
                trial_health_timeout=60,
                default_retries=3,
                default_retry_interval=2,
                download_proxy=link.proxy_url,
                self_test=test,
            )
            flash = flash_mod.Flash(root / p.station_id, p.faults.power_cut_step)
            st = SimStation(p, flash, config)
            self.stations.append(st)
            self.by_id[p.station_id] = st

    def done(self, campaign: Mapping[str, Any] | None, elapsed: float) -> bool:
        if elapsed >= self.scenario.duration:
            return True
        want = self.opts.until_version
        if want is not None:
            return all(st.version == want for st in self.stations)
        if campaign is None or campaign["status"] not in FINISHED:
            return False
        # Finished: wait for the stations still mid-update (an abort leaves installs running).
        busy = {"dispatched", "downloading", "installing", "rebooting", "soaking"}
        return not any(campaign["counts"].get(s) for s in busy)


async def run_scenario(
    scenario: Scenario, opts: SimOptions, console: Console | None = None
) -> dict[str, Any]:
    console = console or Console(stderr=True)
    scenario = _configure(scenario, opts)
    sim = Simulation(scenario, opts, console)
    raise_fd_limit()
    if opts.workdir is not None:
        opts.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="chargeward-sim-", dir=opts.workdir))
    root = flash_mod.flash_root()
    models = sorted({p.model for p in sim.plans})
    made = make_releases(work, scenario.versions, image_bytes=scenario.image_bytes, models=models)
    if opts.start_server:
        srv = backend.Backend.start(
            work / "server", made.root_pem, work / "server.log", made.passphrase
        )
    else:
        if opts.server_url is None or opts.data_dir is None:
            raise ConfigError("give --server URL and --data-dir DIR, or --start-server")
        srv = backend.Backend.existing(opts.server_url, opts.data_dir)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    _log_to(work / "agents.log")
    flash_mod.install_hook()
    try:
        return await _run(sim, srv, made.bundles, made.root_pem.read_bytes(), root, stop, tasks)
    finally:
        stop.set()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for link in sim.links.values():
            await link.close()
        flash_mod.remove_hook()
        srv.stop()
        flash_mod.remove_root(root)


async def _run(
    sim: Simulation,
    srv: backend.Backend,
    bundles: dict[str, Path],
    roots_pem: bytes,
    root: Path,
    stop: asyncio.Event,
    tasks: list[asyncio.Task[None]],
) -> dict[str, Any]:
    scenario, console = sim.scenario, sim.console
    t0 = asyncio.Event()  # sessions and offline times count from the campaign's start
    t_setup = time.perf_counter()
    async with srv.client() as api:
        release_ids = await backend.upload_releases(api, bundles)
        await backend.ensure_sites(api, list(scenario.sites.values()))
        passwords = await backend.register(srv.data_dir, sim.plans)
        await sim.start_links(srv)
        rss0 = rss_kib()
        for start in range(0, len(sim.plans), 200):  # provisioning verifies the factory image
            await asyncio.to_thread(
                _provision, sim.plans[start : start + 200], root, passwords,
                bundles=bundles, roots_pem=roots_pem,
            )  # fmt: skip
        sim.make_stations(root)
        for st in sim.stations:
            tasks.append(asyncio.create_task(st.run(stop, sim.links[st.plan.site], t0)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60 + len(sim.stations) * 0.05
        while sum(st.online for st in sim.stations) < len(sim.stations):
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.5)
        rss_connected = rss_kib()
        setup_s = time.perf_counter() - t_setup
        t0.set()
        await asyncio.sleep(0.5)  # sessions at 0 s are running when the campaign starts
        cpu0 = cpu_seconds(srv.pid) if srv.pid is not None else 0.0
        doc = {**CAMPAIGN_DEFAULTS, **scenario.campaign}
        doc["release"] = release_ids[scenario.campaign["release"]]
        doc.setdefault("target", {"models": sorted({p.model for p in sim.plans})})
        created = await backend.call(api, "POST", "/api/v1/campaigns", json=doc)
        cid = created["id"]
        started = time.perf_counter()
        campaign: dict[str, Any] | None = None
        with Live(console=console, refresh_per_second=2, transient=True) as view:
            while True:
                campaign = await backend.call(api, "GET", f"/api/v1/campaigns/{cid}")
                elapsed = time.perf_counter() - started
                if sim.opts.live:
                    view.update(live(snapshot(sim.stations, campaign, elapsed), sim.link_stats()))
                if sim.done(campaign, elapsed):
                    break
                await asyncio.sleep(1.0)
        wall = time.perf_counter() - started
        cpu = cpu_seconds(srv.pid) - cpu0 if srv.pid is not None else 0.0
        runs = await backend.call(api, "GET", f"/api/v1/campaigns/{cid}/stations")
        rss_end = rss_kib()
        checks = None
        if sim.opts.checks:
            checks = await check_run(api, sim.stations, scenario.sites, campaign, len(runs))
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    tasks.clear()
    n = len(sim.stations)
    final = Counter(st.flash.verified_version() or "unverified" for st in sim.stations)
    summary: dict[str, Any] = {
        "scenario": scenario.source,
        "seed": scenario.seed,
        "stations": n,
        "setup_s": round(setup_s, 1),
        "wall_s": round(wall, 1),
        "campaign": {
            "id": cid,
            "status": campaign["status"],
            "pause_reason": campaign.get("pause_reason"),
            "counts": dict(campaign["counts"]),
            "deferred_charging": campaign["deferred_charging"],
            "targeted": len(runs),
        },
        "runs": {r["station_id"]: {"state": r["state"], "stage": r["stage"]} for r in runs},
        "final_versions": dict(sorted(final.items())),
        "faults": {
            "power_cuts": sum(len(st.record.power_cuts) for st in sim.stations),
            "power_cut_steps": dict(
                Counter(c.split(":")[0] for st in sim.stations for c in st.record.power_cuts)
            ),
            "link": dict(sim.link_stats()),
            "planned": {
                "link_drop": sum(p.faults.drop_at is not None for p in sim.plans),
                "corrupt": sum(p.faults.corrupt_at is not None for p in sim.plans),
                "power_loss": sum(p.faults.power_cut_step is not None for p in sim.plans),
                "offline": sum(p.faults.offline is not None for p in sim.plans),
                "clock_skew": sum(p.faults.clock_skew != 0 for p in sim.plans),
            },
        },
        "sessions": sum(len(st.record.sessions) for st in sim.stations),
        "refused_sessions": sum(st.record.refused_sessions for st in sim.stations),
        "memory": {
            "rss_before_stations_kib": rss0,
            "rss_connected_kib": rss_connected,
            "rss_end_kib": rss_end,
            "per_station_kib": (rss_connected - rss0) / n if n else 0.0,
        },
        "server_cpu_s": round(cpu, 2),
        "server_cpu_ms_per_station": cpu / n * 1000 if n else 0.0,
        "checks": checks.to_dict() if checks is not None else None,
        "stations_detail": {
            st.plan.station_id: {
                "site": st.plan.site,
                "verified_version": st.flash.verified_version(),
                "power_cuts": st.record.power_cuts,
                "sessions": [
                    [s.start.isoformat(), s.end.isoformat() if s.end else None]
                    for s in st.record.sessions
                ],
                "downloads": st.record.downloads,
                "flash_steps_since_install": len(st.flash.steps),
            }
            for st in sim.stations
        },
    }
    if sim.opts.live:
        console.print(summary_table(summary))
    return summary
