"""Station reports into the database: what the OCPP listener's charge points report, group
committed (:class:`DbSink`; split from :mod:`chargeward.server.stations.csms`)."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chargeward.limits import DEFAULT_SERVER_LIMITS, ServerLimits
from chargeward.ocpp.core_messages import DeviceModelPart, EventReport, MeterReading
from chargeward.ocpp.csms import BootInfo, SignAnswer, SignedChain
from chargeward.ocpp.csms16 import BOOT_REASON as BOOT_REASON_16
from chargeward.ocpp.csms16 import UpdateMode
from chargeward.ocpp.csms_shared import UpdateAvailable
from chargeward.server.fleet import station_registry
from chargeward.server.rollout import local_cache, update_orders
from chargeward.server.rollout.repository import record_available_update
from chargeward.server.stations import (
    core_reports,
    logs,
    ocpp16_support,
    station_reports,
    station_security,
    write_budget,
)
from chargeward.server.stations.group_commit import GroupCommit
from chargeward.server.store.db import Database

LOG = logging.getLogger("chargeward.csms")


Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DbSink:
    """Station reports into the database.

    Each report is committed before the station gets its answer, many reports to a
    transaction (:class:`~chargeward.server.stations.group_commit.GroupCommit`).  Heartbeats are the
    exception: they only move ``last_seen``, so they are gathered in
    memory and written in one statement at most every ``seen_flush_interval`` seconds
    (10,000 stations send one every few minutes; a transaction each would be most of the
    server's work, benchmarks/bench_connections.py).
    """

    def __init__(
        self,
        db: Database,
        clock: Clock = utc_now,
        charger_ca: station_security.ChargerCa | None = None,
        seen_flush_interval: float = 5.0,
        *,
        limits: ServerLimits = DEFAULT_SERVER_LIMITS,
        authorize_status: str = "Accepted",
    ) -> None:
        self.db = db
        self.limits = limits
        # The idTokenInfo.status of every Authorize (``chargeward server --authorize``): the
        # server manages no id tokens (ADR 0035).
        self.authorize_status = authorize_status
        # NotifyReport parts being assembled: station -> requestId -> assembly (ADR 0035).
        self._reports: dict[str, dict[int, _Assembly]] = {}
        self.clock = clock
        self.charger_ca = charger_ca
        self.seen_flush_interval = seen_flush_interval
        self.writes = GroupCommit(db)  # station reports, many per transaction
        self._seen: dict[str, dt.datetime] = {}
        # What a station can write to the audit log, per window (ADR 0027).
        self.event_budget = write_budget.StationWriteBudget()
        self.boot_budget = write_budget.StationWriteBudget(
            write_budget.BOOT_BUDGET, action="station.boots_suppressed"
        )
        self.csr_refusal_budget = write_budget.StationWriteBudget(
            write_budget.CSR_REFUSAL_BUDGET, action="station.certificates_refused_suppressed"
        )
        self._flusher: asyncio.Task[None] | None = None

    async def check_csr(self, station_id: str, csr: str, certificate_type: str) -> SignAnswer:
        answer = station_security.decide_csr(self.charger_ca, station_id, csr, certificate_type)
        if answer.status == "Accepted" and not await station_security.claim_csr_request(
            self.db, station_id, now=self.clock()
        ):  # only a CSR the CSMS asked for, once per request (ADR 0027)
            answer = SignAnswer("Rejected", station_security.UNSOLICITED)
        if answer.status != "Accepted":
            LOG.warning("%s: SignCertificate rejected: %s", station_id, answer.reason)
            now = self.clock()
            reason = answer.reason or "rejected"
            admitted, closed = self.csr_refusal_budget.admit(station_id, reason, now)
            if closed is not None:
                await self._summarise([closed], now)
            if admitted:  # beyond the budget: counted in the window's summary (ADR 0027)
                await station_security.audit_csr_refused(self.db, station_id, reason, now)
        return answer

    async def _summarise(
        self, closed: list[write_budget.SuppressedEvents], now: dt.datetime
    ) -> None:
        async def write(s: AsyncSession) -> None:
            for summary in closed:
                await station_reports.record_suppressed_events(s, summary, now=now)

        await self.writes.run(write, station_id=closed[0].station_id)

    async def sign_csr(self, station_id: str, csr: str) -> SignedChain:
        assert self.charger_ca is not None  # check_csr accepted the request
        chain = await station_security.sign_csr(
            self.db, self.charger_ca, station_id, csr, now=self.clock()
        )
        LOG.info("%s: issued station certificate %s", station_id, chain.serial)
        return chain

    async def certificate_delivered(self, station_id: str, chain: SignedChain, status: str) -> None:
        LOG.info("%s: CertificateSigned %s: %s", station_id, chain.serial, status)
        await station_security.record_certificate_delivered(
            self.db, station_id, chain, status, self.clock()
        )

    async def boot(self, station_id: str, info: BootInfo) -> None:
        now = self.clock()
        admitted, closed = self.boot_budget.admit(station_id, info.reason, now)
        await self.writes.run(
            lambda s: station_reports.record_boot(
                s,
                station_id,
                reason=info.reason,
                firmware_version=info.firmware_version,
                model=info.model,
                vendor=info.vendor,
                serial_number=info.serial_number,
                now=now,
                admitted=admitted,
                closed=closed,
            ),
            station_id=station_id,
            # it belongs to that update (1.6 says no reason: perhaps, station_reports decides)
            open_update=info.reason in ("FirmwareUpdate", BOOT_REASON_16),
            alerts=True,  # firmware drift
        )

    async def connected(
        self,
        station_id: str,
        connected: bool,
        *,
        node_id: str | None = None,
        ocpp_version: str | None = None,
    ) -> bool:
        """Record a (dis)connection; returns whether the station ever booted.  ``node_id``:
        a disconnection is not recorded if another node holds the station by then;
        ``ocpp_version``: the subprotocol of a connection (``1.6``, ``2.0.1``)."""
        now = self.clock()
        if not connected:
            self._reports.pop(station_id, None)  # a report's parts share one connection
            budgets = (self.event_budget, self.boot_budget, self.csr_refusal_budget)
            closed = [c for b in budgets if (c := b.close(station_id)) is not None]
            if closed:
                await self._summarise(closed, now)

        async def write(s: AsyncSession) -> bool:
            booted = await station_registry.set_connected(
                s, station_id, connected, now=now, node_id=node_id
            )
            if ocpp_version is not None:
                await ocpp16_support.record_protocol(s, station_id, ocpp_version)
            return booted

        return await self.writes.run(write, station_id=station_id)

    async def heartbeat(self, station_id: str) -> None:
        self._seen[station_id] = self.clock()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(
                self._flush_later(), context=contextvars.Context()
            )  # not the context of the station's handler that happened to start it

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.seen_flush_interval)
        await self.flush_seen()

    async def flush_seen(self) -> None:
        """Write the gathered ``last_seen`` times now (also on shutdown)."""
        seen, self._seen = self._seen, {}
        if seen:
            try:
                async with self.db.session() as s:
                    await station_registry.touch_many(s, seen)
            except Exception:  # a lost batch costs only freshness; never the listener
                LOG.exception("cannot record last-seen times of %d stations", len(seen))

    async def close(self) -> None:
        """Write what is pending (on shutdown)."""
        await self.flush_seen()
        await self.writes.close()

    async def connector_status(
        self, station_id: str, evse_id: int, connector_id: int, status: str
    ) -> None:
        now = self.clock()
        await self.writes.run(
            lambda s: station_reports.record_connector_status(
                s, station_id, evse_id=evse_id, connector_id=connector_id, status=status, now=now
            ),
            station_id=station_id,
        )

    async def firmware_status(
        self, station_id: str, status: str, request_id: int | None, note: str | None = None
    ) -> None:
        now = self.clock()
        await self.writes.run(
            lambda s: station_reports.record_firmware_status(
                s, station_id, status=status, request_id=request_id, now=now, note=note
            ),
            station_id=station_id,
            request_id=request_id,
        )

    async def publish_status(
        self, station_id: str, status: str, request_id: int | None, locations: list[str]
    ) -> None:
        now = self.clock()
        await self.writes.run(
            lambda s: local_cache.record_status(s, station_id, status, request_id, locations, now),
            station_id=station_id,
        )

    async def update_response(self, station_id: str, request_id: int, response: str) -> None:
        """The answer to an UpdateFirmware (or why there was none), with the reports."""
        now = self.clock()
        await self.writes.run(
            lambda s: update_orders.set_update_response(s, request_id, response, now=now),
            station_id=station_id,
            request_id=request_id,
        )

    async def log_status(self, station_id: str, status: str, request_id: int | None) -> None:
        now = self.clock()
        await self.writes.run(
            lambda s: logs.record_status(
                s, station_id, status=status, request_id=request_id, now=now
            ),
            station_id=station_id,
        )

    async def security_event(
        self, station_id: str, type: str, timestamp: dt.datetime, tech_info: str | None
    ) -> None:
        now = self.clock()
        admitted, closed = self.event_budget.admit(station_id, type, now)
        await self.writes.run(
            lambda s: station_reports.record_security_event(
                s,
                station_id,
                type=type,
                timestamp=timestamp,
                tech_info=tech_info,
                now=now,
                admitted=admitted,
                closed=closed,
            ),
            station_id=station_id,
            open_update=True,
            alerts=True,
        )

    async def owner_notification(self, station_id: str, notice: dict[str, Any]) -> None:
        now = self.clock()
        await self.writes.run(
            lambda s: station_reports.record_owner_notification(s, station_id, notice, now=now),
            station_id=station_id,
        )

    async def transactions(self, station_id: str, active: dict[str, str]) -> None:
        now = self.clock()
        await self.writes.run(
            lambda s: station_reports.record_transactions(s, station_id, active, now=now),
            station_id=station_id,
        )

    async def update_available(self, station_id: str, report: UpdateAvailable) -> None:
        now = self.clock()
        found = {
            "target": report.target,
            "version": report.version,
            "security_version": report.security_version,
        }
        await self.writes.run(
            lambda s: record_available_update(s, station_id, found, now=now),
            station_id=station_id,
        )

    # -- OCPP 1.6J firmware update path (ADR 0039) --------------------------------------------

    async def update_mode(self, station_id: str) -> UpdateMode:
        async with self.db.snapshot() as s:
            return await ocpp16_support.update_mode(s, station_id)

    async def signed_update_evidence(self, station_id: str, supported: bool, why: str) -> None:
        now = self.clock()
        await self.writes.run(
            lambda s: ocpp16_support.record_signed_evidence(s, station_id, supported, why, now=now),
            station_id=station_id,
        )

    async def open_legacy_request(self, station_id: str) -> int | None:
        async with self.db.snapshot() as s:
            return await ocpp16_support.open_legacy_request(s, station_id)

    # -- core messages (ADR 0035) -----------------------------------------------------------------

    async def authorize(self, station_id: str, id_token_type: str) -> str:
        LOG.debug("%s: Authorize (%s): %s", station_id, id_token_type, self.authorize_status)
        return self.authorize_status

    async def meter_values(self, station_id: str, reading: MeterReading) -> None:
        now = self.clock()
        await self.writes.run(
            lambda s: core_reports.record_meter_values(
                s,
                station_id,
                evse_id=reading.evse_id,
                timestamp=reading.timestamp,
                sampled=list(reading.sampled),
                now=now,
                limits=self.limits,
            ),
            station_id=station_id,
        )

    async def events(self, station_id: str, events: list[EventReport]) -> None:
        now = self.clock()
        rows = [dataclasses.asdict(e) for e in events]
        await self.writes.run(
            lambda s: core_reports.record_station_events(
                s, station_id, rows, now=now, limits=self.limits
            ),
            station_id=station_id,
        )

    async def device_model(self, station_id: str, part: DeviceModelPart) -> None:
        """Assemble the parts of a NotifyReport in memory (bounded); store it once the last
        part (``tbc`` false) arrives."""
        mine = self._reports.setdefault(station_id, {})
        assembly = mine.get(part.request_id)
        if assembly is None:
            while len(mine) >= self.limits.device_model_reports:
                del mine[next(iter(mine))]  # the oldest unfinished report is given up
            assembly = mine[part.request_id] = _Assembly(part.generated_at)
        assembly.add(part, self.limits.device_model_vars)
        if part.tbc:
            return
        del mine[part.request_id]
        if not mine:
            del self._reports[station_id]
        model = assembly.model(part.request_id)
        now = self.clock()
        await self.writes.run(
            lambda s: core_reports.record_device_model(s, station_id, model, now=now),
            station_id=station_id,
        )


@dataclasses.dataclass
class _Assembly:
    """A NotifyReport being assembled: at most ``cap`` variables, the rest counted."""

    generated_at: dt.datetime
    next_seq: int = 0
    gaps: bool = False
    truncated: int = 0
    variables: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def add(self, part: DeviceModelPart, cap: int) -> None:
        if part.seq_no != self.next_seq:
            self.gaps = True  # a part lost or out of order: kept, but marked incomplete
        self.next_seq = part.seq_no + 1
        room = max(cap - len(self.variables), 0)
        self.variables.extend(part.variables[:room])
        self.truncated += max(len(part.variables) - room, 0)

    def model(self, request_id: int) -> dict[str, Any]:
        return {
            "request_id": request_id,
            "generated_at": self.generated_at.isoformat(),
            "complete": not self.gaps,
            "truncated": self.truncated,
            "variables": self.variables,
        }
