"""Run a scenario: server, releases, sites, stations, campaign, faults, checks, summary.

summary = asyncio.run(run_scenario(scenario, SimOptions(start_server=True)))

"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live

from chargeward.agent.config import AgentConfig
from chargeward.agent.location import LAB_LOOPBACK
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity
from chargeward.errors import ConfigError
from chargeward.local import LabTls
from chargeward.model.firmware import ImageHeader
from chargeward.procinfo import cpu_seconds, raise_fd_limit, rss_kib
from chargeward.progress import progress_bar
from chargeward.sim import flash as flash_mod
from chargeward.sim import server as backend
from chargeward.sim.checks import Checks, check_run
from chargeward.sim.link import SiteLink
from chargeward.sim.plan import StationPlan, controller_plans, plan_fleet
from chargeward.sim.protocols import mark_legacy, protocol_counts
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
OPEN_TIMEOUT = 60.0  # the sessions due at the start: each one call (CALL_TIMEOUT) or less

# The simulated backend, its site links and Local Controllers all listen on 127.0.0.1: the
# stations' location policy allows loopback, deliberately (a lab setting, ADR 0023).
SIM_LOCATIONS = LAB_LOOPBACK


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
    # The started server's HTTP listener on https with a lab CA (ADR 0025): the stations trust
    # it as their CSMS root and download through CONNECT tunnels in their site links.
    https: bool = False
    # The simulator, as the operator, marks the legacy OCPP 1.6 stations whose plan says so
    # (PATCH legacy_firmware_update) at bring-up; False: the caller does (the demo's operator).
    mark_legacy: bool = True


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
            tuf_root=kw["tuf_root"],
            csms_roots_pem=kw.get("csms_roots"),  # https downloads from a lab CSMS
        )


def log_to(path: Path) -> None:
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


@dataclass(frozen=True)
class Trust:
    """The TUF side for the agents: the root they are made with and the repository they ask."""

    tuf_root: bytes
    repository_url: str


class Simulation:
    """A fleet of real agents on simulated flash and links, against one server.

    ``bring_up`` registers and provisions the fleet and starts every station; ``follow`` shows
    a campaign live until it ends; ``shut_down`` stops the stations and links.
    """

    def __init__(
        self, scenario: Scenario, opts: SimOptions, console: Console, trust: Trust | None = None
    ) -> None:
        self.scenario = scenario
        self.opts = opts
        self.console = console
        self.trust = trust
        self.plans = plan_fleet(scenario)
        self.controller_plans = controller_plans(scenario)
        self.controllers: list[SimStation] = []  # the sites' Local Controllers (not targets)
        self.links: dict[str, SiteLink] = {}
        self.stations: list[SimStation] = []
        self.by_id: dict[str, SimStation] = {}
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.t0 = asyncio.Event()  # sessions and offline times count from the first campaign
        self.figures: dict[str, float] = {}

    async def sessions_opened(self) -> None:
        """Wait until every station's sessions due at the start have begun (bounded)."""
        waits = [st.opened.wait() for st in self.stations]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), OPEN_TIMEOUT)

    def link_stats(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for link in self.links.values():
            total.update(link.stats)
        return total

    async def start_links(self, srv: backend.Backend) -> None:
        ocpp, http = srv.upstreams()
        tls = srv.link_tls()  # https: the links tunnel (CONNECT) and terminate the lab TLS
        for site in self.scenario.sites.values():
            link = SiteLink(
                site.id,
                ocpp,
                http,
                latency=site.link.latency_ms / 1000,
                bandwidth=site.link.bandwidth,
                station_bandwidth=site.link.station_bandwidth,
                faults=lambda sid: (
                    self.by_id[sid].next_download_fault() if sid in self.by_id else None
                ),
                tls=tls,
            )
            await link.start()
            self.links[site.id] = link

    def make_stations(self, root: Path, srv: backend.Backend) -> None:
        """One agent per plan.  A station whose site link is ideal (no latency, no cap) and
        which has no link fault planned connects to the server directly: a proxy would only
        copy its bytes, at three descriptors per station instead of one."""
        test = self_test_for(self.scenario.faults.bad_release)
        for p in self.plans:
            link = self.links[p.site]
            direct = link.ideal and not p.faults.uses_link
            rng = random.Random(f"{self.scenario.seed}:{p.station_id}:reconnect")  # noqa: S311
            config = AgentConfig(
                state_dir=root / p.station_id,
                csms_url=srv.ocpp_url if direct else link.ocpp_url,
                reconnect_delay=1.0 + rng.random() * 2,
                reconnect_repeat_times=3,  # at most 8 times the delay: the fleet comes back
                reboot_delay=1.0,
                response_timeout=60,
                trial_health_timeout=60,
                default_retries=3,
                default_retry_interval=2,
                download_proxy=None if direct else link.proxy_url,
                repository_url=self.trust.repository_url if self.trust else None,
                self_test=test,
                location_policy=SIM_LOCATIONS,
                ocpp_version=p.ocpp.version,
                legacy_firmware_update=p.ocpp.legacy,
            )
            flash = flash_mod.Flash(root / p.station_id, p.faults.power_cut_step)
            st = SimStation(p, flash, config)
            self.stations.append(st)
            self.by_id[p.station_id] = st

    def make_controllers(self, root: Path) -> None:
        """One Local Controller per site that has one: an agent that also serves published
        firmware on the site's LAN; its own downloads cross the site's WAN link."""
        for p in self.controller_plans:
            link = self.links[p.site]
            port = free_port()
            link.add_lan("127.0.0.1", port)
            config = AgentConfig(
                state_dir=root / p.station_id,
                csms_url=link.ocpp_url,
                reconnect_delay=1.0,
                reboot_delay=1.0,
                response_timeout=60,
                default_retries=3,
                default_retry_interval=2,
                download_proxy=link.proxy_url,
                local_cache_listen=f"127.0.0.1:{port}",
                local_cache_url=f"http://127.0.0.1:{port}",
                location_policy=SIM_LOCATIONS,
            )
            flash = flash_mod.Flash(root / p.station_id, None)
            self.controllers.append(SimStation(p, flash, config))

    async def bring_up(
        self,
        srv: backend.Backend,
        api: httpx.AsyncClient,
        bundles: Mapping[str, Path],
        roots_pem: bytes,
        root: Path,
    ) -> None:
        """Sites, registration, links, provisioning (factory images), then every station
        started and connected (or the connect deadline passed)."""
        t_setup = time.perf_counter()
        n = len(self.plans)
        with progress_bar(self.console) as bar:
            await backend.ensure_sites(api, list(self.scenario.sites.values()))
            task = bar.add_task("registering stations", total=n)
            everyone = self.plans + self.controller_plans
            passwords = await backend.register(srv, everyone, lambda k: bar.advance(task, k))
            for p in self.controller_plans:
                await backend.call(
                    api, "PATCH", f"/api/v1/stations/{p.station_id}",
                    json={"tags": ["local-controller"]},
                )  # fmt: skip
            if self.opts.mark_legacy:
                self.figures["legacy_marked"] = len(await mark_legacy(api, self.plans))
            await self.start_links(srv)
            self.figures["rss_before_stations_kib"] = rss_kib()
            tuf_root = self.trust.tuf_root if self.trust else None
            task = bar.add_task("provisioning (factory image verified)", total=n)
            for start in range(0, len(everyone), 200):
                batch = everyone[start : start + 200]
                await asyncio.to_thread(
                    _provision, batch, root, passwords,
                    bundles=bundles, roots_pem=roots_pem, tuf_root=tuf_root,
                    csms_roots=srv.csms_roots,
                )  # fmt: skip
                bar.advance(task, min(len(batch), max(0, n - start)))
            self.make_stations(root, srv)
            self.make_controllers(root)
            self.figures["registered_s"] = time.perf_counter() - t_setup
            cpu0 = self._server_cpu(srv)
            t_connect = time.perf_counter()
            for st in self.stations + self.controllers:
                link = self.links[st.plan.site]
                self.tasks.append(asyncio.create_task(st.run(self.stop, link, self.t0)))
            task = bar.add_task("connecting (BootNotification accepted)", total=n)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60 + n * 0.05
            while (self.connected < n or not self.controllers_up) and loop.time() < deadline:
                bar.update(task, completed=self.connected)
                await asyncio.sleep(0.5)  # agents have no shared "connected" event to wait on
        self.figures["connect_s"] = time.perf_counter() - t_connect
        self.figures["server_cpu_connect_s"] = self._server_cpu(srv) - cpu0
        self.figures["rss_connected_kib"] = rss_kib()
        self.figures["setup_s"] = time.perf_counter() - t_setup

    @staticmethod
    def _server_cpu(srv: backend.Backend) -> float:
        return cpu_seconds(srv.pid) if srv.pid is not None else 0.0

    @property
    def controllers_up(self) -> bool:
        return all(c.online for c in self.controllers)

    @property
    def connected(self) -> int:
        return sum(st.online for st in self.stations)

    async def follow(
        self, srv: backend.Backend, api: httpx.AsyncClient, cid: int, title: str = ""
    ) -> dict[str, Any]:
        """Show campaign ``cid`` live until it has ended (or the scenario's duration passed);
        returns it, with ``wall_s`` and the server's ``cpu_s`` over that span."""
        if not self.t0.is_set():
            self.t0.set()
        cpu0, sim_cpu0 = self._server_cpu(srv), cpu_seconds(os.getpid())
        started = time.perf_counter()
        with Live(console=self.console, refresh_per_second=2, transient=True) as view:
            while True:
                campaign = await backend.call(api, "GET", f"/api/v1/campaigns/{cid}")
                elapsed = time.perf_counter() - started
                if self.opts.live:
                    snap = snapshot(self.stations, campaign, elapsed)
                    view.update(live(snap, self.link_stats(), title))
                if self.done(campaign, elapsed):
                    break
                await asyncio.sleep(1.0)
        campaign["wall_s"] = time.perf_counter() - started
        campaign["cpu_s"] = self._server_cpu(srv) - cpu0
        campaign["sim_cpu_s"] = cpu_seconds(os.getpid()) - sim_cpu0
        return dict(campaign)

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

    async def shut_down(self) -> None:
        self.stop.set()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
            self.tasks.clear()
        for link in self.links.values():
            await link.close()


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
    made = make_releases(
        work,
        scenario.versions,
        image_bytes=scenario.image_bytes,
        models=models,
        change=scenario.image_change,
    )
    if opts.start_server:
        srv = backend.Backend.start(
            work / "server",
            made.root_pem,
            work / "server.log",
            made.passphrase,
            tls=LabTls.create() if opts.https else None,
        )
    else:
        if opts.server_url is None or opts.data_dir is None:
            raise ConfigError("give --server URL and --data-dir DIR, or --start-server")
        srv = backend.Backend.existing(opts.server_url, opts.data_dir)
    log_to(work / "agents.log")
    flash_mod.install_hook()
    try:
        return await _run(sim, srv, made.bundles, made.root_pem.read_bytes(), root)
    finally:
        await sim.shut_down()
        flash_mod.remove_hook()
        srv.stop()
        flash_mod.remove_root(root)


async def _run(
    sim: Simulation,
    srv: backend.Backend,
    bundles: dict[str, Path],
    roots_pem: bytes,
    root: Path,
) -> dict[str, Any]:
    scenario = sim.scenario
    target = scenario.campaign["release"]
    later = {target: bundles[target]} if scenario.deltas else {}
    async with srv.client() as api:
        # With deltas, the release to roll out comes after the fleet reported what it runs:
        # the server makes its deltas from those versions at upload.
        release_ids = await backend.upload_releases(
            api, {v: b for v, b in bundles.items() if v not in later}
        )
        await sim.bring_up(srv, api, bundles, roots_pem, root)
        release_ids |= await backend.upload_releases(api, later)
        sim.t0.set()
        await sim.sessions_opened()  # sessions at 0 s are running when the campaign starts
        doc = {**CAMPAIGN_DEFAULTS, **scenario.campaign}
        doc["release"] = release_ids[scenario.campaign["release"]]
        if sim.controllers:  # the chargers, not their sites' Local Controllers
            doc.setdefault("target", {"stations": [p.station_id for p in sim.plans]})
        doc.setdefault("target", {"models": sorted({p.model for p in sim.plans})})
        created = await backend.call(api, "POST", "/api/v1/campaigns", json=doc)
        campaign = await sim.follow(srv, api, created["id"])
        runs = await backend.call(api, "GET", f"/api/v1/campaigns/{created['id']}/stations")
        campaign["downloads"] = await backend.call(
            api, "GET", f"/api/v1/campaigns/{created['id']}/downloads"
        )
        checks = None
        if sim.opts.checks:
            checks = await check_run(api, sim.stations, scenario.sites, campaign, len(runs))
    await sim.shut_down()
    summary = summarize(sim, campaign, runs, checks)
    if sim.opts.live:
        sim.console.print(summary_table(summary))
    return summary


def summarize(
    sim: Simulation,
    campaign: Mapping[str, Any],
    runs: list[dict[str, Any]],
    checks: Checks | None,
) -> dict[str, Any]:
    """The run as a JSON document: the campaign, final versions on flash, faults, costs."""
    scenario, f = sim.scenario, sim.figures
    n = len(sim.stations)
    final = Counter(st.flash.verified_version() or "unverified" for st in sim.stations)
    rss0, rss_connected = f.get("rss_before_stations_kib", 0), f.get("rss_connected_kib", 0)
    return {
        "scenario": scenario.source,
        "seed": scenario.seed,
        "stations": n,
        "setup_s": round(f.get("setup_s", 0.0), 1),
        "wall_s": round(campaign["wall_s"], 1),
        "campaign": {
            "id": campaign["id"],
            "status": campaign["status"],
            "pause_reason": campaign.get("pause_reason"),
            "counts": dict(campaign["counts"]),
            "deferred_charging": campaign["deferred_charging"],
            "targeted": len(runs),
        },
        "runs": {r["station_id"]: {"state": r["state"], "stage": r["stage"]} for r in runs},
        "final_versions": dict(sorted(final.items())),
        "protocols": protocol_counts(sim.stations, runs),
        "legacy_marked": int(f.get("legacy_marked", 0)),
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
        "bytes": {
            "server_sent": campaign["downloads"]["bytes_sent"],
            "wan": sim.link_stats().get("wan bytes", 0),
            "lan": sim.link_stats().get("lan bytes", 0),
            "image": scenario.image_bytes,
            "local_caches": [c["status"] for c in campaign["downloads"]["local_caches"]],
        },
        "sessions": sum(len(st.record.sessions) for st in sim.stations),
        "refused_sessions": sum(st.record.refused_sessions for st in sim.stations),
        "memory": {
            "rss_before_stations_kib": rss0,
            "rss_connected_kib": rss_connected,
            "rss_end_kib": rss_kib(),
            "per_station_kib": (rss_connected - rss0) / n if n else 0.0,
        },
        "connect_s": round(f.get("connect_s", 0.0), 1),
        "server_cpu_s": round(campaign["cpu_s"], 2),
        "server_cpu_ms_per_station": campaign["cpu_s"] / n * 1000 if n else 0.0,
        "server_cpu_ms_per_connect": f.get("server_cpu_connect_s", 0.0) / n * 1000 if n else 0.0,
        "sim_cpu_ms_per_station": campaign.get("sim_cpu_s", 0.0) / n * 1000 if n else 0.0,
        "checks": checks.to_dict() if checks is not None else None,
        "stations_detail": {
            st.plan.station_id: {
                "site": st.plan.site,
                "ocpp": st.plan.ocpp.label,
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


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
