"""RFC 5280 path validation in one pure function: bytes and a time in, a verified path or one
exception type with a reason out.

Two profiles use it.  :data:`FIRMWARE_SIGNING`: OCPP 2.0.1 L01 wants the firmware-signing
certificate issued *directly* by a ManufacturerRootCertificate, so the path is always
anchor -> leaf; every firmware decision (UpdateFirmware, secure boot, ``release verify``) goes
through :func:`verify_signing_path`.  :data:`STATION_CERTIFICATE`: the station's check of a
certificate chain sent with CertificateSigned (OCPP A02).  Both raise
:class:`~chargeward.errors.CertificatePathRefused` with a reason code::

    path = verify_signing_path(leaf_pem, [root_der], at=now)
    path.anchor.subject == path.leaf.issuer
    # -> True

Two engines must both accept (ADR 0021):

1. the checks below, written against RFC 5280 §6.1: every CA on the path is a CA (§4.2.1.9)
   allowed to sign certificates (§4.2.1.3) whose pathLenConstraint holds, no certificate
   carries a critical extension this module does not process (§4.2), each CA's name
   constraints hold for the names below it (§4.2.1.10, every name form RFC 5280 names), all
   are valid at ``at`` (§4.1.2.5), every signature verifies, and the leaf has the profile's
   shape (not a CA, digitalSignature, the profile's extended key usage);
2. ``cryptography.x509.verification`` (a ``PolicyBuilder`` with the profile's depth and an
   extension policy for its leaf), skipped only for a path whose name constraints use a form
   that library does not process (directoryName, rfc822Name, URI): engine 1 decides those alone.

Revocation is the caller's (a CRL is state, not path):
``pki.verify_firmware_signing_certificate`` checks it after the path.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from chargeward.errors import CertificatePathRefused, InvalidValue, MisuseError
from chargeward.limits import DEFAULT_FORMAT_LIMITS

# RFC 5280 4.2: the extensions each engine processes; any other one marked critical refuses.
_LEAF_UNDERSTOOD = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
)
_CA_UNDERSTOOD = _LEAF_UNDERSTOOD | {ExtensionOID.NAME_CONSTRAINTS}
# Name forms cryptography's verifier applies constraints to; others make it refuse the anchor.
_LIBRARY_NAME_FORMS = (x509.DNSName, x509.IPAddress)
_PATH_TOKEN = object()
_USAGE_NAMES = {
    ExtendedKeyUsageOID.CODE_SIGNING: "code signing",
    ExtendedKeyUsageOID.CLIENT_AUTH: "client authentication",
}
_T = TypeVar("_T", bound=x509.ExtensionType)


@dataclass(frozen=True)
class Profile:
    """What a leaf is for, and how many intermediate CAs may stand between it and an anchor."""

    leaf: str  # how refusals name the leaf
    anchor: str  # how refusals name the anchor
    usage: x509.ObjectIdentifier  # the extended key usage the leaf must allow (RFC 5280 4.2.1.12)
    usage_required: bool  # whether the leaf must carry an extendedKeyUsage at all
    max_intermediates: int  # 0: issued directly by an anchor
    not_issued: str  # the refusal when no anchor issued the path
    ec_only: bool = True  # OCPP's ECDSA keys; vendor firmware may be signed with RSA too


# OCPP 2.0.1 L01: issued directly by a ManufacturerRootCertificate; an EKU is optional.
FIRMWARE_SIGNING = Profile(
    leaf="signing certificate",
    anchor="the issuing root",
    usage=ExtendedKeyUsageOID.CODE_SIGNING,
    usage_required=False,
    max_intermediates=0,
    not_issued="signing certificate is not issued by an installed root",
)
# A vendor's own firmware-signing certificate under the vendor root registered for a model
# (ADR 0041): OCPP 2.0.1 L01 allows ECDSA or RSA signatures.
VENDOR_SIGNING = replace(FIRMWARE_SIGNING, ec_only=False)
# OCPP 2.0.1 A02: a ChargingStationCertificate (TLS client) under the charger CA or a CSMS root.
STATION_CERTIFICATE = Profile(
    leaf="certificate",
    anchor="the issuing CA",
    usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    usage_required=True,
    max_intermediates=3,
    not_issued="the certificate chain does not lead to a trusted CA",
)


@dataclass(frozen=True)
class VerifiedPath:
    """A verified path ``leaf`` <- ``intermediates`` <- ``anchor`` (only this module makes one)."""

    leaf: x509.Certificate
    anchor: x509.Certificate
    anchor_index: int  # position of ``anchor`` in the anchors passed in
    intermediates: tuple[x509.Certificate, ...] = ()
    _token: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._token is not _PATH_TOKEN:
            raise MisuseError("VerifiedPath is only made by this module's verify functions")


def _refuse(reason: str, message: str) -> CertificatePathRefused:
    return CertificatePathRefused(message, reason=reason)


def _parse(data: bytes, what: str) -> list[x509.Certificate]:
    if len(data) > DEFAULT_FORMAT_LIMITS.certificate_bytes:
        raise _refuse(
            "malformed", f"{what} is larger than {DEFAULT_FORMAT_LIMITS.certificate_bytes} bytes"
        )
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
        for cert in certs:
            list(cert.extensions)  # duplicate or undecodable extensions raise here
    except ValueError as e:
        raise _refuse("malformed", f"{what} is not a well-formed X.509 certificate") from e
    return certs


def _utc(at: dt.datetime) -> dt.datetime:
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


def _extension(cert: x509.Certificate, kind: type[_T]) -> _T | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_validity(cert: x509.Certificate, at: dt.datetime, what: str) -> None:
    """RFC 5280 4.1.2.5: valid from notBefore to notAfter, both inclusive."""
    if at < cert.not_valid_before_utc:
        when = f"valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    elif at > cert.not_valid_after_utc:
        when = f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    else:
        return
    raise _refuse("validity", f"{what} is not valid at this time ({when})")


def _check_critical(
    cert: x509.Certificate, understood: frozenset[x509.ObjectIdentifier], what: str
) -> None:
    """RFC 5280 4.2: a critical extension the verifier does not process refuses the path."""
    for ext in cert.extensions:
        if ext.critical and ext.oid not in understood:
            raise _refuse(
                "critical-extension",
                f"{what} has a critical extension this charger does not process "
                f"({ext.oid.dotted_string})",
            )


def check_leaf_profile(leaf: x509.Certificate, at: dt.datetime, profile: Profile) -> None:
    """The leaf's profile at ``at``, without looking at its issuer.

    Raises :class:`CertificatePathRefused` (reasons ``validity``, ``critical-extension``,
    ``leaf-profile``).
    """
    what = profile.leaf
    _check_validity(leaf, _utc(at), what)
    _check_critical(leaf, _LEAF_UNDERSTOOD, what)
    bc = _extension(leaf, x509.BasicConstraints)
    if bc is None:  # RFC 5280 4.2.1.9; OCPP profile: present and cA false
        raise _refuse("leaf-profile", f"{what} lacks basicConstraints")
    if bc.ca:
        raise _refuse("leaf-profile", f"{what} is a CA certificate")
    ku = _extension(leaf, x509.KeyUsage)
    if ku is None or not ku.digital_signature:  # RFC 5280 4.2.1.3
        raise _refuse("leaf-profile", f"{what} lacks digitalSignature key usage")
    if ku.key_cert_sign:
        raise _refuse("leaf-profile", f"{what} may sign certificates (keyCertSign)")
    eku = _extension(leaf, x509.ExtendedKeyUsage)
    if eku is None and profile.usage_required:
        raise _refuse("leaf-profile", f"{what} has no extendedKeyUsage")
    if eku is not None and profile.usage not in eku:  # RFC 5280 4.2.1.12
        raise _refuse("leaf-profile", f"{what} is not for {_USAGE_NAMES[profile.usage]}")
    if profile.ec_only and not isinstance(leaf.public_key(), ec.EllipticCurvePublicKey):  # OCPP
        raise _refuse("leaf-profile", f"{what} does not hold an EC key")


def check_signing_profile(leaf: x509.Certificate, at: dt.datetime) -> None:
    """The firmware-signing leaf profile (:data:`FIRMWARE_SIGNING`) at ``at``."""
    check_leaf_profile(leaf, at, FIRMWARE_SIGNING)


def _check_ca(ca: x509.Certificate, at: dt.datetime, what: str, reason: str, below: int) -> None:
    """RFC 5280 4.2.1.9 and 4.2.1.3: a CA allowed to sign certificates, valid at ``at``, whose
    pathLenConstraint allows the ``below`` intermediate CAs under it (6.1.4 l, m)."""
    _check_critical(ca, _CA_UNDERSTOOD, what)
    bc = _extension(ca, x509.BasicConstraints)
    if bc is None or not bc.ca:
        raise _refuse(reason, f"{what} is not a CA certificate (basicConstraints)")
    ku = _extension(ca, x509.KeyUsage)
    if ku is None or not ku.key_cert_sign:
        raise _refuse(reason, f"{what} may not sign certificates (no keyCertSign)")
    if bc.path_length is not None and below > bc.path_length:
        raise _refuse(reason, f"{what} allows {bc.path_length} intermediate CAs below it")
    _check_validity(ca, at, what)


def _signed_by(leaf: x509.Certificate, anchor: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(anchor)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


# -- name constraints (RFC 5280 4.2.1.10) ------------------------------------------------------


def _norm(value: object) -> object:
    """RFC 4518-like matching: case and runs of spaces do not matter in string values."""
    return " ".join(value.split()).casefold() if isinstance(value, str) else value


def _rdn_key(rdn: x509.RelativeDistinguishedName) -> frozenset[tuple[str, object]]:
    return frozenset((a.oid.dotted_string, _norm(a.value)) for a in rdn)


def _dn_within(name: x509.Name, base: x509.Name) -> bool:
    """The RDN sequence of ``base`` is a prefix of ``name``'s (RFC 5280 7.1)."""
    have, want = list(name.rdns), list(base.rdns)
    return len(want) <= len(have) and all(
        _rdn_key(h) == _rdn_key(w) for h, w in zip(have, want, strict=False)
    )


