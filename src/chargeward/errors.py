"""The exception tree of Chargeward.

Every error the project raises on purpose derives from ``ChargewardError``; the CLI turns
one into a single clear line and an exit code, the server into an HTTP problem, the agent
into an OCPP status.  Library errors are converted where they enter (``raise ... from e``).

    ChargewardError
    +-- ConfigError             bad settings, missing files, wrong passphrase source
    +-- KeyAccessError          a key URI that cannot be resolved, a wrong passphrase
    +-- TrustError              a decision *against* the data: never retry
    |   +-- UntrustedCertificate    signing certificate not under an installed root
    |   |   +-- CertificatePathRefused  RFC 5280 path validation refused it (``reason``)
    |   +-- RevokedCertificate      signing certificate revoked
    |   +-- BadSignature            signature does not verify
    |   +-- IntegrityError          length or digest mismatch
    |   +-- RollbackRefused         security version below the rollback floor
    |   +-- IncompatibleImage       image is for other hardware
    |   +-- RepositoryRefused       TUF metadata or target refused (``reason`` says why)
    |   +-- CredentialStoreError    a charger's sealed secrets do not open (key, tamper, swap)
    |   +-- AttestationRefused      a signed attestation (DSSE, provenance) refused (``reason``)
    |   +-- GateRefused             the vulnerability gate refused a release (lists every finding)
    |   +-- PinnedComponentChanged  a certified (pinned) component differs from the previous release
    +-- BundleError             malformed bundle or manifest (bad input)
    +-- SupplyChainError        malformed component list, SBOM, advisory or allowlist (bad input)
    +-- TransportError          network or I/O trouble: may succeed on retry
    +-- NotFound                a named thing does not exist
    +-- Conflict                the request clashes with current state
"""

from __future__ import annotations


class ChargewardError(Exception):
    """Root of every deliberate Chargeward error."""


class ConfigError(ChargewardError):
    """Settings, paths or environment are not usable."""


class KeyAccessError(ChargewardError):
    """A key URI cannot be resolved or opened (unknown scheme, wrong passphrase, no file)."""


class TrustError(ChargewardError):
    """The data was examined and is not acceptable; retrying cannot help."""


class UntrustedCertificate(TrustError):
    """A certificate does not chain to an installed trust anchor, or is not valid now."""


class CertificatePathRefused(UntrustedCertificate):
    """RFC 5280 path validation refused a certificate (``crypto.path``).

    ``reason`` is a short stable code: ``malformed``, ``validity``, ``critical-extension``,
    ``leaf-profile``, ``issuer``, ``anchor``, ``intermediate``, ``name-constraints`` or
    ``policy``; the message
    says what was wrong, as any :class:`UntrustedCertificate` does (``type(e)(message)``
    re-raises keep working, with the reason ``path``).
    """

    def __init__(self, message: str, *, reason: str = "path") -> None:
        super().__init__(message)
        self.reason = reason


class RevokedCertificate(TrustError):
    """A certificate is on a revocation list."""


class BadSignature(TrustError):
    """A signature does not verify with the given key."""


class IntegrityError(TrustError):
    """Length or digest of data differs from what was signed."""


class RollbackRefused(TrustError):
    """An image's security version is below the device's rollback floor."""


class IncompatibleImage(TrustError):
    """An image is not built for this hardware model."""


class RepositoryRefused(TrustError):
    """The TUF repository check failed.

    ``reason`` is a short stable code (``expired``, ``rollback``, ``unsigned``, ``hash``,
    ``length``, ``not-listed``, ``wrong-model``, ``wrong-customer``, ``clock-behind``,
    ``oversized``, ``repository``) that chargers report in security events and tests assert on.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason}: {self.args[0]}"


class CredentialStoreError(TrustError):
    """A charger's encrypted secrets cannot be opened: wrong device key or product secret,
    a changed file, or a file copied from another charger or another purpose."""


class AttestationRefused(TrustError):
    """A signed attestation (a DSSE envelope around an in-toto statement) is refused.

    ``reason`` is a short stable code: ``oversized``, ``malformed``, ``signature``,
    ``payload-type``, ``statement-type``, ``predicate-type``, ``subject-digest``,
    ``subject-missing`` or ``subject-extra``; the message names the field or subject.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason}: {self.args[0]}"


class ChargingUnavailable(ChargewardError):
    """A charging session cannot start: connector not Available, or tamper quarantine."""


class GateRefused(TrustError):
    """The vulnerability gate refused a release: unaccepted findings at or above the threshold,
    or findings that could not be evaluated.  The message lists every blocking finding."""


class PinnedComponentChanged(TrustError):
    """A pinned (certified) component changed version, purl or image hash, or disappeared."""


class BundleError(ChargewardError):
    """A release bundle or its manifest is malformed."""


class SupplyChainError(ChargewardError):
    """A component list, SBOM, OSV advisory or allowlist is malformed.

    The message names the file and the field path, e.g.
    ``components.toml: components[2].libraries[0].purl: ...``.
    """


class TransportError(ChargewardError):
    """Network or storage trouble; the same operation may succeed later."""


class NotFound(ChargewardError):
    """A named object does not exist."""


class Conflict(ChargewardError):
    """The request clashes with the current state."""
