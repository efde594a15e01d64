"""Every route of the API against every role, no token, and a scoped token.

The route list comes from ``create_app`` at test time, so a route added later is covered (and
fails the first test until it is given a permission in ``authz.ROUTE_PERMISSIONS``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from chargeward.server.auth.roles import PERMISSIONS, ROLE_PERMISSIONS, ROLES
from chargeward.server.http.authz import AUTHENTICATED, PUBLIC, ROUTE_PERMISSIONS
from tests.support.accounts_api import AccountsApi, accounts_api

SCOPED = "token:stations:read"


def routes(app: FastAPI) -> list[tuple[str, str, bool]]:
    """(method, path template, is an APIRoute) for every route; HEAD is served as GET."""
    found = []
    for rc in iter_route_contexts(app.routes):
        for method in sorted(rc.methods or ()):
            if method != "HEAD" and rc.path is not None:
                found.append((method, rc.path, isinstance(rc.original_route, APIRoute)))
    return found


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[AccountsApi]:
    async with accounts_api(tmp_path) as api:
        yield api


async def test_every_route_has_exactly_one_known_permission(env: AccountsApi) -> None:
    listed = routes(env.app)
    missing = [(m, p) for m, p, _ in listed if (m, p) not in ROUTE_PERMISSIONS]
    assert missing == [], "routes without a permission in authz.ROUTE_PERMISSIONS"
    # Only APIRoutes run the app-wide check, so anything else must be public.
    unchecked = [(m, p) for m, p, api in listed if not api and ROUTE_PERMISSIONS[m, p] != PUBLIC]
    assert unchecked == []
    stale = set(ROUTE_PERMISSIONS) - {(m, p) for m, p, _ in listed}
    assert stale == set(), "permissions for routes that do not exist"
    assert set(ROUTE_PERMISSIONS.values()) <= PERMISSIONS | {PUBLIC, AUTHENTICATED}
    assert all(perms <= PERMISSIONS for perms in ROLE_PERMISSIONS.values())


def concrete(path: str) -> str:
    """A harmless instance of a path template: every parameter names nothing that exists."""
    return re.sub(r"\{[^}]+\}", "999999", path)


async def test_permission_matrix_every_route_every_role(env: AccountsApi) -> None:
    c = await env.client()
    credentials: dict[str, str | None] = {"anonymous": None}
    for role in ROLES:
        # "as-" + role: the host token "admin" acts under that name, so no user may take it.
        user = await env.add_user("as-" + role.replace("-", ""), role)
        credentials[role] = await env.login(user)
    made = await c.post(
        "/api/v1/tokens",
        json={"name": "reader", "scopes": ["stations:read"], "expires_in": 3600},
        headers=env.bearer(credentials["operator"] or ""),
    )
    credentials[SCOPED] = made.json()["token"]

    def allowed(who: str, needed: str) -> bool:
        if needed == PUBLIC:
            return True
        if who == "anonymous":
            return False
        if needed == AUTHENTICATED:
            return True
        if who == SCOPED:
            return needed == "stations:read"
        return needed in ROLE_PERMISSIONS[who]

    # Logging out ends the session the rest of the matrix uses: that route goes last.
    ordered = sorted(routes(env.app), key=lambda r: r[1] == "/api/v1/auth/logout")
    wrong = []
    for method, path, _ in ordered:
        needed = ROUTE_PERMISSIONS[method, path]
        for who, token in credentials.items():
            headers = env.bearer(token) if token else {}
            body: dict[str, str] | None = {} if method in ("POST", "PUT", "PATCH") else None
            r = await c.request(method, concrete(path), headers=headers, json=body)
            refused = r.status_code in (401, 403) and (
                r.headers.get("content-type") == "application/json"
                and r.json()["error"]["code"] in ("unauthenticated", "forbidden")
            )
            if allowed(who, needed):
                if refused and needed != PUBLIC:
                    wrong.append((method, path, who, r.status_code, r.text[:120]))
            else:
                expected = 401 if who == "anonymous" else 403
                if r.status_code != expected or not refused:
                    wrong.append((method, path, who, r.status_code, r.text[:120]))
    assert wrong == []


async def test_a_route_without_a_permission_is_refused(env: AccountsApi) -> None:
    @env.app.get("/api/v1/forgotten")
    async def forgotten() -> dict[str, str]:
        return {"secret": "data"}

    c = await env.client()
    r = await c.get("/api/v1/forgotten", headers=env.bearer(env.admin_token))
    assert r.status_code == 403
    assert r.json()["error"] == {
        "code": "forbidden",
        "message": "route has no permission assigned",
        "field": None,
    }


async def test_errors_have_a_stable_shape(env: AccountsApi) -> None:
    c = await env.client()
    admin = env.bearer(env.admin_token)
    missing = await c.get("/api/v1/releases/nope", headers=admin)
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"code": "not_found", "message": "no release 'nope'", "field": None}
    }
    bad = await c.post(
        "/api/v1/tokens",
        json={"name": "ci", "scopes": ["stations:read"], "expires_in": "soon"},
        headers=admin,
    )
    assert bad.status_code == 422
    err = bad.json()["error"]
    assert err["code"] == "validation_error" and err["field"] == "expires_in"
    assert err["fields"] == [{"field": "expires_in", "message": err["fields"][0]["message"]}]
    no_token = await c.get("/api/v1/stations")
    assert no_token.status_code == 401
    assert no_token.json()["error"]["code"] == "unauthenticated"
    nowhere = await c.get("/api/v1/nowhere", headers=admin)
    assert nowhere.status_code == 404 and nowhere.json()["error"]["code"] == "not_found"
    wrong_method = await c.put("/api/v1/stations", headers=admin)
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
