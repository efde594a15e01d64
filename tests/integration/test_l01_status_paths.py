"""Every OCPP 2.0.1 L01 status path of the real agent, with the exact status sequence.

The agent runs in this process against a small CSMS on 127.0.0.1 (real websockets, real OCPP
frames) and downloads over real HTTP; only the flash is a temporary directory.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from chargeward.errors import ChargingUnavailable
from chargeward.release.bundle import VerifiedBundle, verify_bundle
from tests.support.agent_harness import (
    L01_HAPPY,
    PASSWORD,
    Csms,
    running_agent,
    running_csms,
    statuses,
    update_ended,
)
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import Clock, TufRepo


@dataclass
class Releases:
    pki: Pki
    factory: Path
    update: VerifiedBundle  # 1.1.0, security version 2
    downgrade: VerifiedBundle  # 0.9.0, security version 0
    foreign: VerifiedBundle  # 1.1.0 signed under another manufacturer root


@pytest.fixture(scope="module")
def rel(tmp_path_factory: pytest.TempPathFactory) -> Releases:
    d = tmp_path_factory.mktemp("l01")
    pki, other = Pki.create(d / "pki"), Pki.create(d / "other", name="OTHER")

    def verified(p: Pki, name: str, version: str, sv: int) -> VerifiedBundle:
        return verify_bundle(
            p.bundle(d / f"{name}.cwb", version, sv), [p.root_cert], workdir=d / name
        )

    return Releases(
        pki,
        pki.bundle(d / "factory.cwb", "1.0.0", 1),
        verified(pki, "u", "1.1.0", 2),
        verified(pki, "old", "0.9.0", 0),
        verified(other, "foreign", "1.1.0", 2),
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def files(clock: Clock, rel: Releases) -> Iterator[TufRepo]:
    """A plain HTTP file server on 127.0.0.1 (the agent has no TUF root here)."""
    with TufRepo(clock) as server:
        for name, b in (("u", rel.update), ("old", rel.downgrade), ("foreign", rel.foreign)):
            server.serve(f"fw/{name}.cwfw", b.images[0].file.read_bytes())
        yield server


@pytest.fixture
def charger(tmp_path: Path, rel: Releases) -> StateDir:
    provision(
        tmp_path / "charger",
        identity=Identity("CP-L01", MODEL, "T", "CP-L01"),
        password=PASSWORD,
        roots_pem=rel.pki.root_pem.read_bytes(),
        factory_bundle=rel.factory,
    )
    return StateDir(tmp_path / "charger")


def soon(clock: Clock, seconds: float = 1.0) -> dt.datetime:
    return clock() + dt.timedelta(seconds=seconds)


def events(csms: object) -> list[str]:
    return [e["type"] for e in csms.security_events()]  # type: ignore[attr-defined]


async def test_happy_path(charger: StateDir, rel: Releases, files: TufRepo, clock: Clock) -> None:
    async with running_csms() as csms, running_agent(charger, csms, clock, None, connectors=2):
        assert await csms.update_firmware(files.url + "fw/u.cwfw", rel.update, clock()) == (
            "Accepted"
        )
        await csms.wait(lambda: "Installed" in statuses(csms), "Installed")
        assert statuses(csms) == L01_HAPPY
        assert [b["request_id"] for b in csms.of("FirmwareStatusNotification")] == [7] * 6
        boot = csms.of("BootNotification")[-1]
        assert (boot["reason"], boot["charging_station"]["firmware_version"]) == (
            "FirmwareUpdate",
            "1.1.0",
        )
        assert "FirmwareUpdated" in events(csms)
        assert csms.connector(1) == csms.connector(2) == "Available"  # not left Unavailable
    assert charger.rollback_floor() == 2


async def test_scheduled_download(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    async with running_csms() as csms, running_agent(charger, csms, clock, None):
        await csms.update_firmware(files.url + "fw/u.cwfw", rel.update, soon(clock))
        await csms.wait(lambda: "Installed" in statuses(csms), "Installed")
        assert statuses(csms) == ["DownloadScheduled", *L01_HAPPY]


async def test_scheduled_install(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    async with running_csms() as csms, running_agent(charger, csms, clock, None):
        await csms.update_firmware(
            files.url + "fw/u.cwfw", rel.update, clock(), install_at=soon(clock)
        )
        await csms.wait(lambda: "Installed" in statuses(csms), "Installed")
        assert statuses(csms) == [
            "Downloading",
            "Downloaded",
            "SignatureVerified",
            "InstallScheduled",
            "Installing",
            "InstallRebooting",
            "Installed",
        ]


async def test_new_request_cancels_the_one_in_progress(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    async with running_csms() as csms, running_agent(charger, csms, clock, None):
        later = soon(clock, 3600)
        url = files.url + "fw/u.cwfw"
        assert await csms.update_firmware(url, rel.update, later, request_id=1) == "Accepted"
        await csms.wait(lambda: statuses(csms, 1) == ["DownloadScheduled"], "scheduled")
        assert await csms.update_firmware(url, rel.update, clock(), request_id=2) == (
            "AcceptedCanceled"
        )
        await csms.wait(lambda: "Installed" in statuses(csms, 2), "Installed")
        assert statuses(csms, 1) == ["DownloadScheduled"]  # nothing more for the old request
        assert statuses(csms, 2) == L01_HAPPY


async def test_download_failed(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    async with running_csms() as csms, running_agent(charger, csms, clock, None) as agent:
        await csms.update_firmware(files.url + "fw/missing.cwfw", rel.update, clock())
        await update_ended(agent)
        assert statuses(csms) == ["Downloading", "DownloadFailed"]
    assert charger.boot_control().active == "a"


async def test_download_failed_after_retries(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    """A link that never comes back: each failed attempt is a pause, then DownloadFailed."""
    with socket.socket() as closed:  # a port with nothing listening
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async with running_csms() as csms, running_agent(charger, csms, clock, None):
        await csms.update_firmware(
            f"http://127.0.0.1:{port}/fw/u.cwfw", rel.update, clock(), retries=1, retry_interval=1
        )
        await csms.wait(lambda: "DownloadFailed" in statuses(csms), "DownloadFailed")
        assert statuses(csms) == ["Downloading", "DownloadPaused", "Downloading", "DownloadFailed"]


async def test_invalid_signature(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    wrong = rel.downgrade.images[0].signature  # a real signature, over another image
    async with running_csms() as csms, running_agent(charger, csms, clock, None) as agent:
        await csms.update_firmware(files.url + "fw/u.cwfw", rel.update, clock(), signature=wrong)
        await update_ended(agent)
        assert statuses(csms) == ["Downloading", "Downloaded", "InvalidSignature"]
        assert "InvalidFirmwareSignature" in events(csms)
    assert charger.boot_control().active == "a"


async def test_install_verification_failed_on_downgrade(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    async with running_csms() as csms, running_agent(charger, csms, clock, None) as agent:
        await csms.update_firmware(files.url + "fw/old.cwfw", rel.downgrade, clock())
        await update_ended(agent)
        assert statuses(csms) == [
            "Downloading",
            "Downloaded",
            "SignatureVerified",
            "InstallVerificationFailed",
        ]
        assert "FirmwareRollbackRefused" in events(csms)
    assert charger.slot_info("b") is None


async def test_invalid_certificate_is_refused_before_download(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    async with running_csms() as csms, running_agent(charger, csms, clock, None):
        answer = await csms.update_firmware(files.url + "fw/foreign.cwfw", rel.foreign, clock())
        assert answer == "InvalidCertificate"
        await csms.wait(lambda: "InvalidFirmwareSigningCertificate" in events(csms), "event")
        assert statuses(csms) == []  # L01.FR.02: no download, no status


async def test_installation_failed_when_the_new_slot_is_not_healthy(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    """A release whose charging application does not start: the trial slot uses up its
    attempts, the bootloader falls back, and the CSMS hears InstallationFailed."""

    def self_test(header: object) -> str | None:
        return "charging application crashed" if header.version == "1.1.0" else None  # type: ignore[attr-defined]

    async with (
        running_csms() as csms,
        running_agent(charger, csms, clock, None, self_test=self_test) as agent,
    ):
        await csms.update_firmware(files.url + "fw/u.cwfw", rel.update, clock())
        await csms.wait(lambda: "InstallationFailed" in statuses(csms), "InstallationFailed")
        await csms.wait(lambda: "FirmwareUpdateRolledBack" in events(csms), "rollback event")
        assert statuses(csms) == [*L01_HAPPY[:-1], "InstallationFailed"]
        boots = csms.of("BootNotification")
        assert [b["charging_station"]["firmware_version"] for b in boots] == ["1.0.0", "1.0.0"]
        assert agent.boots == 2 + 3  # factory boot, 3 failed trial boots, the fallback
    assert charger.boot_control().active == "a"
    assert charger.rollback_floor() == 1  # never raised: the new slot was not committed


def installing_after_the_last_session(csms: Csms) -> bool:
    """The charger reported Installing only after every charging session had ended: the
    order of its CALLs shows it, with no wait for something not to happen."""
    sent = [(name, body.get("status") or body.get("event_type")) for name, body in csms.calls]
    ended = [i for i, c in enumerate(sent) if c == ("TransactionEvent", "Ended")]
    return bool(ended) and max(ended) < sent.index(("FirmwareStatusNotification", "Installing"))


async def test_install_waits_for_the_charging_session_to_end(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    async with (
        running_csms() as csms,
        running_agent(charger, csms, clock, None, connectors=2) as agent,
    ):
        await csms.wait(lambda: csms.connector(2) == "Available", "connectors Available")
        tx = await agent.start_session(1)
        await csms.update_firmware(files.url + "fw/u.cwfw", rel.update, clock())
        await csms.wait(lambda: "InstallScheduled" in statuses(csms), "InstallScheduled")
        await csms.wait(lambda: csms.connector(2) == "Unavailable", "free connector held")
        with pytest.raises(ChargingUnavailable, match="connector 2 is Unavailable"):
            await agent.start_session(2)
        assert statuses(csms) == [
            "Downloading",
            "Downloaded",
            "SignatureVerified",
            "InstallScheduled",
        ]
        assert charger.boot_control().active == "a"  # nothing installed while charging
        await agent.end_session(1)
        await csms.wait(lambda: "Installed" in statuses(csms), "Installed")
        assert statuses(csms) == [
            "Downloading",
            "Downloaded",
            "SignatureVerified",
            "InstallScheduled",
            "Installing",
            "InstallRebooting",
            "Installed",
        ]
        started, ended = csms.of("TransactionEvent")
        assert started["transaction_info"]["transaction_id"] == tx
        assert (started["event_type"], ended["event_type"]) == ("Started", "Ended")
        assert csms.connector(1) == csms.connector(2) == "Available"  # both given back
        assert installing_after_the_last_session(csms)


async def test_new_sessions_allowed_pending_update_when_configured(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    async with (
        running_csms() as csms,
        running_agent(charger, csms, clock, None, connectors=2) as agent,
    ):
        await csms.wait(lambda: csms.connector(2) == "Available", "connectors Available")
        answer = await csms.set_variable(
            "ChargingStation", "AllowNewSessionsPendingFirmwareUpdate", "true"
        )
        assert answer == "Accepted"
        await agent.start_session(1)
        await csms.update_firmware(files.url + "fw/u.cwfw", rel.update, clock())
        await csms.wait(lambda: "InstallScheduled" in statuses(csms), "InstallScheduled")
        assert csms.connector(2) == "Available"
        await agent.start_session(2)  # allowed: a new session while the install waits
        await agent.end_session(1)
        assert "Installing" not in statuses(csms)  # still one car charging
        await agent.end_session(2)
        await csms.wait(lambda: "Installed" in statuses(csms), "Installed")
        assert installing_after_the_last_session(csms)


async def test_unknown_variable_is_reported(
    charger: StateDir, rel: Releases, files: TufRepo, clock: Clock
) -> None:
    async with running_csms() as csms, running_agent(charger, csms, clock, None):
        assert await csms.set_variable("ChargingStation", "NoSuchThing", "1") == "UnknownVariable"
        assert await csms.set_variable("NoSuchComponent", "X", "1") == "UnknownComponent"
        assert (
            await csms.set_variable(
                "ChargingStation", "AllowNewSessionsPendingFirmwareUpdate", "perhaps"
            )
            == "Rejected"
        )
