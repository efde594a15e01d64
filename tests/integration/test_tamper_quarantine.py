"""Slots modified on flash while the charger was off (UK SCP Regulations Sch. 1 para 3(4)).

With the other slot good the bootloader falls back to it and the CSMS hears
TamperDetectionActivated; with both bad the charger enters quarantine: it connects only to
notify, refuses every request but a validated update, offers no charging, and leaves
quarantine only through that update.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from ocpp.exceptions import SecurityError
from ocpp.v201 import call

from chargeward.agent import bootloader, installer
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from chargeward.agent.verify import accept_image, verify_image
from chargeward.errors import ChargingUnavailable
from chargeward.release.bundle import VerifiedBundle, verify_bundle
from tests.support.agent_harness import (
    L01_HAPPY,
    PASSWORD,
    Csms,
    running_agent,
    running_csms,
    statuses,
)
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import Clock, TufRepo

TAMPER = "TamperDetectionActivated"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("tamper-pki"))


@pytest.fixture(scope="module")
def patch_release(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> VerifiedBundle:
    d = tmp_path_factory.mktemp("tamper-rel")
    return verify_bundle(pki.bundle(d / "p.cwb", "1.0.1", 1), [pki.root_cert], workdir=d / "p")


@pytest.fixture(scope="module")
def fix_release(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> VerifiedBundle:
    d = tmp_path_factory.mktemp("tamper-fix")
    return verify_bundle(pki.bundle(d / "f.cwb", "1.2.0", 2), [pki.root_cert], workdir=d / "f")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def files(clock: Clock, fix_release: VerifiedBundle) -> Iterator[TufRepo]:
    with TufRepo(clock) as server:
        server.serve("fw/fix.cwfw", fix_release.images[0].file.read_bytes())
        yield server


@pytest.fixture
def charger(tmp_path: Path, pki: Pki, patch_release: VerifiedBundle) -> StateDir:
    """Factory 1.0.0 in slot a, then 1.0.1 (same security version) committed in slot b."""
    provision(
        tmp_path / "charger",
        identity=Identity("CP-T", MODEL, "T", "CP-T"),
        password=PASSWORD,
        roots_pem=pki.root_pem.read_bytes(),
        factory_bundle=pki.bundle(tmp_path / "factory.cwb", "1.0.0", 1),
    )
    state = StateDir(tmp_path / "charger")
    img = patch_release.images[0]
    signed = verify_image(img.file, pki.signing_cert, img.signature, model=MODEL, rollback_floor=1)
    installer.write_slot(state, accept_image(signed, None), 1, attempts=3)
    installer.mark_rebooting(state)
    bootloader.commit(state, bootloader.boot(state))
    assert (state.boot_control().active, state.rollback_floor()) == ("b", 1)
    return state


def tamper(state: StateDir, slot: str) -> None:
    """Change one byte of the slot's image, as an attacker with flash access would."""
    image = state.slot_image(slot)
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0x01
    image.write_bytes(bytes(data))


def tamper_events(csms: Csms) -> list[str]:
    return [e["tech_info"] for e in csms.of("SecurityEventNotification") if e["type"] == TAMPER]


async def test_altered_active_slot_falls_back_and_is_reported(
    charger: StateDir, clock: Clock
) -> None:
    tamper(charger, "b")
    async with running_csms() as csms, running_agent(charger, csms, clock, None):
        reports = await csms.wait(lambda: tamper_events(csms), "TamperDetectionActivated")
        assert "slot b" in reports[0] and "running slot a" in reports[0]
        boot = csms.of("BootNotification")[0]
        assert boot["charging_station"]["firmware_version"] == "1.0.0"
    assert charger.boot_control().active == "a"
    assert charger.pending_events() == []  # delivered, so not sent again
    async with running_csms() as csms, running_agent(charger, csms, clock, None) as agent:
        # Start-up (BootNotification, pending security events, connector status) is done.
        await csms.wait(lambda: agent.started, "the start-up")
        assert tamper_events(csms) == []  # the next start has nothing new to report


def test_fallback_below_the_rollback_floor_is_refused(charger: StateDir) -> None:
    """A signed but older image in the other slot is a downgrade, not a way back."""
    charger.raise_rollback_floor(2)  # as if slot b held security version 2
    tamper(charger, "b")
    with pytest.raises(bootloader.NoBootableSlot, match="below the rollback floor 2"):
        bootloader.boot(charger)
    assert charger.boot_control().active == "b"  # nothing switched
    assert charger.pending_events() == []


async def test_both_slots_altered_quarantines_until_a_validated_update(
    charger: StateDir, clock: Clock, files: TufRepo, fix_release: VerifiedBundle
) -> None:
    tamper(charger, "a")
    tamper(charger, "b")
    async with (
        running_csms() as csms,
        running_agent(
            charger, csms, clock, None, connectors=2, wait_for="SecurityEventNotification"
        ) as agent,
    ):
        notice = await csms.wait(lambda: csms.of("DataTransfer"), "owner notification")
        assert notice[0]["message_id"] == "OwnerNotification"
        assert "Tamper detected" in notice[0]["data"]
        assert "slot a" in tamper_events(csms)[0] and "slot b" in tamper_events(csms)[0]
        assert agent.quarantine is not None
        notice_on_display = charger.owner_notice()
        assert notice_on_display is not None and "charging is disabled" in notice_on_display
        # It connects only to notify: no boot, no connector status, no heartbeat ...
        assert csms.of("BootNotification") == csms.of("StatusNotification") == []
        # ... offers no charging ...
        with pytest.raises(ChargingUnavailable, match="quarantine"):
            await agent.start_session(1)
        # ... and accepts nothing but a firmware update.
        assert csms.station is not None
        for request in (
            call.TriggerMessage(requested_message="BootNotification"),
            call.Reset(type="Immediate"),
            call.SetVariables(
                set_variable_data=[
                    {
                        "component": {"name": "ChargingStation"},
                        "variable": {"name": "AllowNewSessionsPendingFirmwareUpdate"},
                        "attribute_value": "true",
                    }
                ]
            ),
        ):
            with pytest.raises(SecurityError):
                await csms.station.call(request, suppress=False)

        # An update that does not verify changes nothing.
        # Flip one bit of the signature's last byte: always a different, non-verifying value.
        raw = base64.b64decode(fix_release.images[0].signature)
        bad = base64.b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode()
        url = files.url + "fw/fix.cwfw"
        await csms.update_firmware(url, fix_release, clock(), request_id=1, signature=bad)
        await csms.wait(lambda: "InvalidSignature" in statuses(csms, 1), "InvalidSignature")
        assert agent.quarantine is not None

        # A validated update is the way out.
        await csms.update_firmware(url, fix_release, clock(), request_id=2)
        await csms.wait(lambda: "Installed" in statuses(csms, 2), "Installed")
        assert statuses(csms, 2) == L01_HAPPY
        boot = csms.of("BootNotification")[0]
        assert (boot["reason"], boot["charging_station"]["firmware_version"]) == (
            "FirmwareUpdate",
            "1.2.0",
        )
        assert agent.quarantine is None
        assert charger.owner_notice() is None
        await csms.wait(lambda: csms.connector(2) == "Available", "charging offered again")
        await agent.start_session(1)
    assert charger.rollback_floor() == 2
