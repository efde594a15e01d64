"""The upstream CSMS: where each station's connection goes, with which credentials, over which
TLS.

    >>> cfg = ProxyConfig(url_template="wss://csms.example/ocpp/{stationId}")
    >>> cfg.url_for("CP 1")
    'wss://csms.example/ocpp/CP%201'
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers

from chargeward.errors import ConfigError
from chargeward.server.proxy.policy import FirmwarePolicy

STATION_PLACEHOLDER = "{stationId}"
MAX_TEMPLATE = 512


def check_url_template(template: str) -> str:
    """``template`` if it is a ws:// or wss:// URL with ``{stationId}``; else ConfigError.

    >>> check_url_template("ws://csms/{stationId}")
    'ws://csms/{stationId}'
    """
    if not template.startswith(("ws://", "wss://")):
        raise ConfigError(f"upstream URL must be ws:// or wss://: {template[:80]!r}")
    if STATION_PLACEHOLDER not in template:
        raise ConfigError(f"upstream URL must contain {STATION_PLACEHOLDER}: {template[:80]!r}")
    if len(template) > MAX_TEMPLATE:
        raise ConfigError(f"upstream URL must be at most {MAX_TEMPLATE} characters")
    return template


class CredentialMode(StrEnum):
    """Which HTTP Basic credentials the upstream leg presents."""

    pass_through = "pass-through"  # noqa: S105 (a mode name) the station's own Authorization header, as it sent it
    stored = "stored"  # the station's, stored sealed (PUT .../upstream-credentials) or in code
    none = "none"  # no Authorization header (e.g. the upstream admits by client certificate)


@dataclass(frozen=True)
class StationSettings:
    """What the database says for one station (its own settings, else its site's): None for
    the server's.  ``credentials``: the stored (user, password), for ``stored`` mode."""

    url_template: str | None = None
    firmware_policy: FirmwarePolicy | None = None
    credentials: tuple[str, str] | None = field(default=None, repr=False)


SERVER_DEFAULTS = StationSettings()


@dataclass(frozen=True)
class ProxyConfig:
    """Proxy mode (``chargeward server --upstream URL-TEMPLATE``, ADR 0040)."""

    url_template: str
    firmware_policy: FirmwarePolicy = FirmwarePolicy.approved_only
    station_policies: dict[str, FirmwarePolicy] = field(default_factory=dict)
    station_urls: dict[str, str] = field(default_factory=dict)  # per-station templates
    credential_mode: CredentialMode = CredentialMode.pass_through
    credentials: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    ssl_context: ssl.SSLContext | None = None  # wss:// upstreams; None: the system's CAs
    queue_cap: int = 1000  # queued calls per station (UpstreamQueue)
    answer_timeout: float = 30.0  # seconds the upstream has to answer a call
    station_timeout: float = 30.0  # seconds the station has to answer a call
    reconnect_initial: float = 1.0  # back-off between upstream connection attempts
    reconnect_max: float = 60.0
    open_timeout: float = 10.0

    def __post_init__(self) -> None:
        for template in (self.url_template, *self.station_urls.values()):
            if not template.startswith(("ws://", "wss://")):
                raise ConfigError(f"upstream URL must be ws:// or wss://: {template!r}")

    def url_for(self, station_id: str, settings: StationSettings = SERVER_DEFAULTS) -> str:
        template = settings.url_template or self.station_urls.get(station_id, self.url_template)
        return template.replace(STATION_PLACEHOLDER, quote(station_id, safe=""))

    def policy_for(
        self, station_id: str, settings: StationSettings = SERVER_DEFAULTS
    ) -> FirmwarePolicy:
        if settings.firmware_policy is not None:
            return settings.firmware_policy
        return self.station_policies.get(station_id, self.firmware_policy)

    def authorization(
        self,
        station_id: str,
        station_headers: Headers | None,
        settings: StationSettings = SERVER_DEFAULTS,
    ) -> str | None:
        """The Authorization header for the station's upstream leg, or None."""
        if self.credential_mode is CredentialMode.pass_through:
            return station_headers.get("Authorization") if station_headers else None
        if self.credential_mode is CredentialMode.stored:
            creds = settings.credentials or self.credentials.get(station_id)
            if creds is None:
                return None
            token = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            return f"Basic {token}"
        return None


def client_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """TLS for wss:// upstreams: TLS 1.2 or later, the server's name checked, trusting
    ``ca_file`` (or the system's CAs)."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def open_upstream(
    config: ProxyConfig,
    station_id: str,
    subprotocol: str,
    station_headers: Headers | None,
    settings: StationSettings = SERVER_DEFAULTS,
) -> ClientConnection:
    """The station's connection to the upstream CSMS, same subprotocol as the station's."""
    url = config.url_for(station_id, settings)
    headers: dict[str, str] = {}
    authorization = config.authorization(station_id, station_headers, settings)
    if authorization is not None:
        headers["Authorization"] = authorization
    kw: dict[str, Any] = {}
    if url.startswith("wss://"):
        kw["ssl"] = config.ssl_context or client_ssl_context(None)
    return await connect(
        url,
        subprotocols=[subprotocol],  # type: ignore[list-item]
        additional_headers=headers,
        open_timeout=config.open_timeout,
        compression=None,  # small frames; no zlib state per connection
        **kw,
    )
