"""Link certificates for manufacturer root rotation (RFC 4210 §4.4 NewWithOld) and the
``chargeward pki link-root`` command, with a key file and with a PKCS#11 token."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from chargeward.cli.main import app
from chargeward.crypto.keys import Signer, generate_key
from chargeward.crypto.pki import (
    certificate_pem,
    check_root_certificate,
    create_root_ca,
    load_certificate_file,
    load_certificates_file,
)
from chargeward.crypto.root_rotation import (
    check_root_endorsement,
    endorsed_root_bundle,
    issue_link_certificate,
    root_and_links,
)
from chargeward.errors import ConfigError, Conflict, RevokedCertificate, UntrustedCertificate
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from tests.support.cli_runner import make_root, ok
from tests.support.softhsm import use_softhsm

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _pass() -> bytes:
    return b"correct horse battery staple"


def _root(tmp_path: Path, name: str, **kw: object) -> tuple[Signer, x509.Certificate]:
    signer = generate_key(f"file:{tmp_path / (name + '.key')}", _pass)
    return signer, create_root_ca(signer, f"{name} Manufacturer Root CA", name, now=NOW, **kw)  # type: ignore[arg-type]


def test_link_certifies_the_new_root_and_is_issued_by_the_old(tmp_path: Path) -> None:
    old_key, old = _root(tmp_path, "ACME", days=3650)
    _, new = _root(tmp_path, "ACME2030")
    link = issue_link_certificate(old_key, old, new, now=NOW)
    assert (link.issuer, link.subject) == (old.subject, new.subject)
    assert link.public_key() == new.public_key()
    link.verify_directly_issued_by(old)
    bc = link.extensions.get_extension_for_class(x509.BasicConstraints)
    ku = link.extensions.get_extension_for_class(x509.KeyUsage).value
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    aki = link.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = link.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert (
        aki.key_identifier
        == old.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    )
    assert ski == new.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    # Valid until the first root ends, never beyond.
    assert link.not_valid_after_utc == old.not_valid_after_utc
    assert link.not_valid_before_utc <= NOW
    endorsement = check_root_endorsement(new, [link], [old], now=NOW)
    assert (endorsement.endorser, endorsement.link) == (old, link)


def test_same_name_rotation_is_endorsed_too(tmp_path: Path) -> None:
    """RFC 4210's own case: the CA keeps its name and changes its key (a self-issued link)."""
    old_key, old = _root(tmp_path, "ACME")
    new_key = generate_key(f"file:{tmp_path / 'ACME-2.key'}", _pass)
    new = create_root_ca(new_key, "ACME Manufacturer Root CA", "ACME", now=NOW)
    link = issue_link_certificate(old_key, old, new, now=NOW)
    assert link.issuer == link.subject
    assert check_root_endorsement(new, [link], [old], now=NOW).endorser == old


def test_any_held_root_may_endorse_and_only_a_usable_one(tmp_path: Path) -> None:
    a_key, a = _root(tmp_path, "A")
    _, b = _root(tmp_path, "B")
    _, new = _root(tmp_path, "New")
    link = issue_link_certificate(a_key, a, new, now=NOW)
    assert check_root_endorsement(new, [link], [b, a], now=NOW).endorser == a
    with pytest.raises(UntrustedCertificate, match="not issued by an installed root"):
        check_root_endorsement(new, [link], [b], now=NOW)
    later = a.not_valid_after_utc + dt.timedelta(days=1)  # an expired held root endorses nothing
    with pytest.raises(UntrustedCertificate, match="not valid at this time"):
        check_root_endorsement(new, [link], [a], now=later)


