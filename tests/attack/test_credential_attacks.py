"""Attacks on credentials in flight: session fixation, and passwords read from the logs.

The REST API runs in-process over a real SQLite database (``tests.support.accounts_api``);
the OCPP listener runs in-process with real TLS on 127.0.0.1 (``tests.support.tls``).  Every
log record of every logger, down to DEBUG, is captured while the passwords are used.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from pathlib import Path

import pytest

from tests.support.accounts_api import AccountsApi, User, accounts_api
from tests.support.fleet import Pki, basic
from tests.support.tls import TlsPki, provision_charger, running_agent, running_csms, try_connect

OPERATOR_PASSWORD = "a very secret operator phrase 42"
STATION_PASSWORD = "station-secret-0123456789abcdef"


def _credentials(env: AccountsApi, user: User) -> dict[str, str | None]:
    return {"username": user.name, "password": user.password, "totp": user.code(env.clock.now)}


async def test_session_fixation_login_issues_a_fresh_token(tmp_path: Path) -> None:
    async with accounts_api(tmp_path) as env:
        alice = await env.add_user("alice", "operator")
        mallory = await env.add_user("mallory", "auditor")
        c = await env.client()
        planted = await env.login(mallory)  # the attacker's own, valid session
        r = await c.post(
            "/api/v1/auth/login",
            json=_credentials(env, alice),
            headers={**env.bearer(planted), "Cookie": f"session={planted}"},
        )
        assert r.status_code == 200, r.text
        issued = r.json()["token"]
        assert issued != planted
        # The planted session did not become alice's: it is still mallory's, and only hers.
        me = await c.get("/api/v1/auth/me", headers=env.bearer(planted))
        assert me.status_code == 200 and me.json()["name"] == "mallory"
        assert (await c.get("/api/v1/auth/me", headers=env.bearer(issued))).json()["name"] == (
            "alice"
        )
        # A token the attacker made up is never adopted either, and every login is new.
        env.clock.advance(seconds=30)
        made_up = "cw_" + "A" * 40
        again = await c.post(
            "/api/v1/auth/login",
            json=_credentials(env, alice),
            headers=env.bearer(made_up),
        )
        assert again.status_code == 200 and again.json()["token"] not in (issued, made_up)
        assert (await c.get("/api/v1/auth/me", headers=env.bearer(made_up))).status_code == 401


def _leaks(records: list[logging.LogRecord], secret: str) -> list[str]:
    """Records of Chargeward (not of the test's own websockets client) that show ``secret``
    in clear or in base64, as in a Basic auth header."""
    forms = {secret, base64.b64encode(secret.encode()).decode()}
    lines = [
        f"{r.name}: {r.getMessage()} {r.exc_text or ''}"
        for r in records
        if r.name != "websockets.client"
    ]
    return [line for line in lines if any(f in line for f in forms)]


async def test_passwords_never_appear_in_logs(
    tmp_path: Path,
    tls_pki: TlsPki,
    pki: Pki,
    factory_bundle: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with accounts_api(tmp_path / "api") as env:
        alice = await env.add_user("alice", "operator", password=OPERATOR_PASSWORD)
        wrong = await env.try_login(alice, password=OPERATOR_PASSWORD + "!")
        assert wrong.status_code == 401
        await env.login(alice)
    async with running_csms(tmp_path / "csms", tls_pki) as csms:
        await csms.add_station("CP-LOG", STATION_PASSWORD, 2)
        ctx = tls_pki.client_context()
        good, bad = basic("CP-LOG", STATION_PASSWORD), basic("CP-LOG", STATION_PASSWORD + "x")
        assert await try_connect(csms.url + "CP-LOG", ssl_context=ctx, auth=good) == 101
        assert await try_connect(csms.url + "CP-LOG", ssl_context=ctx, auth=bad) == 401
        # The reference charger connects with the same password, logging at DEBUG too.
        charger = provision_charger(
            tmp_path / "chargers", pki, factory_bundle, tls_pki, "CP-LOG", STATION_PASSWORD,
            certificate=False,
        )  # fmt: skip
        async with running_agent(charger, csms.url):
            await csms.wait(lambda: csms.registry.get("CP-LOG"), "the charger to connect")
    handshakes = [
        r for r in caplog.records if r.name.endswith(".ws") and "Authorization" in r.getMessage()
    ]
    assert {r.name for r in handshakes} == {"chargeward.csms.ws", "chargeward.agent.ws"}
    assert len(caplog.records) > 5  # the capture saw the logins and connections
    for secret in (OPERATOR_PASSWORD, STATION_PASSWORD, good.split()[1], bad.split()[1]):
        assert _leaks(caplog.records, secret) == []


async def test_a_stolen_session_cannot_confirm_an_approval_without_the_totp_device(
    tmp_path: Path,
) -> None:
    """The dashboard's approval confirmation: the code used to log in cannot be replayed,
    guessing locks the account as failed logins do, and every refusal is audited."""
    async with accounts_api(tmp_path) as env:
        alice = await env.add_user("alice", "approver")
        login_code = alice.code(env.clock.now)
        session = await env.login(alice)  # the thief holds this session, not alice's phone
        c = await env.client("10.0.0.66")
        body = {"keyid": "ab" * 32, "signature": "30" + "cd" * 35}

        async def approve(totp: str) -> tuple[int, str]:
            r = await c.post(
                "/api/v1/releases/" + "0" * 64 + "/approvals",
                json={**body, "totp": totp},
                headers=env.bearer(session),
            )
            return r.status_code, r.json()["error"]["message"]

        assert await approve(login_code) == (403, "confirmation refused: invalid TOTP code")
        for guess in ("000000", "111111", "222222", "333333"):
            assert await approve(guess) == (403, "confirmation refused: invalid TOTP code")
        status, message = await approve("444444")
        assert status == 429 and message.startswith("account locked"), message
        r = await env.try_login(alice, totp=alice.code(env.clock.now + dt.timedelta(seconds=30)))
        assert r.status_code == 429  # the real owner is locked out too, as after failed logins
        audit = await c.get("/api/v1/audit", headers=env.bearer(env.admin_token))
        refused = [
            e["details"]["reason"] for e in audit.json() if e["action"] == "auth.confirm_failed"
        ]
        assert refused == ["totp replayed", *["totp wrong"] * 4]
        # A token, not a login session, cannot be "confirmed" by a code at all.
        r = await c.post(
            "/api/v1/releases/" + "0" * 64 + "/approvals",
            json={**body, "totp": "123456"},
            headers=env.bearer(env.admin_token),
        )
        assert r.status_code == 400 and "login session" in r.text


async def test_a_host_token_cannot_mint_a_token_named_like_a_user_to_act_as_her(
    tmp_path: Path,
) -> None:
    """A token made on the server host acts under its own name; one it mints acts under the
    name given.  Naming it after a user (``bob``, or ``Bob``) would let it upload or approve
    as bob: refused with 409 and nothing made.  Nor can a user be made with a token's name."""
    async with accounts_api(tmp_path) as env:
        bob = await env.add_user("bob", "operator")
        c = await env.client()
        admin = env.bearer(env.admin_token)
        for name in ("bob", "Bob"):
            body = {"name": name, "scopes": ["releases:read"], "expires_in": 3600}
            r = await c.post("/api/v1/tokens", json=body, headers=admin)
            assert r.status_code == 409, r.text
            message = r.json()["error"]["message"]
            assert f"{name!r} is the name of a user account" in message
        listed = await c.get("/api/v1/tokens", headers=admin)
        assert [t["name"] for t in listed.json()] == ["admin"]  # the host's own token only
        trail = await c.get("/api/v1/audit", params={"limit": 200}, headers=admin)
        assert [e["target"] for e in trail.json() if e["action"] == "token.create"] == ["admin"]
        # bob himself still logs in as bob; and a token named otherwise acts under its name.
        me = await c.get("/api/v1/auth/me", headers=env.bearer(await env.login(bob)))
        assert me.json()["name"] == "bob"
        body = {"name": "ci-bot", "scopes": ["releases:read"], "expires_in": 3600}
        r = await c.post("/api/v1/tokens", json=body, headers=admin)
        assert r.status_code == 201, r.text
        me = await c.get("/api/v1/auth/me", headers=env.bearer(r.json()["token"]))
        assert me.json()["name"] == "ci-bot"
        # The other way round: no user may take the name of a token (it acts under it).
        for name in ("ci-bot", "admin"):
            body = {"username": name, "password": OPERATOR_PASSWORD, "role": "operator"}
            r = await c.post("/api/v1/users", json=body, headers=admin)
            assert r.status_code == 409, r.text
            assert f"{name!r} is the name of an API token" in r.json()["error"]["message"]
        users = await c.get("/api/v1/users", headers=admin)
        assert [u["username"] for u in users.json()] == ["bob"]