def _host_within(host: str, base: str) -> bool:
    """dNSName and URI hosts: ``base`` and its subdomains; ``.base`` only subdomains."""
    host, base = host.rstrip(".").casefold(), base.rstrip(".").casefold()
    if not base:
        return True
    if base.startswith("."):
        return host.endswith(base)
    return host == base or host.endswith("." + base)


def _email_within(mailbox: str, base: str) -> bool:
    """rfc822Name: a mailbox, all mailboxes at a host, or (leading dot) in a domain."""
    if "@" in base:
        return mailbox.casefold() == base.casefold()
    host = mailbox.rpartition("@")[2]
    if base.startswith("."):
        return host.casefold().endswith(base.casefold())
    return host.casefold() == base.casefold()


def _ip_within(address: object, base: object) -> bool:
    return (
        isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
        and isinstance(base, ipaddress.IPv4Network | ipaddress.IPv6Network)
        and address.version == base.version
        and address in base
    )


def _uri_host(uri: str) -> str | None:
    try:
        return urlsplit(uri).hostname
    except ValueError:
        return None


def _within(name: x509.GeneralName, base: x509.GeneralName) -> bool:
    """Is ``name`` inside the subtree ``base`` (both of one form)?"""
    if isinstance(name, x509.DirectoryName) and isinstance(base, x509.DirectoryName):
        return _dn_within(name.value, base.value)
    if isinstance(name, x509.DNSName) and isinstance(base, x509.DNSName):
        return _host_within(name.value, base.value)
    if isinstance(name, x509.RFC822Name) and isinstance(base, x509.RFC822Name):
        return _email_within(name.value, base.value)
    if isinstance(name, x509.IPAddress) and isinstance(base, x509.IPAddress):
        return _ip_within(name.value, base.value)
    if isinstance(name, x509.UniformResourceIdentifier) and isinstance(
        base, x509.UniformResourceIdentifier
    ):
        host = _uri_host(name.value)
        return host is not None and _host_within(host, base.value)
    return False


