"""Chaos under a rollout (issue 28): three server nodes on one PostgreSQL database, 125
simulated chargers, the leader SIGKILLed again and again and one node SIGSTOPped for longer
than the leader lease while a campaign runs.

The fleet simulator's real agents (simulated flash) connect through a loopback balancer
(tests/support/balancer.py) that sends each new connection to a live node, as a TCP load
balancer in front of the cluster would; the nodes tell the stations the balancer's address
for downloads.  Faults, each 10-20 s after the one before (sooner only once the campaign has
moved on):

- the leader is killed (SIGKILL) and restarted on the same data directory once another node
  leads, four times;
- after the third kill, the leader is paused (SIGSTOP) for the lease plus 4 s, then resumed;
  one charger, moved onto that node beforehand, ends its charging session during the pause
  (its TransactionEvent waits in the paused node's socket);
- at each fault another charging session ends, on the faulted node when one is there: the
  campaign deferred those chargers and must update them afterwards.

Then: the campaign completed and every charger runs the new release, verified on flash; no
charger received a second UpdateFirmware without a failure in between; neither the global
nor the per-site limit was exceeded at any time, nor a stage started before the one before it
passed; no HTTP 5xx answered the test or the simulator nor was counted by a node, and no node
logged a traceback; the server records every connected charger as connected; the audit log
exported from the database verifies.  Every broken invariant is listed with its evidence; the
figures go to reports/chaos.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from chargeward.errors import ChargewardError
from chargeward.local import run_cli
from chargeward.ocpp.base import utc_now
from chargeward.procinfo import raise_fd_limit
from chargeward.sim import flash as flash_mod
from chargeward.sim import server as backend
from chargeward.sim.checks import check_run
from chargeward.sim.releases import make_releases
from chargeward.sim.runner import CAMPAIGN_DEFAULTS, SimOptions, Simulation, log_to
from chargeward.sim.scenario import parse_scenario
from chargeward.sim.station import Session, SimStation
from tests.support.balancer import Balancer
from tests.support.chaos import Api, Chaos, Schedule, offered, wait_for
from tests.support.chaos_checks import (
    charger_spans,
    most_at_once,
    second_requests,
    server_spans,
    stages_out_of_order,
    tracebacks,
)
from tests.support.cluster_nodes import ClusterNodes, LeaderWatch, server_options
from tests.support.databases import PostgresTemplates, postgres_database

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

NODES = ("a", "b", "c")
KILLS = 4
PAUSE_AFTER_KILL = 3  # the pause comes after this many kills
GAP = (10.0, 20.0)  # seconds between faults: at least, and at most while the campaign lags
FAILOVER_TIMEOUT = 30.0
FIRST_FAULT_TIMEOUT = 60.0  # until the EV chargers' stage has started
CAMPAIGN_TIMEOUT = 210.0  # from its creation to completed
OFFLINE_SETTLE_S = 10.0
SLOW_REBOOT_S = 20.0  # a simulated reboot takes about a second
LEASE_DEFAULT = 10.0  # what --leader-lease defaults to (the pause still outlasts it)
LEASE = 3.0
GLOBAL_LIMIT, PER_SITE = 8, 3
SUCCESS_PERCENT = 90

SCENARIO = f"""
seed = 28
duration = 3600
[releases]
versions = ["1.0.0", "1.1.0"]
image_kib = 32
deltas = false
[campaign]
release = "1.1.0"
stages = {{ canary = 2, then = ["10%", "100%"] }}
gates = {{ success = "{SUCCESS_PERCENT}%", error = 3 }}
soak = "2s"
concurrency = {{ global = {GLOBAL_LIMIT}, per_site = {PER_SITE}, keep_available = 0 }}
# Above the agents' own 60 s response timeout (a status may wait that long for its answer).
timeouts = {{ response = "30s", download = "120s", install = "120s", reboot = "120s" }}
[[sites]]
id = "london"
timezone = "Europe/London"
[[sites]]
id = "tokyo"
timezone = "Asia/Tokyo"
[[sites]]
id = "chicago"
timezone = "America/Chicago"
[[sites]]
id = "sydney"
timezone = "Australia/Sydney"
[[fleet]]
count = 30
site = "london"
firmware = "1.0.0"
prefix = "LON"
[[fleet]]
count = 30
site = "tokyo"
firmware = "1.0.0"
prefix = "TYO"
[[fleet]]
count = 30
site = "chicago"
firmware = "1.0.0"
prefix = "CHI"
[[fleet]]
count = 30
site = "sydney"
firmware = "1.0.0"
prefix = "SYD"
[[fleet]]
count = {KILLS + 1}
site = "london"
firmware = "1.0.0"
prefix = "EV"
"""


@pytest.fixture
def cluster_db(postgres_templates: PostgresTemplates) -> Iterator[str]:
    with postgres_database(postgres_templates.template()) as url:
        yield url


async def test_campaign_completes_through_leader_kills_and_a_paused_node(
    tmp_path: Path, cluster_db: str
) -> None:
    started = time.monotonic()
    help_text = await asyncio.to_thread(server_options)
    lease = LEASE if "--leader-lease" in help_text else None
    scenario = parse_scenario(SCENARIO.encode(), "chaos.toml")
    raise_fd_limit()
    work = tmp_path / "work"
    work.mkdir()
    made = await asyncio.to_thread(
        make_releases, work, scenario.versions, image_bytes=scenario.image_bytes, models=["AC22"]
    )
    lb = Balancer()
    await lb.start()
    extra = [
        *("--campaign-tick", "0.5"),
        *("--campaign-approval-threshold", "1000000"),
        *("--checkpoint-interval", "5"),
        *(("--leader-lease", f"{lease:g}") if lease is not None else ()),
    ]
    env = {"CHARGEWARD_KEY_PASSPHRASE": made.passphrase, "CHARGEWARD_DATABASE_URL": cluster_db}
    data = tmp_path / "data"
    nodes = ClusterNodes(data, made.root_pem, env, lb, extra)
    watch = LeaderWatch(nodes)
    watcher: asyncio.Task[None] | None = None
    sim = Simulation(scenario, SimOptions(live=False), Console(quiet=True))
    root = flash_mod.flash_root()
    logs: list[str] = []
    figures: dict[str, Any] = {}
    try:
        for name in NODES:
            await nodes.start(name)
        watcher = asyncio.create_task(watch.run())
        await watch.wait_leader(timeout=FAILOVER_TIMEOUT)
        token = nodes.token = (data / "admin.token").read_text().strip()
        srv = backend.Backend(data, lb.http_url, lb.ocpp_url, token, database_url=cluster_db)
        api = Api(lb.http_url, token)
        log_to(work / "agents.log")
        flash_mod.install_hook()
        try:
            figures = await _run(sim, srv, api, nodes, watch, lease, made, root, started)
            for name in NODES:
                await nodes.read_5xx(name)
        finally:
            await sim.shut_down()
            flash_mod.remove_hook()
            await api.client.aclose()
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        logs = await asyncio.to_thread(nodes.stop_all)
        await lb.close()
        flash_mod.remove_root(root)

    export = tmp_path / "audit.jsonl"
    figures["audit"] = await _verify_audit(export, data, env)
    for sid, stuck in figures.get("not_succeeded", {}).items():  # its audit trail, as evidence
        if export.exists():
            lines = [x for x in export.read_text().splitlines() if f'"{sid}"' in x]
            stuck["audit"] = [x[:240] for x in lines[-25:]]
    figures["server_5xx"] = dict(nodes.http_5xx)
    crashes: Counter[str] = Counter()
    for text in logs:
        crashes += tracebacks(text)
    figures["server_tracebacks"] = dict(crashes)
    figures["wall_s"] = round(time.monotonic() - started, 1)
    _report(figures)
    problems = _problems(figures)
    assert not problems, "\n".join([figures["summary"], *problems])


async def _verify_audit(export: Path, data: Path, env: dict[str, str]) -> dict[str, Any]:
    """Export the audit log from the database every node wrote, and verify it offline."""
    vkey = data / "audit" / "checkpoint.vkey"
    try:
        await asyncio.to_thread(
            run_cli,
            ["audit", "export", "--data-dir", str(data), "--offline", "--out", str(export)],
            env,
        )
        out = await asyncio.to_thread(
            run_cli, ["audit", "verify", str(export), "--vkey", str(vkey)]
        )
    except ChargewardError as e:
        return {"ok": False, "error": str(e)[-1000:]}
    return {"ok": True, "lines": sum(1 for _ in export.open()), "verify": out.strip()[-300:]}


async def _run(
    sim: Simulation,
    srv: backend.Backend,
    api: Api,
    nodes: ClusterNodes,
    watch: LeaderWatch,
    lease: float | None,
    made: Any,
    root: Path,
    started: float,
) -> dict[str, Any]:
    scenario = sim.scenario
    release_ids = await backend.upload_releases(api.client, made.bundles)
    await sim.bring_up(srv, api.client, made.bundles, made.root_pem.read_bytes(), root)
    n = len(sim.stations)
    assert sim.connected == n, f"{sim.connected} of {n} chargers connected"
    sim.t0.set()
    ev = [st for st in sim.stations if st.plan.station_id.startswith("EV-")]
    pause_s = (lease if lease is not None else LEASE_DEFAULT) + 4
    chaos = Chaos(
        nodes,
        watch,
        api,
        ev,
        Schedule(
            pause_s,
            lease,
            kills=KILLS,
            pause_after=PAUSE_AFTER_KILL,
            gap=GAP,
            failover_timeout=FAILOVER_TIMEOUT,
            first_fault_timeout=FIRST_FAULT_TIMEOUT,
        ),
    )
    for st in chaos.ev:  # EVs charging: the campaign must defer these chargers
        agent = st.agent
        assert agent is not None
        await wait_for(f"{st.plan.station_id} Available", 60, offered(agent))
        st.record.sessions.append(Session(utc_now()))
        await asyncio.wait_for(agent.start_session(1), 30)
    doc = {**CAMPAIGN_DEFAULTS, **scenario.campaign}
    doc["release"] = release_ids[scenario.campaign["release"]]
    doc["target"] = {"models": ["AC22"]}
    created = await backend.call(api.client, "POST", "/api/v1/campaigns", json=doc)
    cid = created["id"]
    t_campaign = time.monotonic()
    faults = asyncio.create_task(chaos.run())
    campaign: dict[str, Any] = {}
    try:
        deadline = t_campaign + CAMPAIGN_TIMEOUT
        while True:
            campaign = await api.get(f"/api/v1/campaigns/{cid}")
            chaos.succeeded = campaign["counts"].get("succeeded", 0)
            chaos.deferred = campaign["deferred_charging"]
            if faults.done():
                faults.result()  # a fault that could not be made fails the test here
                if campaign["status"] in ("completed", "paused", "aborted"):
                    break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
    finally:
        if not faults.done():
            faults.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await faults
    campaign_s = time.monotonic() - t_campaign
    ended = await asyncio.gather(*chaos.ended, return_exceptions=True)
    offline = await _offline_on_server(api, sim)
    runs = await api.get(f"/api/v1/campaigns/{cid}/stations")
    stuck = {
        r["station_id"]: await api.get(f"/api/v1/stations/{r['station_id']}")
        for r in runs
        if r["state"] != "succeeded"
    }
    checks = await check_run(api.client, sim.stations, scenario.sites, campaign, len(runs))
    site_of = {st.plan.station_id: st.plan.site for st in sim.stations}
    by_id = {r["station_id"]: r for r in runs}
    doubles: list[str] = []
    rescheduled = 0
    charger: list[tuple[float, float, str]] = []
    for st in sim.stations:
        sid = st.plan.station_id
        d, r = second_requests(sid, st.record.firmware, reschedules=by_id[sid]["reschedules"])
        doubles += d
        rescheduled += r
        charger += charger_spans(st.record.firmware, st.plan.site)
    server = [s for r in runs for s in server_spans(r, site_of[r["station_id"]])]
    server_most, server_site = most_at_once(server)
    charger_most, charger_site = most_at_once(charger)
    stage_sizes = [s["size"] for s in campaign["stages"]]
    statuses = Counter(
        e.value for st in sim.stations for e in st.record.firmware if e.kind == "status"
    )
    failovers = [k["failover_s"] for k in chaos.kills]
    if chaos.pause.get("failover_s") is not None:
        failovers.append(chaos.pause["failover_s"])
    return {
        "nodes": len(NODES),
        "chargers": n,
        "leader_kills": len(chaos.kills),
        "kills": chaos.kills,
        "pause": chaos.pause,
        "leader_changes_seen": len(watch.leaders) - 1,
        "failovers": len(failovers),
        "failover_max_s": max(failovers, default=None),
        "most_leaders_at_once": watch.most_at_once,
        "campaign_s": round(campaign_s, 1),
        "campaign_status": campaign["status"],
        "pause_reason": campaign.get("pause_reason"),
        "outcomes": {k: v for k, v in campaign["counts"].items() if v},
        "stage_sizes": stage_sizes,
        "stage_counts": dict(Counter(r["stage"] for r in runs)),
        "stages_out_of_order": stages_out_of_order(runs, SUCCESS_PERCENT),
        "double_dispatches": doubles,
        "rescheduled": rescheduled,
        "update_requests": sum(
            1 for st in sim.stations for e in st.record.firmware if e.kind == "request"
        ),
        "charger_statuses": dict(statuses),
        "limits": {"global": GLOBAL_LIMIT, "per_site": PER_SITE},
        "most_updating_server": {"global": server_most, "per_site": server_site},
        "most_updating_chargers": {"global": charger_most, "per_site": charger_site},
        "timelines_capped": sum(len(r["timeline"]) >= 40 for r in runs),
        "final_versions": dict(
            Counter(st.flash.verified_version() or "none" for st in sim.stations)
        ),
        "ev_stations": {st.plan.station_id: by_id[st.plan.station_id]["state"] for st in chaos.ev},
        "ev_deferred": {
            st.plan.station_id: any(
                s == "deferred" for _, s, *_ in by_id[st.plan.station_id]["timeline"]
            )
            for st in chaos.ev
        },
        "ev_updated_after_session_s": {
            st.plan.station_id: _after(st, by_id[st.plan.station_id]) for st in chaos.ev
        },
        "ev_timelines": {
            st.plan.station_id: by_id[st.plan.station_id]["timeline"] for st in chaos.ev
        },
        "session_ends_failed": [repr(e) for e in ended if isinstance(e, BaseException)],
        "checks": checks.to_dict(),
        "api_requests": api.requests,
        "api_5xx": dict(api.errors),
        "balancer": dict(nodes.balancer.stats),
        "setup_s": round(sim.figures.get("setup_s", 0.0), 1),
        "not_succeeded": {
            r["station_id"]: {
                "run": [r["state"], r["reason"], r["timeline"][-4:]],
                "station": {
                    k: v
                    for k, v in stuck[r["station_id"]].items()
                    if k in ("connected", "firmware_version", "last_seen", "last_boot_reason")
                },
                "charger": [
                    [round(e.at - t_campaign, 1), e.kind, e.value, e.request_id]
                    for e in next(
                        st.record.firmware
                        for st in sim.stations
                        if st.plan.station_id == r["station_id"]
                    )
                ],
            }
            for r in runs
            if r["state"] != "succeeded"
        },
        "offline_on_server_while_connected": offline,
        "slow_reboots_s": {
            st.plan.station_id: gap
            for st in sim.stations
            if (gap := _reboot_gap(st)) is not None and gap > SLOW_REBOOT_S
        },
    }


async def _offline_on_server(api: Api, sim: Simulation) -> list[str]:
    """Chargers connected (their agent online) that the server records as disconnected, once
    the fleet is quiet (given OFFLINE_SETTLE_S to agree)."""
    deadline = time.monotonic() + OFFLINE_SETTLE_S
    while True:
        listed = await api.get("/api/v1/stations?connected=false")
        online = {st.plan.station_id for st in sim.stations if st.online}
        wrong = sorted(online & {s["id"] for s in listed})
        if not wrong or time.monotonic() > deadline:
            return wrong
        await asyncio.sleep(1.0)


def _reboot_gap(st: SimStation) -> float | None:
    """Seconds from the charger's InstallRebooting to its Installed (after the new boot)."""
    events = st.record.firmware
    went = next((e.at for e in events if e.value == "InstallRebooting"), None)
    back = next((e.at for e in events if e.value == "Installed"), None)
    return round(back - went, 1) if went is not None and back is not None else None


