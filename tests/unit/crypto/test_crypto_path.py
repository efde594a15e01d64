"""crypto.path: the RFC 5280 decision on a firmware-signing path, from bytes and a time.

The table of crafted attacks (and openssl's verdict on it) is in
tests/attack/test_certificate_path_attacks.py; these are the finer points.
"""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chargeward.crypto.path import VerifiedPath, check_signing_profile, verify_signing_path
from chargeward.crypto.tls import check_station_certificate
from chargeward.errors import CertificatePathRefused, UntrustedCertificate
from tests.support.crafted_certs import (
    AT,
    DAY,
    LEAF_NAME,
    ROOT_NAME,
    ca_certificate,
    dn,
    key_usage,
    make_certificate,
    new_key,
    pem,
    signing_certificate,
    station_certificate,
)

DER = serialization.Encoding.DER


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(DER)


def _reason(leaf: x509.Certificate, *anchors: x509.Certificate) -> str | None:
    try:
        verify_signing_path(_der(leaf), [_der(a) for a in anchors], at=AT)
    except CertificatePathRefused as e:
        return e.reason
    return None


def _constrained(
    permitted: list[x509.GeneralName] | None = None,
    excluded: list[x509.GeneralName] | None = None,
    san: list[x509.GeneralName] | None = None,
    name: x509.Name = LEAF_NAME,
) -> str | None:
    """The reason a leaf with ``san`` and ``name`` is refused under a constrained root."""
    root_key, leaf_key = new_key(), new_key()
    nc = x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded)
    root = ca_certificate(root_key, extra=[(nc, True)])
    extra = [(x509.SubjectAlternativeName(san), False)] if san else []
    return _reason(signing_certificate(leaf_key, root, root_key, name=name, extra=extra), root)


def test_a_good_path_from_pem_or_der_and_the_anchor_it_used() -> None:
    root_key, other_key, leaf_key = new_key(), new_key(), new_key()
    root, other = ca_certificate(root_key), ca_certificate(other_key, name=LEAF_NAME)
    leaf = signing_certificate(leaf_key, root, root_key)
    for leaf_bytes, anchors in (
        (_der(leaf), [_der(other), _der(root)]),
        (pem(leaf), [pem(other), pem(root)]),
    ):
        path = verify_signing_path(leaf_bytes, anchors, at=AT)
        assert (path.leaf, path.anchor, path.anchor_index) == (leaf, root, 1)


def test_a_verified_path_is_only_made_by_the_verifier() -> None:
    root_key = new_key()
    root = ca_certificate(root_key)
    with pytest.raises(TypeError):
        VerifiedPath(root, root, 0)


def test_the_refusal_is_an_untrusted_certificate_with_a_reason() -> None:
    with pytest.raises(UntrustedCertificate) as e:
        verify_signing_path(b"not a certificate", [b"nor this"], at=AT)
    assert isinstance(e.value, CertificatePathRefused)
    assert e.value.reason == "malformed"
    assert str(e.value) == "signing certificate is not a well-formed X.509 certificate"


def test_oversized_input_and_no_anchors_are_refused() -> None:
    root_key = new_key()
    root = ca_certificate(root_key)
    leaf = signing_certificate(new_key(), root, root_key)
    with pytest.raises(CertificatePathRefused, match="larger than"):
        verify_signing_path(b"-----BEGIN CERTIFICATE-----" + b"A" * 30000, [_der(root)], at=AT)
    with pytest.raises(CertificatePathRefused, match="no ManufacturerRootCertificate"):
        verify_signing_path(_der(leaf), [], at=AT)


def test_validity_bounds_are_inclusive_and_a_naive_time_is_utc() -> None:
    root_key = new_key()
    root = ca_certificate(root_key)
    leaf = signing_certificate(new_key(), root, root_key)
    for at in (leaf.not_valid_before_utc, leaf.not_valid_after_utc):
        verify_signing_path(_der(leaf), [_der(root)], at=at)
        verify_signing_path(_der(leaf), [_der(root)], at=at.replace(tzinfo=None))
    with pytest.raises(CertificatePathRefused, match="not valid at this time"):
        verify_signing_path(
            _der(leaf), [_der(root)], at=leaf.not_valid_after_utc + dt.timedelta(seconds=1)
        )


