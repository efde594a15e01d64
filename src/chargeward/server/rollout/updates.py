"""Sending one UpdateFirmware (OCPP L01) to a station on any node, and recording the answer.

Both an operator's single update (``POST /api/v1/stations/{id}/firmware-updates``) and the
campaign scheduler go through :func:`send_update` once the update is stored
(``update_orders.create_update``): the download link is signed here, the station's answer or the
failure to get one is stored with its audit entry.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from websockets.exceptions import ConnectionClosed

from chargeward.campaign.machine import ACCEPTED_RESPONSES
from chargeward.errors import CommandNotDelivered, TransportError
from chargeward.ocpp.csms import FirmwareOrder
from chargeward.server.common import urls
from chargeward.server.rollout import deltas, link_budget, update_orders
from chargeward.server.store.db import assert_leading

if TYPE_CHECKING:  # the server state holds this layer's services; typing only
    from chargeward.server.state import ServerState

LOG = logging.getLogger("chargeward.updates")


async def send_update(
    state: ServerState,
    order: update_orders.UpdateOrder,
    *,
    retries: int | None,
    retry_interval: int | None,
    install_at: dt.datetime | None = None,
    via: str | None = None,
) -> str:
    """Send ``order`` and store the answer; returns the station's status, ``NotConnected``,
    ``NotDelivered`` (the node holding the station is gone: the station never saw it),
    ``NoResponse`` or ``Error:<kind>``.

    ``via``: the site's Local Controller location of the image (server.local_cache), sent
    instead of the server's, with no delta offer (the site's LAN makes bytes cheap).
    ``retrieveDateTime`` is the opening of the site's next download window when it has
    windows and none is open (server.link_budget)."""
    now = state.clock()
    cp = await state.station(order.station_id)
    if cp is None:
        response = "NotConnected"
    else:
        expires = int((now + urls.DOWNLOAD_URL_TTL).timestamp())

        def link(sha256: str) -> str:
            return state.public_url + urls.signed_path(
                state.url_key, sha256, order.station_id, expires, order.request_id
            )

        location = via or link(order.sha256)
        offer = None if via else order.delta
        custom = deltas.custom_data(offer, link(offer.sha256)) if offer is not None else None
        budget = await state.budgets.get(state.db, order.station_id)
        assert_leading()  # a campaign's leader, paused past its lease, sends nothing
        try:
            response = await cp.update_firmware(
                FirmwareOrder(
                    request_id=order.request_id,
                    location=location,
                    signature=order.signature,
                    signing_certificate=order.signing_certificate_pem,
                    retrieve_at=link_budget.retrieve_at(budget, now),
                    install_at=install_at,
                    retries=retries,
                    retry_interval=retry_interval,
                    custom_data=custom,
                )
            )
        except CommandNotDelivered:  # its node gone: the station never saw it
            response = "NotDelivered"
        except (TimeoutError, TransportError, ConnectionClosed):
            # The request may have reached the station: the run asks it (machine, confirm).
            response = "NoResponse"
        except Exception as e:  # CALLERROR or connection lost: record, then report
            response = f"Error:{type(e).__name__}"[:30]
    if state.reports is not None:  # with the station reports: one transaction for many
        await state.reports.update_response(order.station_id, order.request_id, response)
    else:
        async with state.db.session() as s:
            await update_orders.set_update_response(
                s, order.request_id, response, now=state.clock()
            )
    if response not in ACCEPTED_RESPONSES:
        LOG.warning("%s: UpdateFirmware %d: %s", order.station_id, order.request_id, response)
    return response
