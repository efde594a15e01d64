"""Revocation of firmware-signing certificates: CRLs signed through a Signer, held by chargers."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from typer.testing import CliRunner

from chargeward.agent import certificates
from chargeward.agent.agent import Agent
from chargeward.agent.config import AgentConfig
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from chargeward.cli.main import app
from chargeward.crypto.keys import Signer, load_signer
from chargeward.crypto.pki import (
    CRL_VALIDITY,
    Crl,
    RevokedEntry,
    certificate_pem,
    check_crl_progress,
    create_root_ca,
    issue_crl,
    load_certificate_file,
    verify_crl,
    verify_firmware_signing_certificate,
)
from chargeward.errors import (
    BadSignature,
    ConfigError,
    Conflict,
    IntegrityError,
    RevokedCertificate,
    RollbackRefused,
    UntrustedCertificate,
)
from tests.support.cli_runner import make_root, ok
from tests.support.fleet import MODEL, TEST_PASSPHRASE
from tests.support.fleet import Pki as FleetPki

if TYPE_CHECKING:
    from conftest import Pki

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def _now_is_now() -> None:
    """``NOW`` is the real time when each test starts: CLI commands and fixtures use the real
    clock, and a suite run takes minutes."""
    global NOW
    NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def make_crl(
    pki: Pki,
    revoked: Sequence[RevokedEntry] = (),
    *,
    number: int = 1,
    this_update: dt.datetime | None = None,
    validity: dt.timedelta = CRL_VALIDITY,
) -> bytes:
    this_update = NOW if this_update is None else this_update
    return issue_crl(
        pki.root,
        pki.root_signer,
        revoked,
        crl_number=number,
        this_update=this_update,
        next_update=this_update + validity,
    )


def revoking(pki: Pki, reason: str = "keyCompromise") -> list[RevokedEntry]:
    return [RevokedEntry(pki.signing_cert.serial_number, NOW, reason)]


# -- issuing and verifying ------------------------------------------------------------------


def test_crl_issued_with_a_file_key_verifies(pki: Pki) -> None:
    der = make_crl(pki, [*revoking(pki), RevokedEntry(0x1234, NOW)], number=7)
    crl = verify_crl(der, [pki.root], now=NOW)
    assert crl.crl_number == 7
    assert crl.issuer == pki.root.subject.rfc4514_string()
    assert crl.revoked_serials == {pki.signing_cert.serial_number, 0x1234}
    assert [e.reason for e in crl.entries] == ["keyCompromise", "unspecified"]
    assert (crl.this_update, crl.next_update, crl.expired) == (NOW, NOW + CRL_VALIDITY, False)

    parsed = x509.load_der_x509_crl(der)  # a standard X.509 v2 CRL, ECDSA-SHA256
    assert parsed.signature_hash_algorithm is not None
    assert parsed.signature_hash_algorithm.name == "sha256"
    assert parsed.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    aki = parsed.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = pki.root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    entry = parsed.get_revoked_certificate_by_serial_number(0x1234)
    assert entry is not None and len(entry.extensions) == 0  # "unspecified": no reasonCode


@dataclass
class RecordingSigner:
    """A Signer that is not a file key: only ``sign_digest`` is available, as with an HSM."""

    inner: Signer
    digests: list[bytes]
    garbage: bool = False

    @property
    def uri(self) -> str:
        return "pkcs11:token=test;object=root"

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.inner.public_key()

    def sign_digest(self, digest: bytes) -> bytes:
        self.digests.append(digest)
        if self.garbage:
            return utils.encode_dss_signature(1, 1)
        return self.inner.sign_digest(digest)


def test_crl_is_signed_through_the_signer_protocol(pki: Pki) -> None:
    signer = RecordingSigner(pki.root_signer, [])
    der = issue_crl(
        pki.root,
        signer,
        revoking(pki),
        crl_number=1,
        this_update=NOW,
        next_update=NOW + CRL_VALIDITY,
    )
    tbs = x509.load_der_x509_crl(der).tbs_certlist_bytes
    assert signer.digests == [hashlib.sha256(tbs).digest()]
    assert verify_crl(der, [pki.root], now=NOW).crl_number == 1

    broken = RecordingSigner(pki.root_signer, [], garbage=True)
    with pytest.raises(BadSignature):
        issue_crl(
            pki.root, broken, [], crl_number=2, this_update=NOW, next_update=NOW + CRL_VALIDITY
        )


def test_crl_of_another_ca_with_the_same_names_is_refused(pki: Pki, other_pki: Pki) -> None:
    assert other_pki.root.subject == pki.root.subject
    with pytest.raises(UntrustedCertificate, match="not issued by an installed"):
        verify_crl(make_crl(other_pki), [pki.root], now=NOW)
    with pytest.raises(UntrustedCertificate):
        verify_crl(make_crl(pki), [], now=NOW)
    assert verify_crl(make_crl(other_pki), [pki.root, other_pki.root], now=NOW).crl_number == 1


def test_tampered_crl_is_refused(pki: Pki) -> None:
    der = make_crl(pki, revoking(pki))
    serial = pki.signing_cert.serial_number
    serial_der = serial.to_bytes((serial.bit_length() + 8) // 8, "big")
    at = der.index(serial_der) + len(serial_der) - 1
    # Another serial of the same length: the DER still parses, the signature does not verify.
    # The last byte changes, never the first: a first byte of 0x01 would become a non-minimal
    # leading zero, which the parser rightly refuses as malformed.
    forged = der[:at] + bytes([der[at] ^ 0x01]) + der[at + 1 :]
    with pytest.raises(BadSignature):
        verify_crl(forged, [pki.root], now=NOW)
    flipped = der[:-1] + bytes([der[-1] ^ 0x01])  # last byte of the signature
    with pytest.raises(BadSignature):
        verify_crl(flipped, [pki.root], now=NOW)
    for malformed in (der[:100], b"", b"\x30\x03\x02\x01\x01", b"not a crl" * 10):
        with pytest.raises(IntegrityError, match="not a well-formed"):
            verify_crl(malformed, [pki.root], now=NOW)
    with pytest.raises(IntegrityError, match="larger than"):
        verify_crl(der + b"\x00" * (2 * 1024 * 1024), [pki.root], now=NOW)


def test_crl_from_the_future_is_refused_and_an_expired_one_still_revokes(pki: Pki) -> None:
    future = make_crl(pki, this_update=NOW + dt.timedelta(hours=1))
    with pytest.raises(UntrustedCertificate, match="not valid yet"):
        verify_crl(future, [pki.root], now=NOW)
    slightly_ahead = make_crl(pki, this_update=NOW + dt.timedelta(minutes=2))
    assert verify_crl(slightly_ahead, [pki.root], now=NOW).crl_number == 1

    old = make_crl(pki, revoking(pki), this_update=NOW - dt.timedelta(days=60))
    crl = verify_crl(old, [pki.root], now=NOW)
    assert crl.expired
    assert pki.signing_cert.serial_number in crl.revoked_serials


class MemorySigner:
    """An in-process key, so tests can also build CRLs outside our profile with cryptography."""

    uri = "memory:"

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.key.public_key()

    def sign_digest(self, digest: bytes) -> bytes:
        return self.key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def test_crl_outside_our_profile_is_refused() -> None:
    signer = MemorySigner()
    root = create_root_ca(signer, "Plain Root", "ACME")

    def build(extensions: Sequence[x509.ExtensionType]) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(root.subject)
            .last_update(NOW)
            .next_update(NOW + CRL_VALIDITY)
        )
        for ext in extensions:
            builder = builder.add_extension(ext, critical=False)
        crl = builder.sign(signer.key, hashes.SHA256())
        from cryptography.hazmat.primitives.serialization import Encoding

        return crl.public_bytes(Encoding.DER)

    assert verify_crl(build([x509.CRLNumber(3)]), [root], now=NOW).crl_number == 3
    with pytest.raises(IntegrityError, match="no CRL number"):
        verify_crl(build([]), [root], now=NOW)
    with pytest.raises(IntegrityError, match="delta CRLs"):
        verify_crl(build([x509.CRLNumber(4), x509.DeltaCRLIndicator(3)]), [root], now=NOW)


def test_crl_numbers_never_go_back(pki: Pki, other_pki: Pki) -> None:
    def crl(number: int, revoked: Sequence[RevokedEntry] = ()) -> Crl:
        return verify_crl(make_crl(pki, revoked, number=number), [pki.root], now=NOW)

    five, six = crl(5), crl(6)
    check_crl_progress(None, five)
    check_crl_progress(five, six)
    check_crl_progress(five, crl(5))  # the same CRL delivered again
    with pytest.raises(RollbackRefused, match="older than the held CRL number 6"):
        check_crl_progress(six, five)
    with pytest.raises(RollbackRefused, match="reused"):
        check_crl_progress(five, crl(5, revoking(pki)))
    theirs = verify_crl(make_crl(other_pki, number=1), [other_pki.root], now=NOW)
    with pytest.raises(ValueError, match="different issuers"):
        check_crl_progress(six, theirs)


def test_crl_objects_come_only_from_verification() -> None:
    with pytest.raises(TypeError, match="only made by verify_crl"):
        Crl("CN=x", "00", 1, NOW, NOW, frozenset(), (), False)


def test_revoked_signing_certificate_is_refused(pki: Pki) -> None:
    crl = verify_crl(make_crl(pki, revoking(pki)), [pki.root], now=NOW)
    with pytest.raises(RevokedCertificate, match=f"{pki.signing_cert.serial_number:x} revoked"):
        verify_firmware_signing_certificate(
            pki.signing_cert, [pki.root], revoked_serials=crl.revoked_serials
        )
    others = verify_crl(make_crl(pki, [RevokedEntry(99, NOW)]), [pki.root], now=NOW)
    assert (
        verify_firmware_signing_certificate(
            pki.signing_cert, [pki.root], revoked_serials=others.revoked_serials
        )
        == pki.root
    )


def test_issue_crl_refuses_bad_input(pki: Pki, other_pki: Pki) -> None:
    later = NOW + CRL_VALIDITY
    with pytest.raises(UntrustedCertificate, match="does not match"):
        issue_crl(
            pki.root, other_pki.root_signer, [], crl_number=1, this_update=NOW, next_update=later
        )
    with pytest.raises(UntrustedCertificate, match="may not sign CRLs"):
        issue_crl(
            pki.signing_cert, pki.signer, [], crl_number=1, this_update=NOW, next_update=later
        )
    with pytest.raises(ConfigError, match="next update"):
        issue_crl(pki.root, pki.root_signer, [], crl_number=1, this_update=NOW, next_update=NOW)
    with pytest.raises(ConfigError, match="outside"):
        issue_crl(pki.root, pki.root_signer, [], crl_number=-1, this_update=NOW, next_update=later)
    twice = [RevokedEntry(5, NOW), RevokedEntry(5, NOW)]
    with pytest.raises(ConfigError, match="twice"):
        issue_crl(
            pki.root, pki.root_signer, twice, crl_number=1, this_update=NOW, next_update=later
        )
    with pytest.raises(ConfigError, match="unknown revocation reason"):
        make_crl(pki, [RevokedEntry(5, NOW, "certificateHold")])


# -- the CLI: revoke -> crl -> show-crl -----------------------------------------------------


def cli_pki(runner: CliRunner, name: str) -> None:
    make_root(runner, name)
    ok(
        runner,
        *("pki", "issue-signing", "--ca-key", f"keys/{name}.key", "--ca-cert", f"{name}.pem"),
        *("--key", f"file:keys/{name}-signing.key", "--out", f"{name}-signing.pem"),
        *("--cn", f"{name} Firmware Signing", "--org", name, "--generate-key"),
    )


def audit_actions(data_dir: Path) -> list[tuple[str, dict[str, object]]]:
    from chargeward import audit
    from chargeward.server.store.db import Database

    async def read() -> list[audit.Entry]:
        db = await Database.open(data_dir=data_dir)
        try:
            async with db.session() as s:
                return await audit.entries(s)
        finally:
            await db.close()

    return [(e.action, e.details) for e in asyncio.run(read())]


def test_cli_revoke_crl_show_crl_round_trip(runner: CliRunner, tmp_path: Path) -> None:
    cli_pki(runner, "ACME")
    ca = ("--ca-cert", "ACME.pem", "--ca-key", "keys/ACME.key")
    out = ok(
        runner, "pki", "revoke", *ca, "--cert", "ACME-signing.pem", "--reason", "keyCompromise",
        "--out", "fw.crl",
    )  # fmt: skip
    signing = load_certificate_file(tmp_path / "ACME-signing.pem")
    root = load_certificate_file(tmp_path / "ACME.pem")
    assert f"Revoked serial {signing.serial_number:x}" in out
    first = verify_crl((tmp_path / "fw.crl").read_bytes(), [root], now=dt.datetime.now(dt.UTC))
    assert (first.crl_number, first.revoked_serials) == (1, {signing.serial_number})
    assert (tmp_path / "ACME.revocations.json").exists()

    ok(runner, "pki", "revoke", *ca, "--serial", "0xABC123", "--out", "fw.crl")
    ok(runner, "pki", "crl", *ca, "--out", "fw.crl", "--days", "7")
    again = verify_crl((tmp_path / "fw.crl").read_bytes(), [root], now=dt.datetime.now(dt.UTC))
    assert again.crl_number == 3
    assert again.revoked_serials == {signing.serial_number, 0xABC123}
    assert again.next_update - again.this_update == dt.timedelta(days=7)

    shown = ok(runner, "pki", "show-crl", "fw.crl", "--root", "ACME.pem")
    assert "O=ACME,CN=ACME Manufacturer Root CA" in shown
    assert "CRL number" in shown and " 3 " in shown
    assert "keyCompromise" in shown and "abc123" in shown
    assert f"  {signing.serial_number:x}  keyCompromise  " in shown

    actions = audit_actions(tmp_path / "chargeward-data")
    assert [a for a, _ in actions][-3:] == [
        "pki.certificate_revoked",
        "pki.certificate_revoked",
        "pki.crl_issued",
    ]
    revoked = actions[-3][1]
    assert revoked["serial"] == f"{signing.serial_number:x}"
    assert revoked["reason"] == "keyCompromise" and revoked["crl_number"] == 1


def test_cli_revocation_errors_are_clear(runner: CliRunner, tmp_path: Path) -> None:
    cli_pki(runner, "ACME")
    cli_pki(runner, "Other")
    ca = ("--ca-cert", "ACME.pem", "--ca-key", "keys/ACME.key")
    ok(runner, "pki", "revoke", *ca, "--cert", "ACME-signing.pem", "--out", "fw.crl")

    twice = runner.invoke(app, ["pki", "revoke", *ca, "--cert", "ACME-signing.pem", "--out", "x"])
    assert isinstance(twice.exception, Conflict)
    foreign = runner.invoke(
        app, ["pki", "revoke", *ca, "--cert", "Other-signing.pem", "--out", "fw.crl"]
    )
    assert isinstance(foreign.exception, UntrustedCertificate)
    assert "was not issued by the CA ACME.pem" in str(foreign.exception)
    wrong_key = runner.invoke(
        app, ["pki", "crl", "--ca-cert", "ACME.pem", "--ca-key", "keys/Other.key", "--out", "x"]
    )
    assert isinstance(wrong_key.exception, ConfigError)
    for bad in (["--serial", "12", "--cert", "ACME-signing.pem"], ["--serial", "xyz"], []):
        usage = runner.invoke(app, ["pki", "revoke", *ca, *bad, "--out", "x"])
        assert usage.exit_code == 2
    reason = runner.invoke(
        app, ["pki", "revoke", *ca, "--serial", "12", "--reason", "hold", "--out", "x"]
    )
    assert reason.exit_code == 2 and "keyCompromise" in reason.output
    assert not (tmp_path / "x").exists()

    shown = runner.invoke(app, ["pki", "show-crl", "fw.crl", "--root", "Other.pem"])
    assert isinstance(shown.exception, UntrustedCertificate)
    assert str(shown.exception).startswith("fw.crl: CRL is not issued by an installed")
    after = verify_crl(
        (tmp_path / "fw.crl").read_bytes(), [load_certificate_file(tmp_path / "ACME.pem")], now=NOW
    )
    assert after.crl_number == 1  # nothing above changed the published CRL


# -- the charger: apply_crl, revoked_serials, the UpdateFirmware answer ---------------------


@pytest.fixture(scope="module")
def fw_pki(tmp_path_factory: pytest.TempPathFactory) -> FleetPki:
    return FleetPki.create(tmp_path_factory.mktemp("crl-pki"))


@pytest.fixture(scope="module")
def factory(fw_pki: FleetPki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fw_pki.bundle(tmp_path_factory.mktemp("crl-bundles") / "f.cwb", "1.0.0", 1)


@pytest.fixture
def charger(tmp_path: Path, fw_pki: FleetPki, factory: Path) -> StateDir:
    provision(
        tmp_path / "state",
        identity=Identity("CP-1", MODEL, "T", "CP-1"),
        password="fixture-password-0123456789",
        roots_pem=fw_pki.root_pem.read_bytes(),
        factory_bundle=factory,
    )
    return StateDir(tmp_path / "state")


def fleet_crl(fw_pki: FleetPki, revoked: Sequence[int], number: int) -> bytes:
    root_signer = load_signer(f"file:{fw_pki.dir / 'root.key'}", TEST_PASSPHRASE.encode)
    return issue_crl(
        fw_pki.root_cert,
        root_signer,
        [RevokedEntry(serial, NOW, "keyCompromise") for serial in revoked],
        crl_number=number,
        this_update=NOW,
        next_update=NOW + CRL_VALIDITY,
    )


def test_apply_crl_keeps_the_newest_crl_of_each_root(
    charger: StateDir, fw_pki: FleetPki, other_pki: Pki
) -> None:
    serial = fw_pki.signing_cert.serial_number
    assert certificates.revoked_serials(charger) == frozenset()

    crl = certificates.apply_crl(charger, fleet_crl(fw_pki, [serial], 2), NOW)
    stored = charger.secure / "crl" / f"{crl.issuer_key_id}.der"
    assert stored.exists()
    assert certificates.revoked_serials(charger) == {serial}

    with pytest.raises(RollbackRefused):
        certificates.apply_crl(charger, fleet_crl(fw_pki, [], 1), NOW)
    assert certificates.revoked_serials(charger) == {serial}
    with pytest.raises(UntrustedCertificate):
        certificates.apply_crl(charger, make_crl(other_pki, revoking(other_pki)), NOW)
    assert [c.crl_number for c in certificates.held_crls(charger)] == [2]

    certificates.apply_crl(charger, fleet_crl(fw_pki, [], 3), NOW)  # e.g. after expiry
    assert certificates.revoked_serials(charger) == frozenset()


def test_charger_answers_revoked_certificate(charger: StateDir, fw_pki: FleetPki) -> None:
    pem = certificate_pem(fw_pki.signing_cert)
    assert certificates.check_signing_certificate(charger, pem, NOW) == fw_pki.signing_cert
    certificates.apply_crl(charger, fleet_crl(fw_pki, [fw_pki.signing_cert.serial_number], 1), NOW)
    with pytest.raises(RevokedCertificate):
        certificates.check_signing_certificate(charger, pem, NOW)

    agent = Agent(AgentConfig(state_dir=charger.root, csms_url="ws://127.0.0.1:9/ocpp/"))
    firmware = {
        "location": "http://127.0.0.1:9/fw",
        "retrieve_date_time": "2026-01-01T00:00:00Z",
        "signing_certificate": pem,
        "signature": "MEUCIQ==",
    }
    answer = agent.callbacks.update_firmware(1, firmware, None, None)
    assert answer == "RevokedCertificate"  # OCPP L01


def test_damaged_crl_fails_closed_until_a_good_one_arrives(
    charger: StateDir, fw_pki: FleetPki
) -> None:
    pem = certificate_pem(fw_pki.signing_cert)
    crl = certificates.apply_crl(charger, fleet_crl(fw_pki, [], 4), NOW)
    stored = charger.secure / "crl" / f"{crl.issuer_key_id}.der"
    stored.write_bytes(stored.read_bytes()[:-3])
    with pytest.raises(UntrustedCertificate, match="cannot check revocation"):
        certificates.check_signing_certificate(charger, pem, NOW)
    certificates.apply_crl(charger, fleet_crl(fw_pki, [], 5), NOW)
    assert certificates.check_signing_certificate(charger, pem, NOW) == fw_pki.signing_cert
