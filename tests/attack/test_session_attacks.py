"""Attacks on sessions that outlive a security change, and on names shared by principals.

The REST API runs in-process over a real SQLite database (``tests.support.accounts_api``) with
the test's clock.  Point 5 of issue 26: a role change, a password reset, a TOTP reset or a
disabled account ends the user's sessions and API tokens at once, and a privileged account
without TOTP must enrol before its first privileged request.  Point 9: user names and host
token names never collide, the audit log tells them apart, and names are matched in full.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from chargeward import audit
from chargeward.server.auth import accounts, passwords, tokens
from chargeward.server.fleet import station_registry
from chargeward.server.store.tables import User as UserRow
from tests.support.accounts_api import PASSWORD, AccountsApi, User, accounts_api
from tests.support.dashboard import CSRF, browser

NEW_PASSWORD = "another long passphrase 77"


def _code(r: httpx.Response) -> str:
    code: str = r.json()["error"]["code"]
    return code


async def _mint(env: AccountsApi, session: str, scopes: list[str]) -> str:
    c = await env.client()
    body = {"name": f"script-{len(scopes)}", "scopes": scopes, "expires_in": 3600}
    r = await c.post("/api/v1/tokens", json=body, headers=env.bearer(session))
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


async def _status(env: AccountsApi, credential: str, path: str = "/api/v1/stations") -> int:
    c = await env.client()
    return (await c.get(path, headers=env.bearer(credential))).status_code


async def _entries(env: AccountsApi) -> list[audit.Entry]:
    async with env.state.db.session() as s:
        return await audit.entries(s)


async def _revocations(env: AccountsApi, username: str) -> list[dict[str, Any]]:
    return [
        e.details
        for e in await _entries(env)
        if e.action == "user.credentials_revoked" and e.target == username
    ]


async def _enrol(env: AccountsApi, session: str) -> str:
    """Self-enrolment from a password-only session: the secret, then a code proving it."""
    c = await env.client()
    r = await c.post("/api/v1/auth/totp/enrolment", headers=env.bearer(session))
    assert r.status_code == 200, r.text
    secret: str = r.json()["totp_secret"]
    assert r.json()["totp_uri"].startswith("otpauth://totp/")
    code = pyotp.TOTP(secret).at(env.clock.now)
    r = await c.post(
        "/api/v1/auth/totp/enrolment/confirm", json={"code": code}, headers=env.bearer(session)
    )
    assert r.status_code == 204, r.text
    env.clock.advance(seconds=30)  # the confirming code's time-step is used up
    return secret


async def test_promoting_a_logged_in_auditor_ends_the_session_and_asks_for_totp(
    tmp_path: Path,
) -> None:
    """The issue's attack: eve (auditor, no TOTP) is logged in; an admin makes her admin.
    Her open session and her token are refused (401); a new password login gets a session
    that can do nothing privileged (403 ``totp_enrolment_required``) until she enrols TOTP
    and logs in again with a code."""
    async with accounts_api(tmp_path) as env:
        eve = await env.add_user("eve", "auditor")
        assert eve.totp_secret is None
        session = await env.login(eve)
        token = await _mint(env, session, ["stations:read"])
        c = await env.client()
        admin = env.bearer(env.admin_token)
        r = await c.put("/api/v1/users/eve/role", json={"role": "admin"}, headers=admin)
        assert r.status_code == 200, r.text
        # the admin does not learn eve's second factor: she enrols it herself
        assert r.json()["totp_secret"] is None and r.json()["totp_enrolment_required"] is True

        assert await _status(env, session, "/api/v1/users") == 401  # was 200: admin rights
        assert await _status(env, session) == 401
        assert await _status(env, token) == 401
        assert await _revocations(env, "eve") == [
            {"reason": "user.role", "sessions": 1, "tokens": 1, "principal": "token"}
        ]

        login = await env.try_login(eve, totp=None)
        assert login.status_code == 200, login.text
        assert login.json()["totp_enrolment_required"] is True
        bare = login.json()["token"]
        for method, path, body in (
            ("GET", "/api/v1/users", None),
            ("GET", "/api/v1/stations", None),
            ("POST", "/api/v1/users", {"username": "x1", "password": PASSWORD, "role": "admin"}),
        ):
            r = await c.request(method, path, json=body, headers=env.bearer(bare))
            assert r.status_code == 403, r.text
            assert _code(r) == "totp_enrolment_required"
        mint = {"name": "sneaky", "scopes": ["users:manage"], "expires_in": 3600}
        r = await c.post("/api/v1/tokens", json=mint, headers=env.bearer(bare))
        assert r.status_code == 403 and _code(r) == "totp_enrolment_required", r.text
        me = await c.get("/api/v1/auth/me", headers=env.bearer(bare))
        assert me.status_code == 200 and me.json()["permissions"] == []

        secret = await _enrol(env, bare)
        assert await _status(env, bare) == 401  # the password-only session ends with enrolment
        assert (await env.try_login(eve, totp=None)).status_code == 401  # TOTP needed now
        enrolled = User("eve", "admin", secret)
        assert await _status(env, await env.login(enrolled), "/api/v1/users") == 200
        actions = [(e.actor, e.action) for e in await _entries(env) if e.target == "eve"]
        assert ("admin", "user.role") in actions  # the host token (details: principal token)
        assert ("eve", "user.totp_enrol") in actions


async def test_a_password_reset_ends_the_users_sessions_and_tokens(tmp_path: Path) -> None:
    async with accounts_api(tmp_path) as env:
        alice = await env.add_user("alice", "operator")
        session = await env.login(alice)
        token = await _mint(env, session, ["stations:read"])
        c = await env.client()
        r = await c.put(
            "/api/v1/users/alice/password",
            json={"password": NEW_PASSWORD},
            headers=env.bearer(env.admin_token),
        )
        assert r.status_code == 204, r.text
        assert await _status(env, session) == 401  # was 200
        assert await _status(env, token) == 401  # was 200
        assert await _revocations(env, "alice") == [
            {"reason": "user.password", "sessions": 1, "tokens": 1, "principal": "token"}
        ]
        assert (await env.try_login(alice)).status_code == 401  # the old password
        fresh = await env.login(User("alice", "operator", alice.totp_secret, NEW_PASSWORD))
        assert await _status(env, fresh) == 200


async def test_a_totp_reset_ends_sessions_and_tokens_and_the_user_enrols_again(
    tmp_path: Path,
) -> None:
    async with accounts_api(tmp_path) as env:
        alice = await env.add_user("alice", "operator")
        session = await env.login(alice)
        token = await _mint(env, session, ["stations:read"])
        c = await env.client()
        r = await c.post("/api/v1/users/alice/totp/reset", headers=env.bearer(env.admin_token))
        assert r.status_code == 200, r.text
        assert r.json()["totp_enrolled"] is False
        assert await _status(env, session) == 401  # was 200
        assert await _status(env, token) == 401
        assert await _revocations(env, "alice") == [
            {"reason": "user.totp_reset", "sessions": 1, "tokens": 1, "principal": "token"}
        ]
        # the old authenticator's code no longer opens anything privileged
        old = await env.try_login(alice)
        assert old.status_code == 200 and old.json()["totp_enrolment_required"] is True
        assert _code(await c.get("/api/v1/stations", headers=env.bearer(old.json()["token"]))) == (
            "totp_enrolment_required"
        )
        env.clock.advance(seconds=30)
        secret = await _enrol(env, old.json()["token"])
        assert secret != alice.totp_secret
        assert await _status(env, await env.login(User("alice", "operator", secret))) == 200


async def test_disabling_ends_sessions_and_tokens_for_good(tmp_path: Path) -> None:
    """Disable, then enable: the tokens of before the disable stay dead (they used to come
    back with the account)."""
    async with accounts_api(tmp_path) as env:
        alice = await env.add_user("alice", "operator")
        session = await env.login(alice)
        token = await _mint(env, session, ["stations:read"])
        c = await env.client()
        admin = env.bearer(env.admin_token)
        assert (await c.post("/api/v1/users/alice/disable", headers=admin)).status_code == 200
        assert await _status(env, session) == 401 and await _status(env, token) == 401
        assert (await c.post("/api/v1/users/alice/enable", headers=admin)).status_code == 200
        assert await _status(env, token) == 401  # was 200 once enabled again
        assert await _status(env, session) == 401
        assert await _revocations(env, "alice") == [
            {"reason": "user.disable", "sessions": 1, "tokens": 1, "principal": "token"}
        ]


async def test_a_promoted_user_logging_in_to_the_dashboard_is_led_to_enrolment(
    tmp_path: Path,
) -> None:
    """The dashboard: a password-only login of a privileged account without TOTP lands on
    the enrolment page, every other page sends it there, and enrolling ends the session."""
    async with accounts_api(tmp_path) as env:
        eve = await env.add_user("eve", "auditor")
        c = await env.client()
        r = await c.put(
            "/api/v1/users/eve/role", json={"role": "operator"}, headers=env.bearer(env.admin_token)
        )
        assert r.status_code == 200, r.text
        async with await browser(env) as b:
            form = await b.get("/login")
            csrf = CSRF.search(form.text)
            assert csrf is not None
            data = {"csrf": csrf.group(1), "username": "eve", "password": eve.password}
            r = await b.post("/login", data={**data, "totp": "", "next": "/campaigns"})
            assert r.status_code == 303 and r.headers["location"] == "/totp-enrolment", r.text
            for path in ("/", "/campaigns", "/audit"):
                r = await b.get(path)
                assert r.status_code == 303, (path, r.text)
                assert r.headers["location"] == "/totp-enrolment"
            page = await b.get("/totp-enrolment")
            assert page.status_code == 200, page.text
            secret = re.search(r'id="secret" readonly value="([A-Z2-7]+)"', page.text)
            token = CSRF.search(page.text)
            assert secret is not None and token is not None
            wrong = await b.post("/totp-enrolment", data={"csrf": token.group(1), "code": "000000"})
            assert wrong.status_code == 403 and "enrolment refused" in wrong.text
            page = await b.get("/totp-enrolment")  # a new secret: the one shown last counts
            secret = re.search(r'id="secret" readonly value="([A-Z2-7]+)"', page.text)
            token = CSRF.search(page.text)
            assert secret is not None and token is not None
            code = pyotp.TOTP(secret.group(1)).at(env.clock.now)
            r = await b.post("/totp-enrolment", data={"csrf": token.group(1), "code": code})
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), r.text
            assert (await b.get("/")).headers["location"].startswith("/login")  # session over
        env.clock.advance(seconds=30)
        enrolled = User("eve", "operator", secret.group(1))
        assert await _status(env, await env.login(enrolled)) == 200


# -- point 9: names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["admin", "system"])
async def test_a_user_cannot_take_a_reserved_name(tmp_path: Path, name: str) -> None:
    async with accounts_api(tmp_path, admin_name="root-token") as env:
        c = await env.client()
        body = {"username": name, "password": PASSWORD, "role": "auditor"}
        r = await c.post("/api/v1/users", json=body, headers=env.bearer(env.admin_token))
        assert r.status_code == 422, r.text
        assert "reserved" in r.json()["error"]["message"]


async def test_a_user_named_like_a_host_token_cannot_list_or_revoke_its_tokens(
    tmp_path: Path,
) -> None:
    """A user ``admin`` left from before names were reserved (put straight into the
    database) shares the ``admin`` host token's name: she sees and revokes her own tokens
    only, and the audit log tells her from the token (``"principal": "token"``)."""
    async with accounts_api(tmp_path) as env:
        c = await env.client()
        host = env.bearer(env.admin_token)
        body = {"name": "ci-read", "scopes": ["releases:read"], "expires_in": 3600}
        minted = await c.post("/api/v1/tokens", json=body, headers=host)
        assert minted.status_code == 201, minted.text
        async with env.state.db.session() as s:
            s.add(
                UserRow(
                    username="admin",
                    password_hash=passwords.hash_user_password(PASSWORD, "admin"),
                    role="auditor",
                    disabled=False,
                    created_at=env.clock.now,
                    updated_at=env.clock.now,
                )
            )
        session = await env.login(User("admin", "auditor", None))
        mine = await c.get("/api/v1/tokens", headers=env.bearer(session))
        assert mine.status_code == 200 and mine.json() == [], mine.text  # was: ci-read
        for token_id in (1, minted.json()["id"]):
            r = await c.delete(f"/api/v1/tokens/{token_id}", headers=env.bearer(session))
            assert r.status_code == 404, r.text  # was 200: revoked the host's token
        assert (await c.get("/api/v1/releases", headers=host)).status_code == 200
        kinds = {
            (e.actor, e.action, e.details.get("principal"))
            for e in await _entries(env)
            if e.action in ("token.create", "auth.login")
        }
        assert kinds == {
            ("test", "token.create", None),  # made on the host by the CLI's user
            ("admin", "token.create", "token"),  # was ("admin", "token.create", None)
            ("admin", "auth.login", None),  # the user admin
        }


async def test_a_host_token_and_a_user_never_share_an_audit_actor(tmp_path: Path) -> None:
    async with accounts_api(tmp_path) as env:
        await env.add_user("alice", "operator")
        session = await env.login(await env.add_user("bob", "operator"))
        c = await env.client()
        body = {"username": "carol", "password": PASSWORD, "role": "auditor"}
        r = await c.post("/api/v1/users", json=body, headers=env.bearer(env.admin_token))
        assert r.status_code == 201, r.text
        assert (await c.get("/api/v1/stations", headers=env.bearer(session))).status_code == 200
        made = [
            (e.actor, e.action, e.target, e.details.get("principal"))
            for e in await _entries(env)
            if e.action in ("user.create", "auth.login")
        ]
        assert made == [  # the host token is marked (it was not); users are not
            ("admin", "user.create", "alice", "token"),
            ("admin", "user.create", "bob", "token"),
            ("bob", "auth.login", "bob", None),
            ("admin", "user.create", "carol", "token"),
        ]


@pytest.mark.parametrize("name", ["alice\n", "alice\r\n", "ALICE", " alice"])
async def test_a_user_name_with_a_trailing_newline_is_refused(tmp_path: Path, name: str) -> None:
    async with accounts_api(tmp_path) as env:
        c = await env.client()
        body = {"username": name, "password": PASSWORD, "role": "auditor"}
        r = await c.post("/api/v1/users", json=body, headers=env.bearer(env.admin_token))
        assert r.status_code == 422, r.text  # "alice\n" was 201
        users = await c.get("/api/v1/users", headers=env.bearer(env.admin_token))
        assert users.json() == []


async def test_token_station_and_site_ids_with_a_trailing_newline_are_refused(
    tmp_path: Path,
) -> None:
    async with accounts_api(tmp_path) as env:
        c = await env.client()
        admin = env.bearer(env.admin_token)
        body = {"name": "ci\n", "scopes": ["releases:read"], "expires_in": 3600}
        r = await c.post("/api/v1/tokens", json=body, headers=admin)
        assert r.status_code == 422, r.text  # was 201
        with pytest.raises(ValueError, match="station id"):
            station_registry.check_station_id("CP-1\n")  # was accepted
        site = {"id": "SITE-1\n", "name": "x", "timezone": "UTC"}
        r = await c.post("/api/v1/sites", json=site, headers=admin)
        assert r.status_code == 422, r.text
        async with env.state.db.session() as s:
            with pytest.raises(accounts.Refusal):
                await tokens.create_token(s, "ops\n", actor="test", now=env.clock.now)
