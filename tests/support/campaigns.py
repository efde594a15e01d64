"""Helpers for campaign tests: real in-process agents (their charging application's self-test
fails on one bad version) against a real server process, and API polling that keeps the
event loop free for the agents."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from chargeward.agent.agent import Agent
from chargeward.agent.config import AgentConfig
from chargeward.agent.location import LAB_LOOPBACK
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity
from chargeward.model.firmware import ImageHeader
from tests.support.fleet import MODEL, Pki, Server, assert_no_crash, cli, running_server

STATIONS = ["CP-A", "CP-B", "CP-C", "CP-D"]
ALL_DAY = [
    {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "end": "12:00"},
    {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "12:00", "end": "00:00"},
]
BAD_VERSION = "1.2.0"


def self_test(header: ImageHeader) -> str | None:
    """The simulated charging application: release 1.2.0 crashes at start-up."""
    return "charging application crashed at start-up" if header.version == BAD_VERSION else None


async def api(srv: Server, method: str, path: str, **kw: Any) -> Any:
    return await asyncio.to_thread(srv.api, method, path, **kw)


async def scheduler_ticks(srv: Server) -> float:
    """How many rounds the server's campaign scheduler has finished (its /metrics counter)."""

    def metrics() -> str:
        with srv.http as c:
            r = c.get("/metrics")
        r.raise_for_status()
        return r.text

    found = re.search(
        r'^chargeward_leader_job_runs_total\{job="campaign_scheduler"\} (\S+)$',
        await asyncio.to_thread(metrics),
        re.MULTILINE,
    )
    return float(found[1]) if found else 0.0


async def until(pred: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        value = await pred()
        if value:
            return value
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.asynccontextmanager
async def agents(
    srv: Server,
    root: Path,
    pki: Pki,
    factory: Path,
    ids: list[str] = STATIONS,
    *,
    tuf_root: bytes | None = None,
    configs: dict[str, dict[str, Any]] | None = None,
) -> AsyncIterator[dict[str, Agent]]:
    """Register, provision and run one real agent per station id until the block ends.

    With ``tuf_root`` the agents check every update against the server's TUF repository;
    ``configs``: more AgentConfig fields for some stations (e.g. a Local Controller's).
    """
    running: dict[str, Agent] = {}
    tasks = []
    for sid in ids:
        password = await asyncio.to_thread(srv.add_station, sid)
        provision(
            root / sid,
            identity=Identity(sid, MODEL, "ACME", sid),
            password=password,
            roots_pem=pki.root_pem.read_bytes(),
            factory_bundle=factory,
            tuf_root=tuf_root,
        )
        agent = Agent(
            AgentConfig(
                state_dir=root / sid,
                csms_url=srv.ocpp_url,
                reconnect_delay=0.2,
                reboot_delay=0.1,
                response_timeout=10,
                trial_health_timeout=20,
                self_test=self_test,
                repository_url=f"{srv.api_url}/tuf/" if tuf_root else None,
                location_policy=LAB_LOOPBACK,  # the test server is on 127.0.0.1: a lab setting
                **(configs or {}).get(sid, {}),
            )
        )
        running[sid] = agent
        tasks.append(asyncio.create_task(agent.run()))
    try:
        for sid in ids:
            await until(
                lambda sid=sid: _connected(srv, sid), f"{sid} to connect and boot", timeout=30
            )
        yield running
    finally:
        for agent in running.values():
            agent.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)


def firmware_statuses(agent: Agent) -> list[tuple[str, dt.datetime]]:
    """Every FirmwareStatusNotification ``agent`` sends from now on, with when it sent it (a
    list that fills as the agent reports)."""
    sent: list[tuple[str, dt.datetime]] = []
    report = agent._status

    async def spy(status: str, request_id: int | None) -> None:
        sent.append((status, dt.datetime.now(dt.UTC)))
        await report(status, request_id)

    agent._status = spy  # type: ignore[method-assign]
    return sent


@contextlib.asynccontextmanager
async def one_station(
    root: Path, pki: Pki, factory: Path, sid: str = "CP-A"
) -> AsyncIterator[tuple[Server, str, list[tuple[str, dt.datetime]]]]:
    """A server (a campaign tick every 0.3 s) with release 1.1.0 uploaded and one real agent
    connected: the server, the release's id and the agent's :func:`firmware_statuses`.  The
    server's output is checked for crashes once it stopped."""
    release = pki.bundle(root / "acme-1.1.0.cwb", "1.1.0", 2)
    with running_server(root, pki, extra_args=("--campaign-tick", "0.3")) as srv:
        release_id = srv.upload(release)["id"]
        async with agents(srv, root, pki, factory, [sid]) as fleet:
            yield srv, release_id, firmware_statuses(fleet[sid])
    assert_no_crash(srv.proc.output())


