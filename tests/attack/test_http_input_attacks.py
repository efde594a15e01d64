"""Hostile values in paths, queries and forms of the HTTP listener (issue 26, points 6 and 7).

Each request here once made the server answer 500 (or mean something else): a non-ASCII
download signature or form token, a 5,000-character TUF metadata name, a TOTP code in
full-width or Arabic-Indic digits, campaign ids beyond any integer column or made of
superscript or full-width digits, a date beyond ``datetime``'s range, an id with a ``?`` in
the dashboard's own API calls, and a manufacture date in the year 9999.  Each is now a 4xx:
the API's one error shape (``{"error": {"code", "message", "field"}}``), or the dashboard's
error page, and a stored out-of-range date no longer breaks any page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from chargeward.server.store.tables import Station
from tests.support.accounts_api import AccountsApi, User, accounts_api
from tests.support.dashboard import CSRF, browser, log_in
from tests.support.fleet import Pki
from tests.support.tenants import seed_two_customers

pytestmark = pytest.mark.timeout(60)

CAMPAIGN = {
    "stages": {"canary": 1, "then": ["100%"]},
    "gates": {"min_finished": 1},
    "concurrency": {"keep_available": 0},  # one-charger sites: else refused at creation
}
HUGE_ID = "99999999999999999999"
BAD_IDS = (HUGE_ID, "\u00b2", "\uff11", "\u0661")  # superscript 2, full-width 1, Arabic-Indic 1


def problem(r: httpx.Response, *statuses: int) -> dict[str, Any]:
    """The response is one of ``statuses`` (all 4xx) in the API's one error shape."""
    assert r.status_code in statuses, f"{r.request.url}: {r.status_code} {r.text[:300]}"
    body = r.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    return error


def page_refused(r: httpx.Response, *statuses: int) -> None:
    """A dashboard refusal: a 4xx page, not a server error."""
    assert r.status_code in statuses, f"{r.request.url}: {r.status_code} {r.text[:300]}"
    assert "Traceback" not in r.text


@dataclass
class Env:
    env: AccountsApi
    admin: dict[str, str]
    user: User
    browser: httpx.AsyncClient
    campaign_id: int

    async def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        c = await self.env.client()
        return await c.request(method, path, headers=self.admin, **kw)


@pytest.fixture
async def env(tmp_path: Path, pki: Pki) -> AsyncIterator[Env]:
    """Two customers' fleets, campaign 1 ("b-rollout") and an admin logged in to the dashboard."""
    async with accounts_api(tmp_path / "srv") as api:
        ids = await seed_two_customers(api, pki, tmp_path)
        admin = api.bearer(api.admin_token)
        c = await api.client()
        made = await c.post(
            "/api/v1/campaigns",
            headers=admin,
            json={"name": "b-rollout", "release": ids["generic"], "target": {}, **CAMPAIGN},
        )
        assert made.status_code == 201, made.text
        user = await api.add_user("root", "admin")
        async with await browser(api) as b:
            await log_in(api, b, user)
            yield Env(api, admin, user, b, made.json()["id"])


# -- point 6 -------------------------------------------------------------------------------------


async def test_download_link_with_a_non_ascii_signature_is_refused(env: Env) -> None:
    c = await env.env.client()
    r = await c.get(
        "/firmware/sha256/" + "a" * 64,
        params={"station": "CP-A1", "expires": "4102444800", "sig": "é"},
    )
    assert problem(r, 403)["code"] == "forbidden"


async def test_non_ascii_csrf_on_login_logout_and_a_dashboard_form_is_refused(env: Env) -> None:
    async with await browser(env.env, "10.0.0.8") as fresh:
        await fresh.get("/login")  # the login nonce cookie
        r = await fresh.post("/login", data={"csrf": "é", "username": "root", "password": "x"})
        page_refused(r, 403)
    b = env.browser
    r = await b.post("/logout", data={"csrf": "é"})
    page_refused(r, 403)
    r = await b.post(f"/campaigns/{env.campaign_id}/pause", data={"csrf": "ü"})
    page_refused(r, 403)
    # still logged in: the refused logout ended nothing
    assert (await b.get("/campaigns")).status_code == 200


async def test_a_5000_character_tuf_metadata_name_is_not_found(env: Env) -> None:
    c = await env.env.client()
    r = await c.get("/tuf/metadata/" + "a" * 5000 + ".json")
    assert problem(r, 404)["code"] == "not_found"
    r = await c.get("/tuf/metadata/" + "é" * 100 + ".json")
    problem(r, 404)


@pytest.mark.parametrize("zero", ["\uff10", "\u0660"], ids=["full-width", "arabic-indic"])
async def test_totp_in_non_ascii_digits_is_a_wrong_code(env: Env, zero: str) -> None:
    user = await env.env.add_user("nina", "operator")
    # The right code, written in other digits: still a wrong code, never a server error.
    right = user.code(env.env.clock.now)
    other = right.translate({ord("0") + i: chr(ord(zero) + i) for i in range(10)})
    assert other != right and not other.isascii() and other.isdigit()
    r = await env.env.try_login(user, totp=other)
    assert problem(r, 401)["code"] == "unauthenticated"


