"""Ending the agent's asyncio tasks reliably."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

LOG = logging.getLogger("chargeward.agent")


async def cancel_and_wait(task: asyncio.Task[Any], *, every: float = 0.1) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again if a cancellation is lost.

    On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that arrives in the same loop
    iteration as the result it waited for (python/cpython#86296, fixed in 3.12).  The ocpp
    package waits for every CALLRESULT that way, so an UpdateFirmware that arrives together
    with the answer to the job's last status could leave the old job running (and sleeping
    until its retrieveDateTime) instead of cancelled (OCPP L01.FR.24: AcceptedCanceled).
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    if not task.cancelled() and task.exception() is not None:
        LOG.debug("cancelled task ended with %r", task.exception())
