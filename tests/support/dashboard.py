"""The dashboard over ASGI as a browser would use it: a cookie-keeping client and the login
form (password, TOTP and the form's CSRF token)."""

from __future__ import annotations

import re

import httpx

from tests.support.accounts_api import AccountsApi, User

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


async def browser(env: AccountsApi, address: str = "10.0.0.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=env.app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def log_in(env: AccountsApi, c: httpx.AsyncClient, user: User) -> None:
    page = await c.get("/login")
    token = CSRF.search(page.text)
    assert token is not None
    r = await c.post(
        "/login",
        data={
            "csrf": token.group(1),
            "username": user.name,
            "password": user.password,
            "totp": user.code(env.clock.now) if user.totp_secret else "",
            "next": "/campaigns",
        },
    )
    assert r.status_code == 303 and r.headers["location"] == "/campaigns", r.text
    env.clock.advance(seconds=30)
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie, cookie
