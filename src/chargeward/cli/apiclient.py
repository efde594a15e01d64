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


class ApiClient:
    def __init__(self, data_dir: Path, server: str | None = None, token: str | None = None):
        self.base = (
            server or os.environ.get(SERVER_ENV) or str(read_info(data_dir)["api_url"])
        ).rstrip("/")
        token = token or os.environ.get(TOKEN_ENV)
        if token is None:
            try:
                token = (data_dir / TOKEN_FILE).read_text().strip()
            except OSError as e:
                raise ConfigError(f"no API token: set {TOKEN_ENV}") from e
        self.client = httpx.Client(
            base_url=self.base, timeout=120, headers={"Authorization": f"Bearer {token}"}
        )

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.client.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise TransportError(f"cannot reach the server at {self.base}: {e}") from e
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            # 422: the server examined the input and refused it (bad data or not trusted).
            kind: type[ChargewardError] = {404: NotFound, 409: Conflict, 422: BundleError}.get(
                r.status_code, ChargewardError
            )
            raise kind(f"server refused ({r.status_code}): {detail}")
        return r.json()
