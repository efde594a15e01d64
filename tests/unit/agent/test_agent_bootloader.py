"""Bootloader decisions on a real state directory: secure boot, trial attempts, fallback."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from chargeward.agent import bootloader
from chargeward.agent.provision import provision
from chargeward.agent.state import BootControl, Identity, InstallState, StateDir
from chargeward.agent.storage import atomic_copy
from chargeward.release.bundle import verify_bundle
from tests.support.fleet import MODEL, Pki

PASSWORD = "fixture-password-0123456789"


@pytest.fixture(scope="module")
def fw_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("boot-pki"))


@pytest.fixture(scope="module")
def factory(fw_pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fw_pki.bundle(tmp_path_factory.mktemp("boot-bundles") / "f.cwb", "1.0.0", 1)


@pytest.fixture
def charger(tmp_path: Path, fw_pki: Pki, factory: Path) -> StateDir:
    pki, factory_bundle = fw_pki, factory
    provision(
        tmp_path / "state",
        identity=Identity("CP-1", MODEL, "T", "CP-1"),
        password=PASSWORD,
        roots_pem=pki.root_pem.read_bytes(),
        factory_bundle=factory_bundle,
    )
    return StateDir(tmp_path / "state")


def _install_b(state: StateDir, pki: Pki, tmp_path: Path, attempts: int = 2) -> None:
    """Put a verified 1.1.0 image in slot b as a trial, as the agent's installer does."""
    bundle = pki.bundle(tmp_path / "u.cwb", "1.1.0", 2)
    v = verify_bundle(bundle, [pki.root_cert], workdir=tmp_path / "x")
    img = v.images[0]
    atomic_copy(img.file, state.slot_image("b"))
    info = state.slot_info("a")
    assert info is not None
    state.set_slot_info(
        "b",
        replace(
            info,
            sha256=img.sha256,
            length=img.length,
            signature=img.signature,
            version="1.1.0",
            security_version=2,
        ),
    )
    state.set_install_state(InstallState(7, "rebooting", "b", "1.1.0", 2))
    state.set_boot_control(BootControl("b", trial=True, attempts_left=attempts, previous="a"))


def test_factory_slot_boots_and_floor_starts_at_its_security_version(charger: StateDir) -> None:
    booted = bootloader.boot(charger)
    assert (booted.slot, booted.header.version, booted.fell_back) == ("a", "1.0.0", False)
    assert charger.rollback_floor() == 1


def test_trial_slot_commits_and_raises_floor(
    charger: StateDir, fw_pki: Pki, tmp_path: Path
) -> None:
    _install_b(charger, fw_pki, tmp_path)
    booted = bootloader.boot(charger)
    assert booted.slot == "b" and charger.boot_control().attempts_left == 1
    assert charger.rollback_floor() == 1  # not before commit
    done = bootloader.commit(charger, booted)
    assert done is not None and done.phase == "ok"
    assert charger.boot_control() == BootControl("b", False, 0, "a")
    assert charger.rollback_floor() == 2


def test_corrupted_trial_slot_falls_back(charger: StateDir, fw_pki: Pki, tmp_path: Path) -> None:
    _install_b(charger, fw_pki, tmp_path)
    image = charger.slot_image("b")
    data = bytearray(image.read_bytes())
    data[-1] ^= 0xFF
    image.write_bytes(bytes(data))
    booted = bootloader.boot(charger)
    assert (booted.slot, booted.fell_back) == ("a", True)
    assert "secure boot check failed" in booted.fallback_reason
    assert charger.boot_control().active == "a" and not charger.boot_control().trial
    inst = charger.install_state()
    assert inst is not None and inst.phase == "rolled_back"


def test_exhausted_trial_attempts_fall_back(charger: StateDir, fw_pki: Pki, tmp_path: Path) -> None:
    _install_b(charger, fw_pki, tmp_path, attempts=1)
    assert bootloader.boot(charger).slot == "b"  # uses the last attempt, never commits
    booted = bootloader.boot(charger)
    assert (booted.slot, booted.fallback_reason) == ("a", "trial boot attempts exhausted")


def test_tampered_active_slot_is_not_booted(charger: StateDir) -> None:
    image = charger.slot_image("a")
    image.write_bytes(image.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(bootloader.NoBootableSlot, match="fails secure boot"):
        bootloader.boot(charger)