def test_second_link_is_used_when_the_first_is_revoked_or_foreign(tmp_path: Path) -> None:
    a_key, a = _root(tmp_path, "A")
    b_key, b = _root(tmp_path, "B")
    _, new = _root(tmp_path, "New")
    from_a = issue_link_certificate(a_key, a, new, now=NOW)
    from_b = issue_link_certificate(b_key, b, new, now=NOW)
    found = check_root_endorsement(
        new, [from_a, from_b], [a, b], now=NOW, revoked_serials=frozenset({from_a.serial_number})
    )
    assert found.link == from_b
    with pytest.raises(RevokedCertificate, match=f"{from_a.serial_number:x} revoked"):
        check_root_endorsement(
            new, [from_a], [a], now=NOW, revoked_serials=frozenset({from_a.serial_number})
        )
    assert check_root_endorsement(new, [from_b, from_a], [a], now=NOW).link == from_a
    with pytest.raises(UntrustedCertificate) as e:
        check_root_endorsement(new, [from_b, new], [a], now=NOW)
    assert str(e.value) == (
        "not endorsed by an installed root: the link certificate is not issued by an installed "
        "root; the link certificate is not issued by an installed root"
    )


def test_link_with_an_unknown_critical_extension_is_refused(tmp_path: Path) -> None:
    """RFC 5280 §4.2: a certificate with a critical extension we do not process is refused."""
    old_private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Raw Root")])
    old = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(old_private.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_cert_sign(), critical=True)
        .sign(old_private, hashes.SHA256())
    )
    _, new = _root(tmp_path, "New")
    link = (
        x509.CertificateBuilder()
        .subject_name(new.subject)
        .issuer_name(name)
        .public_key(new.public_key())  # type: ignore[arg-type]
        .serial_number(2)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_cert_sign(), critical=True)
        .add_extension(x509.OCSPNoCheck(), critical=True)
        .sign(old_private, hashes.SHA256())
    )
    check_root_certificate(old, now=NOW)
    with pytest.raises(UntrustedCertificate, match=r"unknown critical extensions.*1\.3\.6\.1\.5"):
        check_root_endorsement(new, [link], [old], now=NOW)


def test_link_for_the_same_key_under_another_name_is_refused(tmp_path: Path) -> None:
    old_key, old = _root(tmp_path, "ACME")
    new_key = generate_key(f"file:{tmp_path / 'new.key'}", _pass)
    endorsed = create_root_ca(new_key, "ACME Manufacturer Root CA 2030", "ACME", now=NOW)
    renamed = create_root_ca(new_key, "Someone Else Root CA", "Else", now=NOW)
    link = issue_link_certificate(old_key, old, endorsed, now=NOW)
    with pytest.raises(UntrustedCertificate, match="names another subject"):
        check_root_endorsement(renamed, [link], [old], now=NOW)


def test_held_root_that_may_not_sign_certificates_endorses_nothing() -> None:
    """RFC 5280 §4.2.1.3: without keyCertSign a held anchor issues no certificate we accept."""
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CRL-only Root")])
    crl_only = x509.KeyUsage(False, False, False, False, False, False, True, False, False)
    held = _raw_ca(private, name, name, private.public_key(), crl_only)
    new_private = ec.generate_private_key(ec.SECP256R1())
    new_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "New Root")])
    new = _raw_ca(new_private, new_name, new_name, new_private.public_key(), _cert_sign())
    link = _raw_ca(private, name, new_name, new_private.public_key(), _cert_sign())
    link.verify_directly_issued_by(held)  # the signature itself is fine
    with pytest.raises(UntrustedCertificate, match="not issued by an installed root"):
        check_root_endorsement(new, [link], [held], now=NOW)


