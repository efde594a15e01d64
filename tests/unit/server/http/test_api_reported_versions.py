"""The release upload takes how stations report the release (ADR 0037): kept, audited and
shown in the release detail; a bad declaration is a 422 naming the field, before the bundle
is even read."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chargeward.crypto.pki import certificate_pem
from chargeward.server.runtime import add_manufacturer_root
from tests.support.api_app import Api, running_api
from tests.support.fleet import Pki

NOW = dt.datetime.now(dt.UTC)  # the fixture certificates are valid from today


@pytest.fixture
def fleet_pki(tmp_path: Path) -> Pki:
    return Pki.create(tmp_path / "fleet-pki")


@pytest.fixture
async def api(tmp_path: Path, fleet_pki: Pki) -> AsyncIterator[Api]:
    data = tmp_path / "server"
    (data / "tmp").mkdir(parents=True)
    add_manufacturer_root(data, certificate_pem(fleet_pki.root_cert).encode())
    async with running_api(data, NOW) as api:
        yield api


async def test_the_declaration_is_kept_shown_and_audited(
    api: Api, tmp_path: Path, fleet_pki: Pki
) -> None:
    bundle = fleet_pki.bundle(tmp_path / "r.cwb", "1.1.0", 2)
    params = [
        ("reported_version", "AC22=TP-FW 1.1.0-b7"),
        ("reported_version_pattern", r"AC22=TP-FW 1\.1\.0-b[0-9]+"),
    ]
    made = await api.call(
        "POST", "/api/v1/releases", expect=201, params=params, content=bundle.read_bytes()
    )
    declared = {"AC22": {"versions": ["TP-FW 1.1.0-b7"], "pattern": r"TP-FW 1\.1\.0-b[0-9]+"}}
    assert made["reported_versions"] == declared
    shown = await api.call("GET", f"/api/v1/releases/{made['id']}")
    assert shown["reported_versions"] == declared
    entries = await api.call("GET", "/api/v1/audit", params={"limit": 100})
    [upload] = [e for e in entries if e["action"] == "release.upload"]
    assert upload["details"]["reported_versions"] == declared


async def test_undeclared_the_detail_shows_nothing(
    api: Api, tmp_path: Path, fleet_pki: Pki
) -> None:
    bundle = fleet_pki.bundle(tmp_path / "r.cwb", "1.1.0", 2)
    made = await api.call("POST", "/api/v1/releases", expect=201, content=bundle.read_bytes())
    assert made["reported_versions"] == {}


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("reported_version_pattern", "AC22=(a+)+", "repeats a repetition"),
        ("reported_version_pattern", "AC22=(", "is not a regular expression"),
        ("reported_version", "TP-FW 1.1.0-b7", "is not MODEL=VALUE"),
        ("reported_version", "DC50=TP-FW 1.1.0-b7", "not one of the release's hardware models"),
    ],
)
async def test_a_bad_declaration_is_a_422_naming_the_field(
    api: Api, tmp_path: Path, fleet_pki: Pki, name: str, value: str, says: str
) -> None:
    bundle = fleet_pki.bundle(tmp_path / "r.cwb", "1.1.0", 2)
    r = await api.client.post("/api/v1/releases", params={name: value}, content=bundle.read_bytes())
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error" and error["field"] == name
    assert says in error["message"]
    assert await api.call("GET", "/api/v1/releases") == []


async def test_a_release_uploaded_without_a_declaration_gets_one_later(
    api: Api, tmp_path: Path, fleet_pki: Pki
) -> None:
    bundle = fleet_pki.bundle(tmp_path / "r.cwb", "1.1.0", 2)
    made = await api.call("POST", "/api/v1/releases", expect=201, content=bundle.read_bytes())
    path = f"/api/v1/releases/{made['id']}/reported-versions"
    changed = await api.call("PUT", path, params={"reported_version": "AC22=TP-FW 1.1.0-b7"})
    assert changed["reported_versions"] == {
        "AC22": {"versions": ["TP-FW 1.1.0-b7"], "pattern": None}
    }
    shown = await api.call("GET", f"/api/v1/releases/{made['id']}")
    assert shown["reported_versions"] == changed["reported_versions"]
    entries = await api.call("GET", "/api/v1/audit", params={"limit": 100})
    [change] = [e for e in entries if e["action"] == "release.reported_versions"]
    assert (
        change["details"]["from"] == {} and change["details"]["to"] == changed["reported_versions"]
    )
    # A bad one is refused whole and changes nothing; none at all clears it.
    bad = await api.client.put(path, params={"reported_version_pattern": "AC22=(a+)+"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "reported_version_pattern"
    cleared = await api.call("PUT", path)
    assert cleared["reported_versions"] == {}
    missing = await api.client.put("/api/v1/releases/nope/reported-versions")
    assert missing.status_code == 404
