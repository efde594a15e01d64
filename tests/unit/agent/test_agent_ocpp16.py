"""The real agent as an OCPP 1.6J station, of both kinds, against a strict 1.6 CSMS.

Whitepaper kind: SignedUpdateFirmware runs the same verified A/B install as 2.0.1 and reports
it with SignedFirmwareStatusNotification; a tampered image or an untrusted signing certificate
is refused with the whitepaper's security events.  Legacy kind: plain UpdateFirmware; the
request carries no signature field, yet the agent installs only an image whose signature and
signing certificate (given in the location's fragment) its own checks accept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ocpp.exceptions import NotSupportedError, SecurityError
from ocpp.v16 import call

from chargeward.agent.state import StateDir
from chargeward.ocpp.v16_map import legacy_location, split_legacy_location
from chargeward.release.bundle import VerifiedBundle, verify_bundle
from tests.support.agent_harness import L01_HAPPY, provisioned_charger
from tests.support.agent_harness16 import (
    Csms16,
    running_agent16,
    running_csms16,
    signed_location,
    upload_server,
)
from tests.support.fleet import Pki
from tests.support.tufrepo import Clock, TufRepo

LEGACY_HAPPY = ["Downloading", "Downloaded", "Installing", "Installed"]
NEW_PASSWORD = "rotated-password-0123456789abcdef"


@pytest.fixture(scope="module")
def release(
    charger_factory: tuple[Pki, Path], tmp_path_factory: pytest.TempPathFactory
) -> VerifiedBundle:
    pki, _ = charger_factory
    d = tmp_path_factory.mktemp("ocpp16-rel")
    return verify_bundle(pki.bundle(d / "u.cwb", "1.1.0", 1), [pki.root_cert], workdir=d / "u")


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> VerifiedBundle:
    """A release signed under a root the charger does not hold."""
    d = tmp_path_factory.mktemp("ocpp16-evil")
    evil = Pki.create(d / "pki", "EVIL")
    return verify_bundle(evil.bundle(d / "e.cwb", "6.6.6", 1), [evil.root_cert], workdir=d / "e")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def files(clock: Clock, release: VerifiedBundle) -> Iterator[TufRepo]:
    """An HTTP server for the images: ``good.cwfw`` and ``tampered.cwfw`` (one byte flipped)."""
    data = release.primary.file.read_bytes()
    with TufRepo(clock) as server:
        server.serve("fw/good.cwfw", data)
        server.serve("fw/tampered.cwfw", data[:-10] + bytes([data[-10] ^ 1]) + data[-9:])
        yield server


@pytest.fixture
def charger(tmp_path: Path, charger_factory: tuple[Pki, Path]) -> StateDir:
    return provisioned_charger(tmp_path, charger_factory, "CP-16")


def firmware_versions(csms: Csms16) -> list[str | None]:
    return [b.get("firmware_version") for b in csms.of("BootNotification")]


# -- whitepaper kind ------------------------------------------------------------------------


async def test_whitepaper_boot_status_and_signed_update_installs(
    charger: StateDir, clock: Clock, files: TufRepo, release: VerifiedBundle
) -> None:
    async with running_csms16() as csms, running_agent16(charger, csms, clock) as agent:
        (boot,) = csms.of("BootNotification")
        assert boot["charge_point_model"] == "AC22" and boot["firmware_version"] == "1.0.0"
        assert "reason" not in boot
        assert csms.of("StatusNotification")[0] == {
            "connector_id": 1,
            "error_code": "NoError",
            "status": "Available",
            "timestamp": csms.of("StatusNotification")[0]["timestamp"],
        }
        url = files.url + "fw/good.cwfw"
        assert await csms.signed_update_firmware(url, release, clock.now) == "Accepted"
        await csms.wait(lambda: "Installed" in csms.firmware_statuses(), "Installed")
        assert csms.firmware_statuses() == L01_HAPPY
        assert {b.get("request_id") for b in csms.of("SignedFirmwareStatusNotification")} == {7}
        assert firmware_versions(csms) == ["1.0.0", "1.1.0"]
        assert agent.firmware_version == "1.1.0"
        assert not csms.of("FirmwareStatusNotification")  # the plain one: never


async def test_whitepaper_tampered_image_is_refused_with_a_security_event(
    charger: StateDir, clock: Clock, files: TufRepo, release: VerifiedBundle
) -> None:
    async with running_csms16() as csms, running_agent16(charger, csms, clock) as agent:
        url = files.url + "fw/tampered.cwfw"
        assert await csms.signed_update_firmware(url, release, clock.now) == "Accepted"
        await csms.wait(lambda: "InvalidSignature" in csms.firmware_statuses(), "refusal")
        await csms.wait(lambda: csms.of("SecurityEventNotification"), "security event")
        assert csms.firmware_statuses() == ["Downloading", "Downloaded", "InvalidSignature"]
        assert [e["type"] for e in csms.of("SecurityEventNotification")] == [
            "InvalidFirmwareSignature"
        ]
        assert agent.firmware_version == "1.0.0" and firmware_versions(csms) == ["1.0.0"]


async def test_whitepaper_untrusted_signing_certificate_is_refused(
    charger: StateDir, clock: Clock, files: TufRepo, stranger: VerifiedBundle
) -> None:
    async with running_csms16() as csms, running_agent16(charger, csms, clock):
        status = await csms.signed_update_firmware(files.url + "fw/good.cwfw", stranger, clock.now)
        assert status == "InvalidCertificate"
        await csms.wait(lambda: csms.of("SecurityEventNotification"), "security event")
        assert [e["type"] for e in csms.of("SecurityEventNotification")] == [
            "InvalidFirmwareSigningCertificate"
        ]
        assert not csms.firmware_statuses()  # nothing was downloaded


async def test_whitepaper_station_refuses_plain_update_firmware(
    charger: StateDir, clock: Clock, files: TufRepo, release: VerifiedBundle
) -> None:
    """Unsigned at the OCPP level: NotSupported, so the CSMS uses SignedUpdateFirmware."""
    async with running_csms16() as csms, running_agent16(charger, csms, clock) as agent:
        location = signed_location(files.url + "fw/good.cwfw", release)
        with pytest.raises(NotSupportedError):
            await csms.update_firmware(location, clock.now)
        assert agent.updates.task is None


async def test_quarantined_whitepaper_station_takes_only_a_signed_update(
    charger: StateDir, clock: Clock, files: TufRepo, release: VerifiedBundle
) -> None:
    """No slot verifies: it notifies, refuses everything but SignedUpdateFirmware, and a
    verified update is the way out."""
    image = charger.slot_image("a")
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0x01
    image.write_bytes(bytes(data))
    async with (
        running_csms16() as csms,
        running_agent16(charger, csms, clock, wait_for="SecurityEventNotification") as agent,
    ):
        assert agent.quarantine is not None
        assert csms.of("SecurityEventNotification")[0]["type"] == "TamperDetectionActivated"
        with pytest.raises(SecurityError):
            await csms.send(call.GetConfiguration())
        url = files.url + "fw/good.cwfw"
        assert await csms.signed_update_firmware(url, release, clock.now) == "Accepted"
        await csms.wait(lambda: "Installed" in csms.firmware_statuses(), "Installed")
        assert agent.quarantine is None and firmware_versions(csms) == ["1.1.0"]


# -- legacy kind ----------------------------------------------------------------------------


async def test_legacy_update_firmware_installs_a_good_image(
    charger: StateDir, clock: Clock, files: TufRepo, release: VerifiedBundle
) -> None:
    async with running_csms16() as csms, running_agent16(charger, csms, clock, legacy=True):
        await csms.update_firmware(signed_location(files.url + "fw/good.cwfw", release), clock.now)
        await csms.wait(
            lambda: "Installed" in csms.firmware_statuses("FirmwareStatusNotification"),
            "Installed",
        )
        assert csms.firmware_statuses("FirmwareStatusNotification") == LEGACY_HAPPY
        assert firmware_versions(csms) == ["1.0.0", "1.1.0"]
        assert not csms.of("SignedFirmwareStatusNotification")


async def test_legacy_tampered_image_is_not_installed(
    charger: StateDir, clock: Clock, files: TufRepo, release: VerifiedBundle
) -> None:
    """1.6 carries no signature, yet the agent's own verification holds."""
    async with running_csms16() as csms, running_agent16(charger, csms, clock, legacy=True) as a:
        location = signed_location(files.url + "fw/tampered.cwfw", release)
        await csms.update_firmware(location, clock.now)
        await csms.wait(
            lambda: "InstallationFailed" in csms.firmware_statuses("FirmwareStatusNotification"),
            "InstallationFailed",
        )
        assert csms.firmware_statuses("FirmwareStatusNotification") == [
            "Downloading",
            "Downloaded",
            "InstallationFailed",
        ]
        assert a.firmware_version == "1.0.0" and firmware_versions(csms) == ["1.0.0"]
        await csms.wait(  # plain 1.6 has no SecurityEventNotification: logged locally
            lambda: [e.type for e in a.security_log.entries()] == ["InvalidFirmwareSignature"],
            "the security log entry",
        )
        assert not csms.of("SecurityEventNotification")