def _raw_ca(
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    subject: x509.Name,
    public: ec.EllipticCurvePublicKey,
    usage: x509.KeyUsage,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def _cert_sign() -> x509.KeyUsage:
    return x509.KeyUsage(False, False, False, False, False, True, True, False, False)


def test_issuing_a_link_refuses_what_cannot_be_a_rotation(tmp_path: Path) -> None:
    old_key, old = _root(tmp_path, "ACME")
    other_key, other = _root(tmp_path, "Other")
    with pytest.raises(UntrustedCertificate, match="does not match the old root"):
        issue_link_certificate(other_key, old, other, now=NOW)
    with pytest.raises(UntrustedCertificate, match="the old root's key"):
        issue_link_certificate(old_key, old, old, now=NOW)
    link = issue_link_certificate(old_key, old, other, now=NOW)
    with pytest.raises(UntrustedCertificate, match="the new root: not a self-signed root"):
        issue_link_certificate(old_key, old, link, now=NOW)
    with pytest.raises(UntrustedCertificate, match=r"the old root: .*not valid at this time"):
        issue_link_certificate(old_key, old, other, now=old.not_valid_after_utc + dt.timedelta(1))
    with pytest.raises(ConfigError, match="would not be valid"):
        issue_link_certificate(old_key, old, other, now=NOW, days=-1)


def test_bundle_is_the_root_then_its_links(tmp_path: Path) -> None:
    old_key, old = _root(tmp_path, "ACME")
    _, new = _root(tmp_path, "New")
    link = issue_link_certificate(old_key, old, new, now=NOW)
    pem = endorsed_root_bundle(new, [link])
    assert pem.startswith(certificate_pem(new))
    assert root_and_links(x509.load_pem_x509_certificates(pem.encode())) == (new, [link])
    with pytest.raises(UntrustedCertificate, match="at most 4"):
        root_and_links([new, *[link] * (DEFAULT_FORMAT_LIMITS.root_links + 1)])
    with pytest.raises(UntrustedCertificate, match="no certificate"):
        root_and_links([])


def _link_root(runner: CliRunner, key: str, out: str = "bundle.pem") -> str:
    return ok(
        runner,
        *("pki", "link-root", "--ca-cert", "Old.pem", "--ca-key", key),
        *("--new-root", "New.pem", "--out", out),
    )


def test_cli_link_root_with_a_key_file(runner: CliRunner, tmp_path: Path) -> None:
    make_root(runner, "Old")
    make_root(runner, "New")
    out = _link_root(runner, "file:keys/Old.key")
    assert "endorsed by" in out
    old, new = load_certificate_file(Path("Old.pem")), load_certificate_file(Path("New.pem"))
    [root, link] = load_certificates_file(Path("bundle.pem"))
    assert root == new
    assert check_root_endorsement(root, [link], [old], now=dt.datetime.now(dt.UTC)).link == link
    again = runner.invoke(app, ["pki", "link-root", "--ca-cert", "Old.pem", "--ca-key",
                                "file:keys/Old.key", "--new-root", "New.pem", "--out",
                                "bundle.pem"])  # fmt: skip
    assert isinstance(again.exception, Conflict)
    wrong = runner.invoke(app, ["pki", "link-root", "--ca-cert", "Old.pem", "--ca-key",
                                "file:keys/New.key", "--new-root", "New.pem", "--out",
                                "other.pem"])  # fmt: skip
    assert isinstance(wrong.exception, ConfigError)
    assert "does not match the CA certificate" in str(wrong.exception)
    assert not Path("other.pem").exists()


def test_cli_link_root_with_a_pkcs11_root_key(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hsm = use_softhsm(tmp_path / "softhsm", monkeypatch)
    monkeypatch.setenv("CHARGEWARD_PKCS11_PIN", hsm.pin)
    uri = hsm.uri("old-root")
    ok(runner, "pki", "init-root", "--key", uri, "--out", "Old.pem",
       "--cn", "Old Manufacturer Root CA", "--org", "Old", "--generate-key")  # fmt: skip
    make_root(runner, "New")
    _link_root(runner, uri)
    old = load_certificate_file(Path("Old.pem"))
    [root, link] = load_certificates_file(Path("bundle.pem"))
    assert check_root_endorsement(root, [link], [old], now=dt.datetime.now(dt.UTC)).endorser == old
