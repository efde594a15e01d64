"""A release locked to one customer, sent to another customer's station by the server.

The reference agent refuses such a release itself (the customer in its signed TUF listing,
``tests/attack/test_repository_attacks.py``), but a third-party station installs whatever
correctly signed firmware it is sent.  So the server refuses to record the UpdateFirmware:
the operator's single update and every campaign dispatch go through
``update_orders.create_update``.  Real bundle, real verification, real database.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from chargeward.errors import Conflict
from chargeward.release.bundle import build_bundle, verify_bundle
from chargeward.server.auth import tenancy
from chargeward.server.auth.roles import ROLE_PERMISSIONS
from chargeward.server.fleet import station_registry
from chargeward.server.http import authz
from chargeward.server.rollout import release_catalog, update_orders
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.db import Database
from chargeward.server.store.tables import FirmwareUpdate, Station
from tests.support.accounts_api import AccountsApi, User, accounts_api
from tests.support.dashboard import browser, log_in
from tests.support.fleet import MODEL, Pki
from tests.support.tenants import A, B, seed_two_customers

NOW = dt.datetime.now(dt.UTC)  # the test PKI is valid from now on


async def test_customer_locked_release_dispatch_to_another_customers_station_refused(
    tmp_path: Path, pki: Pki
) -> None:
    payload = tmp_path / "fleet-a.payload"
    payload.write_bytes(b"firmware for fleet-a only\n" * 512)
    bundle = tmp_path / "fleet-a-1.1.0.cwb"
    build_bundle(
        payload,
        bundle,
        version="1.1.0",
        security_version=2,
        hardware_models=[MODEL],
        signer=pki.signing_signer,
        signing_certificate=pki.signing_cert,
        customer="fleet-a",
    )
    verified = verify_bundle(bundle, [pki.root_cert], workdir=tmp_path / "work", now=NOW)
    db = await Database.open(data_dir=tmp_path / "srv")
    try:
        async with db.session() as s:
            release = await release_catalog.store_release(
                s, verified, BlobStore(tmp_path / "srv" / "blobs"), actor="alice", now=NOW
            )
            for station_id, customer in (("CP-A", "fleet-a"), ("CP-B", "fleet-b"), ("CP-0", None)):
                await station_registry.register_station(
                    s, station_id, actor="alice", model=MODEL, now=NOW
                )
                row = await s.get(Station, station_id)
                assert row is not None
                row.customer = customer
        assert release.customer == "fleet-a"
        for other, owner in (("CP-B", "fleet-b"), ("CP-0", "no customer")):
            async with db.session() as s:
                with pytest.raises(Conflict) as refused:
                    await update_orders.create_update(
                        s, other, release.id, actor="alice", now=NOW, require_published=False
                    )
            assert str(refused.value) == (
                f"release 1.1.0 is locked to customer fleet-a, station {other} belongs to {owner}"
            )
        async with db.session() as s:  # the customer's own station gets it
            order = await update_orders.create_update(
                s, "CP-A", release.id, actor="alice", now=NOW, require_published=False
            )
        async with db.snapshot() as s:
            rows = (await s.execute(FirmwareUpdate.__table__.select())).all()
        assert [r.station_id for r in rows] == ["CP-A"]  # nothing recorded for the others
        assert order.station_id == "CP-A"
    finally:
        await db.close()


# -- customer accounts: an operator of one customer sees and touches only its stations -------

CAMPAIGN = {
    "stages": {"canary": 1, "then": ["100%"]},
    "gates": {"min_finished": 1},
    "concurrency": {"keep_available": 0},  # one-charger sites: else refused at creation
}


@dataclass
class Tenants:
    env: AccountsApi
    generic: str  # a release for every customer
    locked_b: str  # a release locked to fleet-b
    campaign_b: str  # fleet-b's campaign, made by the manufacturer
    olga: dict[str, str]  # fleet-a's operator: her bearer header
    ada: dict[str, str]  # fleet-a's auditor
    admin: dict[str, str]
    users: dict[str, User] = field(default_factory=dict)

    async def call(self, who: dict[str, str], method: str, path: str, **kw: Any) -> Any:
        c = await self.env.client()
        return await c.request(method, path, headers=who, **kw)


@pytest.fixture
async def tenants(tmp_path: Path, pki: Pki) -> AsyncIterator[Tenants]:
    """Two customers' stations and sites, a release for all and one for fleet-b alone,
    fleet-b's campaign, and fleet-a's operator logged in."""
    async with accounts_api(tmp_path / "srv") as env:
        ids = await seed_two_customers(env, pki, tmp_path)
        admin = env.bearer(env.admin_token)
        t = Tenants(env, ids["generic"], ids["b"], "b-rollout", {}, {}, admin)
        made = await t.call(
            admin,
            "POST",
            "/api/v1/campaigns",
            json={
                "name": "b-rollout",
                "release": ids["generic"],
                "target": {"customers": [B]},
                **CAMPAIGN,
            },
        )
        assert made.status_code == 201, made.text
        olga = await env.add_user("olga", "operator", customer=A)
        t.olga, t.users["olga"] = env.bearer(await env.login(olga)), olga
        ada = await env.add_user("ada", "auditor", customer=A)
        t.ada = env.bearer(await env.login(ada))
        yield t


def _ids(rows: list[dict[str, Any]], key: str = "id") -> list[str]:
    return sorted(r[key] for r in rows)


async def test_customer_accounts_list_only_their_stations_sites_releases_campaigns_events(
    tenants: Tenants,
) -> None:
    t = tenants
    me = (await t.call(t.olga, "GET", "/api/v1/auth/me")).json()
    assert me["customer"] == A
    for path, key, theirs, everything in (
        ("/api/v1/stations", "id", ["CP-A1", "CP-A2"], ["CP-A1", "CP-A2", "CP-B1"]),
        ("/api/v1/stations?customer=fleet-b", "id", [], ["CP-B1"]),
        ("/api/v1/sites", "id", ["SITE-A"], ["SITE-A", "SITE-B"]),
        ("/api/v1/releases", "id", [t.generic], sorted([t.generic, t.locked_b])),
        ("/api/v1/campaigns", "name", [], ["b-rollout"]),
        ("/api/v1/fleet/support", "station_id", ["CP-A1", "CP-A2"], ["CP-A1", "CP-A2", "CP-B1"]),
        ("/api/v1/security-events", "station_id", ["CP-A1", "CP-A2"], ["CP-A1", "CP-A2", "CP-B1"]),
    ):
        mine = await t.call(t.ada if "security" in path else t.olga, "GET", path)
        assert mine.status_code == 200, (path, mine.text)
        assert _ids(mine.json(), key) == theirs, path
        # the manufacturer's view of the same route: the filter is the only difference
        assert _ids((await t.call(t.admin, "GET", path)).json(), key) == everything, path


async def test_another_customers_objects_are_not_found_on_every_route_that_names_one(
    tenants: Tenants,
) -> None:
    """Every route a customer account may use, with each of its path parameters naming an
    object of the other customer: 404 worded as for one that does not exist."""
    t = tenants
    async with t.env.state.db.session() as s:
        order = await update_orders.create_update(
            s, "CP-B1", t.generic, actor="m", now=NOW, require_published=False
        )
    own = await t.call(
        t.olga,
        "POST",
        "/api/v1/campaigns",
        json={"name": "a-own", "release": t.generic, "target": {}, **CAMPAIGN},
    )
    assert own.status_code == 201, own.text
    other = {
        "station_id": "CP-B1",
        "site_id": "SITE-B",
        "release_id": t.locked_b,
        "ref": t.campaign_b,
        "transaction_id": order.transaction_id,
        "request_id": "1",
        "model_id": MODEL,
    }
    tried = 0
    for (method, template), _ in tenancy.CUSTOMER_ROUTES.items():
        names = re.findall(r"\{([^}]+)\}", template)
        for name in names:
            if name in ("request_id", "model_id"):
                continue
            path = template
            for n in names:  # the others name the caller's own (or nothing)
                path = path.replace(f"{{{n}}}", other[n] if n == name else _own(n, t))
            r = await t.call(t.olga, method, path, json={})
            assert r.status_code == 404, (method, path, r.text)
            what = {"station_id": "station", "site_id": "site", "release_id": "release"}
            what |= {"ref": "campaign", "transaction_id": "firmware update"}
            assert r.json()["error"]["message"] == f"no {what[name]} {other[name]!r}", (
                method,
                path,
            )
            nowhere = await t.call(t.olga, method, path.replace(other[name], "NOPE-404"))
            assert nowhere.status_code == 404  # the same answer as for nothing at all
            tried += 1
    assert tried >= 20
    # the campaign's own station list and state did not change
    runs = await t.call(t.admin, "GET", f"/api/v1/campaigns/{t.campaign_b}")
    assert runs.json()["status"] == "running"


def _own(name: str, t: Tenants) -> str:
    mine = {"station_id": "CP-A1", "ref": "a-own", "request_id": "1", "model_id": MODEL}
    return mine.get(name, "NOPE-404")


async def test_a_customer_operator_cannot_reach_another_customers_stations_through_a_campaign(
    tenants: Tenants,
) -> None:
    t = tenants
    base = {"release": t.generic, **CAMPAIGN}
    named = await t.call(
        t.olga,
        "POST",
        "/api/v1/campaigns",
        json={"name": "x1", "target": {"customers": [B]}, **base},
    )
    assert named.status_code == 403
    assert (
        named.json()["error"]["message"]
        == "an account of customer fleet-a cannot target stations of fleet-b"
    )
    listed = await t.call(
        t.olga,
        "POST",
        "/api/v1/campaigns",
        json={"name": "x2", "target": {"stations": ["CP-B1"]}, **base},
    )
    assert listed.status_code == 409  # CP-B1 is not selectable: the target is fleet-a's only
    locked = await t.call(
        t.olga,
        "POST",
        "/api/v1/campaigns",
        json={"name": "x3", "target": {}, **base, "release": t.locked_b},
    )
    assert locked.status_code == 404
    assert locked.json()["error"]["message"] == f"no release {t.locked_b!r}"
    everything = await t.call(
        t.olga, "POST", "/api/v1/campaigns", json={"name": "a1", "target": {}, **base}
    )
    assert everything.status_code == 201, everything.text
    assert everything.json()["spec"]["target"]["customers"] == [A]
    stations = await t.call(t.olga, "GET", "/api/v1/campaigns/a1/stations")
    assert _ids(stations.json(), "station_id") == ["CP-A1", "CP-A2"]
    assert _ids((await t.call(t.olga, "GET", "/api/v1/campaigns")).json(), "name") == ["a1"]
    async with t.env.state.db.snapshot() as s:
        targets = (await s.execute(select(FirmwareUpdate.station_id))).scalars().all()
    assert "CP-B1" not in targets  # nothing was dispatched to fleet-b's station


async def test_routes_of_the_manufacturer_are_refused_to_customer_accounts(
    tenants: Tenants,
) -> None:
    """Every route the operator role allows but customer accounts may not use: 403."""
    t = tenants
    refused = 0
    for (method, template), needed in authz.ROUTE_PERMISSIONS.items():
        if needed in (authz.PUBLIC, authz.AUTHENTICATED) or (method, template) in (
            tenancy.CUSTOMER_ROUTES
        ):
            continue
        if needed not in ROLE_PERMISSIONS["operator"]:
            continue
        path = re.sub(r"\{[^}]+\}", "CP-A1", template)
        r = await t.call(t.olga, method, path, json={})
        assert r.status_code == 403, (method, path, r.text)
        assert (
            r.json()["error"]["message"] == "an account of customer fleet-a cannot use this route"
        )
        refused += 1
    assert refused >= 10  # e.g. the audit log, metrics, site and model edits, station import
    # and the account itself cannot be given a manufacturer's role
    c = await t.env.client()
    for role in ("approver", "release-manager", "admin"):
        r = await c.post(
            "/api/v1/users",
            json={"username": f"x{role[:3]}", "password": "x" * 20, "role": role, "customer": A},
            headers=t.admin,
        )
        assert r.status_code == 422, r.text
        assert "an account of customer fleet-a can be operator or auditor" in r.text
    r = await c.put("/api/v1/users/olga/role", json={"role": "approver"}, headers=t.admin)
    assert r.status_code == 422


async def test_the_dashboard_shows_a_customer_operator_only_their_fleet(tenants: Tenants) -> None:
    """The pages act through the API with the session's account, so the same scoping holds."""
    t = tenants
    async with await browser(t.env) as c:
        await log_in(t.env, c, t.users["olga"])
        home = await c.get("/")
        assert home.status_code == 200, home.text
        assert "(operator, fleet-a)" in home.text
        assert "SITE-A" in home.text and "SITE-B" not in home.text
        preview = await c.get("/campaigns/preview", headers={"HX-Request": "true"})
        assert preview.status_code == 200, preview.text
        assert "SITE-A" in preview.text and "SITE-B" not in preview.text
        campaigns = await c.get("/campaigns")
        assert campaigns.status_code == 200 and "b-rollout" not in campaigns.text
        b_id = (await t.call(t.admin, "GET", f"/api/v1/campaigns/{t.campaign_b}")).json()["id"]
        theirs = await c.get(f"/campaigns/{b_id}")
        assert theirs.status_code == 404 and "no campaign" in theirs.text
        run = await c.get(f"/campaigns/{b_id}/stations/CP-B1")
        assert run.status_code == 404 and "CP-B1" not in run.text.replace("/CP-B1", "")