async def test_legacy_update_without_a_signature_is_refused(
    charger: StateDir, clock: Clock, files: TufRepo
) -> None:
    """A plain URL (what any legacy CSMS sends): origin unknown, nothing downloaded."""
    async with running_csms16() as csms, running_agent16(charger, csms, clock, legacy=True) as a:
        await csms.update_firmware(files.url + "fw/good.cwfw", clock.now)
        await csms.wait(lambda: csms.firmware_statuses("FirmwareStatusNotification"), "status")
        assert csms.firmware_statuses("FirmwareStatusNotification") == ["InstallationFailed"]
        assert a.updates.task is None
        assert "InvalidFirmwareSigningCertificate" in [e.type for e in a.security_log.entries()]


async def test_legacy_station_does_not_know_whitepaper_messages(
    charger: StateDir, clock: Clock
) -> None:
    async with running_csms16() as csms, running_agent16(charger, csms, clock, legacy=True):
        with pytest.raises(NotSupportedError):
            await csms.send(call.ExtendedTriggerMessage(requested_message="Heartbeat"))


def test_legacy_location_round_trip() -> None:
    url = "https://cdn.example/fw/a.cwfw?token=x"
    pem = "-----BEGIN CERTIFICATE-----\nMIIB+/=\n-----END CERTIFICATE-----\n"
    assert split_legacy_location(legacy_location(url, "MEUC+/==", pem)) == (url, "MEUC+/==", pem)
    assert split_legacy_location(url) == (url, None, None)
    assert split_legacy_location(url + "#" + "x" * 9000) == (url, None, None)


