"""Asking a station about an UpdateFirmware whose answer was lost (issue 28, ADR 0034).

A request that got no answer (the node that sent it died, the connection dropped, the reply
timed out) may still have reached the station.  Its run stays *dispatched* in the confirm
phase (``chargeward.campaign.machine``) and no second request is sent; meanwhile the campaign's
tick asks the station with TriggerMessage(FirmwareStatusNotification): a station working on the
request reports its status with the requestId (the run adopts it), an idle one reports ``Idle``
(the attempt failed and another may be sent).  Either report reaches the run through the
station reports, on whichever node holds the station.

    await ask(state, ["CP-1"])   # once per ASK_EVERY per station, connected ones only
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ocpp.exceptions import OCPPError

from chargeward.campaign.machine import StationRun
from chargeward.errors import ChargewardError
from chargeward.server.store.db import assert_leading

if TYPE_CHECKING:  # the server state holds this layer's services; typing only
    from chargeward.server.state import ServerState

LOG = logging.getLogger("chargeward.campaigns")
TRIGGER = "FirmwareStatusNotification"
ASK_EVERY = 30.0  # seconds between two questions to one station (a lost answer is re-asked)
# station -> monotonic time it was asked (this process: a new leader asks again)
_asked: dict[str, float] = {}


def unanswered(runs: Iterable[StationRun]) -> list[str]:
    """The stations whose request is unanswered: dispatched, in the confirm phase."""
    return [r.station_id for r in runs if r.state == "dispatched" and r.phase == "confirm"]


async def ask(state: ServerState, station_ids: Iterable[str]) -> int:
    """TriggerMessage(FirmwareStatusNotification) to each connected station not asked in the
    last :data:`ASK_EVERY` seconds; returns how many were asked."""
    asked = 0
    for sid in station_ids:
        now = time.monotonic()
        if now - _asked.get(sid, -ASK_EVERY) < ASK_EVERY:
            continue
        cp = await state.station(sid)
        if cp is None:
            continue  # asked once it is back (the next tick); its deadline runs meanwhile
        assert_leading()
        _asked[sid] = now
        try:
            answer = await cp.trigger_message(TRIGGER)
        except (ChargewardError, OCPPError, TimeoutError) as e:
            LOG.info("%s: cannot ask about its firmware request: %s", sid, e)
            continue
        asked += 1
        LOG.info("%s: asked about an unanswered firmware request: %s", sid, answer)
    if len(_asked) > 100_000:  # a bound: forget the oldest half
        for sid in sorted(_asked, key=_asked.__getitem__)[: len(_asked) // 2]:
            del _asked[sid]
    return asked