def test_an_expired_anchor_issues_nothing() -> None:
    root_key = new_key()
    root = ca_certificate(root_key, at=AT - 400 * DAY)  # valid until AT - 35 days
    leaf = signing_certificate(new_key(), root, root_key)
    with pytest.raises(CertificatePathRefused, match="the issuing root is not valid"):
        verify_signing_path(_der(leaf), [_der(root)], at=AT)


def test_an_unknown_critical_extension_on_the_anchor_refuses() -> None:
    root_key = new_key()
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.9"), b"\x05\x00")
    root = ca_certificate(root_key, extra=[(odd, True)])
    assert _reason(signing_certificate(new_key(), root, root_key), root) == "critical-extension"
    harmless = ca_certificate(root_key, extra=[(odd, False)])
    assert _reason(signing_certificate(new_key(), harmless, root_key), harmless) is None


def test_the_second_root_of_the_same_name_may_accept() -> None:
    """Two installed roots share a name; the first may not sign, the second issued the leaf."""
    key = new_key()
    weak = ca_certificate(key, usage=key_usage(digital_signature=True))
    good = ca_certificate(key)
    leaf = signing_certificate(new_key(), good, key)
    path = verify_signing_path(_der(leaf), [_der(weak), _der(good)], at=AT)
    assert path.anchor_index == 1
    assert _reason(leaf, weak) == "anchor"


def test_the_library_verifier_is_the_second_engine() -> None:
    """ECDSA with SHA-224 passes the RFC 5280 checks but not cryptography's algorithm policy:
    both engines must accept."""
    root_key, leaf_key = new_key(), new_key()
    root = ca_certificate(root_key)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(LEAF_NAME)
        .issuer_name(ROOT_NAME)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(AT - DAY)
        .not_valid_after(AT + DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True), critical=True)
        .sign(root_key, hashes.SHA224())
    )
    assert _reason(leaf, root) == "policy"


@pytest.mark.parametrize(
    ("usage", "eku", "reason"),
    [
        (key_usage(digital_signature=True), [ExtendedKeyUsageOID.CODE_SIGNING], None),
        (key_usage(digital_signature=True), None, None),  # OCPP does not require an EKU
        (key_usage(digital_signature=True), [ExtendedKeyUsageOID.SERVER_AUTH], "leaf-profile"),
        (key_usage(digital_signature=True, key_cert_sign=True), None, "leaf-profile"),
        (None, None, "leaf-profile"),
    ],
)
def test_the_signing_profile(
    usage: x509.KeyUsage | None, eku: list[x509.ObjectIdentifier] | None, reason: str | None
) -> None:
    root_key, leaf_key = new_key(), new_key()
    root = ca_certificate(root_key)
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True)
    ]
    if usage is not None:
        extensions.append((usage, True))
    if eku is not None:
        extensions.append((x509.ExtendedKeyUsage(eku), False))
    leaf = make_certificate(
        LEAF_NAME,
        ROOT_NAME,
        leaf_key,
        root_key,
        extensions,
        not_before=AT - DAY,
        not_after=AT + DAY,
    )
    assert _reason(leaf, root) == reason
    if reason is not None:
        with pytest.raises(CertificatePathRefused):
            check_signing_profile(leaf, AT)


ACME = x509.DirectoryName(dn((NameOID.ORGANIZATION_NAME, "ACME")))
NC = "name-constraints"
DNS, MAIL, URI = x509.DNSName, x509.RFC822Name, x509.UniformResourceIdentifier


def _ip(value: str) -> x509.IPAddress:
    return x509.IPAddress(
        ipaddress.ip_network(value) if "/" in value else ipaddress.ip_address(value)
    )