# -- configuration, certificates, logs, transactions -----------------------------------------


async def test_change_configuration_authorization_key_is_the_next_password(
    charger: StateDir, clock: Clock
) -> None:
    async with running_csms16() as csms, running_agent16(charger, csms, clock):
        result = await csms.send(
            call.ChangeConfiguration(key="AuthorizationKey", value=NEW_PASSWORD)
        )
        assert result.status == "Accepted"
        unknown = await csms.send(call.ChangeConfiguration(key="NoSuchKey", value="1"))
        assert unknown.status == "NotSupported"
        readonly = await csms.send(call.ChangeConfiguration(key="SecurityProfile", value="3"))
        assert readonly.status == "Rejected"
        config = await csms.send(call.GetConfiguration())
        keys = {k["key"]: k for k in config.configuration_key}
        assert "AuthorizationKey" not in keys
        assert keys["NumberOfConnectors"]["value"] == "1"
        assert keys["SecurityProfile"] == {"key": "SecurityProfile", "readonly": True, "value": "1"}
        asked = await csms.send(
            call.GetConfiguration(key=["AuthorizationKey", "HeartbeatInterval"])
        )
        assert asked.unknown_key == ["AuthorizationKey"]
        assert [k["key"] for k in asked.configuration_key] == ["HeartbeatInterval"]
        await csms.connections[0].close()  # the next connection logs in with the new password
        await csms.wait(lambda: len(csms.passwords) == 2, "a second connection")
        assert csms.passwords[1] == NEW_PASSWORD
        assert charger.password() == NEW_PASSWORD