@pytest.mark.parametrize("ref", BAD_IDS, ids=["20-digits", "superscript-2", "full-width-1", "ar-1"])
async def test_hostile_campaign_ids_are_not_found_on_the_api(env: Env, ref: str) -> None:
    for suffix in ("", "/stations", "/downloads", "/stations/CP-A1"):
        problem(await env.api("GET", f"/api/v1/campaigns/{ref}{suffix}"), 404)
    problem(await env.api("POST", f"/api/v1/campaigns/{ref}/pause"), 404)


async def test_full_width_one_is_not_campaign_1(env: Env) -> None:
    assert (await env.api("GET", f"/api/v1/campaigns/{env.campaign_id}")).status_code == 200
    one = chr(0xFF10 + env.campaign_id)  # full-width digit
    problem(await env.api("GET", f"/api/v1/campaigns/{one}"), 404)


@pytest.mark.parametrize("ref", BAD_IDS, ids=["20-digits", "superscript-2", "full-width-1", "ar-1"])
async def test_hostile_campaign_ids_are_refused_on_the_dashboard(env: Env, ref: str) -> None:
    b = env.browser
    for path in (f"/campaigns/{ref}", f"/campaigns/{ref}/stations/CP-A1"):
        page_refused(await b.get(path), 404, 422)
    page_refused(await b.get(f"/campaigns/{ref}/live"), 401, 404, 422)
    form = await b.get(f"/campaigns/{env.campaign_id}")
    token = CSRF.search(form.text)
    assert token is not None
    page_refused(await b.post(f"/campaigns/{ref}/pause", data={"csrf": token.group(1)}), 404, 422)


async def test_since_before_year_one_in_utc_is_refused(env: Env) -> None:
    for name in ("since", "until"):
        r = await env.api(
            "GET", "/api/v1/security-events", params={name: "0001-01-01T00:00:00+01:00"}
        )
        assert problem(r, 422)["field"] == name
    r = await env.api(
        "GET", "/api/v1/security-events", params={"until": "9999-12-31T23:00:00-01:00"}
    )
    problem(r, 422)


@pytest.mark.parametrize("raw", ["%3F", "%23", "..%2F..%2Fstations", "a%3Fb%23c"])
async def test_dashboard_ids_are_quoted_in_its_own_api_calls(env: Env, raw: str) -> None:
    b = env.browser
    page_refused(await b.get(f"/releases/{raw}"), 404)
    page_refused(await b.get(f"/campaigns/{env.campaign_id}/stations/{raw}"), 404)


# -- point 7 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("day", ["9999-06-01", "0001-01-01", "1989-12-31", "2028-01-01"])
async def test_station_manufacture_date_out_of_range_is_refused(env: Env, day: str) -> None:
    r = await env.api("PATCH", "/api/v1/stations/CP-A1", json={"manufactured_on": day})
    assert problem(r, 422)["field"] == "manufactured_on"
    ok = await env.api("PATCH", "/api/v1/stations/CP-A1", json={"manufactured_on": "2024-06-01"})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("field", ["feature_support_end", "security_support_end"])
async def test_model_support_end_out_of_range_is_refused(env: Env, field: str) -> None:
    r = await env.api("POST", "/api/v1/models", json={"id": "XL9", field: "9999-12-31"})
    assert problem(r, 422)["field"] == field
    r = await env.api("POST", "/api/v1/models", json={"id": "XL9", field: "2035-12-31"})
    assert r.status_code == 201, r.text
    r = await env.api("PATCH", "/api/v1/models/XL9", json={field: "0001-01-01"})
    assert problem(r, 422)["field"] == field


@pytest.mark.parametrize(
    "day", [dt.date(9999, 6, 1), dt.date(9999, 12, 31), dt.date(1, 1, 1)], ids=str
)
async def test_a_stored_out_of_range_date_breaks_no_page(env: Env, day: dt.date) -> None:
    async with env.env.state.db.session() as s:
        row = await s.get(Station, "CP-A1")
        assert row is not None
        row.manufactured_on = day
    support = await env.api("GET", "/api/v1/fleet/support", params={"within_days": 36500})
    assert support.status_code == 200, support.text
    mine = [v for v in support.json() if v["station_id"] == "CP-A1"]
    assert [v["manufactured_on"] for v in mine] in ([day.isoformat()], [])
    detail = await env.api("GET", "/api/v1/stations/CP-A1")
    assert detail.status_code == 200, detail.text
    assert detail.json()["manufactured_on"] == day.isoformat()
    assert (await env.api("GET", "/api/v1/stations")).status_code == 200
    overview = await env.browser.get("/")
    assert overview.status_code == 200, overview.text[:300]
    run = await env.browser.get(f"/campaigns/{env.campaign_id}")
    assert run.status_code == 200, run.text[:300]