def _names(*parts: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return dn(*parts)


ORG, CN, EMAIL = NameOID.ORGANIZATION_NAME, NameOID.COMMON_NAME, NameOID.EMAIL_ADDRESS


@pytest.mark.parametrize(
    ("constraints", "san", "name", "reason"),
    [
        # directoryName (RFC 5280 4.2.1.10, 7.1): an RDN prefix; case and spaces do not matter
        ({"permitted": [ACME]}, None, LEAF_NAME, None),
        ({"permitted": [ACME]}, None, _names((ORG, " acme "), (CN, "x")), None),
        ({"excluded": [ACME]}, None, _names((ORG, "Acme")), NC),
        ({"permitted": [ACME]}, None, _names((CN, "x"), (ORG, "ACME")), NC),
        ({"permitted": [ACME], "excluded": [ACME]}, None, LEAF_NAME, NC),  # excluded wins
        # dNSName: the name and its subdomains; a leading dot means subdomains only
        ({"permitted": [DNS("acme.example")]}, [DNS("FW.Acme.Example")], LEAF_NAME, None),
        ({"permitted": [DNS(".acme.example")]}, [DNS("acme.example")], LEAF_NAME, NC),
        ({"permitted": [DNS("acme.example")]}, [DNS("evilacme.example")], LEAF_NAME, NC),
        ({"excluded": [DNS("lab.acme.example")]}, [DNS("a.lab.acme.example")], LEAF_NAME, NC),
        ({"permitted": [DNS("acme.example")]}, None, LEAF_NAME, None),  # no name of that form
        # rfc822Name: a mailbox, a host or (leading dot) a domain; also emailAddress in the DN
        ({"permitted": [MAIL("acme.example")]}, [MAIL("fw@acme.example")], LEAF_NAME, None),
        ({"permitted": [MAIL(".acme.example")]}, [MAIL("fw@acme.example")], LEAF_NAME, NC),
        ({"excluded": [MAIL("fw@acme.example")]}, [MAIL("FW@acme.example")], LEAF_NAME, NC),
        (
            {"permitted": [MAIL("acme.example")]},
            None,
            _names((CN, "x"), (EMAIL, "a@evil.example")),
            NC,
        ),
        # iPAddress and the host of a URI
        ({"permitted": [_ip("10.0.0.0/8")]}, [_ip("10.1.2.3")], LEAF_NAME, None),
        ({"permitted": [_ip("10.0.0.0/8")]}, [_ip("192.0.2.1")], LEAF_NAME, NC),
        (
            {"permitted": [URI(".acme.example")]},
            [URI("https://fw.acme.example/x")],
            LEAF_NAME,
            None,
        ),
        ({"permitted": [URI("acme.example")]}, [URI("https://evil.example/")], LEAF_NAME, NC),
        # a constrained form this charger cannot evaluate refuses when the leaf uses it
        (
            {"permitted": [x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4"))]},
            [x509.RegisteredID(x509.ObjectIdentifier("1.2.3.5"))],
            LEAF_NAME,
            NC,
        ),
    ],
)
def test_name_constraints(
    constraints: dict[str, list[x509.GeneralName]],
    san: list[x509.GeneralName] | None,
    name: x509.Name,
    reason: str | None,
) -> None:
    got = _constrained(constraints.get("permitted"), constraints.get("excluded"), san, name)
    assert got == reason


@pytest.mark.parametrize("defect", ["ca-without-keycertsign", "leaf-unknown-critical-extension"])
def test_the_server_check_of_a_station_certificate_follows_rfc5280(defect: str) -> None:
    """Security profile 3 (crypto.tls.check_station_certificate) runs the same path check."""
    ca_key, station_key = new_key(), new_key()
    usage = key_usage(digital_signature=True, crl_sign=True)
    ca = ca_certificate(ca_key, usage=usage if defect.startswith("ca-") else None)
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.7"), b"")
    extra = [(odd, True)] if defect.startswith("leaf-") else []
    cert = station_certificate(station_key.public_key(), ca, ca_key, "CP-9", extra=extra)
    with pytest.raises(CertificatePathRefused) as e:
        check_station_certificate(cert, [ca], "CP-9", now=AT)
    assert e.value.reason == ("anchor" if defect.startswith("ca-") else "critical-extension")
    good = station_certificate(station_key.public_key(), ca_certificate(ca_key), ca_key, "CP-9")
    assert check_station_certificate(good, [ca_certificate(ca_key)], "CP-9", now=AT)
