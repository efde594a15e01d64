"""The charger's certificate store: root certificates (OCPP M03-M05) and CRLs.

Trust decisions are made in :mod:`chargeward.crypto.pki`; this module reads and writes the
charger's secure storage around them::

    secure/roots.pem              installed ManufacturerRootCertificates (a PEM bundle)
    secure/csms-roots.pem         installed CSMSRootCertificates: the anchors for wss://
    secure/crl/<issuer-key>.der   the newest CRL of each root, named by the SHA-256 of the
                                  root's public key (CRL numbers only order CRLs of one issuer)

    state = StateDir(Path("charger-1"))
    crl = apply_crl(state, der, now)
    serial in revoked_serials(state)
    # -> True
    apply_published_crl(state, der, now)    # the CRL the TUF repository lists
    check_not_revoked(state, cert, now)     # again before installing
    bundle = endorsed_root_bundle(new_root, [link])  # endorsed by a held root
    install_certificate(state, MANUFACTURER_ROOT, bundle, now).status
    # -> 'Accepted'
    boot_revocations(state, state.trust_anchors())  # what secure boot refuses
    install_certificate(state, "CSMSRootCertificate", pem, now).status
    # -> 'Accepted'
    delete_certificate(state, hash_data, connection=chain).reason_code
    # -> 'LastRoot'

Every write is atomic (temp file, fsync, rename), as everywhere on the charger's flash.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.oid import PublicKeyAlgorithmOID

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
from chargeward.crypto.root_rotation import check_root_endorsement, root_and_links
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
from chargeward.limits import DEFAULT_AGENT_LIMITS, AgentLimits
from chargeward.ocpp.station import CertificateResult, InstalledCertificate

LOG = logging.getLogger("chargeward.agent.certificates")
MANUFACTURER_ROOT = "ManufacturerRootCertificate"
CSMS_ROOT = "CSMSRootCertificate"
# OCPP 2.0.1 part 2, A00 certificate properties: RSA keys >= 2048 bits, EC keys >= 224 bits
MIN_RSA_BITS = 2048
MIN_EC_BITS = 224
_RSA_KEYS = (PublicKeyAlgorithmOID.RSAES_PKCS1_v1_5, PublicKeyAlgorithmOID.RSASSA_PSS)
# OCPP 2.0.1 lists no security event for a changed trust store; this one's description
# ("security parameters, such as keys ..., were changed") is the closest.
TRUST_STORE_EVENT = "ReconfigurationOfSecurityParameters"
# A refused ManufacturerRootCertificate: the certificate offered to verify firmware signatures
# is not valid (OCPP 2.0.1 part 2, security events; critical).  Nothing was reconfigured, so
# not the event above; the message itself was valid OCPP, so not InvalidMessages.
ROOT_REFUSED_EVENT = "InvalidFirmwareSigningCertificate"
LAB_SWITCH = "allow_unendorsed_manufacturer_roots"


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


def boot_revocations(state: StateDir, anchors: Sequence[x509.Certificate]) -> frozenset[int]:
    """The serials the held CRLs revoke, for secure boot (no clock: boot has none it trusts).

    Unlike the update path, which fails closed, a held CRL that no longer verifies is skipped
    with an error line and the others still revoke: a damaged file must not brick a charger
    whose way out of quarantine (a verified update) would fail closed on it too, and an
    attacker who can write secure storage could delete the file to the same effect
    (docs/adr/0018).
    """
    serials: set[int] = set()
    for path in sorted(_crl_dir(state).glob("*.der")):
        try:
            crl = _held_crl(path, anchors, _utc_now())
        except IntegrityError as e:
            LOG.error("secure boot: %s; the other held CRLs still apply", e)
            continue
        if crl is not None:
            serials |= crl.revoked_serials
    return frozenset(serials)


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


# -- root certificates (OCPP M03, M04, M05) --------------------------------------------------


def _describe(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string()} (sha256 {certificate_fingerprint(cert)[:16]})"


def _bootable_signing_certificates(
    state: StateDir, _connection: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    """Signing certificates of the slots the bootloader may start: the active slot and,
    during a trial boot, the slot it falls back to."""
    bc = state.boot_control()
    slots = [bc.active, bc.previous or other(bc.active)] if bc.trial else [bc.active]
    infos = [info for slot in slots if (info := state.slot_info(slot)) is not None]
    return [load_certificate(info.signing_certificate) for info in infos]


def _connection_certificates(
    _state: StateDir, connection: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    """The certificate chain the CSMS presented on the current connection."""
    return list(connection)


@dataclass(frozen=True)
class RootStore:
    """A kind of root certificate the CSMS manages over OCPP, and what depends on it."""

    certificate_type: str
    load: Callable[[StateDir], list[x509.Certificate]]
    save: Callable[[StateDir, bytes], None]
    # Certificates the charger relies on now; a root that issued one may not go unless
    # another kept root issued it too.
    in_use: Callable[[StateDir, Sequence[x509.Certificate]], list[x509.Certificate]]
    in_use_reason: str


ROOT_STORES = {
    store.certificate_type: store
    for store in (
        RootStore(
            MANUFACTURER_ROOT,
            StateDir.trust_anchors,
            StateDir.set_trust_anchors,
            _bootable_signing_certificates,
            "the root anchors the firmware this charger boots",
        ),
        RootStore(
            CSMS_ROOT,
            StateDir.csms_roots,
            StateDir.set_csms_roots,
            _connection_certificates,
            "the root verifies the CSMS this charger is connected to",
        ),
    )
}


def connection_chain(ssl_object: ssl.SSLObject | None) -> list[x509.Certificate]:
    """The CSMS's certificates on a TLS connection (none on ws://), for :func:`delete_certificate`.

    Python 3.13+ gives the verified chain up to the trust anchor; older versions only the
    server certificate, so a root is known to be in use only when it issued that directly.
    """
    if ssl_object is None:
        return []
    verified = getattr(ssl_object, "get_verified_chain", None)
    ders = verified() if verified is not None else [ssl_object.getpeercert(binary_form=True)]
    return [x509.load_der_x509_certificate(bytes(der)) for der in ders if der]


def _check_key_strength(cert: x509.Certificate) -> None:
    algorithm = cert.public_key_algorithm_oid
    if algorithm in _RSA_KEYS:
        minimum = MIN_RSA_BITS
    elif algorithm == PublicKeyAlgorithmOID.EC_PUBLIC_KEY:
        minimum = MIN_EC_BITS
    else:
        raise UntrustedCertificate(f"unsupported key algorithm {algorithm.dotted_string}")
    try:
        bits = int(getattr(cert.public_key(), "key_size", 0))
    except (ValueError, UnsupportedAlgorithm) as e:
        raise UntrustedCertificate(f"unusable public key: {e}") from e
    if bits < minimum:
        raise UntrustedCertificate(f"the key has {bits} bits (< {minimum})")


def _store(state: StateDir, store: RootStore, roots: Sequence[x509.Certificate]) -> None:
    store.save(state, "".join(certificate_pem(c) for c in roots).encode("ascii"))


def _refused(certificate_type: str, reason_code: str, reason: str) -> CertificateResult:
    """Rejected; a refused ManufacturerRootCertificate is also a security event (OCPP M05)."""
    if certificate_type != MANUFACTURER_ROOT:
        return CertificateResult("Rejected", reason_code, reason)
    return CertificateResult(
        "Rejected",
        reason_code,
        reason,
        security_event=f"{certificate_type} refused: {reason}",
        event_type=ROOT_REFUSED_EVENT,
    )


def _endorsement(
    state: StateDir,
    cert: x509.Certificate,
    links: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: dt.datetime,
    allow_unendorsed: bool,
) -> str | CertificateResult:
    """How a held root endorses the new manufacturer root (text for the security event), or
    the refusal.  ``allow_unendorsed`` is the lab switch: it installs anyway, loudly."""
    try:
        revoked = _held_revocations(state, now, roots)  # a held root may revoke its link
        endorsement = check_root_endorsement(cert, links, roots, now=now, revoked_serials=revoked)
    except RevokedCertificate as e:
        return _refused(MANUFACTURER_ROOT, "RevokedLink", f"{e}: {_describe(cert)}")
    except UntrustedCertificate as e:
        if not allow_unendorsed:
            return _refused(MANUFACTURER_ROOT, "NotEndorsed", f"{e}: {_describe(cert)}")
        LOG.warning(
            "LAB SWITCH %s is on: installing %s WITHOUT endorsement by an installed root (%s)",
            LAB_SWITCH,
            _describe(cert),
            e,
        )
        return f"installed WITHOUT endorsement (lab switch {LAB_SWITCH})"
    endorser = certificate_fingerprint(endorsement.endorser)[:16]
    return (  # short: techInfo carries 255 characters
        f"endorsed by the installed root sha256 {endorser}, "
        f"link serial {endorsement.link.serial_number:x}"
    )


def install_certificate(
    state: StateDir,
    certificate_type: str,
    pem: str,
    now: dt.datetime,
    *,
    allow_unendorsed: bool = False,
    limits: AgentLimits = DEFAULT_AGENT_LIMITS,
) -> CertificateResult:
    """OCPP M05: add a ManufacturerRootCertificate or CSMSRootCertificate to its store.

    Accepted when installed or already present; Rejected (with a reason) for another
    certificate type, a certificate that is not a valid self-signed CA certificate with a
    strong enough key (M05.FR.07) or a full store (M05.FR.06); Failed when it cannot be
    written (M05.FR.03).  A new CSMS root is trusted from the next connection on.

    A new ManufacturerRootCertificate must be endorsed by a root the charger holds: ``pem``
    is the new root followed by link certificates (RFC 4210 §4.4 NewWithOld,
    :mod:`chargeward.crypto.root_rotation`), one of them issued by a held root and not
    revoked by its CRL.  Otherwise it is Rejected (``NotEndorsed``, ``RevokedLink``) with an
    ``InvalidFirmwareSigningCertificate`` security event, and the trust store is unchanged;
    ``allow_unendorsed`` (a lab switch, off in production) installs it anyway with a warning.
    """
    store = ROOT_STORES.get(certificate_type)
    if store is None:
        return CertificateResult(
            "Rejected", "UnsupportedCertType", f"{certificate_type} is not supported"
        )
    try:
        certs = load_certificates(pem.encode())
        if certificate_type == MANUFACTURER_ROOT:
            cert, links = root_and_links(certs)
        elif len(certs) != 1:
            raise UntrustedCertificate(f"expected one certificate, got {len(certs)}")
        else:
            cert, links = certs[0], []
        check_root_certificate(cert, now=now)
        _check_key_strength(cert)
    except UntrustedCertificate as e:
        return _refused(certificate_type, "InvalidCertificate", str(e))
    try:
        roots = store.load(state)
    except ChargewardError as e:  # unreadable store: refuse, never overwrite it
        return CertificateResult("Failed", "StateUnreadable", str(e))
    fingerprint = certificate_fingerprint(cert)
    if any(certificate_fingerprint(r) == fingerprint for r in roots):
        return CertificateResult("Accepted")  # already installed: nothing changes
    how = ""
    if certificate_type == MANUFACTURER_ROOT:
        endorsed = _endorsement(state, cert, links, roots, now, allow_unendorsed)
        if isinstance(endorsed, CertificateResult):
            return endorsed
        how = f"; {endorsed}"
    if len(roots) >= limits.roots_per_type:
        return CertificateResult(
            "Rejected", "StoreFull", f"{limits.roots_per_type} roots are installed"
        )
    try:
        _store(state, store, [*roots, cert])
    except OSError as e:
        return CertificateResult("Failed", "WriteFailed", f"cannot write the trust store: {e}")
    return CertificateResult(
        "Accepted", security_event=f"{certificate_type} installed: {_describe(cert)}{how}"
    )


def installed_certificates(
    state: StateDir, certificate_types: Sequence[str] | None
) -> list[InstalledCertificate]:
    """OCPP M03: hash data of the installed roots of the types ``certificate_types`` asks for
    (all of them when None)."""
    return [
        InstalledCertificate(store.certificate_type, certificate_hash_data(root))
        for store in ROOT_STORES.values()
        if certificate_types is None or store.certificate_type in certificate_types
        for root in store.load(state)
    ]


def deletion_refusal(
    roots: Sequence[x509.Certificate],
    doomed: Sequence[x509.Certificate],
    in_use: Sequence[x509.Certificate],
    certificate_type: str = MANUFACTURER_ROOT,
) -> CertificateResult | None:
    """Why deleting ``doomed`` from ``roots`` must fail, or None when it may proceed.

    The last root of a type never goes: without a ManufacturerRootCertificate no signed
    firmware could be installed again, without a CSMSRootCertificate the charger could not
    connect to its CSMS again.  Nor may a root go that issued a certificate in ``in_use``
    (the firmware the bootloader may start; the CSMS's certificate on this connection)
    unless a kept root issued it too: secure boot would fail (a bricked charger), or the
    next connection would.  OCPP allows deleting the last root; this charger answers Failed.
    """
    kept = [r for r in roots if r not in doomed]
    if not kept:
        return CertificateResult(
            "Failed", "LastRoot", f"the last {certificate_type} cannot be deleted"
        )
    reason = ROOT_STORES[certificate_type].in_use_reason
    for cert in in_use:
        if any(is_issued_by(cert, r) for r in doomed) and not any(
            is_issued_by(cert, r) for r in kept
        ):
            return CertificateResult("Failed", "InUse", reason)
    return None


def delete_certificate(
    state: StateDir,
    hash_data: CertificateHashData,
    *,
    connection: Sequence[x509.Certificate] = (),
) -> CertificateResult:
    """OCPP M04: delete the installed root named by ``hash_data`` (NotFound, Failed, Accepted).

    ``connection`` is the CSMS's certificate chain on the current connection
    (:func:`connection_chain`).  A root installed as two types goes from both, or from none.
    """
    changes = []
    try:
        for store in ROOT_STORES.values():
            roots = store.load(state)
            doomed = [
                root
                for root in roots
                if hash_data.names(certificate_hash_data(root, algorithm=hash_data.hash_algorithm))
            ]
            if doomed:
                in_use = store.in_use(state, connection)
                changes.append((store, roots, doomed, in_use))
    except (ChargewardError, ValueError) as e:  # unreadable state: refuse, never guess
        return CertificateResult("Failed", "StateUnreadable", str(e))
    if not changes:
        return CertificateResult("NotFound")
    for store, roots, doomed, in_use in changes:
        refusal = deletion_refusal(roots, doomed, in_use, store.certificate_type)
        if refusal is not None:
            return refusal
    events = []
    for store, roots, doomed, _ in changes:
        try:
            _store(state, store, [r for r in roots if r not in doomed])
        except OSError as e:
            return CertificateResult("Failed", "WriteFailed", f"cannot write the trust store: {e}")
        events.append(
            f"{store.certificate_type} deleted: " + ", ".join(_describe(r) for r in doomed)
        )
    return CertificateResult("Accepted", security_event="; ".join(events))
