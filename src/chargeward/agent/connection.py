"""The agent's connection to its CSMS: connect, serve a session, reconnect with back-off.

Reconnecting follows OCPP 2.0.1 Part 4: after a lost connection the agent waits
``RetryBackOffWaitMinimum``, doubled per attempt in a row that got no answer (at most
``RetryBackOffRepeatTimes`` doublings), plus up to ``RetryBackOffRandomRange`` at random
(device-model variables, :mod:`chargeward.agent.device_model`).  Websocket pings at
``WebSocketPingInterval`` notice a CSMS that hangs; :meth:`Agent._call` closes a connection
whose CSMS leaves a CALL unanswered, so a silent CSMS is left, not waited on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from typing import TYPE_CHECKING

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from chargeward.agent import diagnostics, protocols
from chargeward.agent import tls as station_tls
from chargeward.agent.device_model import (
    BACKOFF_MINIMUM,
    BACKOFF_RANDOM,
    BACKOFF_REPEAT,
    PING_INTERVAL,
)
from chargeward.errors import ChargewardError
from chargeward.limits import DEFAULT_AGENT_LIMITS
from chargeward.logging_setup import websocket_logger

if TYPE_CHECKING:
    from chargeward.agent.agent import Agent
    from chargeward.agent.bootloader import Booted

LOG = logging.getLogger("chargeward.agent")
SUBPROTOCOL = "ocpp2.0.1"
TECH_INFO_MAX = 255
_RNG = random.SystemRandom()  # reconnect spread only: not a secret


def retry_after(value: str | None, most: float = DEFAULT_AGENT_LIMITS.retry_after_s) -> float:
    """The seconds a ``Retry-After`` header asks for (0 when absent or not a number of
    seconds), at most ``most`` (``AgentLimits.retry_after_s``, an hour): a CSMS refusing logins
    (429) is not hammered, and a wrong header cannot park the charger for days.

        >>> retry_after("60"), retry_after(None), retry_after("soon"), retry_after("999999")
        (60.0, 0.0, 0.0, 3600.0)
    """
    if value is None or not value.strip().isdigit():
        return 0.0
    return min(float(value.strip()), most)


def reconnect_backoff(agent: Agent, failures: int) -> float:
    """Seconds before the next connection attempt (OCPP 2.0.1 Part 4, reconnecting):
    ``RetryBackOffWaitMinimum`` doubled once per failure in a row, at most
    ``RetryBackOffRepeatTimes`` times, plus up to ``RetryBackOffRandomRange`` at random
    so that a fleet does not reconnect in step."""
    doublings = min(failures, round(BACKOFF_REPEAT.get(agent)))
    spread = BACKOFF_RANDOM.get(agent) * _RNG.random()
    return float(BACKOFF_MINIMUM.get(agent) * 2**doublings + spread)


async def connect_loop(agent: Agent, booted: Booted | None) -> None:
    """Connect, serve one session (:meth:`Agent._session`), connect again after the
    back-off, until a reboot.  Refusals are logged and recorded as security events once per
    run of the same reason."""
    first = True
    refused = False  # one FailedToAuthenticateAtCsms per run of refusals, not per attempt
    refused_certificate = ""  # one InvalidCsmsCertificate per run of the same reason
    limits = agent.config.limits
    failures = 0  # connections in a row on which the CSMS answered nothing
    while not agent._reboot.is_set():
        delay = reconnect_backoff(agent, failures)
        failures += 1
        try:
            # Built per attempt: a renewed certificate or password is used at once.
            context = station_tls.client_context(agent.state) if agent.tls else None
            async with connect(
                agent.url,
                ssl=context,
                subprotocols=[protocols.subprotocol(agent.config)],  # type: ignore[list-item]
                additional_headers=agent._auth_header(),
                open_timeout=15,
                max_size=limits.frame_bytes,  # a larger frame: close 1009
                # OCPPCommCtrlr.WebSocketPingInterval (0: none): a hung CSMS is noticed.
                ping_interval=PING_INTERVAL.get(agent) or None,
                ping_timeout=agent.config.ping_timeout,
                close_timeout=min(10.0, agent.config.ping_timeout),  # a hung peer never closes
                logger=websocket_logger("chargeward.agent.ws"),  # its password: not logged
            ) as ws:
                refused, refused_certificate = False, ""
                agent._answered = False
                await agent._session(ws, booted, first)
                first = not agent.started  # start-up again if that one did not finish
                if agent._answered:
                    failures = 0  # a working CSMS: the next reconnect waits the least
                    delay = reconnect_backoff(agent, 0)
        except InvalidStatus as e:
            LOG.error(
                "%s: CSMS refused the connection: HTTP %s",
                agent.identity.station_id,
                e.response.status_code,
            )
            delay = max(
                delay, retry_after(e.response.headers.get("Retry-After"), limits.retry_after_s)
            )
            if e.response.status_code in (401, 403) and not refused:
                refused = True  # logged only: without a connection it cannot be sent
                agent.record_security_event(
                    "FailedToAuthenticateAtCsms",
                    f"CSMS {diagnostics.public_url(agent.config.csms_url)} refused the "
                    f"connection: HTTP {e.response.status_code}",
                )
        except ssl.SSLCertVerificationError as e:
            # e.g. "unable to get local issuer certificate", "certificate has expired",
            # "IP address mismatch, certificate is not valid for '127.0.0.1'."
            reason = f"TLS certificate verify failed: {e.verify_message or e}"
            LOG.error(
                "%s: cannot connect to CSMS %s: %s",
                agent.identity.station_id,
                diagnostics.public_url(agent.config.csms_url),
                reason,
            )
            if reason != refused_certificate:
                refused_certificate = reason
                agent.record_security_event("InvalidCsmsCertificate", reason[:TECH_INFO_MAX])
        except ssl.SSLError as e:  # no shared TLS version or cipher suite
            LOG.warning("%s: TLS with the CSMS failed: %s", agent.identity.station_id, e)
        except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as e:
            LOG.info("%s: connection to CSMS failed: %s", agent.identity.station_id, e)
        except ChargewardError as e:  # e.g. the sealed device key does not open
            LOG.error("%s: cannot connect to the CSMS: %s", agent.identity.station_id, e)
        if not agent._reboot.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(agent._reboot.wait(), delay)
