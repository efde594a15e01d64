"""Build provenance: an in-toto Statement v1 with a SLSA provenance v1 predicate, in DSSE.

The statement names every release file (each image and the bundle) by SHA-256 and says how
they were made: the source (repository, ref, commit), the build command, ``SOURCE_DATE_EPOCH``,
the release version and toolchain (``buildDefinition``); the builder, the invocation and its
times, and the digests of the SBOM, the vulnerability-scan report and the result of the
independent rebuild (``runDetails``).  It is built only from :class:`ProvenanceInputs` and the
injected clock, serialised as canonical JSON (sorted keys, no whitespace), so the same inputs
give the same payload byte for byte; only the ECDSA signature differs between two runs.

    inputs = ProvenanceInputs(
        subjects=(subject_from_file(Path("images/main.cwfw")),
                  subject_from_file(Path("acme-1.2.0.cwb"))),
        source_repo="https://git.example/acme/charger-fw", source_commit="9f2c" * 10,
        source_ref="refs/tags/v1.2.0", build_command="make firmware",
        source_date_epoch=1700000000, release_version="1.2.0",
        started_on=started, rebuild=rebuild_result,
    )
    envelope = create_provenance(inputs, signer, clock=lambda: finished)
    write_new_file(Path("provenance.dsse.json"), envelope.to_json())

Verifying takes bytes and decides; the caller reads files and hashes the subjects::

    statement = verify_provenance(
        data, [release_public_key], [subject_from_file(Path("acme-1.2.0.cwb"))])
    statement.build_definition["externalParameters"]["source"]

Every refusal is an :class:`~chargeward.errors.AttestationRefused` with a stable ``reason``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from chargeward import __version__
from chargeward.crypto import Signer, sha256_bytes, sha256_file
from chargeward.crypto.dsse import (
    Envelope,
    PublicKey,
    load_strict_json,
    parse_envelope,
    sign_envelope,
    verify_envelope,
)
from chargeward.errors import AttestationRefused, ConfigError
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.supply.rebuild import BuildCommand, RebuildResult

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
# Type URIs name the kind of build and builder; they need not resolve.
BUILD_TYPE = "https://chargeward.dev/provenance/firmware-release/v1"
DEFAULT_BUILDER_ID = "https://chargeward.dev/provenance/builders/chargeward-cli/v1"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # git SHA-1 or SHA-256 object names
_UUID_NAMESPACE = uuid.UUID("5c6b2f0e-3f43-4a52-9d6c-6a1b3c9e8d10")


# A release's provenance names each image by its bundle member (``images/<component>.cwfw``)
# and the bundle file itself by this name.
BUNDLE_SUBJECT = "bundle"


@dataclass(frozen=True)
class ProvenanceLimits:
    """Caps on an untrusted provenance envelope."""

    max_envelope_bytes: int = DEFAULT_FORMAT_LIMITS.dsse_envelope_bytes
    max_signatures: int = DEFAULT_FORMAT_LIMITS.dsse_signatures
    max_subjects: int = 1024
    max_subject_name_chars: int = 1024


@dataclass(frozen=True)
class Subject:
    """A file the statement is about: its name and lowercase hex SHA-256."""

    name: str
    sha256: str


def subject_from_file(path: Path, name: str | None = None) -> Subject:
    """The subject for ``path`` (named by its file name unless ``name`` is given)."""
    try:
        digest = sha256_file(path)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    return Subject(name or path.name, digest.sha256)


def subject_from_bytes(name: str, data: bytes) -> Subject:
    return Subject(name, sha256_bytes(data).sha256)


@dataclass(frozen=True)
class ProvenanceInputs:
    """Everything a provenance statement says, apart from the finishing time.

    ``sbom`` and ``scan_report`` are the files' subjects (name and digest); ``toolchain_digest``
    is the SHA-256 of the build toolchain (an image or archive); ``invocation_id`` defaults
    to a UUID derived from the subjects, the commit and ``started_on``.
    """

    subjects: tuple[Subject, ...]
    source_repo: str
    source_commit: str
    started_on: dt.datetime
    source_ref: str | None = None
    build_command: BuildCommand | None = None
    source_date_epoch: int | None = None
    release_version: str | None = None
    toolchain_digest: str | None = None
    builder_id: str = DEFAULT_BUILDER_ID
    builder_version: Mapping[str, str] = field(default_factory=lambda: {"chargeward": __version__})
    internal_parameters: Mapping[str, str] = field(default_factory=dict)
    sbom: Subject | None = None
    scan_report: Subject | None = None
    rebuild: RebuildResult | None = None
    invocation_id: str | None = None


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8; NaN and infinities are refused."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _rfc3339(moment: dt.datetime, what: str) -> str:
    if moment.tzinfo is None:
        raise ConfigError(f"{what} must be a timezone-aware time")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_sha256(value: str, what: str) -> str:
    if not _SHA256.fullmatch(value):
        raise ConfigError(f"{what} must be 64 lowercase hex digits, got {value!r}")
    return value


def _check_inputs(inputs: ProvenanceInputs) -> None:
    if not inputs.subjects:
        raise ConfigError("provenance needs at least one subject")
    names = [s.name for s in inputs.subjects]
    for subject in inputs.subjects:
        if not subject.name:
            raise ConfigError("a provenance subject has an empty name")
        if names.count(subject.name) > 1:
            raise ConfigError(f"subject name {subject.name!r} is given twice")
        _check_sha256(subject.sha256, f"digest of subject {subject.name!r}")
    if not inputs.source_repo:
        raise ConfigError("the source repository is empty")
    if not _COMMIT.fullmatch(inputs.source_commit):
        raise ConfigError(
            f"source commit must be a full git object name, got {inputs.source_commit!r}"
        )
    if inputs.source_date_epoch is not None and inputs.source_date_epoch < 0:
        raise ConfigError("SOURCE_DATE_EPOCH must not be negative")
    if inputs.toolchain_digest is not None:
        _check_sha256(inputs.toolchain_digest, "toolchain digest")
    for extra in (inputs.sbom, inputs.scan_report):
        if extra is not None:
            _check_sha256(extra.sha256, f"digest of {extra.name!r}")


def _descriptor(subject: Subject) -> dict[str, Any]:
    return {"name": subject.name, "digest": {"sha256": subject.sha256}}


def _source_uri(repo: str, ref: str | None) -> str:
    uri = repo if repo.startswith("git+") or "://" not in repo else f"git+{repo}"
    return f"{uri}@{ref}" if ref else uri


def _external_parameters(inputs: ProvenanceInputs) -> dict[str, Any]:
    source = {"repository": inputs.source_repo, "commit": inputs.source_commit}
    if inputs.source_ref:
        source["ref"] = inputs.source_ref
    params: dict[str, Any] = {"source": source}
    if inputs.build_command is not None:
        command = inputs.build_command
        params["buildCommand"] = command if isinstance(command, str) else list(command)
    if inputs.source_date_epoch is not None:
        params["sourceDateEpoch"] = inputs.source_date_epoch
    if inputs.release_version is not None:
        params["releaseVersion"] = inputs.release_version
    return params


def _dependencies(inputs: ProvenanceInputs) -> list[dict[str, Any]]:
    deps: list[dict[str, Any]] = [
        {
            "name": "source",
            "uri": _source_uri(inputs.source_repo, inputs.source_ref),
            "digest": {"gitCommit": inputs.source_commit},
        }
    ]
    if inputs.toolchain_digest is not None:
        deps.append({"name": "toolchain", "digest": {"sha256": inputs.toolchain_digest}})
    return deps


def rebuild_byproduct(result: RebuildResult) -> dict[str, Any]:
    """The rebuild check as a SLSA byproduct: its record's digest, verdict and output digests."""
    record = canonical_json(result.to_dict())
    annotations: dict[str, Any] = {
        "result": result.status.value,
        "sourceDateEpoch": result.source_date_epoch,
        "outputs": {o.path: {"first": o.first, "second": o.second} for o in result.outputs},
    }
    if result.failure is not None:
        annotations["failure"] = result.failure.reason
    return {
        "name": "rebuild-check",
        "mediaType": "application/json",
        "digest": {"sha256": sha256_bytes(record).sha256},
        "annotations": annotations,
    }


