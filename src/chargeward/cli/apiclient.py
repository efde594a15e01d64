"""A small REST client for CLI commands that need the running server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from chargeward.errors import (
    BundleError,
    ChargewardError,
    ConfigError,
    Conflict,
    NotFound,
    TransportError,
)
from chargeward.server.runtime import TOKEN_FILE, read_info

TOKEN_ENV = "CHARGEWARD_API_TOKEN"  # noqa: S105 (a variable name)
SERVER_ENV = "CHARGEWARD_SERVER"
SESSION_FILE = "session.token"  # written by ``chargeward login`` (mode 0600)


def api_token(data_dir: Path) -> str:
    """$CHARGEWARD_API_TOKEN, else the login session in the data directory, else the admin
    token the server wrote there on first start."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token
    for name in (SESSION_FILE, TOKEN_FILE):
        try:
            return (data_dir / name).read_text().strip()
        except OSError:
            continue
    raise ConfigError(f"no API token: run `chargeward login` or set {TOKEN_ENV}")


def server_url(data_dir: Path, server: str | None = None) -> str:
    return (server or os.environ.get(SERVER_ENV) or str(read_info(data_dir)["api_url"])).rstrip("/")


class ApiClient:
    def __init__(
        self,
        data_dir: Path,
        server: str | None = None,
        token: str | None = None,
        *,
        anonymous: bool = False,
    ):
        self.base = server_url(data_dir, server)
        headers = {} if anonymous else {"Authorization": f"Bearer {token or api_token(data_dir)}"}
        self.client = httpx.Client(base_url=self.base, timeout=120, headers=headers)

    def text(self, method: str, path: str, **kw: Any) -> str:
        """The body of a plain-text answer."""
        try:
            r = self.client.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise TransportError(f"cannot reach the server at {self.base}: {e}") from e
        if r.status_code >= 400:
            raise refusal(r)
        return r.text

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.client.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise TransportError(f"cannot reach the server at {self.base}: {e}") from e
        if r.status_code >= 400:
            raise refusal(r)
        return r.json() if r.content else None


def refusal(r: httpx.Response) -> ChargewardError:
    """The error for an API error response ``{"error": {"code", "message", "field"}}``."""
    try:
        error = r.json()["error"]
        code, message, field = str(error["code"]), str(error["message"]), error.get("field")
    except (ValueError, KeyError, TypeError):
        code, message, field = "error", r.text[:500], None
    where = f" [{field}]" if field else ""
    # 422: the server examined the input and refused it (bad data or not trusted); 429 and
    # 502/503: the same request may succeed later.
    kind: type[ChargewardError] = {
        404: NotFound,
        409: Conflict,
        422: BundleError,
        429: TransportError,
        502: TransportError,
        503: TransportError,
    }.get(r.status_code, ChargewardError)
    return kind(f"server refused ({r.status_code} {code}){where}: {message}")
