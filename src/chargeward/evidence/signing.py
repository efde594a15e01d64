"""Sign an evidence pack, and check one: who produced it, and that nothing changed since.

The pack's ``evidence.dsse.json`` is a DSSE envelope (:mod:`chargeward.crypto.dsse`) around an
in-toto Statement v1 whose subjects are every other file of the pack with its SHA-256, and
whose predicate names the release or campaign and the test report the pack was built from::

    envelope = sign_pack(files, data, signer)
    checked = verify_pack(files | {ENVELOPE: envelope}, [public_key])
    checked.keyid, checked.report_commit

:func:`verify_pack` takes the pack's files as bytes and decides (no I/O): the signature must
verify under a key the reader pinned, the signed file list must be exactly the pack's files
with their digests, and the requirements matrix in ``evidence.json`` must be what its own
JUnit report gives.  Any mismatch raises :class:`PackRefused` naming the first one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chargeward.crypto.dsse import (
    PublicKey,
    parse_envelope,
    sign_envelope,
    verify_envelope,
)
from chargeward.crypto.keys import Signer
from chargeward.errors import AttestationRefused, ChargewardError, InvalidValue, TrustError
from chargeward.evidence import matrix, testrun
from chargeward.limits import DEFAULT_FORMAT_LIMITS

ENVELOPE = "evidence.dsse.json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://chargeward.dev/evidence-pack/v1"


class PackRefused(TrustError):
    """An evidence pack does not verify: signature, file digests or its own report."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def predicate(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the signature says about the pack besides its files."""
    report = data["tests"]["report"]
    return {
        "format": data["format"],
        "generator": data["generator"],
        "generated_at": data["generated_at"],
        "subject": data["subject"],
        "test_report": {
            "file": report["file"],
            "sha256": report["sha256"],
            "commit": report["provenance"]["commit"],
            "expected_commit": report["provenance"]["expected_commit"],
            "same_commit": report["provenance"]["same_commit"],
        },
    }


def statement(files: Mapping[str, bytes], data: Mapping[str, Any]) -> bytes:
    doc = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": name, "digest": {"sha256": _sha256(files[name])}} for name in sorted(files)
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate(data),
    }
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def sign_pack(files: Mapping[str, bytes], data: Mapping[str, Any], signer: Signer) -> bytes:
    """``evidence.dsse.json`` over ``files`` (every other file of the pack)."""
    if ENVELOPE in files:
        raise InvalidValue(f"{ENVELOPE} cannot sign itself")
    return sign_envelope(PAYLOAD_TYPE, statement(files, data), signer).to_json()


@dataclass(frozen=True)
class VerifiedPack:
    keyid: str  # fingerprint of the pinned key the signature verified under
    files: int
    subject: Mapping[str, Any]
    report_sha256: str
    report_commit: str
    same_commit: bool


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackRefused(f"{what} is not JSON: {e}") from e


def _signed_statement(files: Mapping[str, bytes], keys: Sequence[PublicKey]) -> tuple[Any, str]:
    raw = files.get(ENVELOPE)
    if raw is None:
        raise PackRefused(f"the pack is not signed: it has no {ENVELOPE}")
    try:
        verified = verify_envelope(
            parse_envelope(raw, max_bytes=DEFAULT_FORMAT_LIMITS.evidence_envelope_bytes), keys
        )
    except AttestationRefused as e:
        raise PackRefused(f"{ENVELOPE}: {e} (not signed by the key given)") from e
    if verified.payload_type != PAYLOAD_TYPE:
        raise PackRefused(f"{ENVELOPE}: payload type {verified.payload_type!r} is not a pack's")
    doc = _json(verified.payload, f"{ENVELOPE} payload")
    if (
        not isinstance(doc, dict)
        or doc.get("_type") != STATEMENT_TYPE
        or doc.get("predicateType") != PREDICATE_TYPE
        or not isinstance(doc.get("subject"), list)
        or not isinstance(doc.get("predicate"), dict)
    ):
        raise PackRefused(f"{ENVELOPE}: the signed statement is not an evidence-pack statement")
    return doc, verified.keyid


