"""The exception tree of Chargeward.

Every exception the package raises derives from ``ChargewardError``; the CLI turns one into a
single clear line and an exit code (``cli/main.py`` ``EXIT_CODES``), the server into an HTTP
problem (``server/problems.py`` ``ERRORS``), the agent into an OCPP status.  Library errors are
converted where they enter (``raise ... from e``).  ``tests/unit/test_error_tree.py`` fails on
a ``raise`` of a builtin exception class outside its commented allow-list, and on an exception
class missing from this list.  Classes defined in other modules name their module.

    ChargewardError                 exit 1, HTTP 400 unless a subclass says otherwise
    +-- ConfigError                 bad settings, missing files, wrong passphrase; exit 6, 503
    |   +-- JUnitReportError            evidence.matrix: a test report missing, too large, not JUnit
    +-- KeyAccessError              a key URI that cannot be resolved or opened; exit 6, 503
    +-- TrustError                  a decision *against* the data: never retry; exit 3, 422
    |   +-- UntrustedCertificate    signing certificate not under an installed root
    |   |   +-- CertificatePathRefused  RFC 5280 path validation refused it (``reason``)
    |   +-- RevokedCertificate      signing certificate revoked
    |   +-- BadSignature            signature does not verify
    |   +-- IntegrityError          length or digest mismatch
    |   |   +-- DeltaError              release.delta: a delta that does not rebuild the image
    |   +-- RollbackRefused         security version below the rollback floor
    |   +-- IncompatibleImage       image is for other hardware
    |   +-- RepositoryRefused       TUF metadata or target refused (``reason`` says why)
    |   +-- CredentialStoreError    a charger's sealed secrets do not open (key, tamper, swap)
    |   +-- AttestationRefused      a signed attestation (DSSE, provenance) refused (``reason``)
    |   +-- GateRefused             the vulnerability gate refused a release (lists every finding)
    |   +-- PinnedComponentChanged  a certified (pinned) component differs from the last release
    |   +-- DeltaRefused            agent.delta_update: a delta the agent will not apply
    |   +-- LogVerificationError    audit.verify: an audit log export does not verify
    |   |   +-- MalformedExport         audit.verify: the export cannot be read
    |   |   +-- RuleViolation           audit.verify: an entry breaks a log rule
    |   +-- MalformedNote           audit.checkpoint: a signed note that cannot be read
    |   +-- WrongOrigin             audit.checkpoint: a checkpoint of another log
    |   +-- ProofError              audit.merkle: an inclusion or consistency proof fails
    |   +-- PackRefused             evidence.signing: an evidence pack does not verify
    |   +-- ReportProvenanceRefused evidence.testrun: a report not from the named commit
    +-- BundleError                 malformed bundle or manifest (bad input); exit 6, 422
    |   +-- CampaignSpecError       campaign.spec: a malformed campaign file
    +-- SupplyChainError            malformed component list, SBOM, advisory, allowlist; exit 6, 422
    +-- InvalidValue                bad input, also a ``ValueError``; exit 6, HTTP 400
    |   +-- Unordered               supply.versions: a version its scheme cannot read or order
    +-- MisuseError                 a verified-result type built by hand: a bug in the caller, never
    |                               input; a ``TypeError``; traceback, HTTP 500 (logged)
    +-- TransportError              network or I/O trouble: may succeed on retry; exit 5, 502
    |   +-- DownloadRefused         agent.download: a 4xx, an oversized image or a bad URL; no retry
    |   +-- LocationRefused         agent.location: a URL the location policy refuses; no retry
    |   +-- UploadRefused           a log upload URL unknown, used or expired (404/410); no retry
    |   +-- RemoteTimeout           server.cluster: a peer node did not answer (a ``TimeoutError``)
    |   +-- CommandNotDelivered     a command that never reached the station (its node gone)
    +-- NotFound                    a named thing does not exist; exit 4, 404
    +-- Conflict                    the request clashes with current state; exit 7, 409
    |   +-- ApprovalRefused         trust.approval: an approval the rules forbid (``reason``)
    |       +-- NotKeyHolder            trust.approval: signed with another account's key
    +-- ChargingUnavailable         a charging session cannot start (connector busy, quarantine)
    +-- NoBootableSlot              agent.bootloader: no slot passes the secure-boot check (tamper)
    +-- TreeStorageError            audit.merkle: the node store lacks or misorders nodes
    +-- Refusal                     server.accounts: sign-in or permission refused (own status)
    +-- DatabaseBusy                server.store.db: a write kept losing to concurrent ones, or
    |                               no free connection; nothing committed; HTTP 503, Retry-After
    +-- LeadershipLost              server.store.db: a leader job of a node whose lease ran out
                                    or passed on; nothing committed or sent

``InvalidValue`` and ``MisuseError`` also subclass the builtin their callers and pydantic catch:
a validator must raise a ``ValueError`` for pydantic to report it as a 422, and ``except
ValueError`` / ``except TypeError`` around these calls keeps working.

Builtin exceptions raised on purpose are only those a Python protocol requires (``KeyError``
from a mapping lookup, ``AttributeError`` from ``__getattr__``, ``NotImplementedError`` for a
refused inherited API), errors that never leave their function, and the simulator's
``PowerCut`` (a ``BaseException`` so no handler can swallow the simulated power loss); the
allow-list in ``tests/unit/test_error_tree.py`` names each one and says why.
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


class UploadRefused(TransportError):
    """A log upload URL that takes no upload (OCPP N01): retrying it cannot help.

    The server raises it for the upload token it holds, with the ``reason`` (unknown, used or
    expired) and the HTTP ``status_code`` it answers (404 or 410); the agent for the 4xx answer
    its upload got (``status_code``, no ``reason``).
    """

    def __init__(self, status_code: int, reason: str | None = None) -> None:
        super().__init__(
            f"upload URL {reason}" if reason else f"server refused the upload: HTTP {status_code}"
        )
        self.status_code = status_code
        self.reason = reason


class CommandNotDelivered(TransportError):
    """A command to a station that certainly never reached it: the node named as the station's
    holder did not take it (gone or hung), or the station had left that node.  Unlike a
    timeout, the station cannot be working on it, so a campaign does not count it as an
    attempt."""


class NotFound(ChargewardError):
    """A named object does not exist."""


class Conflict(ChargewardError):
    """The request clashes with the current state."""


class InvalidValue(ChargewardError, ValueError):
    """A value handed in is malformed or out of its domain (bad input).

    Also a :class:`ValueError`: pydantic validators must raise one, and callers that catch
    ``ValueError`` (for example around :func:`chargeward.strictjson.loads`) keep working.
    """


class MisuseError(ChargewardError, TypeError):
    """A verified-result type was built by hand instead of by its verifying function.

    A bug in the calling code, never bad input; also a :class:`TypeError` as before.
    """
