"""The in-process API (:mod:`tests.support.accounts_api`) served over real HTTP on 127.0.0.1
by uvicorn, in a thread with its own event loop, for clients that are not asyncio (the
``requests`` session schemathesis calls through).

    with served_api(tmp_path, seed) as (base_url, seeded):   # seed(env) runs before serving
        requests.get(f"{base_url}/api/v1/stations", headers=...)

It runs with the server's HTTP limits (:mod:`chargeward.server.http.limits`: its h11 protocol with
head and body timeouts, ``limits`` to shorten them) and, given ``tls`` (a server context, e.g.
``TlsPki.server_context()``), over TLS: the URL is then ``https://``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from chargeward.server.http.limits import HttpLimits, uvicorn_options
from tests.support.accounts_api import AccountsApi, accounts_api

T = TypeVar("T")
START_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Config(uvicorn.Config):
    """uvicorn's configuration serving over a ready ``SSLContext`` (the test PKI's)."""

    def __init__(self, *args: Any, tls: ssl.SSLContext | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.tls = tls

    def load(self) -> None:
        super().load()
        if self.tls is not None:
            self.ssl = self.tls


@contextlib.contextmanager
def served_api(
    data_dir: Path,
    seed: Callable[[AccountsApi], Awaitable[T]],
    *,
    limits: HttpLimits | None = None,
    tls: ssl.SSLContext | None = None,
) -> Iterator[tuple[str, T]]:
    port = _free_port()
    ready = threading.Event()
    outcome: dict[str, object] = {}
    server: list[uvicorn.Server] = []

    async def main() -> None:
        async with accounts_api(data_dir) as env:
            outcome["seeded"] = await seed(env)
            config = _Config(
                env.app,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="off",
                tls=tls,
                **uvicorn_options(limits or HttpLimits()),
            )
            server.append(uvicorn.Server(config))
            task = asyncio.create_task(server[0].serve())
            while not server[0].started and not task.done():
                await asyncio.sleep(0.02)
            ready.set()
            await task

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as e:  # reported to the test thread
            outcome["error"] = e
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="served-api", daemon=True)
    thread.start()
    try:
        assert ready.wait(START_TIMEOUT), "the API did not start"
        if "error" in outcome:
            raise AssertionError("the API failed to start") from outcome["error"]  # type: ignore[misc]
        scheme = "https" if tls is not None else "http"
        yield f"{scheme}://127.0.0.1:{port}", outcome["seeded"]  # type: ignore[misc]
    finally:
        if server:
            server[0].should_exit = True
        thread.join(30)