async def test_extended_trigger_sign_certificate_sends_a_csr(
    charger: StateDir, clock: Clock
) -> None:
    async with running_csms16() as csms, running_agent16(charger, csms, clock):
        result = await csms.send(
            call.ExtendedTriggerMessage(requested_message="SignChargePointCertificate")
        )
        assert result.status == "Accepted"
        (sign,) = await csms.wait(lambda: csms.of("SignCertificate"), "SignCertificate")
        assert sign["csr"].startswith("-----BEGIN CERTIFICATE REQUEST-----")
        meter = await csms.send(call.ExtendedTriggerMessage(requested_message="MeterValues"))
        assert meter.status == "NotImplemented"


async def test_installed_certificate_ids_use_the_16_types(charger: StateDir, clock: Clock) -> None:
    async with running_csms16() as csms, running_agent16(charger, csms, clock):
        roots = await csms.send(
            call.GetInstalledCertificateIds(certificate_type="ManufacturerRootCertificate")
        )
        assert roots.status == "Accepted" and len(roots.certificate_hash_data) == 1
        csms_roots = await csms.send(
            call.GetInstalledCertificateIds(certificate_type="CentralSystemRootCertificate")
        )
        assert csms_roots.status == "NotFound"


async def test_get_log_uploads_and_reports_log_status(charger: StateDir, clock: Clock) -> None:
    async with (
        upload_server() as uploads,
        running_csms16() as csms,
        running_agent16(charger, csms, clock) as agent,
    ):
        agent.record_security_event("TamperDetectionActivated", "case opened")
        result = await csms.send(
            call.GetLog(
                log={"remote_location": uploads.url + "/logs"},
                log_type="SecurityLog",
                request_id=5,
            )
        )
        assert result.status == "Accepted" and result.filename
        await csms.wait(
            lambda: any(b["status"] == "Uploaded" for b in csms.of("LogStatusNotification")),
            "Uploaded",
        )
        assert [(b["status"], b["request_id"]) for b in csms.of("LogStatusNotification")] == [
            ("Uploading", 5),
            ("Uploaded", 5),
        ]
        assert b"TamperDetectionActivated" in b"".join(uploads.bodies.values())


async def test_sessions_are_start_and_stop_transactions(charger: StateDir, clock: Clock) -> None:
    async with running_csms16() as csms, running_agent16(charger, csms, clock) as agent:
        await agent.start_session(1, "TAG-1")
        (start,) = await csms.wait(lambda: csms.of("StartTransaction"), "StartTransaction")
        assert start["connector_id"] == 1 and start["id_tag"] == "TAG-1"
        assert csms.of("StatusNotification")[-1]["status"] == "Charging"
        await agent.end_session(1)
        (stop,) = await csms.wait(lambda: csms.of("StopTransaction"), "StopTransaction")
        assert stop["transaction_id"] == 101  # the CSMS's id from StartTransaction's answer
        assert stop["reason"] == "EVDisconnected"
        assert csms.of("StatusNotification")[-1]["status"] == "Available"
        assert not agent.outbound16 or not agent.outbound16.transactions
