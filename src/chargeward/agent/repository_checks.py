"""The agent's link to the TUF repository (layer 2): refreshes, image listings, and the
periodic look for security releases.

A charger provisioned with a TUF root (``chargeward agent init --tuf-root``) also needs
``repository_url``: every image must then be listed by the TUF repository for this charger
before it is installed, and the agent looks for security releases at its first connection
after start-up and then every ``update_check_interval`` seconds, reporting each new one once
with ``DataTransfer`` (vendor ``org.chargeward``, message ``SecurityUpdateAvailable``).
Each refresh applies the firmware-signing CRL the repository lists.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ocpp.exceptions import OCPPError
from ocpp.v201 import call

from chargeward.agent import certificates
from chargeward.agent.tuf_client import RepositoryClient, RepositoryView
from chargeward.agent.verify import (
    SecurityUpdate,
    SignedImage,
    VerifiedImage,
    accept_image,
    check_target,
    find_security_updates,
    target_path_for,
)
from chargeward.errors import ChargewardError, ConfigError, RepositoryRefused, TransportError
from chargeward.ocpp.base import VENDOR_ID

if TYPE_CHECKING:
    from chargeward.agent.agent import Agent

LOG = logging.getLogger("chargeward.agent")
REPOSITORY_EVENT = "FirmwareRepositoryCheckFailed"
UPDATE_AVAILABLE = "SecurityUpdateAvailable"
_R = TypeVar("_R")


class RepositoryChecks:
    """The TUF repository as this charger sees it; ``client`` is None without a TUF root."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self.client = self._client()
        self._lock = asyncio.Lock()  # one Updater at a time on the metadata cache

    def _client(self) -> RepositoryClient | None:
        agent, config = self._agent, self._agent.config
        if agent.state.tuf_bootstrap_root() is None:
            return None  # layer 1 only, as any OCPP 2.0.1 station
        if not config.repository_url:
            raise ConfigError(
                f"{config.state_dir} holds a TUF root, so every update is checked against "
                "the TUF repository: give its URL (--repository or $CHARGEWARD_REPOSITORY_URL)"
            )
        return RepositoryClient(
            agent.state,
            config.repository_url,
            limits=config.repository_limits,
            clock=agent.clock,
            customer=agent.identity.customer,
            auth=self._auth,
        )

    def _auth(self) -> tuple[str, str] | None:
        """The station id and current BasicAuthPassword, for the customer's tenant role."""
        try:
            return (self._agent.identity.station_id, self._agent.state.password())
        except ChargewardError:
            return None  # no usable credentials: the public part of the repository only

    async def check_image(self, image: SignedImage) -> VerifiedImage:
        """Layer 2 (when provisioned): the TUF repository must list this image for us."""
        if self.client is None:
            return accept_image(image, None)
        ident = self._agent.identity
        path = target_path_for(ident.model, image.header)
        info = await self.refresh(lambda repo: repo.target(path))
        approval = check_target(
            info,
            sha256=image.sha256,
            length=image.length,
            header=image.header,
            model=ident.model,
            customer=ident.customer,
            rollback_floor=self._agent.state.rollback_floor(),
        )
        return accept_image(image, approval)

    async def refresh(self, what: Callable[[RepositoryView], _R]) -> _R:
        """One repository refresh (``what`` reads the view), applying the CRL it lists.

        The CRL is applied before this returns, so the caller decides with current
        revocations; a listed CRL that fails verification is reported (see
        :func:`~chargeward.agent.certificates.apply_published_crl`) and does not stop the
        caller.  Raises what :meth:`RepositoryClient.read` raises.
        """
        assert self.client is not None
        agent = self._agent
        async with self._lock:
            got = await asyncio.to_thread(self.client.read, what)
            refused = None
            if got.crl is not None:
                refused = await asyncio.to_thread(
                    certificates.apply_published_crl, agent.state, got.crl, agent.clock()
                )
        if refused is not None:
            await agent._security_event(REPOSITORY_EVENT, refused)
        return got.value

    async def run_checks(self) -> None:
        """At the first registration of this boot, then every ``update_check_interval``."""
        agent = self._agent
        await agent.registered.wait()
        while True:
            try:
                await self.check_for_security_updates()
            except (ChargewardError, OCPPError) as e:
                LOG.warning("%s: update check failed: %s", agent.identity.station_id, e)
            except Exception as e:  # the check must never stop the charger
                LOG.error("%s: update check failed: %r", agent.identity.station_id, e)
            await asyncio.sleep(agent.config.update_check_interval)

    async def check_for_security_updates(self) -> list[SecurityUpdate]:
        """Refresh the repository; report security releases newer than the running image.

        Each target is reported once (``update_check.json``); returns every qualifying one.
        A trust failure is reported as a ``FirmwareRepositoryCheckFailed`` security event, an
        unreachable repository only logged.
        The refresh also applies the firmware-signing CRL it lists (:meth:`refresh`).
        """
        if self.client is None:
            return []
        agent = self._agent
        ident = agent.identity
        try:
            listed = await self.refresh(lambda repo: repo.firmware_targets(ident.model))
        except RepositoryRefused as e:
            await agent._security_event(REPOSITORY_EVENT, str(e))
            return []
        except TransportError as e:
            LOG.info("%s: update check: %s", ident.station_id, e)
            return []
        updates = find_security_updates(
            listed,
            model=ident.model,
            customer=ident.customer,
            running_security_version=self._running_security_version(),
        )
        reported = agent.state.reported_updates()
        for update in updates:
            if update.target in reported:
                continue
            LOG.warning(
                "%s: security release %s available (%s)",
                ident.station_id,
                update.version,
                update.target,
            )
            result = await agent._call(
                call.DataTransfer(
                    vendor_id=VENDOR_ID,
                    message_id=UPDATE_AVAILABLE,
                    data=json.dumps(update.report(), sort_keys=True),
                )
            )
            if result is None:  # a CALLERROR (logged): reported again at the next check
                continue
            LOG.info("%s: %s answered %s", ident.station_id, UPDATE_AVAILABLE, result.status)
            agent.state.add_reported_update(update.target)
        return updates

    def _running_security_version(self) -> int:
        booted = self._agent.booted
        if booted is not None:
            return booted.header.security_version
        state = self._agent.state
        info = state.slot_info(state.boot_control().active)
        return info.security_version if info is not None else 0
