"""Proxy mode: Chargeward between its stations and an operator's CSMS (issue 31, ADR 0040).

``chargeward server --upstream wss://csms.example/ocpp/{stationId}``: each station connects to
Chargeward as always (profiles 1-3); Chargeward opens the station's connection to the upstream
CSMS with the same subprotocol and relays every frame both ways as it came, except what
firmware management needs (:mod:`.relay`).  The listener's seam is one object::

    proxy = Proxy(ProxyConfig(url_template=...), DbProxyHooks(db, clock))
    relay = proxy.relay(station_id, subprotocol, websocket)   # relay.connection for the cp
"""

from __future__ import annotations

from typing import Any

from chargeward.server.proxy.policy import ApprovedImages, FirmwarePolicy
from chargeward.server.proxy.relay import ProxiedConnection, ProxyHooks, Relay
from chargeward.server.proxy.upstream import (
    CredentialMode,
    ProxyConfig,
    StationSettings,
    client_ssl_context,
)


class Proxy:
    """Makes the :class:`Relay` of each station connection; ``relays``: the live ones."""

    def __init__(self, config: ProxyConfig, hooks: ProxyHooks) -> None:
        self.config = config
        self.hooks = hooks
        self.relays: dict[str, Relay] = {}
        # 1.6: per station, Chargeward's transactionIds -> the upstream's, across connections
        self.transactions: dict[str, dict[int, int]] = {}

    def relay(self, station_id: str, subprotocol: str, station: Any) -> Relay:
        request = getattr(station, "request", None)
        relay = Relay(
            station_id,
            subprotocol,
            station,
            self.config,
            self.hooks,
            station_headers=request.headers if request is not None else None,
            transactions=self.transactions.setdefault(station_id, {}),
        )
        self.relays[station_id] = relay
        return relay

    def ended(self, relay: Relay) -> None:
        if self.relays.get(relay.station_id) is relay:
            del self.relays[relay.station_id]


__all__ = [
    "ApprovedImages",
    "CredentialMode",
    "FirmwarePolicy",
    "ProxiedConnection",
    "Proxy",
    "ProxyConfig",
    "ProxyHooks",
    "Relay",
    "StationSettings",
    "client_ssl_context",
]
