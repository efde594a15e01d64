"""The charger's certificate store: ManufacturerRootCertificates (OCPP M03-M05) and CRLs.

Trust decisions are made in :mod:`chargeward.crypto.pki`; this module reads and writes the
charger's secure storage around them::

    secure/roots.pem              installed ManufacturerRootCertificates (a PEM bundle)
    secure/crl/<issuer-key>.der   the newest CRL of each root, named by the SHA-256 of the
                                  root's public key (CRL numbers only order CRLs of one issuer)

    >>> state = StateDir(Path("charger-1"))
    >>> crl = apply_crl(state, der, now)        # doctest: +SKIP
    >>> serial in revoked_serials(state)        # doctest: +SKIP
    True
    >>> apply_published_crl(state, der, now)    # the CRL the TUF repository lists  # doctest: +SKIP
    >>> check_not_revoked(state, cert, now)     # again before installing  # doctest: +SKIP
    >>> install_certificate(state, "ManufacturerRootCertificate", pem, now).status  # doctest: +SKIP
    'Accepted'

Every write is atomic (temp file, fsync, rename), as everywhere on the charger's flash.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from chargeward.agent.state import StateDir, other
from chargeward.agent.storage import atomic_write
from chargeward.crypto.pki import (
    CertificateHashData,
    Crl,
    certificate_fingerprint,
    certificate_hash_data,
    certificate_pem,
    check_crl_progress,
    check_root_certificate,
    is_issued_by,
    load_certificate,
    load_certificates,
    verify_crl,
    verify_firmware_signing_certificate,
    verify_held_crl,
)
from chargeward.errors import (
    ChargewardError,
    IntegrityError,
    RepositoryRefused,
    RevokedCertificate,
    RollbackRefused,
    TransportError,
    TrustError,
    UntrustedCertificate,
)
from chargeward.ocpp.station import CertificateResult, InstalledCertificate

LOG = logging.getLogger("chargeward.agent.certificates")
MANUFACTURER_ROOT = "ManufacturerRootCertificate"
MAX_ROOTS = 10  # OCPP M05.FR.06: a full store answers Rejected
# OCPP 2.0.1 lists no security event for a changed trust store; this one's description
# ("security parameters, such as keys ..., were changed") is the closest.
TRUST_STORE_EVENT = "ReconfigurationOfSecurityParameters"


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- CRLs -----------------------------------------------------------------------------------


def _crl_dir(state: StateDir) -> Path:
    return state.secure / "crl"


def _held_crl(path: Path, anchors: Sequence[x509.Certificate], now: dt.datetime) -> Crl | None:
    """The CRL stored at ``path``; None when its root is no longer installed.

    Raises :class:`IntegrityError` when the stored file does not verify any more.
    """
    try:
        crl = verify_held_crl(path.read_bytes(), anchors, now=now)
    except UntrustedCertificate:
        return None  # its root was deleted: certificates under it cannot verify anyway
    except (TrustError, OSError) as e:
        raise IntegrityError(f"held CRL {path.name} is damaged: {e}") from e
    if path.name != f"{crl.issuer_key_id}.der":
        raise IntegrityError(f"held CRL {path.name} is stored under the wrong issuer")
    return crl


def held_crls(
    state: StateDir,
    *,
    now: dt.datetime | None = None,
    anchors: Sequence[x509.Certificate] | None = None,
) -> list[Crl]:
    """The CRLs the charger holds whose root is still installed (``anchors``: the roots)."""
    now = now or _utc_now()
    anchors = state.trust_anchors() if anchors is None else anchors
    paths = sorted(_crl_dir(state).glob("*.der"))
    return [crl for path in paths if (crl := _held_crl(path, anchors, now)) is not None]


def revoked_serials(
    state: StateDir,
    *,
    now: dt.datetime | None = None,
    anchors: Sequence[x509.Certificate] | None = None,
) -> frozenset[int]:
    """Serial numbers revoked by the held CRLs (their union; serials are random, 159 bits).

    Raises :class:`IntegrityError` when a held CRL is damaged: the caller must fail closed.
    """
    crls = held_crls(state, now=now, anchors=anchors)
    return frozenset().union(*(crl.revoked_serials for crl in crls))


def apply_crl(state: StateDir, der: bytes, now: dt.datetime) -> Crl:
    """Verify ``der`` against the installed roots and keep it if it is not older than ours.

    Raises what :func:`~chargeward.crypto.pki.verify_crl` raises, and
    :class:`~chargeward.errors.RollbackRefused` for a CRL older than the held one of the
    same root (:func:`~chargeward.crypto.pki.check_crl_progress`).  An expired CRL is kept
    (it still revokes); the caller may log ``crl.expired``.
    """
    anchors = state.trust_anchors()
    crl = verify_crl(der, anchors, now=now)
    path = _crl_dir(state) / f"{crl.issuer_key_id}.der"
    held = None
    if path.exists():
        try:
            held = _held_crl(path, anchors, now)
        except IntegrityError as e:
            # A damaged copy cannot be compared; a verified CRL is better than none.
            LOG.warning("replacing a damaged CRL: %s", e)
    check_crl_progress(held, crl)
    if held is None or held.crl_number != crl.crl_number:
        atomic_write(path, der)
        LOG.info("CRL %d of %s stored (%d revoked)", crl.crl_number, crl.issuer, len(crl.entries))
    return crl


def apply_published_crl(state: StateDir, der: bytes, now: dt.datetime) -> str | None:
    """Apply the CRL the TUF repository lists (``revocation/firmware-signing.crl``).

    Returns None, or the reason to report as a ``FirmwareRepositoryCheckFailed`` security
    event (``repository: firmware-signing CRL refused: ...``):

    * a newer (or the first) CRL of an installed root is stored and revokes from now on;
      the held CRL delivered again changes nothing;
    * a CRL older than the held one of its root, or reusing its number with another list,
      is ignored with a log line: the held CRL stays in force and updates go on;
    * a CRL that fails verification (not issued by an installed ManufacturerRootCertificate,
      altered, malformed, not valid yet) is not applied and its reason returned.  Updates
      still go on, checked against the held CRLs: TUF already vouched for these bytes, so
      this is a publishing mistake (e.g. a root not installed on this charger yet), not an
      attacker on the path, and blocking every update would not strengthen the held list.

    Raises :class:`~chargeward.errors.TransportError` when the CRL cannot be stored: the
    caller retries later rather than decide without it.
    """
    try:
        crl = apply_crl(state, der, now)
    except RollbackRefused as e:
        LOG.warning("repository CRL ignored, the held CRL stays in force: %s", e)
        return None
    except TrustError as e:
        return str(RepositoryRefused("repository", f"firmware-signing CRL refused: {e}"))
    except OSError as e:
        raise TransportError(f"cannot store the repository's CRL: {e}") from e
    if crl.expired:
        LOG.warning("the repository's CRL %d is past its next update", crl.crl_number)
    return None


def _held_revocations(
    state: StateDir, now: dt.datetime, anchors: Sequence[x509.Certificate] | None = None
) -> frozenset[int]:
    """The serials the held CRLs revoke; a damaged CRL fails closed (UntrustedCertificate)."""
    try:
        return revoked_serials(state, now=now, anchors=anchors)
    except IntegrityError as e:
        raise UntrustedCertificate(f"cannot check revocation: {e}") from e


def check_not_revoked(state: StateDir, cert: x509.Certificate, now: dt.datetime) -> None:
    """OCPP L01 once more before installing: a CRL applied since UpdateFirmware was accepted
    (e.g. in the repository refresh of this update) may have revoked ``cert``.

    Raises :class:`~chargeward.errors.RevokedCertificate`, or :class:`UntrustedCertificate`
    when a held CRL is damaged (fail closed).
    """
    if cert.serial_number in _held_revocations(state, now):
        raise RevokedCertificate(f"signing certificate serial {cert.serial_number:x} revoked")


def check_signing_certificate(state: StateDir, pem: str, now: dt.datetime) -> x509.Certificate:
    """OCPP L01 at UpdateFirmware: the signing certificate chains to an installed root and
    is not revoked by a held CRL.

    Raises :class:`UntrustedCertificate` (also when a held CRL is damaged: fail closed) or
    :class:`~chargeward.errors.RevokedCertificate` (answered ``RevokedCertificate``).
    """
    cert = load_certificate(pem)
    anchors = state.trust_anchors()
    revoked = _held_revocations(state, now, anchors)
    verify_firmware_signing_certificate(cert, anchors, now=now, revoked_serials=revoked)
    return cert


# -- ManufacturerRootCertificates (OCPP M03, M04, M05) --------------------------------------


def _describe(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string()} (sha256 {certificate_fingerprint(cert)[:16]})"


def _store(state: StateDir, roots: Sequence[x509.Certificate]) -> None:
    state.set_trust_anchors("".join(certificate_pem(c) for c in roots).encode("ascii"))


def install_certificate(
    state: StateDir, certificate_type: str, pem: str, now: dt.datetime
) -> CertificateResult:
    """OCPP M05: add a ManufacturerRootCertificate to ``secure/roots.pem``.

    Accepted when installed or already present; Rejected (with a reason) for another
    certificate type, a certificate that is not a valid self-signed CA certificate
    (M05.FR.07) or a full store (M05.FR.06); Failed when it cannot be written (M05.FR.03).
    """
    if certificate_type != MANUFACTURER_ROOT:
        return CertificateResult(
            "Rejected", "UnsupportedCertType", f"{certificate_type} is not supported"
        )
    try:
        certs = load_certificates(pem.encode())
        if len(certs) != 1:
            raise UntrustedCertificate(f"expected one certificate, got {len(certs)}")
        cert = certs[0]
        check_root_certificate(cert, now=now)
    except UntrustedCertificate as e:
        return CertificateResult("Rejected", "InvalidCertificate", str(e))
    roots = state.trust_anchors()
    fingerprint = certificate_fingerprint(cert)
    if any(certificate_fingerprint(r) == fingerprint for r in roots):
        return CertificateResult("Accepted")  # already installed: nothing changes
    if len(roots) >= MAX_ROOTS:
        return CertificateResult("Rejected", "StoreFull", f"{MAX_ROOTS} roots are installed")
    try:
        _store(state, [*roots, cert])
    except OSError as e:
        return CertificateResult("Failed", "WriteFailed", f"cannot write the trust store: {e}")
    return CertificateResult(
        "Accepted", security_event=f"{MANUFACTURER_ROOT} installed: {_describe(cert)}"
    )


def installed_certificates(
    state: StateDir, certificate_types: Sequence[str] | None
) -> list[InstalledCertificate]:
    """OCPP M03: hash data of the installed roots, when ``certificate_types`` asks for them."""
    if certificate_types is not None and MANUFACTURER_ROOT not in certificate_types:
        return []
    return [
        InstalledCertificate(MANUFACTURER_ROOT, certificate_hash_data(root))
        for root in state.trust_anchors()
    ]


def _bootable_signing_certificates(state: StateDir) -> list[x509.Certificate]:
    """Signing certificates of the slots the bootloader may start: the active slot and,
    during a trial boot, the slot it falls back to."""
    bc = state.boot_control()
    slots = [bc.active, bc.previous or other(bc.active)] if bc.trial else [bc.active]
    infos = [info for slot in slots if (info := state.slot_info(slot)) is not None]
    return [load_certificate(info.signing_certificate) for info in infos]


def deletion_refusal(
    roots: Sequence[x509.Certificate],
    doomed: Sequence[x509.Certificate],
    in_use: Sequence[x509.Certificate],
) -> CertificateResult | None:
    """Why deleting ``doomed`` from ``roots`` must fail, or None when it may proceed.

    The last root never goes (no signed firmware could be installed again), nor a root
    that signed firmware the bootloader may start (secure boot would fail: a bricked
    charger).  OCPP allows deleting the last root; this charger refuses with Failed.
    """
    if len(roots) <= len(doomed):
        return CertificateResult(
            "Failed", "LastRoot", "the last ManufacturerRootCertificate cannot be deleted"
        )
    for cert in in_use:
        if any(is_issued_by(cert, root) for root in doomed):
            return CertificateResult(
                "Failed", "InUse", "the root anchors the firmware this charger boots"
            )
    return None


def delete_certificate(state: StateDir, hash_data: CertificateHashData) -> CertificateResult:
    """OCPP M04: delete the installed root named by ``hash_data`` (NotFound, Failed, Accepted)."""
    roots = state.trust_anchors()
    try:
        doomed = [
            root
            for root in roots
            if hash_data.names(certificate_hash_data(root, algorithm=hash_data.hash_algorithm))
        ]
        if not doomed:
            return CertificateResult("NotFound")
        in_use = _bootable_signing_certificates(state)
    except (ChargewardError, ValueError) as e:  # unreadable state: refuse, never guess
        return CertificateResult("Failed", "StateUnreadable", str(e))
    refusal = deletion_refusal(roots, doomed, in_use)
    if refusal is not None:
        return refusal
    try:
        _store(state, [r for r in roots if r not in doomed])
    except OSError as e:
        return CertificateResult("Failed", "WriteFailed", f"cannot write the trust store: {e}")
    return CertificateResult(
        "Accepted",
        security_event=f"{MANUFACTURER_ROOT} deleted: "
        + ", ".join(_describe(root) for root in doomed),
    )