def _check_files(files: Mapping[str, bytes], subjects: list[Any]) -> None:
    signed: dict[str, str] = {}
    for s in subjects:
        try:
            signed[s["name"]] = s["digest"]["sha256"]
        except (TypeError, KeyError) as e:
            raise PackRefused(f"{ENVELOPE}: a subject lacks its name or SHA-256") from e
    present = set(files) - {ENVELOPE}
    for name in sorted(set(signed) - present):
        raise PackRefused(f"{name}: listed in the signed statement but missing from the pack")
    for name in sorted(present - set(signed)):
        raise PackRefused(f"{name}: not covered by the pack's signature (added after signing)")
    # SHA256SUMS last: a forger rewrites it to match, so name the file that really changed.
    for name in sorted(signed, key=lambda n: (n == "SHA256SUMS", n)):
        if _sha256(files[name]) != signed[name]:
            raise PackRefused(
                f"{name}: SHA-256 differs from the signed statement (changed after signing)"
            )


def _check_matrix(data: Mapping[str, Any], files: Mapping[str, bytes]) -> None:
    """``evidence.json``'s matrix and report provenance must be what its report gives."""
    report = data["tests"]["report"]
    raw = files.get(report["file"])
    if raw is None:
        raise PackRefused(f"{report['file']}: the test report named by evidence.json is missing")
    if _sha256(raw) != report["sha256"]:
        raise PackRefused(f"{report['file']}: SHA-256 differs from the one evidence.json records")
    try:
        parsed = matrix.parse_junit(raw)
    except ChargewardError as e:
        raise PackRefused(f"{report['file']}: {e}") from e
    runs = [testrun.RunProvenance.from_properties(p) for p in parsed.properties]
    recorded = report["provenance"]["runs"]
    if [r.to_dict() if r else None for r in runs] != recorded:
        raise PackRefused(
            f"{report['file']}: its commit and environment differ from what evidence.json records"
        )
    for row in data["tests"]["requirements"]:
        for part in row["parts"]:
            mapped = tuple(matrix.result_of(parsed, t["node_id"]) for t in part["tests"])
            for got, said in zip(mapped, part["tests"], strict=True):
                if got.result != said["result"] or dict(got.cases) != said["cases"]:
                    raise PackRefused(
                        f"evidence.json: {row['id']}: {said['node_id']} is {said['result']!r} "
                        f"there but {got.result!r} in {report['file']}"
                    )
            prow = matrix.PartRow(
                matrix.Part(
                    part["party"], part["claim"], tuple(t["node_id"] for t in part["tests"])
                ),
                mapped,
            )
            if (prow.status, prow.simulation) != (part["status"], part["simulation"]):
                raise PackRefused(
                    f"evidence.json: {row['id']}: the {part['party']} part says "
                    f"{part['status']!r}, its tests give {prow.status!r}"
                )


def verify_pack(files: Mapping[str, bytes], keys: Sequence[PublicKey]) -> VerifiedPack:
    """Check the pack ``files`` (relative path -> bytes) against the pinned ``keys``."""
    doc, keyid = _signed_statement(files, keys)
    _check_files(files, doc["subject"])
    data = _json(files["evidence.json"], "evidence.json") if "evidence.json" in files else None
    if not isinstance(data, dict):
        raise PackRefused("evidence.json: missing or not an object")
    try:
        if doc["predicate"] != predicate(data):
            raise PackRefused("evidence.json: differs from the signed statement's predicate")
        _check_matrix(data, files)
        report = data["tests"]["report"]
        return VerifiedPack(
            keyid,
            len(files),
            data["subject"],
            report["sha256"],
            report["provenance"]["commit"],
            report["provenance"]["same_commit"],
        )
    except (KeyError, TypeError) as e:
        raise PackRefused(f"evidence.json: not in the {data.get('format')!r} layout ({e})") from e
