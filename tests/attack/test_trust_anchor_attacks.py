"""Attacks on the charger's firmware trust anchor by its CSMS (OCPP M04, M05).

A malicious or compromised CSMS offers its own self-signed CA as a ManufacturerRootCertificate,
then firmware signed under it (with a huge security version that would lock genuine firmware
out).  A charger adds a manufacturer root only when a root it already holds endorses it with a
link certificate (RFC 4210 §4.4 NewWithOld; docs/adr/0018-manufacturer-root-rotation.md).  The
real agent runs against a CSMS on loopback websockets; firmware is served over loopback HTTP.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from ocpp.v201 import call
from typer.testing import CliRunner

from chargeward.agent import certificates
from chargeward.agent.provision import provision
from chargeward.agent.security_log import SecurityLog
from chargeward.agent.state import Identity, StateDir
from chargeward.cli.main import app
from chargeward.crypto import create_root_ca, generate_key
from chargeward.crypto.keys import Signer, load_signer
from chargeward.crypto.pki import certificate_fingerprint, certificate_hash_data
from chargeward.crypto.root_rotation import endorsed_root_bundle, issue_link_certificate
from chargeward.release.bundle import VerifiedBundle, verify_bundle
from tests.support.agent_harness import (
    L01_HAPPY,
    PASSWORD,
    Csms,
    running_agent,
    running_csms,
    statuses,
)
from tests.support.fleet import MODEL, TEST_PASSPHRASE, Pki
from tests.support.tufrepo import Clock, TufRepo

ROOT = "ManufacturerRootCertificate"
REFUSED_EVENT = "InvalidFirmwareSigningCertificate"
TRUST_EVENT = "ReconfigurationOfSecurityParameters"


def _passphrase() -> bytes:
    return TEST_PASSPHRASE.encode()


def root_key(pki: Pki) -> Signer:
    return load_signer(f"file:{pki.dir / 'root.key'}", _passphrase)


@pytest.fixture(scope="module")
def acme(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The manufacturer whose root the chargers hold."""
    return Pki.create(tmp_path_factory.mktemp("acme"))


