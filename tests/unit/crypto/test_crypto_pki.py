"""The firmware PKI: root CA, firmware-signing certificates and their verification."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from chargeward.crypto.keys import generate_key
from chargeward.crypto.pki import (
    certificate_pem,
    create_root_ca,
    describe_certificate,
    issue_firmware_signing_certificate,
    key_matches_certificate,
    load_certificate,
    load_certificate_file,
    load_certificates,
    verify_firmware_signing_certificate,
)
from chargeward.errors import ConfigError, RevokedCertificate, UntrustedCertificate

if TYPE_CHECKING:
    from conftest import Pki


def test_root_is_a_self_signed_ca(pki: Pki) -> None:
    info = describe_certificate(pki.root)
    assert info.is_ca
    assert info.self_signed
    assert info.subject == info.issuer == "O=ACME,CN=ACME Manufacturer Root CA"
    assert "key_cert_sign" in info.key_usage
    assert "digital_signature" not in info.key_usage
    assert key_matches_certificate(pki.root_signer.public_key(), pki.root)


def test_signing_certificate_is_a_code_signing_leaf(pki: Pki) -> None:
    info = describe_certificate(pki.signing_cert)
    assert not info.is_ca
    assert not info.self_signed
    assert info.issuer == describe_certificate(pki.root).subject
    assert info.key_usage == ("digital_signature",)
    assert info.extended_key_usage == ("codeSigning",)
    assert info.not_after <= pki.root.not_valid_after_utc


def test_signing_certificate_chains_to_its_root(pki: Pki, other_pki: Pki) -> None:
    anchor = verify_firmware_signing_certificate(pki.signing_cert, [other_pki.root, pki.root])
    assert anchor == pki.root


def test_certificate_from_another_root_with_the_same_names_is_untrusted(
    pki: Pki, other_pki: Pki
) -> None:
    assert other_pki.root.subject == pki.root.subject
    with pytest.raises(UntrustedCertificate, match="not issued by an installed root"):
        verify_firmware_signing_certificate(other_pki.signing_cert, [pki.root])


def test_no_roots_is_untrusted(pki: Pki) -> None:
    with pytest.raises(UntrustedCertificate, match="no ManufacturerRootCertificate"):
        verify_firmware_signing_certificate(pki.signing_cert, [])


@pytest.mark.parametrize("years", [-1, 6])
def test_certificate_outside_its_validity_is_untrusted(pki: Pki, years: int) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(days=365 * years)
    with pytest.raises(UntrustedCertificate, match="not valid at this time"):
        verify_firmware_signing_certificate(pki.signing_cert, [pki.root], now=when)


def test_signing_certificate_never_outlives_its_root(
    tmp_path: Path, secret: Callable[[], bytes], pki: Pki
) -> None:
    issued = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    root_signer = generate_key(str(tmp_path / "short.key"), secret)
    root = create_root_ca(root_signer, "Short Root", "ACME", days=10, now=issued)
    cert = issue_firmware_signing_certificate(
        root_signer, root, pki.signer.public_key(), "Signing", "ACME", days=365, now=issued
    )
    assert cert.not_valid_after_utc == root.not_valid_after_utc
    assert verify_firmware_signing_certificate(cert, [root], now=issued + dt.timedelta(days=1))
    with pytest.raises(UntrustedCertificate, match="not valid at this time"):
        verify_firmware_signing_certificate(cert, [root])


def test_revoked_serial_is_refused(pki: Pki) -> None:
    with pytest.raises(RevokedCertificate, match=f"{pki.signing_cert.serial_number:x}"):
        verify_firmware_signing_certificate(
            pki.signing_cert,
            [pki.root],
            revoked_serials=frozenset({pki.signing_cert.serial_number}),
        )
    verify_firmware_signing_certificate(
        pki.signing_cert, [pki.root], revoked_serials=frozenset({pki.root.serial_number})
    )


def test_ca_certificate_cannot_be_used_as_signing_certificate(pki: Pki) -> None:
    with pytest.raises(UntrustedCertificate, match="is a CA certificate"):
        verify_firmware_signing_certificate(pki.root, [pki.root])


def test_signing_certificate_installed_as_root_anchors_nothing(
    tmp_path: Path, secret: Callable[[], bytes], pki: Pki
) -> None:
    """A leaf mistakenly installed as trust anchor must not let its key issue certificates."""
    leaf_as_ca = create_root_ca(pki.signer, "ACME Firmware Signing", "ACME")
    assert leaf_as_ca.subject == pki.signing_cert.subject
    victim = generate_key(str(tmp_path / "victim.key"), secret)
    cert = issue_firmware_signing_certificate(
        pki.signer, leaf_as_ca, victim.public_key(), "Evil", "ACME"
    )
    with pytest.raises(UntrustedCertificate, match="the issuing root is not a CA certificate"):
        verify_firmware_signing_certificate(cert, [pki.signing_cert])


def test_mismatched_ca_key_and_certificate_are_refused(pki: Pki, other_pki: Pki) -> None:
    with pytest.raises(UntrustedCertificate, match="CA key does not match"):
        issue_firmware_signing_certificate(
            other_pki.root_signer, pki.root, pki.signer.public_key(), "Signing", "ACME"
        )


def test_a_leaf_certificate_cannot_issue(pki: Pki, other_pki: Pki) -> None:
    with pytest.raises(UntrustedCertificate, match="not a CA certificate"):
        issue_firmware_signing_certificate(
            pki.signer, pki.signing_cert, other_pki.signer.public_key(), "Signing", "ACME"
        )


def test_signing_key_must_differ_from_ca_key(pki: Pki) -> None:
    with pytest.raises(UntrustedCertificate, match="must differ from the CA key"):
        issue_firmware_signing_certificate(
            pki.root_signer, pki.root, pki.root_signer.public_key(), "Signing", "ACME"
        )


def test_pem_roundtrip_and_garbage(tmp_path: Path, pki: Pki) -> None:
    pem = certificate_pem(pki.signing_cert)
    assert load_certificate(pem) == pki.signing_cert
    assert load_certificates((pem + certificate_pem(pki.root)).encode()) == [
        pki.signing_cert,
        pki.root,
    ]
    with pytest.raises(UntrustedCertificate, match="not a PEM"):
        load_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    path = tmp_path / "two.pem"
    path.write_text(pem + certificate_pem(pki.root))
    with pytest.raises(ConfigError, match="holds 2 certificates"):
        load_certificate_file(path)
    with pytest.raises(ConfigError, match="cannot read certificate file"):
        load_certificate_file(tmp_path / "absent.pem")
