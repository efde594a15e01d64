"""An image signed under a revoked certificate, written to the active slot at rest.

The attacker holds a stolen firmware-signing key; the manufacturer revoked its certificate
(keyCompromise) and the charger holds that CRL, so the update path refuses the attacker's image.
With access to the flash while the charger is off, the attacker writes the image straight to the
active slot.  Secure boot honours the held CRLs: the slot is refused for the revocation, the
charger falls back to the other slot (or enters quarantine when none is good) and reports
TamperDetectionActivated, as for any slot that fails its boot check.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chargeward.agent import bootloader, certificates
from chargeward.agent.provision import provision
from chargeward.agent.state import BootControl, Identity, StateDir
from chargeward.agent.storage import atomic_copy
from chargeward.crypto import generate_key, issue_firmware_signing_certificate
from chargeward.crypto.keys import load_signer
from chargeward.release.bundle import VerifiedBundle, verify_bundle
from tests.support.agent_harness import PASSWORD, Csms, running_agent, running_csms
from tests.support.fleet import MODEL, TEST_PASSPHRASE, Pki
from tests.support.tufrepo import Clock

TAMPER = "TamperDetectionActivated"


def _passphrase() -> bytes:
    return TEST_PASSPHRASE.encode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("boot-revocation-pki"))


@pytest.fixture(scope="module")
def stolen(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A second firmware-signing key of the manufacturer, stolen by the attacker."""
    d = tmp_path_factory.mktemp("stolen")
    key = generate_key(f"file:{d / 'stolen.key'}", _passphrase)
    root_key = load_signer(f"file:{pki.dir / 'root.key'}", _passphrase)
    cert = issue_firmware_signing_certificate(
        root_key, pki.root_cert, key.public_key(), "ACME Firmware Signing 2", "ACME"
    )
    return dataclasses.replace(pki, signing_signer=key, signing_cert=cert)


@pytest.fixture(scope="module")
def evil(stolen: Pki, tmp_path_factory: pytest.TempPathFactory) -> VerifiedBundle:
    """The attacker's image, validly signed with the stolen key (security version 1)."""
    d = tmp_path_factory.mktemp("evil")
    bundle = stolen.bundle(d / "evil.cwb", "1.0.1", 1, payload=b"backdoor\n" * 4096)
    return verify_bundle(bundle, [stolen.root_cert], workdir=d / "v")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def charger(tmp_path: Path, pki: Pki, stolen: Pki, clock: Clock) -> StateDir:
    """Factory 1.0.0 in slot a; the CRL revoking the stolen certificate is held."""
    provision(
        tmp_path / "charger",
        identity=Identity("CP-REVOKED", MODEL, "T", "CP-REVOKED"),
        password=PASSWORD,
        roots_pem=pki.root_pem.read_bytes(),
        factory_bundle=pki.bundle(tmp_path / "factory.cwb", "1.0.0", 1),
    )
    state = StateDir(tmp_path / "charger")
    crl = pki.crl([stolen.signing_cert.serial_number], now=clock())
    certificates.apply_crl(state, crl, clock())
    return state


def write_at_rest(state: StateDir, slot: str, image: VerifiedBundle) -> None:
    """What an attacker with the flash in hand does: image and slot record, then boot it."""
    img = image.images[0]
    atomic_copy(img.file, state.slot_image(slot))
    factory = state.slot_info("a")
    assert factory is not None
    state.set_slot_info(
        slot,
        dataclasses.replace(
            factory,
            sha256=img.sha256,
            length=img.length,
            signature=img.signature,
            signing_certificate=image.signing_certificate_pem,
            version=image.manifest.version,
            security_version=image.manifest.security_version,
        ),
    )
    bc = state.boot_control()
    state.set_boot_control(BootControl(slot, trial=False, attempts_left=0, previous=bc.active))


def tamper_events(csms: Csms) -> list[str]:
    return [e["tech_info"] for e in csms.of("SecurityEventNotification") if e["type"] == TAMPER]


def revoked_reason(stolen: Pki) -> str:
    return f"signing certificate serial {stolen.signing_cert.serial_number:x} revoked"


async def test_revoked_image_on_the_active_slot_falls_back_and_is_reported(
    charger: StateDir, clock: Clock, stolen: Pki, evil: VerifiedBundle
) -> None:
    write_at_rest(charger, "b", evil)
    async with running_csms() as csms, running_agent(charger, csms, clock, None):
        boot = csms.of("BootNotification")[0]
        assert boot["charging_station"]["firmware_version"] == "1.0.0"
        reports = await csms.wait(lambda: tamper_events(csms), TAMPER)
        assert "secure boot check failed: slot b" in reports[0]
        assert revoked_reason(stolen) in reports[0]
        assert "running slot a" in reports[0]
    assert charger.boot_control().active == "a"
    assert charger.rollback_floor() == 1
    assert charger.pending_events() == []  # delivered


async def test_revoked_image_on_the_only_slot_quarantines(
    charger: StateDir, clock: Clock, stolen: Pki, evil: VerifiedBundle
) -> None:
    write_at_rest(charger, "a", evil)  # overwrites the factory image; slot b is empty
    with pytest.raises(bootloader.NoBootableSlot, match=revoked_reason(stolen)):
        bootloader.boot(charger)
    async with (
        running_csms() as csms,
        running_agent(charger, csms, clock, None, wait_for="SecurityEventNotification") as agent,
    ):
        notice = await csms.wait(lambda: csms.of("DataTransfer"), "owner notification")
        assert notice[0]["message_id"] == "OwnerNotification"
        assert revoked_reason(stolen) in tamper_events(csms)[0]
        assert agent.quarantine is not None and "revoked" in agent.quarantine
        assert csms.of("BootNotification") == []