_PROCESSED_FORMS = (
    x509.DirectoryName,
    x509.DNSName,
    x509.RFC822Name,
    x509.IPAddress,
    x509.UniformResourceIdentifier,
)


def _names(leaf: x509.Certificate) -> list[x509.GeneralName]:
    """The names constraints apply to: subject DN, emailAddress attributes, subjectAltName."""
    names: list[x509.GeneralName] = []
    if leaf.subject.rdns:
        names.append(x509.DirectoryName(leaf.subject))
    for attribute in leaf.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        if isinstance(attribute.value, str):
            names.append(x509.RFC822Name(attribute.value))
    san = _extension(leaf, x509.SubjectAlternativeName)
    if san is not None:
        names.extend(san)
    return names


def _check_name_constraints(ca: x509.Certificate, cert: x509.Certificate, owner: str) -> None:
    """RFC 5280 4.2.1.10: ``ca``'s permitted and excluded subtrees hold for ``cert``'s names."""
    nc = _extension(ca, x509.NameConstraints)
    if nc is None:
        return
    permitted, excluded = list(nc.permitted_subtrees or ()), list(nc.excluded_subtrees or ())
    for name in _names(cert):
        form = type(name)
        shown = f"{form.__name__} {getattr(name, 'value', name)}"
        if not isinstance(name, _PROCESSED_FORMS):
            if any(isinstance(b, form) for b in permitted + excluded):
                raise _refuse(
                    "name-constraints",
                    f"{owner} constrains {form.__name__} names, which cannot be checked here",
                )
            continue
        if any(_within(name, base) for base in excluded if isinstance(base, form)):
            raise _refuse("name-constraints", f"{shown} is in a subtree excluded by {owner}")
        bases = [base for base in permitted if isinstance(base, form)]
        if bases and not any(_within(name, base) for base in bases):
            raise _refuse(
                "name-constraints", f"{shown} is outside the permitted subtrees of {owner}"
            )


