"""Operator accounts through the real API: TOTP, lockout, sessions, scoped tokens, audit."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from chargeward import audit
from chargeward.server.auth import accounts, lockout, sessions
from chargeward.server.auth.roles import PERMISSIONS
from chargeward.server.runtime import prepare
from chargeward.server.store.db import Database
from tests.support.accounts_api import NOW, PASSWORD, AccountsApi, accounts_api


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[AccountsApi]:
    async with accounts_api(tmp_path) as api:
        yield api


def error(r: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()["error"]
    return body


async def audit_reasons(env: AccountsApi, action: str) -> list[Any]:
    async with env.state.db.session() as s:
        rows = await audit.entries(s)
    return [r.details.get("reason") for r in rows if r.action == action]


async def test_privileged_login_needs_a_totp_code_that_cannot_be_replayed(
    env: AccountsApi,
) -> None:
    alice = await env.add_user("alice", "approver")
    assert alice.totp_secret  # shown once, at creation

    missing = await env.try_login(alice, totp=None)
    assert missing.status_code == 401
    assert error(missing) == {
        "code": "unauthenticated",
        "message": "TOTP code required for this account",
        "field": None,
    }
    wrong = await env.try_login(
        alice, totp="000000" if alice.code(env.clock.now) != "000000" else "111111"
    )
    assert wrong.status_code == 401 and error(wrong)["message"] == "invalid TOTP code"

    code = alice.code(env.clock.now)
    assert (await env.try_login(alice, totp=code)).status_code == 200
    replayed = await env.try_login(alice, totp=code)  # same code, same 30 s step
    assert replayed.status_code == 401 and error(replayed)["message"] == "invalid TOTP code"
    env.clock.advance(seconds=30)
    older = alice.code(env.clock.now - dt.timedelta(seconds=30))
    assert (await env.try_login(alice, totp=older)).status_code == 401  # an older step: replay
    assert (await env.try_login(alice)).status_code == 200  # a fresh step works

    assert await audit_reasons(env, "auth.login_failed") == [
        "totp missing",
        "totp wrong",
        "totp replayed",
        "totp replayed",
    ]


async def test_an_auditor_logs_in_with_a_password_alone(env: AccountsApi) -> None:
    eve = await env.add_user("eve", "auditor")
    assert eve.totp_secret is None
    r = await env.try_login(eve, totp=None)
    assert r.status_code == 200, r.text
    c = await env.client()
    me = (await c.get("/api/v1/auth/me", headers=env.bearer(r.json()["token"]))).json()
    assert me["name"] == "eve" and me["role"] == "auditor" and "audit:read" in me["permissions"]
    assert "releases:upload" not in me["permissions"]


async def test_wrong_password_and_unknown_user_get_the_same_answer(env: AccountsApi) -> None:
    alice = await env.add_user("alice", "operator")
    bad = await env.try_login(alice, password="not the right password")
    # From another address: of unknown names only an address window's first is audited.
    ghost = await env.try_login(accounts_user("ghost"), totp=None, address="10.0.0.2")
    assert bad.status_code == ghost.status_code == 401
    assert error(bad)["message"] == error(ghost)["message"] == "invalid username or password"
    assert await audit_reasons(env, "auth.login_failed") == ["wrong password", "unknown user"]


def accounts_user(name: str) -> Any:
    from tests.support.accounts_api import User

    return User(name, "operator", None)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"username": "bob", "password": "short", "role": "operator"}, "password", "12-256"),
        (
            {"username": "bob", "password": "my name is bob!!", "role": "operator"},
            "password",
            "username",
        ),
        ({"username": "bob", "password": "a long passphrase", "role": "root"}, "role", "root"),
        (
            {"username": "Bob Smith", "password": "a long passphrase", "role": "auditor"},
            "username",
            "lowercase",
        ),
        ({"username": "bob", "password": "a long passphrase"}, "role", "Field required"),
    ],
)
async def test_bad_user_data_is_refused_naming_the_field(
    env: AccountsApi, body: dict[str, str], field: str, words: str
) -> None:
    c = await env.client()
    r = await c.post("/api/v1/users", json=body, headers=env.bearer(env.admin_token))
    assert r.status_code == 422, r.text
    assert error(r)["code"] == "validation_error"
    assert error(r)["field"] == field
    assert words in error(r)["message"]


async def test_five_failures_lock_the_account_with_a_growing_back_off(env: AccountsApi) -> None:
    alice = await env.add_user("alice", "operator")
    for _ in range(lockout.ACCOUNT_FAILURES):
        assert (await env.try_login(alice, password="wrong password!!")).status_code == 401
    locked = await env.try_login(alice)  # the right password and code: still refused
    assert locked.status_code == 429
    assert locked.headers["Retry-After"] == "60"
    assert error(locked) == {
        "code": "rate_limited",
        "message": "account locked, retry after 60 s",
        "field": None,
    }
    other_address = await env.try_login(alice, address="10.9.9.9")
    assert other_address.status_code == 429  # the account is locked, wherever one comes from

    env.clock.advance(seconds=61)
    for _ in range(lockout.ACCOUNT_FAILURES):
        assert (await env.try_login(alice, password="wrong password!!")).status_code == 401
    again = await env.try_login(alice)
    assert again.status_code == 429 and again.headers["Retry-After"] == "120"  # doubled

    env.clock.advance(seconds=121)
    assert (await env.try_login(alice)).status_code == 200
    env.clock.advance(seconds=30)
    # A success clears the count: four new failures do not lock, and the back-off restarts.
    for _ in range(lockout.ACCOUNT_FAILURES - 1):
        await env.try_login(alice, password="wrong password!!")
    assert (await env.try_login(alice)).status_code == 200
    locks = [r.details for r in await _entries(env) if r.action == "auth.locked"]
    assert [d["lock_seconds"] for d in locks] == [60, 120]  # once per lock (ADR 0027)


async def _entries(env: AccountsApi) -> list[audit.Entry]:
    async with env.state.db.session() as s:
        return await audit.entries(s)


async def test_many_failures_from_one_address_lock_that_address(env: AccountsApi) -> None:
    alice = await env.add_user("alice", "operator")
    for i in range(lockout.ADDRESS_FAILURES):  # spread over many names, none locked itself
        r = await env.try_login(accounts_user(f"guess{i}"), totp=None, address="203.0.113.7")
        assert r.status_code == 401
    refused = await env.try_login(alice, address="203.0.113.7")
    assert refused.status_code == 429
    assert error(refused)["message"].startswith("too many failed logins from this address")
    assert (await env.try_login(alice, address="198.51.100.2")).status_code == 200


async def test_sessions_end_when_idle_after_eight_hours_and_on_logout(env: AccountsApi) -> None:
    eve = await env.add_user("eve", "auditor")
    c = await env.client()

    async def me(token: str) -> httpx.Response:
        return await c.get("/api/v1/auth/me", headers=env.bearer(token))

    idle = await env.login(eve)
    env.clock.advance(minutes=29)
    assert (await me(idle)).status_code == 200  # use keeps it alive
    env.clock.advance(minutes=29)
    assert (await me(idle)).status_code == 200
    env.clock.advance(minutes=31)
    expired = await me(idle)
    assert expired.status_code == 401
    assert error(expired)["message"] == "session expired: log in again"
    assert expired.headers["WWW-Authenticate"] == "Bearer"

    busy = await env.login(eve)
    for _ in range(8 * 3 - 1):  # used every 20 minutes: never idle ...
        env.clock.advance(minutes=20)
        assert (await me(busy)).status_code == 200
    env.clock.advance(minutes=20)
    assert (await me(busy)).status_code == 401  # ... but over after 8 hours

    short = await env.login(eve)
    assert (await c.post("/api/v1/auth/logout", headers=env.bearer(short))).status_code == 204
    ended = await me(short)
    assert ended.status_code == 401 and error(ended)["message"] == "session ended: log in again"


async def test_scoped_tokens_do_only_what_their_scopes_and_creator_allow(
    env: AccountsApi,
) -> None:
    carol = await env.add_user("carol", "release-manager")
    session = await env.login(carol)
    c = await env.client()

    async def mint(
        token: str, scopes: list[str], name: str = "ci", expires_in: int = 3600
    ) -> httpx.Response:
        return await c.post(
            "/api/v1/tokens",
            json={"name": name, "scopes": scopes, "expires_in": expires_in},
            headers=env.bearer(token),
        )

    beyond = await mint(session, ["stations:read", "stations:command"])
    assert beyond.status_code == 403
    assert error(beyond)["field"] == "scopes"
    assert "stations:command" in error(beyond)["message"]
    unknown = await mint(session, ["stations:everything"])
    assert unknown.status_code == 422 and error(unknown)["field"] == "scopes"

    made = await mint(session, ["stations:read"])
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert made.json()["owner"] == "carol" and made.json()["scopes"] == ["stations:read"]

    assert (await c.get("/api/v1/stations", headers=env.bearer(token))).status_code == 200
    upload = await c.post("/api/v1/releases", content=b"bundle", headers=env.bearer(token))
    assert upload.status_code == 403
    assert error(upload) == {
        "code": "forbidden",
        "message": "this token lacks the permission releases:upload",
        "field": None,
    }
    # carol herself may upload: the refusal is the token's scope, not her role
    own = await c.post("/api/v1/releases", content=b"bundle", headers=env.bearer(session))
    assert own.status_code not in (401, 403)
    # a token cannot mint tokens (it would outlive its own expiry)
    assert (await mint(token, ["stations:read"], name="ci2")).status_code == 403

    listed = (await c.get("/api/v1/tokens", headers=env.bearer(session))).json()
    assert [t["name"] for t in listed] == ["ci"]
    revoked = await c.delete(f"/api/v1/tokens/{listed[0]['id']}", headers=env.bearer(session))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    gone = await c.get("/api/v1/stations", headers=env.bearer(token))
    assert gone.status_code == 401 and error(gone)["message"] == "token revoked"

    short = (await mint(session, ["releases:read"], name="short", expires_in=60)).json()["token"]
    env.clock.advance(seconds=61)
    late = await c.get("/api/v1/releases", headers=env.bearer(short))
    assert late.status_code == 401 and error(late)["message"] == "token expired"


async def test_demoting_or_disabling_a_user_narrows_or_ends_their_tokens(
    env: AccountsApi,
) -> None:
    carol = await env.add_user("carol", "release-manager")
    session = await env.login(carol)
    c = await env.client()
    admin = env.bearer(env.admin_token)
    token = (
        await c.post(
            "/api/v1/tokens",
            json={"name": "ci", "scopes": ["releases:read", "releases:upload"], "expires_in": 600},
            headers=env.bearer(session),
        )
    ).json()["token"]
    changed = await c.put("/api/v1/users/carol/role", json={"role": "auditor"}, headers=admin)
    assert changed.status_code == 200 and changed.json()["totp_secret"] is None
    for credential in (session, token):  # a role change ends both (issue 26, point 5)
        r = await c.get("/api/v1/releases", headers=env.bearer(credential))
        assert r.status_code == 401, r.text
    session = await env.login(carol)  # as an auditor now
    assert (await c.get("/api/v1/releases", headers=env.bearer(session))).status_code == 200
    upload = await c.post("/api/v1/releases", content=b"x", headers=env.bearer(session))
    assert upload.status_code == 403

    assert (await c.post("/api/v1/users/carol/disable", headers=admin)).status_code == 200
    for credential in (session, token):
        r = await c.get("/api/v1/releases", headers=env.bearer(credential))
        assert r.status_code == 401, r.text
    assert (await env.try_login(carol)).status_code == 401

    trail = [
        (e.actor, e.action, e.target)
        for e in await _entries(env)
        if e.action.startswith(("user.", "token."))
    ]
    assert trail == [
        ("test", "token.create", "admin"),
        ("admin", "user.create", "carol"),
        ("carol", "token.create", "ci"),
        ("admin", "user.role", "carol"),
        ("admin", "user.credentials_revoked", "carol"),
        ("admin", "user.disable", "carol"),
        ("admin", "user.credentials_revoked", "carol"),
    ]


async def test_a_user_made_privileged_is_enrolled_in_totp(env: AccountsApi) -> None:
    """The user enrols at the next login, before any privileged request (ADR 0028); the
    whole flow is in tests/attack/test_session_attacks.py."""
    eve = await env.add_user("eve", "auditor")
    c = await env.client()
    r = await c.put(
        "/api/v1/users/eve/role", json={"role": "operator"}, headers=env.bearer(env.admin_token)
    )
    assert r.status_code == 200 and r.json()["totp_enrolment_required"] is True
    assert r.json()["totp_uri"] is None  # the administrator never sees eve's secret
    login = await env.try_login(eve, totp=None)
    assert login.status_code == 200 and login.json()["totp_enrolment_required"] is True
    r = await c.get("/api/v1/stations", headers=env.bearer(login.json()["token"]))
    assert r.status_code == 403 and error(r)["code"] == "totp_enrolment_required"


async def test_the_first_start_admin_token_is_an_admin(tmp_path: Path) -> None:
    db, token = await prepare(tmp_path / "srv")
    await db.close()
    assert token is not None
    assert (tmp_path / "srv" / "admin.token").read_text() == token
    async with accounts_api(tmp_path / "srv", admin=token) as env:
        c = await env.client()
        me = (await c.get("/api/v1/auth/me", headers=env.bearer(token))).json()
    assert me["name"] == "admin" and me["role"] == "admin" and me["kind"] == "service"
    assert set(me["permissions"]) == PERMISSIONS


async def test_accounts_work_on_sqlite_and_postgresql(db: Database) -> None:
    """Login, replay refusal, lockout and scoped tokens through the services, on each backend."""
    from chargeward.server.auth import tokens

    now = NOW
    async with db.session() as s:
        enrolment = await accounts.create_user(
            s, "alice", PASSWORD, "operator", actor="admin", now=now
        )
    assert enrolment.totp_secret is not None
    code = pyotp.TOTP(enrolment.totp_secret).at(now)

    async def login(password: str = PASSWORD, totp: str = code) -> Any:
        async with db.session() as s:
            return await sessions.login(s, "alice", password, totp, address="10.1.1.1", now=now)

    session = await login()
    assert isinstance(session, sessions.LoginSession)
    replay = await login()
    assert isinstance(replay, accounts.Refusal) and replay.status == 401
    async with db.session() as s:
        alice = await sessions.authenticate(s, session.token, now=now)
        minted = await tokens.mint(s, alice, "ci", ["stations:read"], expires_in=600, now=now)
    async with db.session() as s:
        token = await sessions.authenticate(s, minted.token, now=now)
    assert token.name == "alice" and token.permissions == {"stations:read"}
    for _ in range(lockout.ACCOUNT_FAILURES):
        await login(password="wrong password!!")
    locked = await login()
    assert isinstance(locked, accounts.Refusal) and locked.retry_after == 60
