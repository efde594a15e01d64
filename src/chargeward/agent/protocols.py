"""Which OCPP the agent speaks on a connection: 2.0.1, or 1.6J of one kind.

The agent is written in OCPP 2.0.1 (its calls, its :class:`~chargeward.ocpp.station.
StationController`); for 1.6 the charge point is :class:`~chargeward.ocpp.station16.
Station16ChargePoint`, which translates both ways.  One table, keyed by version:

    >>> SUBPROTOCOLS["1.6"], SUBPROTOCOLS["2.0.1"]
    ('ocpp1.6', 'ocpp2.0.1')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chargeward.ocpp.base import HardenedChargePoint
from chargeward.ocpp.station import QuarantineChargePoint, StationChargePoint
from chargeward.ocpp.station16 import Quarantine16ChargePoint, Station16ChargePoint
from chargeward.ocpp.station16_outbound import LEGACY, WHITEPAPER, Outbound16
from chargeward.ocpp.v16_map import SUBPROTOCOL_16, SUBPROTOCOL_201

if TYPE_CHECKING:
    from chargeward.agent.agent import Agent
    from chargeward.agent.bootloader import Booted
    from chargeward.agent.config import AgentConfig

SUBPROTOCOLS = {"2.0.1": SUBPROTOCOL_201, "1.6": SUBPROTOCOL_16}


def subprotocol(config: AgentConfig) -> str:
    """The websocket subprotocol the agent offers."""
    return SUBPROTOCOLS[config.ocpp_version]


def outbound16(agent: Agent) -> Outbound16 | None:
    """The agent's 1.6 translation (kept across connections), None when it speaks 2.0.1."""
    config = agent.config
    if config.ocpp_version != "1.6":
        return None
    return Outbound16(
        kind=LEGACY if config.legacy_firmware_update else WHITEPAPER,
        station_id=agent.identity.station_id,
        charging=lambda evse_id: evse_id in agent.sessions,
        connectors=config.connectors,
    )


def charge_point(agent: Agent, ws: Any, booted: Booted | None) -> HardenedChargePoint:
    """The charge point of one connection: quarantine when no slot booted."""
    timeout = agent.config.response_timeout
    station_id = agent.identity.station_id
    if agent.outbound16 is not None:
        kind16 = Station16ChargePoint if booted is not None else Quarantine16ChargePoint
        return kind16(
            station_id,
            ws,
            agent.callbacks,
            agent.outbound16,
            clock=lambda: agent.clock().timestamp(),
            response_timeout=timeout,
        )
    kind = StationChargePoint if booted is not None else QuarantineChargePoint
    return kind(station_id, ws, agent.callbacks, response_timeout=timeout)
