"""Bounds on what one HTTP client can make the server hold (issue 26, point 2).

- **Body size, per route** (:class:`BodyLimit`, ASGI): a ``Content-Length`` above the route's
  cap is refused with 413 (``too_large``, the one error shape) before a byte of the body is
  read; a chunked body is cut off, with the same 413, as soon as it passes the cap.  Either
  way the response says ``Connection: close``, so the rest is never read.  JSON routes get
  ``ServerLimits.json_body_bytes``, logins ``ServerLimits.login_body_bytes``; release, log,
  document and import uploads keep their own (:func:`route_caps`, from the same
  :class:`~chargeward.limits.ServerLimits`).
- **Slow clients** (:func:`guarded_protocol`, uvicorn's h11 protocol): a request head not
  complete within ``head_timeout`` seconds of its first byte (or of the connection), or a body
  that sends nothing for ``body_timeout`` seconds, closes the connection.  uvicorn has neither
  timeout of its own.  ``limit_concurrency`` answers 503 beyond that many connections and
  ``timeout_keep_alive`` closes idle kept-alive ones (:func:`uvicorn_options`).

Tests: ``tests/attack/test_http_limits.py``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h11
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from chargeward.limits import DEFAULT_FORMAT_LIMITS, DEFAULT_SERVER_LIMITS, KIB, ServerLimits
from chargeward.server.http import problems


@dataclass(frozen=True)
class BodyCap:
    methods: frozenset[str]
    path: re.Pattern[str]  # full match on the request path
    cap: int


def cap(methods: str, path: str, size: int) -> BodyCap:
    return BodyCap(frozenset(methods.split("|")), re.compile(path), size)


def route_caps(limits: ServerLimits = DEFAULT_SERVER_LIMITS) -> list[BodyCap]:
    """The routes whose bodies may be larger (or must be smaller) than
    ``limits.json_body_bytes``."""
    from chargeward.server.http import api_logs

    log_cap = limits.log_upload_bytes + api_logs.MULTIPART_OVERHEAD
    slack = 64 * KIB  # the route's own check gives the precise message below this
    advisory_cap = DEFAULT_FORMAT_LIMITS.advisory_bytes + slack
    return [
        cap("POST", r"/api/v1/releases", limits.bundle_bytes),  # streamed to disk
        cap("POST", r"/api/v1/vendor-releases", limits.bundle_bytes),  # spooled to disk
        cap("POST|PUT", r"/api/v1/log-uploads/[^/]+", log_cap),
        cap("PUT", r"/api/v1/releases/[^/]+/provenance", limits.provenance_bytes + slack),
        cap("POST", r"/api/v1/exposure", advisory_cap),
        cap("POST", r"/api/v1/stations/import", limits.import_stations * 4 * KIB),  # PEM each
        cap("POST", r"/api/v1/auth/login|/login", limits.login_body_bytes),
    ]


def too_large(limit: int) -> Any:
    return problems.error_response(
        413,
        "too_large",
        f"request body larger than {limit} bytes",
        headers={"Connection": "close"},
    )


class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes", {"Connection": "close"})
        self.limit = limit


class BodyLimit:
    """ASGI middleware: each request body within its route's cap (see the module)."""

    def __init__(
        self,
        app: ASGIApp,
        caps: Sequence[BodyCap] | None = None,
        limits: ServerLimits = DEFAULT_SERVER_LIMITS,
    ) -> None:
        self.app = app
        self.caps = list(route_caps(limits) if caps is None else caps)
        self.default = limits.json_body_bytes

    def cap_for(self, method: str, path: str) -> int:
        for c in self.caps:
            if method in c.methods and c.path.fullmatch(path):
                return c.cap
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.cap_for(scope["method"], scope["path"])
        for name, value in scope["headers"]:
            # h11 has checked it is one number already; refuse before reading a byte
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                await too_large(limit)(scope, receive, send)
                return
        received = 0
        started = False

        async def capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)  # the app's handlers answer it (problems: 413)
            return message

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped, watch)
        except _TooLarge as e:  # escaped the app's handlers
            if started:
                raise
            await too_large(e.limit)(scope, receive, send)


# -- slow clients ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpLimits:
    head_timeout: float = 10.0  # seconds for a whole request head, from its first byte
    body_timeout: float = 30.0  # seconds a request body may send nothing
    limit_concurrency: int = 1000  # connections and requests at once; beyond: 503
    keep_alive: int = 5  # seconds an idle kept-alive connection stays open


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and a body idle timeout."""

    head_timeout = HttpLimits.head_timeout
    body_timeout = HttpLimits.body_timeout

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._guard: asyncio.TimerHandle | None = None
        self._phase: object = None
        super().connection_made(transport)
        self._watch(progress=False)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch(progress=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch(progress=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _watch(self, *, progress: bool) -> None:
        """Arm the timer the connection's phase calls for: a head deadline while a request
        head is awaited (not moved by more bytes), a body timeout moved by each body chunk."""
        if self.transport.is_closing():
            self._disarm()
            return
        phase = self.conn.their_state
        if phase is h11.IDLE:
            if self._phase is not h11.IDLE or self._guard is None:
                self._arm(self.head_timeout)
        elif phase is h11.SEND_BODY:
            if self._phase is not h11.SEND_BODY or progress:
                self._arm(self.body_timeout)
        else:  # the request is in: the application's time, not the client's
            self._disarm()
        self._phase = phase

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._guard = self.loop.call_later(seconds, self._expired, seconds)

    def _disarm(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None

    def _expired(self, seconds: float) -> None:
        self._guard = None
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.SEND_BODY and self.flow.read_paused:
            self._arm(seconds)  # the application is not reading: not the client's delay
            return
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self.logger.info("closing a connection: request not complete within %s s", seconds)
            self.transport.close()


def guarded_protocol(limits: HttpLimits) -> type[GuardedH11Protocol]:
    """The protocol class with ``limits``' timeouts (tests pass short ones)."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"head_timeout": limits.head_timeout, "body_timeout": limits.body_timeout},
    )


def uvicorn_options(limits: HttpLimits) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` that apply ``limits``."""
    return {
        "http": guarded_protocol(limits),
        "limit_concurrency": limits.limit_concurrency,
        "timeout_keep_alive": limits.keep_alive,
    }


__all__ = [
    "BodyCap",
    "BodyLimit",
    "GuardedH11Protocol",
    "HttpLimits",
    "guarded_protocol",
    "route_caps",
    "uvicorn_options",
]