def _byproducts(inputs: ProvenanceInputs) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for role, subject in (("sbom", inputs.sbom), ("vulnerability-scan", inputs.scan_report)):
        if subject is not None:
            out.append(
                {
                    "name": role,
                    "digest": {"sha256": subject.sha256},
                    "annotations": {"file": subject.name},
                }
            )
    if inputs.rebuild is not None:
        out.append(rebuild_byproduct(inputs.rebuild))
    return out


def _invocation_id(inputs: ProvenanceInputs, started: str) -> str:
    if inputs.invocation_id:
        return inputs.invocation_id
    basis = [
        inputs.source_commit,
        started,
        *sorted(f"{s.name}={s.sha256}" for s in inputs.subjects),
    ]
    return str(uuid.uuid5(_UUID_NAMESPACE, "\n".join(basis)))


def build_statement(
    inputs: ProvenanceInputs, *, clock: Callable[[], dt.datetime]
) -> dict[str, Any]:
    """The in-toto statement for ``inputs``; ``clock()`` gives the finishing time."""
    _check_inputs(inputs)
    started = _rfc3339(inputs.started_on, "started_on")
    finished_at = clock()
    finished = _rfc3339(finished_at, "the clock's time")
    if finished_at < inputs.started_on:
        raise ConfigError(f"the build finished ({finished}) before it started ({started})")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [_descriptor(s) for s in sorted(inputs.subjects, key=lambda s: s.name)],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": _external_parameters(inputs),
                "internalParameters": dict(inputs.internal_parameters),
                "resolvedDependencies": _dependencies(inputs),
            },
            "runDetails": {
                "builder": {"id": inputs.builder_id, "version": dict(inputs.builder_version)},
                "metadata": {
                    "invocationId": _invocation_id(inputs, started),
                    "startedOn": started,
                    "finishedOn": finished,
                },
                "byproducts": _byproducts(inputs),
            },
        },
    }