@pytest.fixture(scope="module")
def acme_next(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The manufacturer's next root (its own key), not yet on any charger."""
    return Pki.create(tmp_path_factory.mktemp("acme-next"), name="ACME 2030")


@pytest.fixture(scope="module")
def mallory(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The CSMS's own CA: a valid self-signed root no charger should ever trust."""
    return Pki.create(tmp_path_factory.mktemp("mallory"), name="Mallory")


@pytest.fixture(scope="module")
def releases(
    acme: Pki, acme_next: Pki, mallory: Pki, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("anchor-releases")
    made: dict[str, Any] = {"factory": acme.bundle(d / "factory.cwb", "1.0.0", 1)}
    for name, pki, version, sv in (
        ("evil", mallory, "6.6.6", 999_999),
        ("next", acme_next, "2.0.0", 2),
    ):
        bundle = pki.bundle(d / f"{name}.cwb", version, sv)
        made[name] = verify_bundle(bundle, [pki.root_cert], workdir=d / name)
    return made


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def files(clock: Clock, releases: dict[str, Any]) -> Iterator[TufRepo]:
    """A plain file server on loopback for the firmware images."""
    with TufRepo(clock) as server:
        for name in ("evil", "next"):
            server.serve(f"fw/{name}.cwfw", releases[name].images[0].file.read_bytes())
        yield server


@pytest.fixture
def charger(tmp_path: Path, acme: Pki, releases: dict[str, Any]) -> StateDir:
    """Factory 1.0.0 in slot a, ACME's root only, no TUF root: OCPP layer 1 alone decides."""
    provision(
        tmp_path / "charger",
        identity=Identity("CP-ANCHOR", MODEL, "T", "CP-ANCHOR"),
        password=PASSWORD,
        roots_pem=acme.root_pem.read_bytes(),
        factory_bundle=releases["factory"],
    )
    return StateDir(tmp_path / "charger")


def roots_file(state: StateDir) -> bytes:
    return (state.secure / "roots.pem").read_bytes()


async def install_root(csms: Csms, pem: str) -> Any:
    assert csms.station is not None
    return await csms.station.call(call.InstallCertificate(certificate_type=ROOT, certificate=pem))


def events(csms: Csms, kind: str) -> list[str]:
    return [e["tech_info"] for e in csms.of("SecurityEventNotification") if e["type"] == kind]


def assert_firmware_untouched(state: StateDir) -> None:
    bc = state.boot_control()
    assert (bc.active, bc.trial) == ("a", False)
    assert state.slot_info("b") is None
    assert state.rollback_floor() == 1


async def test_csms_installs_its_own_root_then_firmware_under_it_is_refused(
    charger: StateDir,
    clock: Clock,
    files: TufRepo,
    mallory: Pki,
    releases: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = roots_file(charger)
    evil: VerifiedBundle = releases["evil"]
    with caplog.at_level(logging.INFO, "chargeward.agent"):
        async with running_csms() as csms, running_agent(charger, csms, clock, None):
            answer = await install_root(csms, mallory.root_pem.read_text())
            assert answer.status == "Rejected"
            assert answer.status_info["reason_code"] == "NotEndorsed"
            assert "not endorsed by an installed root" in answer.status_info["additional_info"]
            refused = await csms.wait(lambda: events(csms, REFUSED_EVENT), REFUSED_EVENT)
            assert refused[0].startswith(f"{ROOT} refused: not endorsed by an installed root")
            assert "Mallory" in refused[0]
            assert events(csms, TRUST_EVENT) == []

            # The firmware the CSMS signed under its root, security version 999999.
            url = files.url + "fw/evil.cwfw"
            assert await csms.update_firmware(url, evil, clock(), request_id=66) == (
                "InvalidCertificate"
            )
            await csms.wait(lambda: len(events(csms, REFUSED_EVENT)) == 2, "second event")
            assert "not issued by an installed root" in events(csms, REFUSED_EVENT)[1]
            assert statuses(csms, 66) == []  # OCPP L01: not even downloaded
            assert "fw/evil.cwfw" not in files.requests
    assert roots_file(charger) == before
    assert_firmware_untouched(charger)
    logged = [r for r in caplog.records if "InstallCertificate" in r.getMessage()]
    assert logged and logged[0].levelno == logging.WARNING
    assert "NotEndorsed" in logged[0].getMessage()
    on_flash = [
        e.tech_info for e in SecurityLog(charger.root / "log").entries() if e.type == REFUSED_EVENT
    ]
    assert on_flash and on_flash[0] == refused[0]


# -- forged endorsements, one call each --------------------------------------------------------


def _self_endorsed(acme: Pki, mallory: Pki) -> list[x509.Certificate]:
    # Mallory's own key "endorses" Mallory's root: a link, but from no installed root.
    other = generate_key(f"file:{mallory.dir / 'second-root.key'}", _passphrase)
    second = create_root_ca(other, "Mallory Other CA", "Mallory")
    return [issue_link_certificate(other, second, mallory.root_cert)]


def _forged_issuer_name(acme: Pki, mallory: Pki) -> list[x509.Certificate]:
    # A CA with ACME's very name, but Mallory's key, issues the link.
    key = generate_key(f"file:{mallory.dir / 'fake-acme.key'}", _passphrase)
    fake = create_root_ca(key, "ACME Manufacturer Root CA", "ACME")
    assert fake.subject == acme.root_cert.subject
    return [issue_link_certificate(key, fake, mallory.root_cert)]


def _link_for_another_key(acme: Pki, mallory: Pki) -> list[x509.Certificate]:
    # A genuine link ACME issued for another root, replayed beside Mallory's root.
    other = generate_key(f"file:{mallory.dir / 'other.key'}", _passphrase)
    real = create_root_ca(other, "Mallory Manufacturer Root CA", "Mallory")
    return [issue_link_certificate(root_key(acme), acme.root_cert, real)]


def _no_link(acme: Pki, mallory: Pki) -> list[x509.Certificate]:
    return []


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (_no_link, "no link certificate comes with it"),
        (_self_endorsed, "not issued by an installed root"),
        (_forged_issuer_name, "not issued by an installed root"),
        (_link_for_another_key, "certifies another key"),
    ],
    ids=["no-link", "self-endorsed", "forged-issuer-name", "link-for-another-key"],
)
def test_root_with_a_forged_endorsement_is_refused(
    charger: StateDir,
    acme: Pki,
    mallory: Pki,
    forge: Callable[[Pki, Pki], list[x509.Certificate]],
    reason: str,
) -> None:
    before = roots_file(charger)
    pem = endorsed_root_bundle(mallory.root_cert, forge(acme, mallory))
    result = certificates.install_certificate(charger, ROOT, pem, dt.datetime.now(dt.UTC))
    assert (result.status, result.reason_code) == ("Rejected", "NotEndorsed")
    assert reason in (result.additional_info or "")
    assert result.event_type == REFUSED_EVENT
    assert result.security_event is not None and reason in result.security_event
    assert roots_file(charger) == before


def test_expired_link_certificate_is_refused(charger: StateDir, acme: Pki, acme_next: Pki) -> None:
    """A genuine but short-lived link, replayed after it expired, endorses nothing."""
    now = dt.datetime.now(dt.UTC)
    link = issue_link_certificate(root_key(acme), acme.root_cert, acme_next.root_cert, days=1)
    pem = endorsed_root_bundle(acme_next.root_cert, [link])
    later = now + dt.timedelta(days=2)
    result = certificates.install_certificate(charger, ROOT, pem, later)
    assert (result.status, result.reason_code) == ("Rejected", "NotEndorsed")
    assert "the link certificate is not valid at this time" in (result.additional_info or "")
    assert certificates.install_certificate(charger, ROOT, pem, now).status == "Accepted"


def test_firmware_signing_key_cannot_promote_itself_to_root(charger: StateDir, acme: Pki) -> None:
    """The signing key's holder makes a CA of its own key, with its certificate as the "link":
    ACME did issue that certificate, over that subject and key, but not as a CA."""
    signing_key = load_signer(f"file:{acme.dir / 'signing.key'}", _passphrase)
    subject = acme.signing_cert.subject
    promoted = create_root_ca(
        signing_key,
        subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value,  # type: ignore[arg-type]
        "ACME",
    )
    assert promoted.subject == subject
    pem = endorsed_root_bundle(promoted, [acme.signing_cert])
    result = certificates.install_certificate(charger, ROOT, pem, dt.datetime.now(dt.UTC))
    assert (result.status, result.reason_code) == ("Rejected", "NotEndorsed")
    assert "not a CA certificate" in (result.additional_info or "")
    assert len(charger.trust_anchors()) == 1


def test_revoked_link_certificate_is_refused(charger: StateDir, acme: Pki, acme_next: Pki) -> None:
    """A link issued by mistake (or with a stolen moment of root-key access) and then revoked
    by the old root's CRL endorses nothing."""
    now = dt.datetime.now(dt.UTC)
    link = issue_link_certificate(root_key(acme), acme.root_cert, acme_next.root_cert)
    certificates.apply_crl(charger, acme.crl([link.serial_number], now=now), now)
    pem = endorsed_root_bundle(acme_next.root_cert, [link])
    result = certificates.install_certificate(charger, ROOT, pem, now)
    assert (result.status, result.reason_code) == ("Rejected", "RevokedLink")
    assert f"serial {link.serial_number:x} revoked" in (result.additional_info or "")
    assert result.event_type == REFUSED_EVENT
    assert charger.trust_anchors() == [acme.root_cert]


# -- the manufacturer's own rotation ------------------------------------------------------------


@pytest.fixture
def endorsed_bundle(
    tmp_path: Path, acme: Pki, acme_next: Pki, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """``chargeward pki link-root``: the operator's tool, with the old root's key file."""
    monkeypatch.setenv("CHARGEWARD_KEY_PASSPHRASE", TEST_PASSPHRASE)
    out = tmp_path / "endorsed-root.pem"
    result = CliRunner().invoke(
        app,
        [
            *("pki", "link-root", "--ca-cert", str(acme.root_pem)),
            *("--ca-key", f"file:{acme.dir / 'root.key'}"),
            *("--new-root", str(acme_next.root_pem), "--out", str(out)),
            *("--data-dir", str(tmp_path / "data")),
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    return out


async def test_endorsed_rotation_is_accepted_and_firmware_under_the_new_root_installs(
    charger: StateDir,
    clock: Clock,
    files: TufRepo,
    acme: Pki,
    acme_next: Pki,
    releases: dict[str, Any],
    endorsed_bundle: Path,
) -> None:
    bundle = endorsed_bundle
    update: VerifiedBundle = releases["next"]
    async with running_csms() as csms, running_agent(charger, csms, clock, None):
        # Before the rotation, firmware under the new root is not trusted.
        url = files.url + "fw/next.cwfw"
        assert await csms.update_firmware(url, update, clock(), request_id=1) == (
            "InvalidCertificate"
        )
        answer = await install_root(csms, bundle.read_text())
        assert answer.status == "Accepted"
        changed = await csms.wait(lambda: events(csms, TRUST_EVENT), TRUST_EVENT)
        assert f"{ROOT} installed" in changed[0] and "ACME 2030" in changed[0]
        endorser = certificate_fingerprint(acme.root_cert)[:16]
        assert f"endorsed by the installed root sha256 {endorser}, link serial" in changed[0]
        assert len(changed[0]) < 255  # nothing lost to techInfo's limit

        assert await csms.update_firmware(url, update, clock(), request_id=2) == "Accepted"
        await csms.wait(lambda: "Installed" in statuses(csms, 2), "Installed")
        assert statuses(csms, 2) == L01_HAPPY
        assert files.requests.count("fw/next.cwfw") == 1  # fetched once, after the rotation
    assert charger.trust_anchors() == [acme.root_cert, acme_next.root_cert]
    assert (charger.boot_control().active, charger.rollback_floor()) == ("b", 2)


async def test_lab_switch_installs_an_unendorsed_root_loudly(
    charger: StateDir,
    clock: Clock,
    mallory: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "chargeward.agent"):
        async with (
            running_csms() as csms,
            running_agent(charger, csms, clock, None, allow_unendorsed_manufacturer_roots=True),
        ):
            started = [r.getMessage() for r in caplog.records]
            assert any("LAB SWITCH" in m and "allow_unendorsed" in m for m in started)
            answer = await install_root(csms, mallory.root_pem.read_text())
            assert answer.status == "Accepted"
            changed = await csms.wait(lambda: events(csms, TRUST_EVENT), TRUST_EVENT)
            assert "WITHOUT endorsement" in changed[0]
    used = [r for r in caplog.records if "WITHOUT endorsement" in r.getMessage()]
    assert used and all(r.levelno == logging.WARNING for r in used)
    assert mallory.root_cert in charger.trust_anchors()


def test_lab_switch_is_off_by_default(tmp_path: Path) -> None:
    from chargeward.agent.config import AgentConfig

    assert AgentConfig(tmp_path, "ws://127.0.0.1:9/").allow_unendorsed_manufacturer_roots is False


async def test_csms_cannot_delete_the_only_manufacturer_root(
    charger: StateDir, clock: Clock, acme: Pki
) -> None:
    """Without a root no signed firmware installs again: the last root never goes."""
    before = roots_file(charger)
    hash_data = certificate_hash_data(acme.root_cert)
    async with running_csms() as csms, running_agent(charger, csms, clock, None):
        assert csms.station is not None
        answer = await csms.station.call(
            call.DeleteCertificate(certificate_hash_data=dict(vars(hash_data)))
        )
        assert answer.status == "Failed"
        assert answer.status_info["reason_code"] == "LastRoot"
    assert roots_file(charger) == before
