"""The server a simulation runs against: started by the simulator, or one already running.

Stations are registered as ``chargeward station add --security-profile 1`` registers them (the
same services, on the server's data directory, many per transaction), sites, releases and the
campaign go through the REST API with the operator token of the data directory.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives import serialization

from chargeward.errors import ConfigError, TransportError
from chargeward.local import LabTls, Process, start_server
from chargeward.server.fleet import fleet, station_registry
from chargeward.server.stations.station_security import set_profile
from chargeward.server.store.db import DATABASE_URL_ENV, Database
from chargeward.sim.link import LinkTls
from chargeward.sim.plan import StationPlan
from chargeward.sim.scenario import Site

ACTOR = "sim"
BATCH = 500


@dataclass
class Backend:
    data_dir: Path
    api_url: str
    ocpp_url: str
    token: str
    process: Process | None = None  # started by the simulator
    database_url: str | None = None  # None: the data directory's SQLite file
    csms_roots: bytes | None = None  # the lab CSMS CA when the HTTP listener speaks https
    lab_tls: LabTls | None = None  # its certificate and key: the site links terminate https

    @classmethod
    def start(
        cls,
        data_dir: Path,
        root_pem: Path,
        log: Path,
        passphrase: str,
        *,
        approval_threshold: int = 1_000_000,  # the simulator's own runs need no second person
        database_url: str | None = None,
        tls: LabTls | None = None,  # https on the HTTP listener with this lab certificate
    ) -> Backend:
        env = {"CHARGEWARD_KEY_PASSPHRASE": passphrase}
        if database_url is not None:
            env[DATABASE_URL_ENV] = database_url
        proc, info = start_server(
            data_dir,
            root_pem,
            log,
            env=env,
            extra_args=(
                *("--campaign-tick", "0.5"),
                *("--campaign-approval-threshold", str(approval_threshold)),
            ),
            tls=tls,
        )
        token = (data_dir / "admin.token").read_text().strip()
        roots = tls.ca_pem.encode() if tls is not None else None
        return cls(
            data_dir, info["api_url"], info["ocpp_url"], token, proc, database_url, roots, tls
        )

    @classmethod
    def existing(cls, api_url: str, data_dir: Path) -> Backend:
        try:
            info = json.loads((data_dir / "server.json").read_text())
            token = (data_dir / "admin.token").read_text().strip()
        except (OSError, ValueError) as e:
            raise ConfigError(f"{data_dir} is not a running server's data directory: {e}") from e
        return cls(data_dir, api_url.rstrip("/"), info["ocpp_url"], token)

    def tls_context(self) -> ssl.SSLContext | bool:
        """What API clients verify the server with: the system CAs, plus the lab CA."""
        if self.csms_roots is None:
            return True
        ctx = ssl.create_default_context()
        ctx.load_verify_locations(cadata=self.csms_roots.decode())
        return ctx

    def link_tls(self) -> LinkTls | None:
        """What the site links need to tunnel the chargers' https downloads (the lab key:
        the links are part of the lab's simulated network), or None for plain HTTP."""
        lab = self.lab_tls
        if lab is None:
            return None
        key = lab.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return LinkTls.from_pem(lab.certificate_pem, key.decode(), lab.ca_pem)

    def stop(self) -> str:
        return self.process.stop() if self.process is not None else ""

    @property
    def pid(self) -> int | None:
        return self.process.popen.pid if self.process is not None else None

    def upstreams(self) -> tuple[tuple[str, int], tuple[str, int]]:
        """(OCPP host, port), (HTTP host, port) for the links."""
        o, h = urlsplit(self.ocpp_url), urlsplit(self.api_url)
        return (o.hostname or "", o.port or 80), (h.hostname or "", h.port or 80)

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        """An API client acting with ``token`` (default: the data directory's admin token)."""
        return httpx.AsyncClient(
            base_url=self.api_url,
            verify=self.tls_context(),
            timeout=120,
            headers={"Authorization": f"Bearer {token or self.token}"},
            limits=httpx.Limits(max_connections=16),
        )


async def call(api: httpx.AsyncClient, method: str, path: str, **kw: Any) -> Any:
    """One API request; a GET whose kept-alive connection the server had just closed is sent
    once more on a new one."""
    try:
        try:
            r = await api.request(method, path, **kw)
        except httpx.RemoteProtocolError:
            if method != "GET":
                raise
            r = await api.request(method, path, **kw)
    except httpx.HTTPError as e:
        raise TransportError(f"{method} {path}: {e}") from e
    if r.status_code >= 400:
        raise TransportError(f"{method} {path}: HTTP {r.status_code} {r.text[:500]}")
    return r.json() if r.content else None


async def upload_releases(api: httpx.AsyncClient, bundles: dict[str, Path]) -> dict[str, str]:
    """Upload each bundle (or find it when already there); returns version -> release id."""
    ids: dict[str, str] = {}
    for version, path in bundles.items():
        r = await api.post("/api/v1/releases", content=path.read_bytes())
        if r.status_code == 409:
            listed = await call(api, "GET", "/api/v1/releases")
            ids[version] = next(x["id"] for x in listed if x["version"] == version)
            continue
        if r.status_code >= 400:
            raise TransportError(f"upload of {path.name}: HTTP {r.status_code} {r.text[:500]}")
        ids[version] = r.json()["id"]
    return ids


async def ensure_sites(api: httpx.AsyncClient, sites: Sequence[Site]) -> None:
    for site in sites:
        doc = {"timezone": site.timezone, "maintenance_windows": site.windows}
        r = await api.post("/api/v1/sites", json={"id": site.id, "name": site.id, **doc})
        if r.status_code == 409:
            await call(api, "PATCH", f"/api/v1/sites/{site.id}", json=doc)
        elif r.status_code >= 400:
            raise TransportError(f"site {site.id}: HTTP {r.status_code} {r.text[:500]}")


async def register(
    srv: Backend, plans: Sequence[StationPlan], advance: Callable[[int], object] | None = None
) -> dict[str, str]:
    """Register every station (profile 1, on its site) in ``srv``'s database; returns station
    id -> password.  ``advance(n)`` is called after each batch of ``n``."""
    db = await Database.open(data_dir=srv.data_dir, url=srv.database_url)
    passwords: dict[str, str] = {}
    try:
        for start in range(0, len(plans), BATCH):
            async with db.session() as s:
                now = dt.datetime.now(dt.UTC)
                for p in plans[start : start + BATCH]:
                    passwords[p.station_id] = await station_registry.register_station(
                        s, p.station_id, model=p.model, actor=ACTOR, now=now
                    )
                await s.flush()
                for p in plans[start : start + BATCH]:
                    await set_profile(s, p.station_id, 1, actor=ACTOR, now=now)
                    await fleet.update_station(
                        s, p.station_id, {"site_id": p.site}, actor=ACTOR, now=now
                    )
            if advance is not None:
                advance(len(plans[start : start + BATCH]))
    finally:
        await db.close()
    return passwords
