"""Crafted firmware-signing certificate paths for RFC 5280 path-validation tests.

Each :class:`Crafted` case is one anchor (a ManufacturerRootCertificate a charger might hold),
one signing certificate (leaf) and, where the case needs it, an intermediate, all valid at
:data:`AT` unless the case is about validity.  :func:`openssl_verify` asks the openssl CLI, an
independent implementation, for its verdict on the same path.  Keys are generated per call;
nothing here is a secret.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

AT = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)  # the validation time of every case
DAY = dt.timedelta(days=1)
# An extension no verifier knows, marked critical (RFC 5280 4.2: must be refused).
UNKNOWN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1.1")

Extension = tuple[x509.ExtensionType, bool]  # (value, critical)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_usage(**flags: bool) -> x509.KeyUsage:
    names = [
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ]
    return x509.KeyUsage(**{name: flags.get(name, False) for name in names})


def dn(*parts: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    """A name in the given RDN order (most significant first, as name constraints compare)."""
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in parts])


ROOT_NAME = dn((NameOID.ORGANIZATION_NAME, "ACME"), (NameOID.COMMON_NAME, "ACME Root CA"))
LEAF_NAME = dn((NameOID.ORGANIZATION_NAME, "ACME"), (NameOID.COMMON_NAME, "ACME Firmware"))


def make_certificate(
    subject: x509.Name,
    issuer: x509.Name,
    subject_key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    extensions: Sequence[Extension],
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(
            subject_key.public_key()
            if isinstance(subject_key, ec.EllipticCurvePrivateKey)
            else subject_key
        )
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for value, critical in extensions:
        builder = builder.add_extension(value, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def ca_certificate(
    key: ec.EllipticCurvePrivateKey,
    *,
    at: dt.datetime = AT,
    name: x509.Name = ROOT_NAME,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool = True,
    path_length: int | None = None,
    usage: x509.KeyUsage | None = None,
    extra: Sequence[Extension] = (),
) -> x509.Certificate:
    """A root (self-signed unless ``issuer``) with the profile of ``create_root_ca``."""
    issuer_name, issuer_key = issuer or (name, key)
    extensions: list[Extension] = [
        (x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), True),
        (usage or key_usage(key_cert_sign=True, crl_sign=True), True),
        (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
    ]
    if issuer is not None:
        extensions.append(
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False)
        )
    return make_certificate(
        name,
        issuer_name,
        key,
        issuer_key,
        [*extensions, *extra],
        not_before=at - 30 * DAY,
        not_after=at + 365 * DAY,
    )


def _ec(key: object) -> ec.EllipticCurvePublicKey:
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def signing_certificate(
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    name: x509.Name = LEAF_NAME,
    ca: bool = False,
    usage: x509.KeyUsage | None = None,
    extra: Sequence[Extension] = (),
    at: dt.datetime = AT,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """A firmware-signing leaf with the profile of ``issue_firmware_signing_certificate``."""
    extensions: list[Extension] = [
        (x509.BasicConstraints(ca=ca, path_length=None), True),
        (usage or key_usage(digital_signature=True), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False),
        (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
        # Names the issuer certificate's key even when another key signs (a forgery).
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(_ec(issuer.public_key())), False),
    ]
    return make_certificate(
        name,
        issuer.subject,
        key,
        issuer_key,
        [*extensions, *extra],
        not_before=at - DAY if not_before is None else not_before,
        not_after=at + 180 * DAY if not_after is None else not_after,
    )


def station_certificate(
    key: ec.EllipticCurvePublicKey,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    serial_number: str,
    *,
    organization: str = "ACME",
    extra: Sequence[Extension] = (),
    at: dt.datetime = AT,
) -> x509.Certificate:
    """A ChargingStationCertificate (CN = serial number, clientAuth) as ``_issue_leaf`` makes."""
    extensions: list[Extension] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (key_usage(digital_signature=True, key_agreement=True), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        (x509.SubjectKeyIdentifier.from_public_key(key), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(_ec(issuer.public_key())), False),
    ]
    name = dn((NameOID.ORGANIZATION_NAME, organization), (NameOID.COMMON_NAME, serial_number))
    return make_certificate(
        name,
        issuer.subject,
        key,
        issuer_key,
        [*extensions, *extra],
        not_before=at - DAY,
        not_after=at + 365 * DAY,
    )


@dataclass(frozen=True)
class Crafted:
    """One path: ``leaf`` (key ``leaf_key``) under ``anchor``, through ``intermediates``.

    ``path_valid`` is the RFC 5280 verdict (what openssl answers); ``ocpp_valid`` adds the
    OCPP firmware-signing profile (leaf not a CA, digitalSignature, no intermediates).
    ``reason`` is the refusal's reason code when ``ocpp_valid`` is False.
    """

    name: str
    anchor: x509.Certificate
    anchor_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    path_valid: bool
    ocpp_valid: bool
    reason: str | None = None
    intermediates: tuple[x509.Certificate, ...] = ()


def _permitted(*names: x509.GeneralName) -> Extension:
    return x509.NameConstraints(permitted_subtrees=list(names), excluded_subtrees=None), True


def _excluded(*names: x509.GeneralName) -> Extension:
    return x509.NameConstraints(permitted_subtrees=None, excluded_subtrees=list(names)), True


def crafted_cases(at: dt.datetime = AT) -> list[Crafted]:
    """The table: a good path and one path per deviation RFC 5280 or OCPP forbids, each
    (but the validity cases) valid at ``at``."""
    root_key, leaf_key = new_key(), new_key()

    def ca(key: ec.EllipticCurvePrivateKey, **kw: Any) -> x509.Certificate:
        return ca_certificate(key, at=at, **kw)

    def leaf_under(
        issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, **kw: Any
    ) -> x509.Certificate:
        return signing_certificate(leaf_key, issuer, key, at=at, **kw)

    root = ca(root_key)
    acme = x509.DirectoryName(dn((NameOID.ORGANIZATION_NAME, "ACME")))
    acme_lab = x509.DirectoryName(
        dn((NameOID.ORGANIZATION_NAME, "ACME"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "Lab"))
    )
    mallory = dn((NameOID.ORGANIZATION_NAME, "MALLORY"), (NameOID.COMMON_NAME, "ACME Firmware"))
    lab_leaf = dn(
        (NameOID.ORGANIZATION_NAME, "ACME"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "Lab"),
        (NameOID.COMMON_NAME, "ACME Lab Firmware"),
    )
    unknown = x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00")

    def case(
        name: str,
        anchor: x509.Certificate = root,
        leaf: x509.Certificate | None = None,
        *,
        path_valid: bool,
        reason: str | None,
        ocpp_valid: bool | None = None,
        intermediates: tuple[x509.Certificate, ...] = (),
        key: ec.EllipticCurvePrivateKey = root_key,
    ) -> Crafted:
        return Crafted(
            name,
            anchor,
            key,
            leaf or leaf_under(anchor, key),
            leaf_key,
            path_valid,
            path_valid if ocpp_valid is None else ocpp_valid,
            reason,
            intermediates,
        )

    def constrained(*extra: Extension) -> x509.Certificate:
        return ca(root_key, extra=extra)

    no_keycertsign = ca(root_key, usage=key_usage(digital_signature=True, crl_sign=True))
    not_ca = ca(root_key, ca=False, usage=key_usage(digital_signature=True, key_cert_sign=True))
    inside, outside = constrained(_permitted(acme)), constrained(_permitted(acme))
    excluding = constrained(_excluded(acme_lab))
    dns_only = constrained(_permitted(x509.DNSName("firmware.acme.example")))
    inter_key = new_key()
    intermediate = ca(
        inter_key,
        name=dn((NameOID.ORGANIZATION_NAME, "ACME"), (NameOID.COMMON_NAME, "ACME Sub CA")),
        issuer=(root.subject, root_key),
    )
    forger = new_key()
    return [
        case("good", path_valid=True, reason=None),
        case(
            "inside-permitted-subtree",
            inside,
            leaf_under(inside, root_key),
            path_valid=True,
            reason=None,
        ),
        case("anchor-without-keycertsign", no_keycertsign, path_valid=False, reason="anchor"),
        case("anchor-not-a-ca", not_ca, path_valid=False, reason="anchor"),
        case(
            "leaf-unknown-critical-extension",
            leaf=leaf_under(root, root_key, extra=[(unknown, True)]),
            path_valid=False,
            reason="critical-extension",
        ),
        case(
            "leaf-outside-permitted-subtree",
            outside,
            leaf_under(outside, root_key, name=mallory),
            path_valid=False,
            reason="name-constraints",
        ),
        case(
            "leaf-in-excluded-subtree",
            excluding,
            leaf_under(excluding, root_key, name=lab_leaf),
            path_valid=False,
            reason="name-constraints",
        ),
        case(
            "leaf-san-outside-permitted-dns",
            dns_only,
            leaf_under(
                dns_only,
                root_key,
                extra=[(x509.SubjectAlternativeName([x509.DNSName("evil.example")]), False)],
            ),
            path_valid=False,
            reason="name-constraints",
        ),
        case(
            "leaf-expired",
            leaf=leaf_under(root, root_key, not_before=at - 90 * DAY, not_after=at - DAY),
            path_valid=False,
            reason="validity",
        ),
        case(
            "leaf-not-yet-valid",
            leaf=leaf_under(root, root_key, not_before=at + DAY, not_after=at + 90 * DAY),
            path_valid=False,
            reason="validity",
        ),
        case(
            "leaf-is-a-ca",
            leaf=leaf_under(root, root_key, ca=True),
            path_valid=True,
            ocpp_valid=False,
            reason="leaf-profile",
        ),
        case(
            "leaf-without-digital-signature",
            leaf=leaf_under(root, root_key, usage=key_usage(key_agreement=True)),
            path_valid=True,
            ocpp_valid=False,
            reason="leaf-profile",
        ),
        case(
            "intermediate-present",
            leaf=leaf_under(intermediate, inter_key),
            path_valid=False,  # openssl runs with -verify_depth 0: OCPP allows no intermediate
            reason="issuer",
            intermediates=(intermediate,),
        ),
        case(
            "wrong-issuer-signature",
            leaf=leaf_under(root, forger),
            path_valid=False,
            reason="issuer",
        ),
    ]


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def openssl_verify(case: Crafted, workdir: Path, *, at: dt.datetime = AT) -> tuple[bool, str]:
    """The openssl CLI's verdict on ``case`` at ``at``: (valid, its output line).

    RFC 5280 checks in strict mode (-x509_strict), no purpose (OCPP's firmware-signing
    profile is not one of openssl's), the anchor trusted as given (-partial_chain) and no
    intermediate CA allowed (-verify_depth 0, OCPP).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    anchor, leaf, untrusted = workdir / "anchor.pem", workdir / "leaf.pem", workdir / "inter.pem"
    anchor.write_bytes(pem(case.anchor))
    leaf.write_bytes(pem(case.leaf))
    args = [
        "openssl",
        "verify",
        "-x509_strict",
        "-partial_chain",
        "-purpose",
        "any",
        "-verify_depth",
        "0",
        "-attime",
        str(int(at.timestamp())),
        "-CAfile",
        str(anchor),
    ]
    if case.intermediates:
        untrusted.write_bytes(pem(*case.intermediates))
        args += ["-untrusted", str(untrusted)]
    done = subprocess.run(
        [*args, str(leaf)], capture_output=True, text=True, timeout=30, check=False
    )
    output = (done.stdout + done.stderr).strip()
    return done.returncode == 0 and output.endswith(": OK"), output
