"""The dashboard's pages in-process (real SQLite, the real app over ASGI): login with password
and TOTP, redirects to login, CSRF on every form, and the API's roles applied to the pages.

The browser tests (``tests/browser``) drive the same pages in Chromium against a server
process with simulated chargers."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from markupsafe import escape

from chargeward.server.fleet import station_registry
from chargeward.server.http.web_campaigns import campaign_document
from chargeward.server.http.web_page import LOGIN_COOKIE, SESSION_COOKIE
from chargeward.server.http.web_routes import WEB_ROUTES
from chargeward.server.rollout.campaign_protocols import LEGACY_CONSEQUENCE
from chargeward.server.store.tables import Station
from tests.support.accounts_api import AccountsApi, accounts_api
from tests.support.dashboard import CSRF, browser, log_in


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[AccountsApi]:
    async with accounts_api(tmp_path) as e:
        yield e


async def test_every_page_sends_an_anonymous_visitor_to_login(env: AccountsApi) -> None:
    async with await browser(env) as c:
        for method, path in WEB_ROUTES:
            if method != "GET" or "{" in path or path in ("/login",):
                continue
            r = await c.get(path)
            if path == "/campaigns/preview":
                assert r.status_code == 401
                continue
            assert r.status_code == 303, path
            assert r.headers["location"] == f"/login?next={path.replace('/', '%2F')}" or r.headers[
                "location"
            ].startswith("/login?next=/"), r.headers["location"]
        r = await c.get("/campaigns/3")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


async def test_login_needs_the_totp_code_and_a_wrong_one_changes_nothing(env: AccountsApi) -> None:
    alice = await env.add_user("alice", "operator")
    async with await browser(env) as c:
        page = await c.get("/login")
        token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
        form = {"csrf": token, "username": "alice", "password": alice.password, "totp": "000000"}
        r = await c.post("/login", data=form)
        assert r.status_code == 401 and SESSION_COOKIE not in r.headers.get("set-cookie", "")
        assert 'role="alert"' in r.text and "Traceback" not in r.text
        assert (await c.get("/")).status_code == 303  # still not signed in
        await log_in(env, c, alice)
        r = await c.get("/")
        assert r.status_code == 200 and "Fleet overview" in r.text and "alice" in r.text
        assert r.headers["content-security-policy"].startswith("default-src 'self'")


async def test_login_form_without_its_csrf_token_is_refused(env: AccountsApi) -> None:
    alice = await env.add_user("alice", "operator")
    async with await browser(env) as c:
        await c.get("/login")
        r = await c.post(
            "/login",
            data={
                "username": "alice",
                "password": alice.password,
                "totp": alice.code(env.clock.now),
            },
        )
        assert r.status_code == 403 and "CSRF" in r.text
        assert SESSION_COOKIE not in r.headers.get("set-cookie", "")
    async with await browser(env, "10.0.0.8") as other:  # no login nonce cookie at all
        assert LOGIN_COOKIE not in other.cookies
        r = await other.post("/login", data={"csrf": "0" * 64, "username": "alice"})
        assert r.status_code == 403


async def test_every_form_refuses_a_post_without_the_sessions_csrf_token(env: AccountsApi) -> None:
    alice = await env.add_user("alice", "admin")
    posts = [path for method, path in WEB_ROUTES if method == "POST" and path != "/login"]
    concrete = {"{ref}": "1", "{action}": "abort", "{release_id}": "0" * 64}
    async with await browser(env) as c:
        await log_in(env, c, alice)
        for route in posts:
            path = route
            for name, value in concrete.items():
                path = path.replace(name, value)
            form = {"name": "x", "release": "r", "approval": "{}", "totp": "123456"}
            for csrf in (None, "f" * 64):
                data = form | ({"csrf": csrf} if csrf else {})
                r = await c.post(path, data=data)
                assert r.status_code == 403 and "CSRF" in r.text, (path, csrf, r.text[:300])
        assert len(posts) >= 5  # logout, campaigns (create, actions), releases (approve, publish)
        assert (await c.get("/")).status_code == 200  # the refused logout did not log out
        listed = await c.get("/campaigns")
        assert "No campaigns yet." in listed.text  # the refused create made nothing


async def test_an_auditor_sees_campaigns_but_has_no_create_form_and_cannot_post_one(
    env: AccountsApi,
) -> None:
    eve = await env.add_user("eve", "auditor")
    async with await browser(env) as c:
        await log_in(env, c, eve)
        page = await c.get("/campaigns")
        assert page.status_code == 200 and "New campaign" not in page.text
        token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
        r = await c.post("/campaigns", data={"csrf": token, "name": "sneaky", "release": "x"})
        assert r.status_code == 403 and "campaigns:write" in r.text, r.text[:500]
        r = await c.post("/campaigns/1/approve", data={"csrf": token})
        assert r.status_code in (403, 404)


async def test_logout_ends_the_session_on_the_server(env: AccountsApi) -> None:
    alice = await env.add_user("alice", "operator")
    async with await browser(env) as c:
        await log_in(env, c, alice)
        stolen = c.cookies[SESSION_COOKIE]
        page = await c.get("/")
        token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
        r = await c.post("/logout", data={"csrf": token})
        assert r.status_code == 303 and r.headers["location"] == "/login"
    async with await browser(env, "10.0.0.9") as thief:
        thief.cookies.set(SESSION_COOKIE, stolen)
        assert (await thief.get("/")).status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil"])
async def test_login_never_redirects_off_site(env: AccountsApi, target: str) -> None:
    alice = await env.add_user("alice", "operator")
    async with await browser(env) as c:
        page = await c.get("/login", params={"next": target})
        token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
        r = await c.post(
            "/login",
            data={
                "csrf": token,
                "username": "alice",
                "password": alice.password,
                "totp": alice.code(env.clock.now),
                "next": target,
            },
        )
        assert r.status_code == 303 and r.headers["location"] == "/"


async def test_an_audit_entry_verifies_and_one_changed_in_the_database_does_not(
    env: AccountsApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARGEWARD_KEY_PASSPHRASE", "test fixture passphrase")  # not a secret
    aud = await env.add_user("aud", "auditor")
    admin = await env.client()
    r = await admin.post("/api/v1/audit/checkpoints", headers=env.bearer(env.admin_token))
    assert r.status_code == 201, r.text
    signed = r.json()["size"]
    async with await browser(env) as c:
        await log_in(env, c, aud)  # appended after the checkpoint
        log = await c.get("/audit")
        assert log.status_code == 200 and "auth.login" in log.text and "user.create" in log.text
        page = await c.get("/audit/0")
        assert page.status_code == 200 and ">Verified<" in page.text, page.text
        assert page.text.count('class="passed"') == 3
        newer = await c.get(f"/audit/{signed}")
        assert "Partly verified" in newer.text and "newer than the latest checkpoint" in newer.text
        # Someone with write access to the database changes the first entry's actor.
        db = sqlite3.connect(tmp_path / "chargeward.db")
        with db:
            db.execute("DROP TRIGGER IF EXISTS audit_entries_no_update")
            db.execute("UPDATE audit_entries SET actor = 'mallory' WHERE leaf_index = 0")
        db.close()
        page = await c.get("/audit/0")
        assert "Does not verify" in page.text and "stored at append time" in page.text
        assert "mallory" in page.text and page.text.count('class="failed"') >= 1
        assert (await c.get("/audit/999999")).status_code == 404


async def test_an_operator_has_no_audit_log_and_fragments_escape_what_they_echo(
    env: AccountsApi,
) -> None:
    olive = await env.add_user("olive", "operator")
    async with await browser(env) as c:
        await log_in(env, c, olive)
        assert "Audit log" not in (await c.get("/")).text
        r = await c.get("/audit")
        assert r.status_code == 403 and "audit:read" in r.text
        hostile = "<script>alert(1)</script>"
        r = await c.get("/campaigns/preview", params={"model": hostile})
        assert hostile not in r.text and str(escape(hostile)) in r.text
        r = await c.get("/campaigns/999/live")
        assert r.status_code == 404 and r.text.startswith("<p role='alert'>")


def test_the_create_form_becomes_the_apis_campaign_document() -> None:
    doc = campaign_document(
        {
            "name": " night-rollout ",
            "release": "abc",
            "model": "AC22",
            "site": "",
            "canary": "5",
            "stages": "25%, 100%",
            "soak": "10m",
            "jitter": "",
            "download_ahead": "4h",
            "bypass_windows": "on",
        }
    )
    assert doc == {
        "name": "night-rollout",
        "release": "abc",
        "target": {"models": ["AC22"]},
        "stages": {"canary": 5, "then": ["25%", "100%"]},
        "soak": "10m",
        "download_ahead": "4h",
        "bypass_windows": True,
    }
    assert "bypass_windows" not in campaign_document({"name": "x", "release": "r"})


async def test_the_campaign_preview_says_how_each_protocol_is_updated(env: AccountsApi) -> None:
    """A 1.6 station marked legacy is named with what plain UpdateFirmware costs; one that
    refused SignedUpdateFirmware unmarked is named as left out (ADR 0039)."""
    fleet = {  # id -> (protocol, marked legacy, signed update support)
        "CP-201": ("2.0.1", False, None),
        "CP-WP": ("1.6", False, True),
        "CP-MARKED": ("1.6", True, None),
        "CP-OLD": ("1.6", False, False),
    }
    async with env.state.db.session() as s:
        for sid, (version, marked, signed) in fleet.items():
            await station_registry.register_station(
                s, sid, actor="t", model="AC22", now=env.clock()
            )
            row = await s.get(Station, sid)
            assert row is not None
            row.ocpp_version, row.legacy_firmware_update = version, marked
            row.signed_update_support = signed
    olive = await env.add_user("olive", "operator")
    async with await browser(env) as c:
        await log_in(env, c, olive)
        r = await c.get("/campaigns/preview", params={"model": "AC22"})
    assert r.status_code == 200
    assert "OCPP: 1.6 3, 2.0.1 1" in r.text
    assert 'id="preview-legacy">1 marked legacy (CP-MARKED)' in r.text
    assert str(escape(LEGACY_CONSEQUENCE)) in r.text
    assert 'id="preview-refused">1 would be left out (CP-OLD)' in r.text