async def _connected(srv: Server, sid: str) -> bool:
    s = await api(srv, "GET", f"/api/v1/stations/{sid}")
    return bool(s["connected"] and s["firmware_version"])


def campaign_doc(name: str, release: str) -> dict[str, Any]:
    return {
        "name": name,
        "release": release,
        "target": {"models": [MODEL]},
        "stages": {"canary": 1, "then": ["100%"]},
        "gates": {"success": "100%", "error": 1},
        "soak": "2s",
        "jitter": 0,
        "concurrency": {"global": 10, "per_site": 10, "keep_available": 0},
        "timeouts": {"response": "30s", "download": "60s", "install": "60s", "reboot": "60s"},
        "retry_interval": 1,
    }


async def campaign(srv: Server, ref: int) -> dict[str, Any]:
    return dict(await api(srv, "GET", f"/api/v1/campaigns/{ref}"))


async def runs(srv: Server, ref: int) -> dict[str, dict[str, Any]]:
    rows = await api(srv, "GET", f"/api/v1/campaigns/{ref}/stations")
    return {r["station_id"]: r for r in rows}


async def state_is(srv: Server, cid: int, sid: str, state: str) -> bool:
    return (await runs(srv, cid))[sid]["state"] == state


async def status_is(srv: Server, cid: int, status: str) -> dict[str, Any] | None:
    view = await campaign(srv, cid)
    return view if view["status"] == status else None


async def upload_release(srv: Server, bundle: Path, version: str) -> dict[str, Any]:
    """Upload ``bundle`` with the CLI; the server's view of the release ``version``."""
    await asyncio.to_thread(cli, "release", "upload", str(bundle), "--data-dir", str(srv.data_dir))
    found: dict[str, Any] = next(
        r for r in await api(srv, "GET", "/api/v1/releases") if r["version"] == version
    )
    return found


async def corner_and_offline(db: Any, now: dt.datetime, seen: dt.datetime) -> None:
    """Two stations on 1.0.0: CP-1 alone at site ``corner`` (connected), CP-2 without a site,
    offline since ``seen`` (waiting-reason tests: a site floor, an offline station)."""
    from chargeward.server.fleet import fleet, station_registry
    from chargeward.server.store.tables import Station

    async with db.session() as s:
        await fleet.create_site(
            s, fleet.SiteInput("corner", "Corner", None, "UTC", []), actor="t", now=now
        )
        for sid, site, up in (("CP-1", "corner", True), ("CP-2", None, False)):
            await station_registry.register_station(s, sid, actor="t", model=MODEL, now=now)
            row = await s.get(Station, sid)
            assert row is not None
            row.firmware_version, row.site_id, row.connected = "1.0.0", site, up
            row.last_seen = now if up else seen


async def one_station_campaign(
    db: Any, tmp_path: Path, pki: Pki, now: dt.datetime, name: str, **spec: Any
) -> tuple[Any, int]:
    """Release 1.1.0 stored, CP-1 on 1.0.0 stored as connected, and a running one-stage
    campaign on it (``spec``: more campaign fields): the server state (clock unset) and the
    campaign's id."""
    from chargeward.campaign.spec import parse_spec
    from chargeward.release.bundle import verify_bundle
    from chargeward.server.fleet import station_registry
    from chargeward.server.rollout import campaigns, release_catalog
    from chargeward.server.state import ServerState
    from chargeward.server.store.blobs import BlobStore
    from chargeward.server.store.tables import Station

    bundle = pki.bundle(tmp_path / "r.cwb", "1.1.0", 2)
    verified = verify_bundle(bundle, [pki.root_cert], workdir=tmp_path / "x", now=now)
    async with db.session() as s:
        release = await release_catalog.store_release(
            s, verified, BlobStore(tmp_path / "blobs"), actor="alice", now=now
        )
        await station_registry.register_station(s, "CP-1", actor="alice", model=MODEL, now=now)
        row = await s.get(Station, "CP-1")
        assert row is not None
        row.firmware_version, row.connected = "1.0.0", True
    doc = {"name": name, "release": release.id, "stages": {"canary": 1}, "jitter": 0,
           "target": {"models": [MODEL]}, "concurrency": {"keep_available": 0}, **spec}  # fmt: skip
    async with db.session() as s:
        view = await campaigns.create_campaign(s, parse_spec(doc), actor="alice", now=now)
    state = ServerState(tmp_path, db, BlobStore(tmp_path / "blobs"), b"k" * 32, "https://x")
    return state, view.id
