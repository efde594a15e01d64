"""Secure boot honours the CRLs the charger holds (agent.bootloader, agent.certificates)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path

import pytest

from chargeward.agent import bootloader, certificates
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from chargeward.crypto import generate_key, issue_firmware_signing_certificate
from chargeward.crypto.keys import load_signer
from chargeward.errors import RevokedCertificate
from tests.support.fleet import MODEL, TEST_PASSPHRASE, Pki

PASSWORD = "fixture-password-0123456789"
NOW = dt.datetime.now(dt.UTC)


def _pass() -> bytes:
    return TEST_PASSPHRASE.encode()


@pytest.fixture(scope="module")
def fw_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("boot-crl-pki"))


@pytest.fixture
def charger(tmp_path: Path, fw_pki: Pki) -> StateDir:
    provision(
        tmp_path / "state",
        identity=Identity("CP-1", MODEL, "T", "CP-1"),
        password=PASSWORD,
        roots_pem=fw_pki.root_pem.read_bytes(),
        factory_bundle=fw_pki.bundle(tmp_path / "f.cwb", "1.0.0", 1),
    )
    return StateDir(tmp_path / "state")


def test_running_image_revoked_after_install_does_not_boot(charger: StateDir, fw_pki: Pki) -> None:
    serial = fw_pki.signing_cert.serial_number
    assert bootloader.check_slot(charger, "a").version == "1.0.0"
    certificates.apply_crl(charger, fw_pki.crl([serial], now=NOW), NOW)
    assert certificates.boot_revocations(charger, charger.trust_anchors()) == {serial}
    with pytest.raises(RevokedCertificate, match=f"serial {serial:x} revoked"):
        bootloader.check_slot(charger, "a")
    with pytest.raises(bootloader.NoBootableSlot, match="revoked"):
        bootloader.boot(charger)


def test_a_multi_image_slot_under_a_revoked_certificate_does_not_boot(
    tmp_path: Path, fw_pki: Pki
) -> None:
    """A slot group shares one signing certificate; revoked, none of its images runs."""
    d = tmp_path / "second"
    d.mkdir()
    key = generate_key(f"file:{d / 'k.key'}", _pass)
    root_key = load_signer(f"file:{fw_pki.dir / 'root.key'}", _pass)
    cert = issue_firmware_signing_certificate(
        root_key, fw_pki.root_cert, key.public_key(), "ACME Firmware Signing 2", "ACME"
    )
    other = dataclasses.replace(fw_pki, signing_signer=key, signing_cert=cert)
    factory = other.bundle(
        tmp_path / "multi.cwb", "1.0.0", 1, components={"main": b"m" * 9000, "modem": b"x" * 900}
    )
    provision(
        tmp_path / "state",
        identity=Identity("CP-2", MODEL, "T", "CP-2"),
        password=PASSWORD,
        roots_pem=fw_pki.root_pem.read_bytes(),
        factory_bundle=factory,
    )
    state = StateDir(tmp_path / "state")
    info = state.slot_info("a")
    assert info is not None and info.components
    assert bootloader.check_slot(state, "a").version == "1.0.0"
    certificates.apply_crl(state, fw_pki.crl([cert.serial_number], now=NOW), NOW)
    with pytest.raises(RevokedCertificate):
        bootloader.check_slot(state, "a")


def test_a_damaged_held_crl_is_skipped_at_boot_with_an_error(
    charger: StateDir, fw_pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleting the file would have the same effect; bricking the charger would not help."""
    certificates.apply_crl(charger, fw_pki.crl([12345], now=NOW), NOW)
    [held] = list((charger.secure / "crl").glob("*.der"))
    held.write_bytes(held.read_bytes()[:-8] + b"\x00" * 8)
    with caplog.at_level(logging.ERROR, "chargeward.agent.certificates"):
        assert certificates.boot_revocations(charger, charger.trust_anchors()) == frozenset()
        assert bootloader.boot(charger).slot == "a"
    assert "secure boot: held CRL" in caplog.text and "damaged" in caplog.text
