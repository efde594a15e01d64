"""Manufacturer root rotation: a held root endorses its successor with a link certificate.

A charger changes its ManufacturerRootCertificates only through the trust it already has
(docs/adr/0018-manufacturer-root-rotation.md).  The old root key issues a *link certificate*
over the new root's subject and public key: the "NewWithOld" certificate of RFC 4210 §4.4
(root CA key update), a cross-certificate in the sense of RFC 5280 §3.2.  The new root travels
to the charger together with it, as one PEM bundle in InstallCertificate (new root first)::

    link = issue_link_certificate(old_signer, old_root, new_root)
    pem = endorsed_root_bundle(new_root, [link])
    root, links = root_and_links(load_certificates(pem.encode()))
    check_root_endorsement(root, links, held_roots, now=now,
                           revoked_serials=serials).endorser == old_root
    # -> True

The charger keeps only the new root; the link certificate is the proof it was shown.  A link
certificate is a CA certificate (basicConstraints CA, keyUsage keyCertSign): a firmware-signing
certificate, which a held root also issued, never endorses a root, or whoever holds a signing
key could promote it to a root.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from chargeward.crypto.keys import Signer
from chargeward.crypto.pki import (
    CA_KEY_USAGE,
    _is_ca,
    _sign_certificate,
    certificate_pem,
    check_root_certificate,
    is_issued_by,
    key_matches_certificate,
)
from chargeward.errors import ConfigError, RevokedCertificate, UntrustedCertificate
from chargeward.limits import DEFAULT_FORMAT_LIMITS, FormatLimits

# RFC 5280 §4.2: a certificate with a critical extension we do not process is refused.
_KNOWN_CRITICAL = frozenset({ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE})
_BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Endorsement:
    """``link``, issued by the held root ``endorser``, certifies the new ``root``'s key."""

    root: x509.Certificate
    link: x509.Certificate
    endorser: x509.Certificate


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_id(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def issue_link_certificate(
    old_signer: Signer,
    old_root: x509.Certificate,
    new_root: x509.Certificate,
    *,
    days: int | None = None,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """The old root key's endorsement of ``new_root`` (RFC 4210 §4.4 NewWithOld).

    Subject and public key are the new root's, the issuer is the old root; the link is a CA
    certificate (keyCertSign, cRLSign) valid from now until the first of both roots' ends
    (or ``days``).  Raises :class:`UntrustedCertificate` (a root that is not a valid
    self-signed CA, a key that does not match ``old_root``, the same key twice) or
    :class:`ConfigError` (nothing of the validity left).
    """
    now = now or dt.datetime.now(dt.UTC)
    if not key_matches_certificate(old_signer.public_key(), old_root):
        raise UntrustedCertificate("the old root key does not match the old root certificate")
    for what, root in (("old", old_root), ("new", new_root)):
        try:
            check_root_certificate(root, now=now)
        except UntrustedCertificate as e:
            raise UntrustedCertificate(f"the {what} root: {e}") from e
    if _spki(new_root) == _spki(old_root):
        raise UntrustedCertificate("the new root has the old root's key: nothing to endorse")
    ends = [old_root.not_valid_after_utc, new_root.not_valid_after_utc]
    if days is not None:
        ends.append(now + dt.timedelta(days=days))
    end = min(ends)
    start = max(now - _BACKDATE, new_root.not_valid_before_utc)
    if end <= start:
        raise ConfigError(f"a link certificate would not be valid after {now:%Y-%m-%d}")
    builder = (
        x509.CertificateBuilder()
        .subject_name(new_root.subject)
        .issuer_name(old_root.subject)
        .public_key(new_root.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            CA_KEY_USAGE,
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier(_key_id(new_root)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(_key_id(old_root), None, None), critical=False)
    )
    return _sign_certificate(builder, old_signer)


def endorsed_root_bundle(new_root: x509.Certificate, links: Sequence[x509.Certificate]) -> str:
    """The PEM bundle InstallCertificate carries: the new root, then its link certificates."""
    return "".join(certificate_pem(c) for c in (new_root, *links))


def root_and_links(
    certs: Sequence[x509.Certificate], *, limits: FormatLimits = DEFAULT_FORMAT_LIMITS
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """Split a bundle into the offered root (first) and its link certificates.

    Raises :class:`UntrustedCertificate` for an empty bundle or more than ``limits.root_links``
    links (one per root a fleet may still hold).
    """
    if not certs:
        raise UntrustedCertificate("no certificate")
    if len(certs) > 1 + limits.root_links:
        raise UntrustedCertificate(
            f"{len(certs) - 1} link certificates (at most {limits.root_links} come with a root)"
        )
    return certs[0], list(certs[1:])


def _valid_at(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _usable_endorser(root: x509.Certificate, now: dt.datetime) -> bool:
    try:
        check_root_certificate(root, now=now)  # an expired held root endorses nothing
    except UntrustedCertificate:
        return False
    return True


def _check_link(
    link: x509.Certificate,
    new_root: x509.Certificate,
    held_roots: Sequence[x509.Certificate],
    now: dt.datetime,
) -> x509.Certificate:
    """The held root that issued ``link`` for ``new_root``; UntrustedCertificate otherwise."""
    if link.subject != new_root.subject:
        raise UntrustedCertificate("the link certificate names another subject")
    if _spki(link) != _spki(new_root):
        raise UntrustedCertificate("the link certificate certifies another key")
    try:
        is_ca = _is_ca(link)
        usage = link.extensions.get_extension_for_class(x509.KeyUsage).value
        unknown = [
            e.oid.dotted_string
            for e in link.extensions
            if e.critical and e.oid not in _KNOWN_CRITICAL
        ]
    except x509.ExtensionNotFound as e:
        raise UntrustedCertificate("the link certificate has no keyUsage") from e
    except ValueError as e:  # duplicate or malformed extensions
        raise UntrustedCertificate(f"the link certificate's extensions are malformed: {e}") from e
    if not is_ca or not usage.key_cert_sign:
        raise UntrustedCertificate("the link certificate is not a CA certificate (keyCertSign)")
    if unknown:
        raise UntrustedCertificate(
            f"the link certificate has unknown critical extensions {unknown}"
        )
    if not _valid_at(link, now):
        raise UntrustedCertificate("the link certificate is not valid at this time")
    for root in held_roots:
        if is_issued_by(link, root) and _usable_endorser(root, now):
            return root
    raise UntrustedCertificate("the link certificate is not issued by an installed root")


def check_root_endorsement(
    new_root: x509.Certificate,
    links: Sequence[x509.Certificate],
    held_roots: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    revoked_serials: frozenset[int] = frozenset(),
) -> Endorsement:
    """Is ``new_root`` endorsed by one of ``held_roots`` through one of ``links``?

    ``new_root`` was checked as a root already (:func:`check_root_certificate`);
    ``revoked_serials`` are those of the CRLs the charger holds (a held root revokes a link
    it issued like any certificate).  Raises :class:`UntrustedCertificate` with the reasons,
    or :class:`RevokedCertificate` when the only endorsing link is revoked.
    """
    if not links:
        raise UntrustedCertificate(
            "not endorsed by an installed root: no link certificate comes with it"
        )
    problems: list[str] = []
    revoked: RevokedCertificate | None = None
    for link in links:
        try:
            endorser = _check_link(link, new_root, held_roots, now)
        except UntrustedCertificate as e:
            problems.append(str(e))
            continue
        if link.serial_number in revoked_serials:
            revoked = RevokedCertificate(f"link certificate serial {link.serial_number:x} revoked")
            continue
        return Endorsement(new_root, link, endorser)
    if revoked is not None:
        raise revoked
    raise UntrustedCertificate("not endorsed by an installed root: " + "; ".join(problems))