def _after(st: SimStation, run: dict[str, Any]) -> float | None:
    """Seconds from the end of the charger's session to its run's success."""
    end = st.record.sessions[-1].end if st.record.sessions else None
    done = next(
        (dt.datetime.fromisoformat(t) for t, s, *_ in run["timeline"] if s == "succeeded"), None
    )
    return round((done - end).total_seconds(), 1) if end and done else None


def _report(f: dict[str, Any]) -> None:
    pause = f.get("pause") or {}
    line = (
        f"chaos: {f.get('nodes')} nodes, {f.get('chargers')} chargers, "
        f"{f.get('leader_kills')} leader kills, 1 pause ({pause.get('seconds')} s > lease "
        f"{pause.get('lease_s') or 'none'}), {f.get('failovers')} failovers "
        f"(max {f.get('failover_max_s')} s), campaign {f.get('campaign_s')} s "
        f"{f.get('campaign_status')}, outcomes {f.get('outcomes')}, double dispatches "
        f"{len(f.get('double_dispatches', []))}, most updating {f.get('most_updating_server')} "
        f"(limits {f.get('limits')}), 5xx {sum(f.get('api_5xx', {}).values())} api + "
        f"{sum(f.get('server_5xx', {}).values())} served, tracebacks "
        f"{sum(f.get('server_tracebacks', {}).values())}, wall {f.get('wall_s')} s"
    )
    f["summary"] = line
    print(line)
    reports = Path(__file__).resolve().parents[2] / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "chaos.json").write_text(json.dumps(f, indent=2, default=str) + "\n")


