"""Tamper quarantine (UK SCP Regulations Schedule 1 para 3(4)(b)).

When no slot verifies the bootloader finds nothing to boot (:class:`NoBootableSlot`): the
charger then connects to the CSMS without running firmware, sends a tamper security event
and an owner notification, offers no charging, and accepts only a validated update (which
installs into a slot and reboots out of quarantine).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from ocpp.v201 import call

from chargeward.agent import bootloader
from chargeward.ocpp.base import VENDOR_ID, ocpp_time

if TYPE_CHECKING:
    from chargeward.agent.agent import Agent

LOG = logging.getLogger("chargeward.agent")
TAMPER_EVENT = bootloader.TAMPER_EVENT
OWNER_NOTIFICATION = "OwnerNotification"


def owner_message(reason: str) -> str:
    return (
        "Tamper detected: the charger's software failed its integrity check and charging "
        f"is disabled until a verified update is installed. Details: {reason}"
    )


class Quarantine:
    """``reason`` is why no slot verifies, while the charger is in quarantine; else None."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self.reason: str | None = None

    async def serve(self, reason: str) -> None:
        """No slot verifies: notify the CSMS and the owner, offer no charging, accept only a
        validated update (which installs into a slot and reboots out of quarantine)."""
        agent = self._agent
        LOG.critical("%s: tamper quarantine: %s", agent.identity.station_id, reason)
        self.reason = reason
        agent.booted = None
        agent.started = False
        agent.charging.disable()
        agent.state.set_owner_notice(owner_message(reason))  # the charger's own display
        try:
            await agent._connect_loop(None)
        finally:
            self.reason = None
            await agent._shutdown_tasks()

    async def notify(self) -> None:
        """The tamper security event and the owner notification, at the first connection."""
        agent = self._agent
        assert self.reason is not None
        await agent._security_event(TAMPER_EVENT, self.reason)
        await agent._call(
            call.DataTransfer(
                vendor_id=VENDOR_ID,
                message_id=OWNER_NOTIFICATION,
                data=json.dumps(
                    {
                        "event": TAMPER_EVENT,
                        "message": owner_message(self.reason),
                        "time": ocpp_time(agent.clock()),
                    },
                    sort_keys=True,
                ),
            )
        )
