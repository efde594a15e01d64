"""The REST API in-process with operator accounts: real SQLite, ``create_app``, ASGI transport.

    async with accounts_api(tmp_path) as env:
        alice = await env.add_user("alice", "approver")      # with her TOTP secret
        token = await env.login(alice)                        # a real session token
        r = await env.client("10.0.0.9").get("/api/v1/auth/me", headers=env.bearer(token))

The server clock is a :class:`Clock` the test moves; TOTP codes are computed for that clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyotp
from fastapi import FastAPI

from chargeward.server.auth import tokens
from chargeward.server.http.api import create_app
from chargeward.server.state import ServerState
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.db import Database

NOW = dt.datetime(2026, 11, 21, 12, 0, 10, tzinfo=dt.UTC)
PASSWORD = "correct horse battery staple"


@dataclass
class Clock:
    now: dt.datetime

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


@dataclass(frozen=True)
class User:
    name: str
    role: str
    totp_secret: str | None
    password: str = PASSWORD

    def code(self, at: dt.datetime) -> str:
        assert self.totp_secret is not None
        return pyotp.TOTP(self.totp_secret).at(at)


@dataclass
class AccountsApi:
    state: ServerState
    app: FastAPI
    clock: Clock
    admin_token: str
    _stack: AsyncExitStack
    _clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    async def client(self, address: str = "10.0.0.1") -> httpx.AsyncClient:
        """A client connecting from ``address`` (the server sees it as the peer address)."""
        if address not in self._clients:
            transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
            self._clients[address] = await self._stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://test")
            )
        return self._clients[address]

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def add_user(
        self, name: str, role: str, password: str = PASSWORD, customer: str | None = None
    ) -> User:
        """An account; with ``customer`` one of that customer's (tenancy)."""
        c = await self.client()
        body = {"username": name, "password": password, "role": role, "customer": customer}
        r = await c.post("/api/v1/users", json=body, headers=self.bearer(self.admin_token))
        assert r.status_code == 201, r.text
        return User(name, role, r.json()["totp_secret"], password)

    async def try_login(
        self,
        user: User,
        *,
        password: str | None = None,
        totp: str | None = "auto",
        address: str = "10.0.0.1",
    ) -> httpx.Response:
        if totp == "auto":
            totp = user.code(self.clock.now) if user.totp_secret else None
        c = await self.client(address)
        return await c.post(
            "/api/v1/auth/login",
            json={"username": user.name, "password": password or user.password, "totp": totp},
        )

    async def login(self, user: User) -> str:
        r = await self.try_login(user)
        assert r.status_code == 200, r.text
        self.clock.advance(seconds=30)  # the next login needs a fresh TOTP time-step
        token: str = r.json()["token"]
        return token


@asynccontextmanager
async def accounts_api(
    data_dir: Path, admin: str | None = None, admin_name: str = "admin"
) -> AsyncIterator[AccountsApi]:
    """The API over a database in ``data_dir``; ``admin`` is an existing admin token, else
    one named ``admin_name`` is made."""
    db = await Database.open(data_dir=data_dir)
    (data_dir / "tmp").mkdir(exist_ok=True)
    clock = Clock(NOW)
    try:
        if admin is None:
            async with db.session() as s:
                admin = await tokens.create_token(s, admin_name, actor="test", now=NOW)
        state = ServerState(
            data_dir=data_dir,
            db=db,
            blobs=BlobStore(data_dir / "blobs"),
            url_key=b"k" * 32,
            public_url="http://test",
            clock=clock,
        )
        async with AsyncExitStack() as stack:
            yield AccountsApi(state, create_app(state), clock, admin, stack)
    finally:
        await db.close()
