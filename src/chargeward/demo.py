"""``chargeward demo``: a manufacturer and an operator, end to end, on this machine.

1. The manufacturer makes a PKI (Manufacturer Root CA, firmware-signing certificate, encrypted
   key files) and three releases, each gated against the shipped OSV advisories with its SBOM
   and scan report: 1.0.0 (the factory image), 1.1.0 and 1.2.0, whose charging application
   crashes at start-up on every charger.
2. A TUF repository: a 2-of-3 root and 2-of-3 release approvers.
3. The operator's server starts on SQLite, its HTTP listener on https with a lab CSMS CA
   (ADR 0025); a fleet of simulated chargers (the real agent on a simulated flash and link,
   see :mod:`chargeward.sim`; the CA is their CSMS root) on four sites in four time zones,
   each with a maintenance window in local time, a few with a car charging, connects.  The
   fourth site's chargers speak OCPP 1.6J with the Security Whitepaper, but one without it:
   dave marks that one legacy (plain UpdateFirmware), and the demo says what that costs.
4. carol uploads 1.1.0, alice and bob approve it (2 of 3), carol publishes it; dave creates a
   staged campaign with a canary and alice starts it (two-person rule); it runs live.
5. The same for 1.2.0: the canary fails its health check and falls back to 1.1.0, the campaign
   pauses itself at the canary and dave aborts it; no other charger is touched.
6. Checks (every charger on a verified image, counts add up, no install outside a window or
   during a session), the audit log exported and verified offline, a summary.

``quick`` runs the same story on a smaller fleet with smaller images (for CI).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from chargeward.errors import ChargewardError
from chargeward.local import LabTls, demo_advisories, make_repository, run_cli
from chargeward.ocpp.csms16 import LEGACY_CONSEQUENCE
from chargeward.procinfo import raise_fd_limit
from chargeward.server.runtime import write_private
from chargeward.sim import flash as flash_mod
from chargeward.sim import server as backend
from chargeward.sim.checks import Checks, check_run
from chargeward.sim.protocols import mark_legacy, protocol_counts, protocol_line
from chargeward.sim.releases import Releases, make_releases
from chargeward.sim.runner import CAMPAIGN_DEFAULTS, SimOptions, Simulation, Trust, log_to
from chargeward.sim.scenario import (
    Chance,
    Faults,
    Group,
    Link,
    Ocpp,
    Scenario,
    Sessions,
    Site,
    window_from_now,
)
from chargeward.sim.station import SimStation

MODEL = "AC22"
VERSIONS = ("1.0.0", "1.1.0", "1.2.0")
GOOD, BAD = "1.1.0", "1.2.0"
# site, IANA time zone, station id prefix, share of the fleet, link (bytes/s shared by the
# site, one-way latency), the OCPP its chargers speak
SITES = (
    ("london", "Europe/London", "LON", 0.3, Link(4_000_000, 15.0), "2.0.1"),
    ("newyork", "America/New_York", "NYC", 0.25, Link(2_000_000, 40.0), "2.0.1"),
    ("tokyo", "Asia/Tokyo", "TYO", 0.25, Link(1_000_000, 90.0), "2.0.1"),
    ("paris", "Europe/Paris", "PAR", 0.2, Link(2_000_000, 25.0), "1.6"),
)
# On the OCPP 1.6J site: one charger without the Security Whitepaper, marked by the operator.
LEGACY = Ocpp("1.6", legacy=True)
ROLES = {"carol": "release-manager", "alice": "approver", "bob": "approver", "dave": "operator"}


@dataclass(frozen=True)
class Size:
    stations: int
    image_kib: int
    charging_s: float  # how long the cars at the busy chargers charge from the start
    timeout_s: float  # per campaign


FULL = Size(stations=100, image_kib=256, charging_s=40, timeout_s=900)
QUICK = Size(stations=24, image_kib=32, charging_s=15, timeout_s=300)


def demo_scenario(size: Size, now: dt.datetime) -> Scenario:
    """Four sites, each with a window open now in its local time, a few chargers busy; the
    fourth's chargers speak OCPP 1.6J, with the Security Whitepaper but for one (legacy)."""
    sites, groups = {}, []
    for name, tz, prefix, share, link, version in SITES:
        window = window_from_now(
            tz, now, opens_in=-dt.timedelta(minutes=30), length=dt.timedelta(hours=4)
        )
        sites[name] = Site(name, tz, [window], link, ocpp=version)
        ocpp = Ocpp(version)
        count = max(3, round(size.stations * share))
        busy = max(1, count // 10)
        legacy = 1 if version == LEGACY.version else 0
        groups.append(Group(count - busy - legacy, name, "1.0.0", MODEL, prefix, ocpp=ocpp))
        if legacy:
            groups.append(Group(legacy, name, "1.0.0", MODEL, f"{prefix}-LEG", ocpp=LEGACY))
        charging = Sessions(busy=((0.0, size.charging_s),))
        groups.append(Group(busy, name, "1.0.0", MODEL, f"{prefix}-EV", charging, ocpp))
    return Scenario(
        source="demo",
        seed=20261204,
        duration=size.timeout_s,
        versions=list(VERSIONS),
        image_bytes=size.image_kib * 1024,
        campaign={"release": GOOD},
        sites=sites,
        fleet=groups,
        faults=Faults(
            link_drop=Chance(0.08, {"at_byte": [4_000, 24_000]}),
            corrupt=Chance(0.05),
            bad_release=BAD,
        ),
    )


def campaign_document(name: str, release_id: str, canary: int) -> dict[str, Any]:
    return {
        **CAMPAIGN_DEFAULTS,
        "name": name,
        "release": release_id,
        "target": {"models": [MODEL]},
        "stages": {"canary": canary, "then": ["50%", "100%"]},
        "gates": {"success": "90%", "error": "10%"},
        "soak": "3s",
        "concurrency": {"global": 50, "per_site": 20, "keep_available": 0},
    }


class Demo:
    def __init__(self, workdir: Path, size: Size, console: Console) -> None:
        self.work = workdir
        self.size = size
        self.console = console
        self.data = workdir / "server"
        self.tokens: dict[str, str] = {}
        self.made: Releases | None = None
        self.env: dict[str, str] = {}
        self.runs: dict[int, list[dict[str, Any]]] = {}  # campaign id -> its stations' runs

    def say(self, text: str) -> None:
        self.console.print(text)

    async def cli(self, args: list[str], who: str | None = None) -> str:
        """``chargeward ARGS`` as its own process (as ``who``), off the event loop."""
        env = dict(self.env)
        if who is not None:
            env["CHARGEWARD_API_TOKEN"] = self.tokens[who]
        out = await asyncio.to_thread(run_cli, [*args, "--data-dir", str(self.data)], env)
        return out.strip().splitlines()[-1] if out.strip() else ""

    def client(self, srv: backend.Backend, who: str) -> httpx.AsyncClient:
        return srv.client(self.tokens[who])

    # -- the story ------------------------------------------------------------------------

    def manufacture(self, scenario: Scenario) -> Releases:
        self.console.rule("[bold]1. Manufacturer: PKI, SBOMs, vulnerability gate, signed releases")
        made = make_releases(
            self.work,
            scenario.versions,
            image_bytes=scenario.image_bytes,
            models=[MODEL],
            advisories=demo_advisories(),
        )
        self.env = {"CHARGEWARD_KEY_PASSPHRASE": made.passphrase}
        for version, gate in made.gates.items():
            self.say(
                f"release {version} ({made.release_ids[version][:12]}): SBOM of "
                f"{gate.packages_checked} packages against {gate.advisory_count} OSV advisories, "
                f"{len(gate.findings)} findings, {len(gate.blocking)} blocking; signed with "
                "the firmware-signing key (ECDSA P-256)"
            )
        self.console.rule("[bold]2. TUF repository: 2-of-3 root holders, 2-of-3 approvers")
        make_repository(self.work / "tuf-keys", self.data, self.env)
        self.say(f"root.json for the chargers in {self.work / 'tuf-keys' / 'root.json'}")
        return made

    async def publish(self, srv: backend.Backend, version: str) -> str:
        """carol uploads, alice and bob approve (TUF targets, 2 of 3), carol publishes."""
        assert self.made is not None
        said = await self.cli(["release", "upload", str(self.made.bundles[version])], "carol")
        self.say(f"carol: {said}")
        rid = self.made.release_ids[version]
        for who in ("alice", "bob"):
            key = f"file:{self.work / 'tuf-keys' / who}.key"
            self.say(f"{who}: {await self.cli(['release', 'approve', rid, '--key', key], who)}")
        self.say(f"carol: {await self.cli(['release', 'publish', rid], 'carol')}")
        return rid

    async def campaign(
        self, sim: Simulation, srv: backend.Backend, version: str, rid: str, canary: int
    ) -> dict[str, Any]:
        """dave creates the campaign, alice starts it; followed live until it has ended."""
        doc = campaign_document(f"rollout-{version}", rid, canary)
        async with self.client(srv, "dave") as dave, self.client(srv, "alice") as alice:
            made = await backend.call(dave, "POST", "/api/v1/campaigns", json=doc)
            self.say(
                f"dave: campaign {made['name']} over {made['counts'].get('pending', 0)} "
                f"chargers, canary of {canary}, then 50 %, then 100 %: {made['status']}"
            )
            started = await backend.call(alice, "POST", f"/api/v1/campaigns/{made['id']}/approve")
            self.say(f"alice (second person): {started['status']}")
            return await sim.follow(srv, dave, made["id"], f"campaign {made['name']}")

    async def run(self, keep_running: bool) -> bool:
        now = dt.datetime.now(dt.UTC)
        scenario = demo_scenario(self.size, now)
        self.made = made = self.manufacture(scenario)
        self.console.rule("[bold]3. Operator: server on SQLite, chargers on four sites")
        # The HTTP listener speaks https with a lab CSMS CA (ADR 0025): the chargers get it
        # as their CSMS root (secure/csms-roots.pem), the CLI through SSL_CERT_FILE.
        lab = LabTls.create()
        ca = self.work / "lab-csms-ca.pem"
        ca.write_text(lab.ca_pem)
        self.env["SSL_CERT_FILE"] = str(ca)
        srv = backend.Backend.start(
            self.data,
            made.root_pem,
            self.work / "server.log",
            made.passphrase,
            approval_threshold=self.size.stations // 2,  # a whole-fleet campaign: two people
            tls=lab,
        )
        trust = Trust((self.work / "tuf-keys" / "root.json").read_bytes(), f"{srv.api_url}/tuf/")
        # The legacy charger is marked by dave (the operator step below), not by the simulator.
        sim = Simulation(scenario, SimOptions(mark_legacy=False), self.console, trust)
        root = flash_mod.flash_root("chargeward-demo-")
        log_to(self.work / "chargers.log")
        flash_mod.install_hook()
        try:
            for who, role in ROLES.items():
                made_token = await asyncio.to_thread(
                    run_cli,
                    ["token", "create", who, "--role", role, "--data-dir", str(self.data)],
                    self.env,
                )
                self.tokens[who] = made_token.split()[-1]
            self.say(f"server up: OCPP {srv.ocpp_url}{{stationId}}, API {srv.api_url}")
            info = json.loads((self.data / "server.json").read_text())
            self.say(
                f"server.json: api_url {info['api_url']}, "
                f"download_base_url {info['download_base_url']}"
            )
            self.say(
                f"HTTPS with the lab CSMS CA in {ca}: the chargers trust it as their CSMS root "
                "and verify the server on every download and TUF fetch"
            )
            async with srv.client() as admin:
                await backend.upload_releases(admin, {"1.0.0": made.bundles["1.0.0"]})
                await sim.bring_up(srv, admin, made.bundles, made.root_pem.read_bytes(), root)
            self.say(
                f"{sim.connected}/{len(sim.stations)} chargers connected, running 1.0.0; "
                + "; ".join(
                    f"{s.id} ({s.timezone}) window {s.windows[0]['start']}-{s.windows[0]['end']}"
                    " local"
                    for s in scenario.sites.values()
                )
            )
            await self.mark_legacy(sim, srv)
            results = {}
            for step, version, canary in ((4, GOOD, 3), (5, BAD, 1)):
                title = "the good release" if version == GOOD else "a bad release"
                self.console.rule(f"[bold]{step}. Release {version}, {title}")
                rid = await self.publish(srv, version)
                campaign = await self.campaign(sim, srv, version, rid, canary)
                self.say(_campaign_line(campaign))
                results[version] = campaign
            bad = results[BAD]
            if bad["status"] == "paused":
                async with self.client(srv, "dave") as dave:
                    aborted = await backend.call(
                        dave, "POST", f"/api/v1/campaigns/{bad['id']}/abort"
                    )
                self.say(f"dave: campaign {aborted['name']} {aborted['status']}")
                bad["status"] = f"paused, then {aborted['status']}"
            self.console.rule("[bold]6. Checks, audit log, summary")
            links = sim.link_stats()
            self.say(
                f"site links: {links['https tunnels']} firmware downloads over https "
                "(CONNECT tunnels, the server verified against the lab CA), "
                f"{links['dropped']} dropped and {links['corrupted']} corrupted on purpose"
            )
            checks = await self.check(sim, srv, scenario, results)
            audit_line = await self.verify_audit(srv)
            self.say(audit_line)
            ok = self.summary(sim, scenario, results, checks)
            login = await self.dashboard_user(srv)
            self.say(
                f"[bold]dashboard: {srv.api_url}/[/] ({login}); "
                f"OpenAPI {srv.api_url}/api/openapi.json"
            )
            if keep_running:
                self.say(
                    "server and chargers keep running "
                    f"(admin token in {self.data / 'admin.token'}); press Ctrl-C to stop"
                )
                await asyncio.Event().wait()
            self.say("`make demo-keep` (or `chargeward demo --keep-running`) keeps them up")
            return ok
        finally:
            await sim.shut_down()
            flash_mod.remove_hook()
            srv.stop()
            flash_mod.remove_root(root)

    async def mark_legacy(self, sim: Simulation, srv: backend.Backend) -> None:
        """dave marks the OCPP 1.6 chargers without the Security Whitepaper legacy: the server
        then sends them plain UpdateFirmware, and says what that costs."""
        site = [s for s in sim.scenario.sites.values() if s.ocpp == "1.6"]
        versions = Counter(st.plan.ocpp.label for st in sim.stations)
        self.say(
            f"OCPP 1.6J on {', '.join(s.id for s in site)}: "
            f"{versions['1.6 whitepaper']} chargers with the Security Whitepaper "
            f"(SignedUpdateFirmware, checked on the charger), {versions['1.6 legacy']} without"
        )
        async with self.client(srv, "dave") as dave:
            for station_id in await mark_legacy(dave, sim.plans):
                self.say(
                    f"dave: {station_id} marked legacy_firmware_update (OCPP 1.6 without the "
                    f"Security Whitepaper): it gets plain UpdateFirmware, and {LEGACY_CONSEQUENCE} "
                    "(this simulated charger still checks the signature the server adds to the "
                    "download URL; a real legacy one would not)"
                )

    async def check(
        self,
        sim: Simulation,
        srv: backend.Backend,
        scenario: Scenario,
        results: Mapping[str, Mapping[str, Any]],
    ) -> list[Checks]:
        out = []
        async with srv.client() as admin:
            for c in results.values():
                runs = await backend.call(admin, "GET", f"/api/v1/campaigns/{c['id']}/stations")
                self.runs[c["id"]] = runs
                out.append(await check_run(admin, sim.stations, scenario.sites, c, len(runs)))
        return out

    async def dashboard_user(self, srv: backend.Backend) -> str:
        """An admin account for a person to look around the dashboard: a fresh password and
        TOTP secret, generated now, written to the work directory (demo data, not a secret
        of anything else)."""
        password = secrets.token_urlsafe(12)
        async with srv.client() as admin:
            made = await backend.call(
                admin,
                "POST",
                "/api/v1/users",
                json={"username": "demo", "password": password, "role": "admin"},
            )
        login = self.work / "dashboard-login.txt"
        write_private(
            login,
            f"user: demo\npassword: {password}\nTOTP secret: {made['totp_secret']}\n"
            f"TOTP URI: {made['totp_uri']}\n".encode(),
        )
        return f"log in as demo: password and TOTP secret in {login}"

    async def verify_audit(self, srv: backend.Backend) -> str:
        """Sign a checkpoint now, export the log and verify it offline against the vkey."""
        async with srv.client() as admin:
            await backend.call(admin, "POST", "/api/v1/audit/checkpoints")
            vkey = (await admin.get("/api/v1/audit/vkey")).text.strip()
        export = self.work / "audit-export.jsonl"
        await asyncio.to_thread(
            run_cli,
            ["audit", "export", "--out", str(export), "--data-dir", str(self.data)],
            self.env,
        )
        said = await asyncio.to_thread(run_cli, ["audit", "verify", str(export), "--vkey", vkey])
        return f"audit log exported and verified offline: {' '.join(said.split())}"

    def summary(
        self,
        sim: Simulation,
        scenario: Scenario,
        results: Mapping[str, Mapping[str, Any]],
        checks: list[Checks],
    ) -> bool:
        sites = Table(title="Chargers by site (versions verified on each charger's flash)")
        for col in ("site", "time zone", "OCPP", "window", "chargers", "on 1.1.0", "other",
                    "waited for a car"):  # fmt: skip
            left = col in ("site", "time zone", "OCPP")
            sites.add_column(col, justify="left" if left else "right")
        final: Counter[str] = Counter()
        for site in scenario.sites.values():
            here = [st for st in sim.stations if st.plan.site == site.id]
            versions = Counter(st.flash.verified_version() or "unverified" for st in here)
            final.update(versions)
            other = {v: n for v, n in versions.items() if v != GOOD}
            w = site.windows[0]
            sites.add_row(
                site.id,
                site.timezone,
                _ocpp_cell(site, here),
                f"{w['start']}-{w['end']}",
                str(len(here)),
                str(versions.get(GOOD, 0)),
                ", ".join(f"{n} on {v}" for v, n in other.items()) or "-",
                str(sum(1 for st in here if st.record.sessions)),
            )
        campaigns = Table(title="Campaigns")
        for col in ("campaign", "status", "succeeded", "rolled back", "failed", "untouched",
                    "wall time"):  # fmt: skip
            campaigns.add_column(col, justify="left" if col == "campaign" else "right")
        for c in results.values():
            counts = c["counts"]
            campaigns.add_row(
                f"{c['name']}",
                c["status"],
                str(counts.get("succeeded", 0)),
                str(counts.get("rolled_back", 0)),
                str(counts.get("failed", 0)),
                str(counts.get("pending", 0) + counts.get("canceled", 0)),
                f"{c['wall_s']:.0f} s",
            )
        self.console.print(sites)
        self.console.print(campaigns)
        good_runs = self.runs.get(results[GOOD]["id"], [])
        for label, row in protocol_counts(sim.stations, good_runs).items():
            self.say(f"{results[GOOD]['name']}, {protocol_line(label, row)}")
        for c in results.values():
            if c.get("pause_reason"):
                self.say(f"{c['name']} paused itself: {c['pause_reason']}")
        good, bad = results[GOOD], results[BAD]
        n = len(sim.stations)
        passed = all(ch.ok for ch in checks)
        ok = (
            passed
            and final == Counter({GOOD: n})
            and good["status"] == "completed"
            and good["counts"].get("succeeded") == n
            and bool(bad.get("pause_reason"))
            and bad["counts"].get("rolled_back", 0) >= 1
            and bad["counts"].get("succeeded", 0) == 0
        )
        installs = sum(ch.installs_seen for ch in checks) // max(1, len(checks))
        self.say(
            f"checks: {'passed' if passed else 'FAILED'}: every charger runs a verified image, "
            f"each campaign's counts add up, none of {installs} installs began outside its "
            "site's window or while a car was charging"
        )
        self.say(
            f"[bold {'green' if ok else 'red'}]{final.get(GOOD, 0)}/{n} chargers on {GOOD}; "
            f"{BAD} stopped at its canary, which rolled back by itself[/]"
            if ok
            else f"[bold red]demo FAILED: final versions {dict(final)}; see {self.work}[/]"
        )
        return ok


def _ocpp_cell(site: Site, here: list[SimStation]) -> str:
    """What the site's chargers speak: ``2.0.1``, or ``1.6J`` and how many are legacy."""
    if site.ocpp != "1.6":
        return site.ocpp
    legacy = sum(st.plan.ocpp.legacy for st in here)
    return f"1.6J, {legacy} legacy" if legacy else "1.6J"


def _campaign_line(c: Mapping[str, Any]) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in c["counts"].items() if v)
    reason = f" ({c['pause_reason']})" if c.get("pause_reason") else ""
    return f"campaign {c['name']}: {c['status']}{reason} after {c['wall_s']:.0f} s: {counts}"


def run_demo(
    workdir: Path,
    *,
    quick: bool = False,
    stations: int | None = None,
    keep_running: bool = False,
    console: Console | None = None,
) -> bool:
    if console is None:
        console = Console()
        if not console.is_terminal:  # a log: wide enough for the tables
            console = Console(width=120)
    size = QUICK if quick else FULL
    if stations is not None:
        size = Size(stations, size.image_kib, size.charging_s, size.timeout_s)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    raise_fd_limit()
    try:
        return asyncio.run(Demo(workdir, size, console).run(keep_running))
    except ChargewardError as e:
        console.print(f"[bold red]demo stopped: {e}[/]")
        return False