def create_provenance(
    inputs: ProvenanceInputs, signer: Signer, *, clock: Callable[[], dt.datetime]
) -> Envelope:
    """The signed provenance: :func:`build_statement` as canonical JSON in a DSSE envelope."""
    payload = canonical_json(build_statement(inputs, clock=clock))
    return sign_envelope(PAYLOAD_TYPE, payload, signer)


# --- verification -----------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """A provenance statement whose signature, types and subjects were checked.

    Only :func:`verify_provenance` makes one.  ``keyid`` is the fingerprint of the trusted
    key that verified the envelope; ``predicate`` is the SLSA provenance as signed.
    """

    subjects: tuple[Subject, ...]
    predicate: Mapping[str, Any]
    keyid: str
    payload: bytes

    @property
    def build_definition(self) -> Mapping[str, Any]:
        return self.predicate["buildDefinition"]  # type: ignore[no-any-return]

    @property
    def run_details(self) -> Mapping[str, Any]:
        return self.predicate["runDetails"]  # type: ignore[no-any-return]


def _refuse(reason: str, message: str) -> NoReturn:
    raise AttestationRefused(reason, message)


def _object(value: object, where: str, keys: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        _refuse("malformed", f"statement {where} must be a JSON object")
    missing = [k for k in keys if k not in value]
    if missing:
        _refuse("malformed", f"statement {where} lacks {', '.join(map(repr, missing))}")
    return value


def _subjects(value: object, limits: ProvenanceLimits) -> tuple[Subject, ...]:
    if not isinstance(value, list) or not value:
        _refuse("malformed", "statement subject must be a non-empty list")
    if len(value) > limits.max_subjects:
        _refuse("oversized", f"statement has {len(value)} subjects, at most {limits.max_subjects}")
    found: dict[str, Subject] = {}
    for index, item in enumerate(value):
        entry = _object(item, f"subject[{index}]", ("name", "digest"))
        name = entry["name"]
        if not isinstance(name, str) or not 0 < len(name) <= limits.max_subject_name_chars:
            _refuse("malformed", f"statement subject[{index}] has no usable name")
        digest = _object(entry["digest"], f"subject {name!r} digest", ("sha256",))["sha256"]
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            _refuse("malformed", f"subject {name!r} has no well-formed SHA-256 digest")
        if name in found:
            _refuse("malformed", f"subject {name!r} appears twice in the statement")
        found[name] = Subject(name, digest)
    return tuple(found.values())


def _match_subjects(attested: tuple[Subject, ...], expected: Sequence[Subject]) -> None:
    """Every expected subject attested with the same digest, and nothing else attested."""
    by_name = {s.name: s for s in attested}
    for want in expected:
        got = by_name.get(want.name)
        if got is None:
            _refuse("subject-missing", f"subject {want.name!r} is not in the provenance")
        if got.sha256 != want.sha256:
            _refuse(
                "subject-digest",
                f"subject {want.name!r} has SHA-256 {want.sha256} but the provenance "
                f"attests {got.sha256}",
            )
    wanted = {s.name for s in expected}
    extra = sorted(s.name for s in attested if s.name not in wanted)
    if extra:
        _refuse("subject-extra", f"provenance attests unexpected subject(s) {', '.join(extra)}")


def verify_provenance(
    envelope: bytes,
    trusted_public_keys: Sequence[PublicKey],
    expected_subjects: Sequence[Subject],
    *,
    limits: ProvenanceLimits = ProvenanceLimits(),
) -> Statement:
    """Check a provenance envelope and return its statement.

    In order: sizes and shape, a signature by one of ``trusted_public_keys``, the payload
    type, the statement and predicate types, then the subjects, which must be exactly
    ``expected_subjects`` (same names, same SHA-256).  Raises :class:`AttestationRefused`.
    """
    names = [s.name for s in expected_subjects]
    if not names:
        raise ConfigError("name at least one expected subject to verify the provenance against")
    if len(set(names)) != len(names):
        raise ConfigError("expected subjects must have distinct names")
    parsed = parse_envelope(
        envelope, max_bytes=limits.max_envelope_bytes, max_signatures=limits.max_signatures
    )
    verified = verify_envelope(parsed, trusted_public_keys)
    if verified.payload_type != PAYLOAD_TYPE:
        _refuse(
            "payload-type",
            f"payloadType is {verified.payload_type!r}, expected {PAYLOAD_TYPE!r}",
        )
    try:
        doc = load_strict_json(verified.payload)
    except ValueError as e:
        raise AttestationRefused("malformed", f"statement is {e}") from e
    statement = _object(doc, "(top level)", ("_type", "subject", "predicateType", "predicate"))
    if statement["_type"] != STATEMENT_TYPE:
        _refuse("statement-type", f"_type is {statement['_type']!r}, expected {STATEMENT_TYPE!r}")
    if statement["predicateType"] != PREDICATE_TYPE:
        _refuse(
            "predicate-type",
            f"predicateType is {statement['predicateType']!r}, expected {PREDICATE_TYPE!r}",
        )
    predicate = _object(statement["predicate"], "predicate", ("buildDefinition", "runDetails"))
    _object(predicate["buildDefinition"], "buildDefinition", ("buildType", "externalParameters"))
    _object(predicate["runDetails"], "runDetails", ("builder",))
    subjects = _subjects(statement["subject"], limits)
    _match_subjects(subjects, expected_subjects)
    return Statement(subjects, predicate, verified.keyid, verified.payload)
