"""The reference charger agent: OCPP 2.0.1 station with a verified A/B firmware install (L01).

    agent = Agent(AgentConfig(state_dir=Path("charger-1"),
                              csms_url="ws://127.0.0.1:9000/ocpp/"))
    await agent.run()

With ``wss://`` (security profiles 2 and 3) the agent checks the CSMS certificate against
``secure/csms-roots.pem`` with hostname verification, presents its station certificate when it
has one (profile 3) and always sends HTTP Basic with its BasicAuthPassword (profile 2).  The
CSMS may rotate that password (SetVariables ``SecurityCtrlr.BasicAuthPassword``: sealed on
flash before the answer goes out) and renew the certificate (OCPP A02, :mod:`chargeward.agent.tls`).

A "reboot" ends the OCPP session and starts over from the bootloader with nothing kept in
memory: everything the next boot needs is on the state directory (the charger's flash).

This module is the life cycle and the connection: boot, connect, start up (BootNotification),
heartbeats, reconnect, reboot, and the messages every part sends to the CSMS through it
(:meth:`Agent._call`, :meth:`Agent._status`, :meth:`Agent._security_event`).  The work is done
by parts the agent owns, one module each:

- :mod:`chargeward.agent.callbacks`: the OCPP callback adapter (requests from the CSMS);
- :mod:`chargeward.agent.update`: the firmware update, download → verify → install → reboot
  → commit;
- :mod:`chargeward.agent.repository_checks`: the TUF repository (layer 2) and the periodic
  look for security releases;
- :mod:`chargeward.agent.sessions`: connectors, charging sessions and the install gate;
- :mod:`chargeward.agent.quarantine`: tamper quarantine when no slot verifies;
- :mod:`chargeward.agent.log_requests`: GetLog uploads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from cryptography import x509
from ocpp.exceptions import OCPPError
from ocpp.v201 import call
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from chargeward.agent import bootloader, certificates, connection, download, protocols
from chargeward.agent import tls as station_tls
from chargeward.agent.bootloader import Booted, NoBootableSlot
from chargeward.agent.callbacks import StationCallbacks
from chargeward.agent.config import AgentConfig
from chargeward.agent.device_model import DeviceModel
from chargeward.agent.event_outbox import EventOutbox, RefusedEvent
from chargeward.agent.local_cache import FirmwareCache
from chargeward.agent.location import SECURITY_EVENT as LOCATION_EVENT
from chargeward.agent.location import LocationRefused
from chargeward.agent.log_requests import LogRequests
from chargeward.agent.quarantine import Quarantine
from chargeward.agent.repository_checks import RepositoryChecks
from chargeward.agent.security_log import SecurityLog
from chargeward.agent.sessions import ChargingSession, ChargingSessions
from chargeward.agent.state import StateDir
from chargeward.agent.tasks import cancel_and_wait
from chargeward.agent.update import UpdatePipeline
from chargeward.agent.verify import SecurityUpdate
from chargeward.errors import ConfigError
from chargeward.ocpp.base import VENDOR_ID, HardenedChargePoint, utc_now

LOG = logging.getLogger("chargeward.agent")
TECH_INFO_MAX = 255
ROUTINE_EVENTS = frozenset({"FirmwareUpdated", "StartupOfTheDevice", "ResetOrReboot"})
BOOT_RETRY_MAX = 300.0  # seconds between BootNotifications the CSMS refused with a CALLERROR


class Agent:
    def __init__(self, config: AgentConfig, *, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.config = config
        self.state = StateDir(config.state_dir)
        self.clock = clock
        self.identity = self.state.identity()
        self.stop_requested = asyncio.Event()
        self.boots = 0
        self.download_stats: list[download.DownloadStats] = []
        self._reboot = asyncio.Event()
        self._online = asyncio.Event()
        self._cp: HardenedChargePoint | None = None
        self._csms_chain: list[x509.Certificate] = []  # the CSMS's TLS certificates, if any
        self._boot_reason = "PowerUp"
        self._heartbeat_interval = 300
        self._heartbeat_changed = asyncio.Event()
        self.device = DeviceModel(self)  # GetVariables, SetVariables, reports (B05-B08)
        self.unanswered_calls = 0  # CALLs the CSMS left unanswered (each ends the connection)
        self._answered = False  # the CSMS answered a CALL on the current connection
        # CALLs the CSMS answered with a CALLERROR, per action and error code (diagnostics).
        self.refused_calls: Counter[tuple[str, str]] = Counter()
        # Security events on their way; through whatever ``_call`` is at the time.
        self.outbox = EventOutbox(self.identity.station_id, lambda p: self._call(p))
        self._boot_now = asyncio.Event()  # TriggerMessage(BootNotification) while not accepted
        self.updates = UpdatePipeline(self)
        self.repository = RepositoryChecks(self)
        self.registered = asyncio.Event()  # BootNotification accepted during this boot
        self.started = False  # this boot's start-up (or tamper notification) went through
        self.booted: Booted | None = None
        self.security_log = SecurityLog(config.state_dir / "log")  # OCPP N01, UK SCP Sch.1 10
        self.logs = LogRequests(self)
        self.tamper = Quarantine(self)
        self.charging = ChargingSessions(self)
        self.callbacks = StationCallbacks(self)
        self.outbound16 = protocols.outbound16(self)  # OCPP 1.6J: the calls translated
        self.cache = self._local_cache()
        if config.location_policy.lab_loopback:
            LOG.warning(
                "%s: the location policy allows loopback (%s): a lab setting, never for a "
                "charger in the field",
                self.identity.station_id,
                ", ".join(config.location_policy.allow_networks),
            )
        if self.tls:
            station_tls.client_context(self.state)  # refuse a missing trust anchor at once

    @property
    def online(self) -> bool:
        """Connected to the CSMS right now."""
        return self._online.is_set()

    @property
    def rebooting(self) -> bool:
        """A reboot (or stop) was requested and this boot is ending."""
        return self._reboot.is_set()

    @property
    def updating(self) -> bool:
        """A firmware update of this boot is under way (a new one would cancel it)."""
        return self.updates.running

    @property
    def firmware_version(self) -> str | None:
        """The version this boot runs (None before the bootloader step or in quarantine)."""
        return self.booted.header.version if self.booted is not None else None

    @property
    def quarantine(self) -> str | None:
        """Why no slot verifies, while in tamper quarantine; else None."""
        return self.tamper.reason

    @property
    def connector_status(self) -> dict[int, str]:
        return self.charging.connector_status

    @property
    def sessions(self) -> dict[int, ChargingSession]:
        return self.charging.sessions

    @property
    def tls(self) -> bool:
        return self.config.csms_url.lower().startswith("wss://")

    def _local_cache(self) -> FirmwareCache | None:
        listen, url = self.config.local_cache_listen, self.config.local_cache_url
        if listen is None:
            return None
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not url:
            raise ConfigError(
                f"local cache: listen on host:port and give the URL chargers use, got "
                f"{listen!r} and {url!r}"
            )
        return FirmwareCache(
            self.config.state_dir / "cache",
            url,
            notify=self._publish_status,
            max_bytes=self.config.max_image_bytes,
            proxy=self.config.download_proxy,
            rate_limit=self.config.download_rate_limit,
            policy=self.config.location_policy,
            on_refused=self._location_refused,
            csms_roots=self.state.csms_roots_pem(),
        )

    async def _location_refused(self, what: str, error: LocationRefused) -> None:
        """A URL from the CSMS the location policy forbids: a log line naming the rule and
        a security event (the caller reports the call's own failure status)."""
        LOG.warning(
            "%s: %s: location refused by rule %r: %s",
            self.identity.station_id,
            what,
            error.rule,
            error.detail,
        )
        await self._security_event(LOCATION_EVENT, f"{what}: {error}"[:TECH_INFO_MAX])

    async def _publish_status(
        self, status: str, request_id: int, locations: list[str] | None
    ) -> None:
        LOG.info("%s: PublishFirmwareStatus %s (%d)", self.identity.station_id, status, request_id)
        await self._call(
            call.PublishFirmwareStatusNotification(
                status=status, location=locations, request_id=request_id
            )
        )

    # -- what the charger's own application asks ------------------------------------------

    async def start_session(self, evse_id: int, id_token: str | None = None) -> str:
        """An EV plugs in and is authorised (:meth:`ChargingSessions.start`)."""
        return await self.charging.start(evse_id, id_token)

    async def end_session(self, evse_id: int) -> None:
        """The EV leaves (:meth:`ChargingSessions.end`)."""
        await self.charging.end(evse_id)

    async def check_for_security_updates(self) -> list[SecurityUpdate]:
        """See :meth:`RepositoryChecks.check_for_security_updates`."""
        return await self.repository.check_for_security_updates()

    def boot_now(self) -> None:
        """TriggerMessage(BootNotification) before this boot was accepted (OCPP F06): the
        start-up sends its BootNotification at once instead of waiting out the interval."""
        self._boot_now.set()

    # -- life cycle -----------------------------------------------------------------------

    async def run(self) -> None:
        """Boot, serve, and boot again after each reboot until :meth:`stop`."""
        if self.config.allow_unendorsed_manufacturer_roots:
            LOG.warning(
                "%s: LAB SWITCH %s is on: the CSMS may install manufacturer roots that no "
                "installed root endorses; never run a charger in the field like this",
                self.identity.station_id,
                certificates.LAB_SWITCH,
            )
        while not self.stop_requested.is_set():
            if self.boots:  # a charger takes this long to restart before it connects again
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_requested.wait(), self.config.reboot_delay)
                if self.stop_requested.is_set():
                    break
            self.boots += 1
            self._reboot.clear()
            try:
                booted = bootloader.boot(self.state)
            except NoBootableSlot as e:
                await self.tamper.serve(str(e))
                continue
            LOG.info(
                "%s: booted slot %s, firmware %s",
                self.identity.station_id,
                booted.slot,
                booted.header.version,
            )
            await self._serve_boot(booted)

    def stop(self) -> None:
        self.stop_requested.set()
        self._reboot.set()

    def request_reboot(self, reason: str) -> None:
        self._boot_reason = reason
        self._reboot.set()

    @property
    def url(self) -> str:
        return self.config.csms_url.rstrip("/") + "/" + quote(self.identity.station_id, safe="")

    def _auth_header(self) -> dict[str, str]:
        raw = f"{self.identity.station_id}:{self.state.password()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    async def _serve_boot(self, booted: Booted) -> None:
        self.booted = booted
        self.charging.boot(self.config.connectors)  # a reboot ends every session
        self.registered.clear()
        self.started = False
        trial = booted.trial
        problem = self.config.self_test(booted.header) if self.config.self_test else None
        if problem:
            LOG.error("%s: self-test failed: %s", self.identity.station_id, problem)
            if trial:  # not healthy: reboot, using up one attempt of the trial slot
                self._boot_reason = "ApplicationReset"
                return
        background = []
        if self.repository.client:
            background.append(asyncio.create_task(self.repository.run_checks()))
        if trial:
            background.append(asyncio.create_task(self._trial_watchdog()))
        if self.cache is not None and self.config.local_cache_listen:
            host, _, port = self.config.local_cache_listen.rpartition(":")
            background.append(asyncio.create_task(self.cache.run(host.strip("[]"), int(port))))
        try:
            await self._connect_loop(booted)
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._shutdown_tasks()

    async def _trial_watchdog(self) -> None:
        await asyncio.sleep(self.config.trial_health_timeout)
        if self.state.boot_control().trial:
            LOG.error(
                "%s: trial slot not healthy after %.0f s; rebooting",
                self.identity.station_id,
                self.config.trial_health_timeout,
            )
            self.request_reboot("Watchdog")

    async def _connect_loop(self, booted: Booted | None) -> None:
        """Connect, serve a session, connect again until a reboot (:mod:`.connection`)."""
        await connection.connect_loop(self, booted)

    def reconnect_backoff(self, failures: int) -> float:
        """See :func:`.connection.reconnect_backoff`."""
        return connection.reconnect_backoff(self, failures)

    async def _shutdown_tasks(self) -> None:
        """A reboot ends the update and the log upload of this boot."""
        for task in (self.updates.task, self.logs.task):
            if task is not None:
                await cancel_and_wait(task)
        self.updates.task = self.logs.task = None
        self.updates.installing = False

    async def _session(self, ws: ClientConnection, booted: Booted | None, first: bool) -> None:
        cp = protocols.charge_point(self, ws, booted)  # 2.0.1, or 1.6J (station16)
        self._cp = cp
        self._csms_chain = certificates.connection_chain(ws.transport.get_extra_info("ssl_object"))
        reader = asyncio.create_task(cp.start())
        self._online.set()
        # The session's own work runs beside the reader: a connection that closes (or a reboot)
        # while the BootNotification waits for its answer ends the session, and the next one
        # starts on a new connection (a call retried on a closed one would wait forever).
        work = asyncio.create_task(self._session_work(booted, first))
        rebooting = asyncio.create_task(self._reboot.wait())
        tasks: set[asyncio.Task[Any]] = {reader, work, rebooting}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            failed = work.exception() if work in done and not work.cancelled() else None
            if failed is not None:
                raise failed
        finally:
            self._online.clear()
            self._cp = None
            # Each cancelled again if a cancellation is lost (see cancel_and_wait).
            await asyncio.gather(*(cancel_and_wait(t) for t in tasks))

    async def _session_work(self, booted: Booted | None, first: bool) -> None:
        """Start-up of one connection (BootNotification, or connector status after a
        reconnect; the tamper notification in quarantine), the security events refused on an
        earlier connection, then heartbeats."""
        retry = self.outbox.take()  # refused from now on: next time
        if booted is None:  # quarantine: notify, no heartbeats, no connector status
            if first:
                await self.tamper.notify()
                self.started = True
            await self.outbox.resend(retry)
            await asyncio.Event().wait()  # until the connection closes or a reboot
        elif first:
            await self._startup(booted)
            self.started = True
        else:
            await self.charging.send_status()
        await self.outbox.resend(retry)
        await self._heartbeats()

    # -- messages to the CSMS -------------------------------------------------------------

    async def _call(self, payload: Any) -> Any:
        """Send a CALL, waiting for a connection; queued across reconnects of this boot.

        Returns the CALLRESULT, or None when the CSMS answered with a CALLERROR: a normal
        answer from a peer, logged and counted here, never the end of the agent or of the
        work that sent it (each caller carries on without the result).
        """
        while True:
            await self._online.wait()
            cp = self._cp
            if cp is None:
                await asyncio.sleep(0.05)
                continue
            try:
                result = await self._call_until_closed(cp, payload)
                self._answered = True
                return result
            except TimeoutError:
                if self._reboot.is_set():
                    raise
                await self._unanswered(cp, payload)
            except ConnectionClosed:
                if self._reboot.is_set():
                    raise
                await asyncio.sleep(0.1)
            except OCPPError as e:
                self._call_refused(payload, e)
                return None

    async def _unanswered(self, cp: HardenedChargePoint, payload: Any) -> None:
        """A CALL the CSMS left unanswered for ``response_timeout``: the CSMS is taken as
        lost and the connection closed; the call goes again on the next one, which
        :meth:`_connect_loop` opens after the back-off (never resent on a silent connection)."""
        self.unanswered_calls += 1
        LOG.warning(
            "%s: the CSMS did not answer %s within %.0f s; connecting again",
            self.identity.station_id,
            type(payload).__name__,
            self.config.response_timeout,
        )
        if self._cp is cp:
            with contextlib.suppress(Exception):
                await cp._connection.close(1001, "no answer from the CSMS")
        await asyncio.sleep(0.1)

    def _call_refused(self, payload: Any, error: OCPPError) -> None:
        action = type(payload).__name__
        code = str(getattr(error, "code", type(error).__name__))
        self.refused_calls[(action, code)] += 1
        LOG.warning(
            "%s: the CSMS answered %s with CALLERROR %s: %s",
            self.identity.station_id,
            action,
            code,
            str(getattr(error, "description", "") or error)[:200],
        )

    @staticmethod
    async def _call_until_closed(cp: HardenedChargePoint, payload: Any) -> Any:
        """``cp.call``, given up as soon as its connection closes: a CALL in flight when the
        CSMS node died would otherwise wait out the whole response timeout (the OCPP library
        is not woken by a close), and the station's report with it."""
        ws: ClientConnection = cp._connection
        call = asyncio.ensure_future(cp.call(payload, suppress=False))
        closed = asyncio.ensure_future(ws.wait_closed())
        try:
            done, _ = await asyncio.wait({call, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if call in done:
            return call.result()
        await cancel_and_wait(call)
        raise ws.close_exc  # the ConnectionClosed of this connection

    async def _status(self, status: str, request_id: int | None) -> None:
        LOG.info(
            "%s: firmware status %s (request %s)", self.identity.station_id, status, request_id
        )
        if request_id is not None:
            self.updates.reporting = (status, request_id)
        result = await self._call(
            call.FirmwareStatusNotification(status=status, request_id=request_id)
        )
        # Recorded once the CSMS has it: a power loss before that sends it again at start-up.
        # Refused (a CALLERROR): not recorded, and the update carries on.
        if result is not None:
            self.state.set_last_status(status, request_id)

    async def _status_note(self, request_id: int, note: dict[str, Any]) -> None:
        """Downloading again, with a note for a Chargeward CSMS in customData (others ignore
        it): e.g. why a delta was not used."""
        await self._call(
            call.FirmwareStatusNotification(
                status="Downloading",
                request_id=request_id,
                custom_data={"vendor_id": VENDOR_ID, **note},
            )
        )

    async def _security_event(self, type: str, tech_info: str) -> None:
        """Log ``type`` (Chargeward's own name, if it is one) and send it to the CSMS as an
        OCPP-listed type (:mod:`chargeward.ocpp.security_events`); one the CSMS refuses is
        kept for the next connection."""
        level = logging.INFO if type in ROUTINE_EVENTS else logging.WARNING
        LOG.log(level, "%s: security event %s: %s", self.identity.station_id, type, tech_info)
        now = self.clock()
        self._log_security_event(type, tech_info, now, notify=True)  # on flash before it is sent
        await self.outbox.send(RefusedEvent(type, tech_info, now, attempts=0))

    @property
    def refused_events(self) -> list[RefusedEvent]:
        """Security events the CSMS refused, to send again at the next connection."""
        return self.outbox.refused

    def record_security_event(self, type: str, tech_info: str) -> None:
        """Put a security event in the security log only (e.g. one that cannot be sent)."""
        LOG.warning("%s: security event %s: %s", self.identity.station_id, type, tech_info)
        self._log_security_event(type, tech_info, self.clock(), notify=False)

    def _log_security_event(
        self, type: str, tech_info: str, time: dt.datetime, *, notify: bool
    ) -> None:
        try:
            self.security_log.append(type, tech_info, time=time, notify=notify)
        except OSError as e:  # a full or failing flash must not stop the charger
            LOG.error("%s: security log not written: %s", self.identity.station_id, e)

    @property
    def heartbeat_interval(self) -> int:
        """OCPPCommCtrlr.HeartbeatInterval: from the boot answer, or set by the CSMS."""
        return self._heartbeat_interval

    @heartbeat_interval.setter
    def heartbeat_interval(self, seconds: int) -> None:
        self._heartbeat_interval = seconds
        self._heartbeat_changed.set()  # the wait under way starts over with the new interval

    async def _heartbeats(self) -> None:
        while True:
            self._heartbeat_changed.clear()
            try:
                await asyncio.wait_for(self._heartbeat_changed.wait(), self.heartbeat_interval)
            except TimeoutError:
                await self._call(call.Heartbeat())

    async def _startup(self, booted: Booted) -> None:
        inst = self.state.install_state()
        updating = (
            inst is not None
            and inst.phase in ("written", "rebooting")
            and inst.target_slot == booted.slot
            and not booted.fell_back
        )
        reason = "FirmwareUpdate" if updating else self._boot_reason
        ident = self.identity
        refusals = 0
        while True:
            self._boot_now.clear()
            result = await self._call(
                call.BootNotification(
                    charging_station={
                        "model": ident.model,
                        "vendor_name": ident.vendor,
                        "serial_number": ident.serial_number,
                        "firmware_version": booted.header.version,
                    },
                    reason=reason,
                )
            )
            if result is None:  # a CALLERROR: as a Rejected boot, retried with back-off
                refusals += 1
                delay = min(self.config.reconnect_delay * 2 ** min(refusals, 16), BOOT_RETRY_MAX)
            else:
                self.heartbeat_interval = max(int(result.interval or 300), 1)
                if result.status == "Accepted":
                    break
                delay = self.heartbeat_interval
            # Pending (or Rejected): a TriggerMessage(BootNotification) sends it at once (F06).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._boot_now.wait(), delay)
        self._boot_reason = "PowerUp"
        self.registered.set()
        for event in self.state.pending_events():  # found by the bootloader, e.g. tamper
            await self._security_event(event["type"], event["tech_info"])
            self.state.drop_pending_event(event)
        if updating:
            assert inst is not None
            await self._security_event(
                "FirmwareUpdated", f"firmware {inst.version} running from slot {booted.slot}"
            )
        await self.charging.set_connectors("Available", sorted(self.connector_status))
        # Healthy: booted, verified, connected, connectors Available -> commit (mark good).
        await self.updates.commit(booted)