# -- engine 2: cryptography's verifier -------------------------------------------------------


def _ee_policy(profile: Profile) -> ExtensionPolicy:
    """The leaf of ``profile``: the validators of :func:`check_leaf_profile` (a firmware
    signer is no TLS certificate, and a station certificate has no subjectAltName, so neither
    fits the web PKI's end-entity defaults)."""

    def basic_constraints(_p: Policy, _c: x509.Certificate, bc: x509.BasicConstraints) -> None:
        if bc.ca:
            raise InvalidValue(f"{profile.leaf} is a CA certificate")

    def key_usage(_p: Policy, _c: x509.Certificate, ku: x509.KeyUsage) -> None:
        if not ku.digital_signature or ku.key_cert_sign:
            raise InvalidValue(f"{profile.leaf} key usage is not for signing")

    def usage(_p: Policy, _c: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
        if (eku is None and profile.usage_required) or (eku and profile.usage not in eku):
            raise InvalidValue(f"{profile.leaf} is not for {_USAGE_NAMES[profile.usage]}")

    return (
        ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, basic_constraints)
        .require_present(x509.KeyUsage, Criticality.AGNOSTIC, key_usage)
        .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, usage)
    )


def _library_can_check(ca: x509.Certificate) -> bool:
    nc = _extension(ca, x509.NameConstraints)
    if nc is None:
        return True
    subtrees = [*(nc.permitted_subtrees or ()), *(nc.excluded_subtrees or ())]
    return all(isinstance(base, _LIBRARY_NAME_FORMS) for base in subtrees)


