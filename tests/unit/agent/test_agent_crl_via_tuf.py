"""The firmware-signing CRL reaches the charger through the TUF repository.

Real python-tuf on loopback HTTP (:class:`~tests.support.tufrepo.TufRepo`) and, for the update
flow, the real agent against the in-process OCPP CSMS of ``test_agent_tuf_flow``: every refresh
applies the listed ``revocation/firmware-signing.crl`` before anything is decided with it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest

from chargeward.agent import certificates
from chargeward.agent.agent import Agent
from chargeward.agent.config import AgentConfig
from chargeward.agent.state import StateDir
from chargeward.agent.tuf_client import RepositoryClient
from chargeward.crypto import generate_key, issue_firmware_signing_certificate
from chargeward.crypto.keys import load_signer
from chargeward.crypto.pki import (
    load_certificate,
)
from chargeward.errors import RepositoryRefused
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.model.targets import REVOCATION_TARGET
from chargeward.release.bundle import VerifiedBundle, verify_bundle
from tests.support.agent_harness import (
    LIMITS,
    make_charger,
    publish_update,
    running_agent,
    running_csms,
    statuses,
)
from tests.support.fleet import TEST_PASSPHRASE, Pki
from tests.support.tufrepo import Clock, TufRepo

Firmware = tuple[Pki, Path, VerifiedBundle]


def _passphrase() -> bytes:
    return TEST_PASSPHRASE.encode()


@pytest.fixture(scope="module")
def fw(tmp_path_factory: pytest.TempPathFactory) -> Firmware:
    """The factory image under one signing certificate, the update under a second one."""
    d = tmp_path_factory.mktemp("crl-via-tuf")
    pki = Pki.create(d / "pki")
    factory = pki.bundle(d / "factory.cwb", "1.0.0", 1)
    root_key = load_signer(f"file:{pki.dir / 'root.key'}", _passphrase)
    key = generate_key(f"file:{d / 'second.key'}", _passphrase)
    cert = issue_firmware_signing_certificate(
        root_key, pki.root_cert, key.public_key(), "ACME Firmware Signing 2", "ACME"
    )
    second = dataclasses.replace(pki, signing_signer=key, signing_cert=cert)
    update = verify_bundle(second.bundle(d / "u.cwb", "1.1.0", 2), [pki.root_cert], workdir=d / "x")
    return pki, factory, update


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("foreign"), "EVIL")


def publish_crl(repo: TufRepo, der: bytes) -> None:
    repo.add_revocation_list(der)
    repo.publish()


def offline_agent(state: StateDir, repo: TufRepo, clock: Clock) -> Agent:
    """The agent, not connected: enough for a refresh that reports nothing."""
    config = AgentConfig(
        state_dir=state.root,
        csms_url="ws://127.0.0.1:9/ocpp/",
        repository_url=repo.url,
        repository_limits=LIMITS,
    )
    return Agent(config, clock=clock)


def crl_downloads(repo: TufRepo) -> list[str]:
    return [r for r in repo.requests if r.startswith("targets/revocation/")]


def serial_of(update: VerifiedBundle) -> int:
    return load_certificate(update.signing_certificate_pem).serial_number


async def test_refresh_applies_the_listed_crl(
    tmp_path: Path, fw: Firmware, repo: TufRepo, clock: Clock
) -> None:
    state = make_charger(tmp_path, fw, repo, customer=None)
    revoked = serial_of(fw[2])
    der = fw[0].crl([revoked], number=2, now=clock.now)
    publish_crl(repo, der)

    agent = offline_agent(state, repo, clock)
    assert await asyncio.wait_for(agent.check_for_security_updates(), 10) == []
    assert revoked in certificates.revoked_serials(state, now=clock.now)
    assert [c.crl_number for c in certificates.held_crls(state, now=clock.now)] == [2]
    assert len(crl_downloads(repo)) == 1

    # Kept in the state directory: the next refresh finds it cached and fetches nothing.
    got = RepositoryClient(state, repo.url, limits=LIMITS, clock=clock).read(lambda r: None)
    assert got.crl == der
    assert len(crl_downloads(repo)) == 1
    assert (state.secure / "tuf" / "targets").is_dir()


async def test_update_signed_under_a_just_revoked_certificate_is_refused(
    tmp_path: Path, fw: Firmware, repo: TufRepo, clock: Clock
) -> None:
    state = make_charger(tmp_path, fw, repo, customer=None)
    location = publish_update(repo, fw[2])
    async with running_csms() as csms, running_agent(state, csms, clock, repo.url):
        # The first check of this boot has run (no CRL yet); then the CRL is published.
        await csms.wait(lambda: csms.of("DataTransfer"), "SecurityUpdateAvailable")
        publish_crl(repo, fw[0].crl([serial_of(fw[2])], number=1, now=clock.now))
        # Accepted: the charger does not know of the revocation when the request arrives.
        assert await csms.update_firmware(location, fw[2], clock.now) == "Accepted"
        events = await csms.wait(
            lambda: [
                e
                for e in csms.of("SecurityEventNotification")
                if e["type"] == "InvalidFirmwareSigningCertificate"
            ],
            "InvalidFirmwareSigningCertificate",
        )
        await csms.wait(lambda: "InvalidSignature" in statuses(csms), "InvalidSignature")
    assert statuses(csms) == ["Downloading", "Downloaded", "InvalidSignature"]
    assert "revoked" in events[0]["tech_info"]
    assert f"{serial_of(fw[2]):x}" in events[0]["tech_info"]
    assert list(state.downloads.iterdir()) == []
    bc = state.boot_control()
    assert (bc.active, bc.trial) == ("a", False)
    assert state.slot_info("b") is None and state.install_state() is None


async def test_older_crl_is_ignored_with_a_log_line(
    tmp_path: Path,
    fw: Firmware,
    repo: TufRepo,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = make_charger(tmp_path, fw, repo, customer=None)
    revoked = serial_of(fw[2])
    publish_crl(repo, fw[0].crl([revoked], number=5, now=clock.now))
    agent = offline_agent(state, repo, clock)
    await asyncio.wait_for(agent.check_for_security_updates(), 10)

    publish_crl(repo, fw[0].crl([], number=3, now=clock.now))  # would un-revoke
    with caplog.at_level(logging.WARNING, "chargeward.agent.certificates"):
        await asyncio.wait_for(agent.check_for_security_updates(), 10)  # no event: no CSMS
    assert revoked in certificates.revoked_serials(state, now=clock.now)
    assert [c.crl_number for c in certificates.held_crls(state, now=clock.now)] == [5]
    assert any("CRL ignored" in r.getMessage() for r in caplog.records)
    assert "older than the held CRL number 5" in caplog.text


async def test_crl_of_a_foreign_ca_is_refused_and_reported(
    tmp_path: Path, fw: Firmware, foreign: Pki, repo: TufRepo, clock: Clock
) -> None:
    state = make_charger(tmp_path, fw, repo, customer=None)
    publish_update(repo, fw[2])
    publish_crl(repo, foreign.crl([serial_of(fw[2])], number=9, now=clock.now))
    async with running_csms() as csms, running_agent(state, csms, clock, repo.url):
        events = await csms.wait(lambda: csms.security_events(), "FirmwareRepositoryCheckFailed")
        # Not an error that blocks the check: the security release is still reported.
        await csms.wait(lambda: csms.of("DataTransfer"), "SecurityUpdateAvailable")
    assert events[0]["type"] == "FirmwareRepositoryCheckFailed"
    assert events[0]["tech_info"].startswith("repository: firmware-signing CRL refused: ")
    assert "not issued by an installed ManufacturerRootCertificate" in events[0]["tech_info"]
    assert certificates.held_crls(state, now=clock.now) == []
    assert certificates.revoked_serials(state, now=clock.now) == frozenset()


def test_oversized_crl_is_refused_before_download(
    tmp_path: Path, fw: Firmware, repo: TufRepo, clock: Clock
) -> None:
    state = make_charger(tmp_path, fw, repo, customer=None)
    publish_crl(repo, b"\0" * (DEFAULT_FORMAT_LIMITS.crl_bytes + 1))
    client = RepositoryClient(state, repo.url, limits=LIMITS, clock=clock)
    with pytest.raises(RepositoryRefused) as info:
        client.read(lambda r: r.target(REVOCATION_TARGET))
    assert info.value.reason == "oversized"
    assert crl_downloads(repo) == []


def test_tampered_crl_fails_the_refresh(
    tmp_path: Path, fw: Firmware, repo: TufRepo, clock: Clock
) -> None:
    state = make_charger(tmp_path, fw, repo, customer=None)
    publish_crl(repo, fw[0].crl([1234], number=1, now=clock.now))
    [name] = [n for n in repo.files if n.startswith("targets/revocation/")]
    repo.serve(name, fw[0].crl([], number=1, now=clock.now))  # other bytes than listed
    client = RepositoryClient(state, repo.url, limits=LIMITS, clock=clock)
    with pytest.raises(RepositoryRefused) as info:
        client.read(lambda r: None)
    assert info.value.reason in ("hash", "length")
    assert certificates.held_crls(state, now=clock.now) == []
