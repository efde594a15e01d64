"""The OCPP callback adapter: what the CSMS asks of the charger, answered by the agent's parts.

:class:`StationCallbacks` is the :class:`~chargeward.ocpp.station.StationController` the
charge point calls: each ``on_*`` handler asks for a decision (the answer), each ``after_*``
handler starts the work once the answer is out.  Decisions live where the work is: the update
in :mod:`chargeward.agent.update`, logs in :mod:`chargeward.agent.log_requests`, certificates
in :mod:`chargeward.agent.certificates` and :mod:`chargeward.agent.tls`, published firmware
in :mod:`chargeward.agent.local_cache`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ocpp.v201 import call

from chargeward.agent import certificates
from chargeward.agent import tls as station_tls
from chargeward.agent.device_model import report_messages
from chargeward.agent.sessions import ALLOW_NEW_SESSIONS
from chargeward.crypto.pki import CertificateHashData
from chargeward.ocpp.base import ocpp_time
from chargeward.ocpp.station import CertificateResult, InstalledCertificate

if TYPE_CHECKING:
    from chargeward.agent.agent import Agent

LOG = logging.getLogger("chargeward.agent")
TECH_INFO_MAX = 255


class StationCallbacks:
    """Requests from the CSMS (a StationController), for one :class:`Agent`."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    # -- firmware: UpdateFirmware (L01), PublishFirmware / UnpublishFirmware (L03, L04) ----

    def update_firmware(
        self,
        request_id: int,
        firmware: dict[str, Any],
        retries: int | None,
        retry_interval: int | None,
        custom_data: dict[str, Any] | None = None,
    ) -> str:
        """OCPP L01: decide the UpdateFirmware response (certificate check, busy state)."""
        return self._agent.updates.accept(
            request_id, firmware, retries, retry_interval, custom_data
        )

    async def after_update_firmware(self, request_id: int, status: str) -> None:
        await self._agent.updates.start(request_id, status)

    def publish_firmware(
        self, location: str, checksum: str, request_id: int, retries: int, retry_interval: int
    ) -> str:
        cache = self._agent.cache
        if cache is None:
            return "Rejected"  # not a Local Controller
        return cache.publish(location, checksum, request_id, retries, retry_interval)

    async def after_publish_firmware(self, checksum: str, status: str) -> None:
        if status == "Accepted" and self._agent.cache is not None:
            self._agent.cache.start(checksum)

    def unpublish_firmware(self, checksum: str) -> str:
        cache = self._agent.cache
        return "NoFirmware" if cache is None else cache.unpublish(checksum)

    # -- TriggerMessage, Reset ------------------------------------------------

    def trigger_status(self, what: str) -> str:
        if what == "BootNotification" and self._agent.registered.is_set():
            return "Rejected"  # OCPP F06.FR.17: this boot was already accepted
        return "Accepted"

    async def trigger(self, what: str) -> None:
        agent = self._agent
        if what == "BootNotification":  # not accepted yet (Pending): the start-up sends it
            agent.boot_now()
        elif what == "FirmwareStatusNotification":
            busy = agent.updates.busy_status()
            if busy is not None:  # working on a request: say which, and how far it got
                await agent._call(
                    call.FirmwareStatusNotification(status=busy[0], request_id=busy[1])
                )
                return
            last = agent.state.last_status()
            status = last.get("status")
            if status is None or status == "Installed":  # OCPP L01.FR.26 / L01.FR.27
                await agent._call(call.FirmwareStatusNotification(status="Idle"))
            else:
                await agent._call(
                    call.FirmwareStatusNotification(
                        status=status, request_id=last.get("request_id")
                    )
                )
        elif what == "Heartbeat":
            await agent._call(call.Heartbeat())
        elif what == "StatusNotification":  # every connector, as after a boot
            await agent.charging.send_status()
        elif what == "SignChargingStationCertificate":  # OCPP A02.FR.02
            csr = station_tls.new_csr(agent.state)
            result = await agent._call(
                call.SignCertificate(csr=csr, certificate_type=station_tls.STATION_CERTIFICATE)
            )
            if result is not None:  # a CALLERROR was logged by Agent._call
                LOG.info("%s: SignCertificate: %s", agent.identity.station_id, result.status)

    def reset(self, type: str) -> str:
        return "Scheduled" if self._agent.updates.installing else "Accepted"

    async def after_reset(self, type: str, status: str) -> None:
        if status == "Accepted":
            self._agent.request_reboot("RemoteReset")

    # -- device model: GetVariables, SetVariables (B05, B06), GetBaseReport, GetReport (B07, B08)

    def get_variable(
        self, component: dict[str, Any], variable: dict[str, Any], attribute_type: str
    ) -> tuple[str, str | None]:
        return self._agent.device.get(component, variable, attribute_type)

    def set_variable(
        self, component: dict[str, Any], variable: dict[str, Any], attribute_type: str, value: str
    ) -> str:
        return self._agent.device.set(component, variable, attribute_type, value)

    def report(
        self,
        report_base: str | None,
        component_variable: list[dict[str, Any]] | None = None,
        criteria: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """reportData of a GetBaseReport (``report_base``) or a GetReport (the filters)."""
        device = self._agent.device
        if report_base is not None:
            return device.base_report(report_base)
        return device.custom_report(component_variable, criteria)

    async def send_report(self, request_id: int, data: list[dict[str, Any]]) -> None:
        """The NotifyReport messages of one report (OCPP B07, B08): seqNo from 0,
        ``tbc`` on every part but the last."""
        agent = self._agent
        for seq_no, (part, tbc) in enumerate(report_messages(data)):
            await agent._call(
                call.NotifyReport(
                    request_id=request_id,
                    generated_at=ocpp_time(agent.clock()),
                    seq_no=seq_no,
                    report_data=part or None,
                    tbc=tbc,
                )
            )

    def set_password(self, value: str) -> str:
        """SecurityCtrlr.BasicAuthPassword (OCPP A01): sealed on flash before the answer."""
        agent = self._agent
        try:
            agent.state.set_password(value)
        except ValueError as e:
            LOG.warning("%s: new BasicAuthPassword refused: %s", agent.identity.station_id, e)
            return "Rejected"
        LOG.info("%s: BasicAuthPassword changed by the CSMS", agent.identity.station_id)
        return "Accepted"

    def set_allow_new_sessions(self, value: str) -> str:
        """ChargingStation.AllowNewSessionsPendingFirmwareUpdate (OCPP L01.FR.07)."""
        if value.strip().lower() not in ("true", "false"):
            return "Rejected"
        self._agent.state.set_setting("/".join(ALLOW_NEW_SESSIONS), value.strip().lower() == "true")
        return "Accepted"

    # -- certificates: A02 (station certificate), M03, M04, M05 ----------------------------
    # Decisions and storage are in chargeward.agent.certificates and agent.tls.

    def certificate_signed(
        self, certificate_chain: str, certificate_type: str | None
    ) -> CertificateResult:
        agent = self._agent
        result = station_tls.install_signed_certificate(
            agent.state, certificate_chain, certificate_type, agent.clock()
        )
        LOG.info("%s: CertificateSigned: %s", agent.identity.station_id, result)
        return result

    async def after_certificate_signed(self, result: CertificateResult) -> None:
        agent = self._agent
        if result.security_event is not None:
            await agent._security_event(certificates.TRUST_STORE_EVENT, result.security_event)
        if result.status == "Accepted" and agent._cp is not None:
            # Connect again at once: the new certificate is in use and the CSMS records it.
            await agent._cp._connection.close(1000, "new station certificate")
        elif result.status != "Accepted":
            await agent._security_event(
                "InvalidChargingStationCertificate", (result.additional_info or "")[:TECH_INFO_MAX]
            )

    def install_certificate(self, certificate_type: str, certificate: str) -> CertificateResult:
        agent = self._agent
        result = certificates.install_certificate(
            agent.state,
            certificate_type,
            certificate,
            agent.clock(),
            allow_unendorsed=agent.config.allow_unendorsed_manufacturer_roots,
            limits=agent.config.limits,
        )
        LOG.log(
            logging.INFO if result.status == "Accepted" else logging.WARNING,
            "%s: InstallCertificate %s: %s",
            agent.identity.station_id,
            certificate_type,
            result,
        )
        return result

    def installed_certificates(
        self, certificate_types: list[str] | None
    ) -> list[InstalledCertificate]:
        return certificates.installed_certificates(self._agent.state, certificate_types)

    def delete_certificate(self, hash_data: CertificateHashData) -> CertificateResult:
        agent = self._agent
        result = certificates.delete_certificate(
            agent.state, hash_data, connection=agent._csms_chain
        )
        LOG.info("%s: DeleteCertificate: %s", agent.identity.station_id, result)
        return result

    async def after_certificate_change(self, result: CertificateResult) -> None:
        if result.security_event is not None:
            kind = result.event_type or certificates.TRUST_STORE_EVENT
            await self._agent._security_event(kind, result.security_event)

    # -- GetLog (N01) ------------------------------------------------------------------------

    def get_log(
        self,
        log_type: str,
        request_id: int,
        log: dict[str, Any],
        retries: int | None,
        retry_interval: int | None,
    ) -> tuple[str, str | None]:
        """OCPP N01: decide the GetLog response (status, filename); :meth:`after_get_log`
        uploads."""
        return self._agent.logs.accept(log_type, request_id, log, retries, retry_interval)

    async def after_get_log(self, request_id: int, status: str) -> None:
        await self._agent.logs.start(request_id, status)