def _problems(f: dict[str, Any]) -> list[str]:
    """Every invariant the run broke, each with its evidence."""
    checks: list[tuple[bool, str, Any]] = [
        (f["leader_kills"] >= 3, "fewer than 3 leader kills", f["kills"]),
        (
            bool(f["pause"]) and f["pause"]["seconds"] > (f["pause"]["lease_s"] or LEASE_DEFAULT),
            "no pause longer than the lease",
            f["pause"],
        ),
        (
            f["campaign_status"] == "completed",
            "campaign not completed",
            (f["campaign_status"], f["pause_reason"]),
        ),
        (
            f["outcomes"] == {"succeeded": f["chargers"]},
            "not every station succeeded",
            (f["outcomes"], f["not_succeeded"]),
        ),
        (
            f["final_versions"] == {"1.1.0": f["chargers"]},
            "not every charger verified on 1.1.0",
            f["final_versions"],
        ),
        (
            not f["double_dispatches"],
            "second UpdateFirmware without a failure",
            f["double_dispatches"],
        ),
        (not f["stages_out_of_order"], "stage started early", f["stages_out_of_order"]),
        (f["timelines_capped"] == 0, "timelines capped: spans incomplete", f["timelines_capped"]),
        (f["checks"]["ok"], "simulator checks failed", f["checks"]),
        (
            not f["session_ends_failed"],
            "a session end was not acknowledged",
            f["session_ends_failed"],
        ),
        (not f["api_5xx"], "5xx answered the test or the simulator", f["api_5xx"]),
        (not f["server_5xx"], "5xx counted by the nodes", f["server_5xx"]),
        (not f["server_tracebacks"], "tracebacks in the node logs", f["server_tracebacks"]),
        (f["audit"]["ok"], "the audit log does not verify", f["audit"]),
        (all(f["ev_deferred"].values()), "an EV charger was never deferred", f["ev_deferred"]),
        (
            not f["offline_on_server_while_connected"],
            "connected chargers recorded as disconnected",
            f["offline_on_server_while_connected"],
        ),
    ]
    for side in ("most_updating_server", "most_updating_chargers"):
        most = f[side]
        checks.append((most["global"] <= GLOBAL_LIMIT, f"global limit exceeded ({side})", most))
        checks.append(
            (max(most["per_site"].values()) <= PER_SITE, f"per-site limit exceeded ({side})", most)
        )
    return [f"{what}: {evidence}" for ok, what, evidence in checks if not ok]
