"""The real REST API in-process: a database (SQLite unless given), ``create_app`` and an ASGI
transport.

The clock is a :class:`MovableClock` the test advances; the bearer token is a real one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from chargeward.server.auth import tokens
from chargeward.server.http.api import create_app
from chargeward.server.state import ServerState
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.db import Database


@dataclass
class MovableClock:
    now: dt.datetime

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Api:
    client: httpx.AsyncClient
    state: ServerState
    clock: MovableClock

    @property
    def db(self) -> Database:
        return self.state.db

    async def call(self, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
        r = await self.client.request(method, path, **kw)
        assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None


@asynccontextmanager
async def running_api(
    data_dir: Path, now: dt.datetime, *, db: Database | None = None
) -> AsyncIterator[Api]:
    """The API on ``db`` (closed afterwards), or on a new SQLite database in ``data_dir``."""
    db = db or await Database.open(data_dir=data_dir)
    clock = MovableClock(now)
    try:
        async with db.session() as s:
            token = await tokens.create_token(s, "alice", actor="test", now=now)
        state = ServerState(
            data_dir=data_dir,
            db=db,
            blobs=BlobStore(data_dir / "blobs"),
            url_key=b"k" * 32,
            public_url="http://test",
            clock=clock,
        )
        transport = httpx.ASGITransport(app=create_app(state))
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://test",
            headers={"Authorization": f"Bearer {token}"},
        ) as client:
            yield Api(client, state, clock)
    finally:
        await db.close()