def _library_verify(path: Sequence[x509.Certificate], at: dt.datetime, profile: Profile) -> None:
    verifier = (
        PolicyBuilder()
        .store(Store([path[-1]]))
        .time(at)
        .max_chain_depth(profile.max_intermediates)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_ee_policy(profile)
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(path[0], list(path[1:-1]))
    except VerificationError as e:
        raise _refuse("policy", f"path validation failed: {e}") from e


# -- the decision ----------------------------------------------------------------------------


def _candidates(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    limit: int,
) -> list[tuple[list[x509.Certificate], int]]:
    """Every path ``[leaf, *cas, anchor]`` (with the anchor's index) whose signatures verify,
    through at most ``limit`` of ``intermediates``, shortest first."""
    found: list[tuple[list[x509.Certificate], int]] = []
    layer: list[list[x509.Certificate]] = [[leaf]]
    for depth in range(limit + 1):
        following: list[list[x509.Certificate]] = []
        for chain in layer:
            current = chain[-1]
            for index, anchor in enumerate(anchors):
                if anchor.subject == current.issuer and _signed_by(current, anchor):
                    found.append(([*chain, anchor], index))
            if depth < limit:
                following += [
                    [*chain, ca]
                    for ca in intermediates
                    if all(ca is not c for c in chain)
                    and ca.subject == current.issuer
                    and _signed_by(current, ca)
                ]
        layer = following
    return found


def _check_path(path: Sequence[x509.Certificate], at: dt.datetime, profile: Profile) -> None:
    """Engine 1 over ``[leaf, *intermediates, anchor]``, then engine 2 where it can."""
    cas = path[1:]
    for below, ca in enumerate(cas):
        what, reason = (
            (profile.anchor, "anchor")
            if ca is cas[-1]
            else ("an intermediate CA certificate", "intermediate")
        )
        _check_ca(ca, at, what, reason, below)
        for subject in path[: below + 1]:
            if subject is not path[0] and subject.subject == subject.issuer:
                continue  # RFC 5280 6.1.3 b: self-issued intermediates are exempt
            _check_name_constraints(ca, subject, what)
    if all(_library_can_check(ca) for ca in cas):
        _library_verify(path, at, profile)


def verify_path(
    leaf: bytes,
    anchors: Sequence[bytes],
    *,
    at: dt.datetime,
    profile: Profile,
    intermediates: Sequence[bytes] = (),
) -> VerifiedPath:
    """Is ``leaf`` (PEM or DER) a certificate of ``profile`` that chains, through at most
    ``profile.max_intermediates`` of ``intermediates``, to one of ``anchors`` at time ``at``?

    Returns the :class:`VerifiedPath`.  Raises
    :class:`~chargeward.errors.CertificatePathRefused` with a reason code: ``malformed``,
    ``validity``, ``critical-extension``, ``leaf-profile``, ``issuer`` (no anchor signed the
    path), ``anchor`` or ``intermediate`` (a CA that may not issue: not a CA, no keyCertSign,
    pathLenConstraint), ``name-constraints`` or ``policy`` (refused by cryptography's
    verifier).  When several paths exist, the first that passes wins (shortest first);
    otherwise the first refusal is reported.
    """
    at = _utc(at)
    certs = _parse(leaf, profile.leaf)
    if len(certs) != 1:
        raise _refuse("malformed", f"expected one {profile.leaf}, got {len(certs)}")
    cert = certs[0]
    if not anchors:
        raise _refuse("issuer", "no trust anchor installed")
    if (
        len(anchors) > DEFAULT_FORMAT_LIMITS.path_anchors
        or len(intermediates) > DEFAULT_FORMAT_LIMITS.path_intermediates
    ):
        raise _refuse("malformed", "too many certificates offered")
    check_leaf_profile(cert, at, profile)
    roots = [_only(_parse(a, "trust anchor"), "trust anchor") for a in anchors]
    cas = [_only(_parse(c, "intermediate CA"), "intermediate CA") for c in intermediates]
    refusal: CertificatePathRefused | None = None
    for path, index in _candidates(cert, cas, roots, profile.max_intermediates):
        try:
            _check_path(path, at, profile)
        except CertificatePathRefused as e:
            refusal = refusal or e
            continue
        return VerifiedPath(cert, path[-1], index, tuple(path[1:-1]), _token=_PATH_TOKEN)
    if refusal is not None:
        raise refusal
    raise _refuse("issuer", profile.not_issued)


def _only(certs: list[x509.Certificate], what: str) -> x509.Certificate:
    if len(certs) != 1:
        raise _refuse("malformed", f"expected one {what} per entry, got {len(certs)}")
    return certs[0]


def verify_signing_path(leaf: bytes, anchors: Sequence[bytes], *, at: dt.datetime) -> VerifiedPath:
    """Is ``leaf`` (PEM or DER) a firmware-signing certificate issued directly by one of
    ``anchors`` (the installed ManufacturerRootCertificates, PEM or DER) at time ``at``?

    :func:`verify_path` with :data:`FIRMWARE_SIGNING`; a PEM holding more than one
    certificate is refused (OCPP L01: no intermediates).

        verify_signing_path(leaf_pem, [root_der], at=now).anchor_index
        # -> 0
    """
    if len(_parse(leaf, "signing certificate")) != 1:
        raise _refuse(
            "issuer",
            "the signing certificate must be issued directly by a ManufacturerRootCertificate: "
            "intermediates are not allowed",
        )
    if not anchors:
        raise _refuse("issuer", "no ManufacturerRootCertificate installed")
    return verify_path(leaf, anchors, at=at, profile=FIRMWARE_SIGNING)
