"""``POST /api/v1/campaigns`` on a server with a TUF repository: an unpublished release is
refused (409, the problem shape, naming the release and what to do) as ``station update``
refuses it; published, it is accepted; ``GET /api/v1/campaign-releases`` says which releases a
campaign may use and how many stations would refuse each."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chargeward.server.fleet import station_registry
from chargeward.server.store.tables import Station
from tests.support.api_app import Api, running_api
from tests.support.fleet import MODEL, Pki
from tests.support.stored_releases import mark_published, stored_release
from tests.support.trust import TufKeys

NOW = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def signer(tmp_path: Path) -> Pki:
    """The manufacturer's PKI that signs release bundles."""
    return Pki.create(tmp_path / "fleet-pki")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    data = tmp_path / "data"
    TufKeys.create(tmp_path / "keys").init_repo(data / "tuf", dt.datetime.now(dt.UTC))
    async with running_api(data, NOW) as api:
        assert api.state.repository.initialized
        yield api


def _doc(release: str) -> dict[str, object]:
    return {"name": "c1", "release": release, "stages": {"canary": 1, "then": ["100%"]},
            "jitter": 0, "target": {"models": [MODEL]}}  # fmt: skip


async def test_an_unpublished_release_is_refused_until_published(
    api: Api, tmp_path: Path, signer: Pki
) -> None:
    release = await stored_release(api.db, tmp_path, signer, "1.1.0", 2, NOW)
    async with api.db.session() as s:
        for sid in ("CP-1", "CP-2"):
            await station_registry.register_station(s, sid, actor="test", model=MODEL, now=NOW)
            row = await s.get(Station, sid)
            assert row is not None
            row.firmware_version = "1.0.0"

    r = await api.client.post("/api/v1/campaigns", json=_doc(release))
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "conflict"
    assert error["message"] == (
        "release 1.1.0 is not published: it needs approval (`chargeward release approve`) "
        "and `chargeward release publish` first"
    )
    [offered] = await api.call("GET", "/api/v1/campaign-releases")
    assert (offered["state"], offered["usable"], offered["below_floor"]) == ("pending", False, 0)

    r = await api.client.post("/api/v1/campaigns", json={**_doc(release), "allow_below_floor": 1})
    assert r.status_code == 400 and "allow_below_floor must be true or false" in r.text

    await mark_published(api.db, release, NOW)
    created = await api.call("POST", "/api/v1/campaigns", expect=201, json=_doc(release))
    assert created["status"] == "running" and created["release_id"] == release
    [offered] = await api.call("GET", "/api/v1/campaign-releases")
    assert (offered["state"], offered["usable"]) == ("published", True)
