"""Two customers' fleets in one server: stations, sites, security events, a release for every
customer and one locked to fleet-b (real signed bundles, real verification)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from chargeward.release.bundle import verify_bundle
from chargeward.server.fleet import fleet, station_registry
from chargeward.server.rollout import release_catalog
from chargeward.server.store.tables import SecurityEvent, Station
from tests.support.accounts_api import AccountsApi
from tests.support.fleet import MODEL, Pki

A, B = "fleet-a", "fleet-b"
STATIONS = {"CP-A1": (A, "SITE-A"), "CP-A2": (A, "SITE-A"), "CP-B1": (B, "SITE-B")}
NOW = dt.datetime.now(dt.UTC)  # the test PKI is valid from now on


async def seed_two_customers(env: AccountsApi, pki: Pki, work: Path) -> dict[str, str]:
    """Seed the fleets; returns the release ids: ``generic`` and ``b`` (fleet-b's)."""
    s3 = env.state
    ids = {}
    for name, version, customer in (("generic", "1.1.0", None), ("b", "1.2.0", B)):
        path = pki.bundle(work / f"{name}.cwb", version, 2, customer=customer)
        verified = verify_bundle(path, [pki.root_cert], workdir=work / name, now=NOW)
        async with s3.db.session() as s:
            stored = await release_catalog.store_release(s, verified, s3.blobs, actor="m", now=NOW)
        ids[name] = stored.id
    async with s3.db.session() as s:
        for site, customer in (("SITE-A", A), ("SITE-B", B)):
            await fleet.create_site(
                s, fleet.SiteInput(site, site, customer, "UTC", []), actor="m", now=NOW
            )
        for sid, (customer, site) in STATIONS.items():
            await station_registry.register_station(s, sid, actor="m", model=MODEL, now=NOW)
            row = await s.get(Station, sid)
            assert row is not None
            row.customer, row.site_id, row.firmware_version = customer, site, "1.0.0"
            s.add(
                SecurityEvent(
                    station_id=sid,
                    type="FirmwareUpdateFailed",
                    timestamp=NOW,
                    tech_info=f"seen on {sid}",
                    received_at=NOW,
                )
            )
    return ids
