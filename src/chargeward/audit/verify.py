"""Offline verification of an audit-log export: hashes, checkpoints and the log's own rules.

Pure: it takes parsed data and a pinned verifier key and returns a :class:`Report` or raises
:class:`LogVerificationError` (a :class:`~chargeward.errors.TrustError`) whose message names
the first bad entry by leaf index and id.  ``chargeward audit verify`` reads the files.

    export = parse_export(path.read_text().splitlines())
    report = verify_export(export, parse_vkey(pinned), external=[kept_note])

What is checked, in log order:

1. Leaf indexes run 0, 1, 2, ... with no gap (a deleted entry leaves one).
2. Every leaf is recomputed from the entry's canonical JSON (:mod:`chargeward.audit.leaves`).
   An entry whose recomputed hash differs from the leaf hash the server stored at append time
   was changed afterwards (or moved: the index is part of the leaf).
3. The tree is rebuilt; at the size of every checkpoint (from the export and any kept
   elsewhere, ``--checkpoint``) the root must equal the signed root, and each signature must
   verify under the pinned key.  This is the check an attacker who rewrites the whole log and
   every stored hash cannot pass without the checkpoint key.  The root of a checkpoint covers
   all entries below its size, so such a rewrite is located between the last checkpoint that
   still verifies and the first that does not: the error names the first entry of that range.
   Successive checkpoints are also checked for consistency (RFC 9162 section 2.1.4).
4. The log's rules: a campaign that needed approval was approved by someone other than its
   creator before it ran; a release (or revocation) was published only after the approvals
   it lists, at least as many as its threshold; and a release was published only after its
   upload recorded a built, signed bundle with an SBOM and a vulnerability scan that passed
   (``release.upload`` details ``sbom`` and ``scan.decision == "passed"``); a vendor-supplied
   image (ADR 0041, ``provenance: vendor-supplied``) without a scan is published flagged.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chargeward.audit import merkle
from chargeward.audit.checkpoint import (
    Checkpoint,
    MalformedNote,
    VerifierKey,
    open_checkpoint,
)
from chargeward.audit.leaves import canonical_entry, parse_time
from chargeward.errors import TrustError

EXPORT_FORMAT = "chargeward-audit-export/1"
# Entries that show a campaign running (planned, dispatched, reported, paused or resumed).
RUNNING = frozenset(
    {
        "campaign.progress",
        "campaign.station",
        "campaign.paused",
        "campaign.resumed",
        "campaign.retried",
        "campaign.rescheduled",
    }
)


class LogVerificationError(TrustError):
    """The export does not verify; ``index``/``entry_id`` name the first bad entry if known."""

    def __init__(self, message: str, index: int | None = None, entry_id: int | None = None):
        where = f"entry index {index}" + (f" (id {entry_id})" if entry_id is not None else "")
        super().__init__(f"{where}: {message}" if index is not None else message)
        self.index, self.entry_id = index, entry_id


class MalformedExport(LogVerificationError):
    """The export file is not in the export format."""


class RuleViolation(LogVerificationError):
    """The log is intact but records something the rules forbid."""


@dataclass(frozen=True)
class ExportedEntry:
    id: int
    leaf_index: int
    time: dt.datetime
    actor: str
    action: str
    target: str
    transaction_id: str | None
    details: dict[str, Any]
    leaf_hash: bytes | None = None  # as the server stored it at append time

    def leaf(self, index: int) -> bytes:
        return canonical_entry(
            index=index,
            time=self.time,
            actor=self.actor,
            action=self.action,
            target=self.target,
            transaction_id=self.transaction_id,
            details=self.details,
        )


@dataclass
class Export:
    vkey: str | None = None
    origin: str | None = None
    checkpoints: list[str] = field(default_factory=list)
    entries: list[ExportedEntry] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    entries: int
    root_hash: bytes
    checkpoints: int  # distinct checkpoint sizes verified
    signed_size: int  # the largest size a verified checkpoint covers
    rules_checked: int  # campaigns and publications checked against the rules


def entry_from_json(obj: dict[str, Any]) -> ExportedEntry:
    leaf_hash = obj.get("leaf_hash")
    return ExportedEntry(
        id=int(obj["id"]),
        leaf_index=int(obj["leaf_index"]),
        time=parse_time(str(obj["time"])),
        actor=str(obj["actor"]),
        action=str(obj["action"]),
        target=str(obj["target"]),
        transaction_id=obj.get("transaction_id"),
        details=dict(obj.get("details") or {}),
        leaf_hash=bytes.fromhex(leaf_hash) if leaf_hash else None,
    )


def parse_records(
    lines: Iterable[str], what: str, handle: Callable[[int, dict[str, Any]], None]
) -> None:
    """Call ``handle(line number, record)`` for every JSON line; a line that is not JSON or
    lacks a field raises :class:`MalformedExport` naming it."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            handle(number, json.loads(line))
        except (ValueError, KeyError, TypeError) as e:
            raise MalformedExport(f"line {number} of the {what} is malformed: {e}") from e


def parse_export(lines: Iterable[str]) -> Export:
    """Parse the JSON-lines export (header, checkpoint and entry records)."""
    export = Export()

    def handle(number: int, record: dict[str, Any]) -> None:
        kind = record["type"]
        if kind == "header":
            if record.get("format") != EXPORT_FORMAT:
                raise MalformedExport(f"line {number}: not a {EXPORT_FORMAT} export")
            export.vkey, export.origin = record.get("vkey"), record.get("origin")
        elif kind == "checkpoint":
            export.checkpoints.append(str(record["note"]))
        elif kind == "entry":
            export.entries.append(entry_from_json(record))
        else:
            raise MalformedExport(f"line {number}: unknown record type {kind!r}")

    parse_records(lines, "export", handle)
    return export


def _checkpoints(
    notes: Sequence[tuple[str, str]], key: VerifierKey, origin: str | None
) -> dict[int, Checkpoint]:
    """Verified checkpoints by size; two different roots for one size is a fork."""
    by_size: dict[int, Checkpoint] = {}
    for where, note in notes:
        try:
            checkpoint = open_checkpoint(note, key, origin=origin)
        except TrustError as e:
            kind = "malformed" if isinstance(e, MalformedNote) else "not trusted"
            raise LogVerificationError(f"checkpoint {where} is {kind}: {e}") from e
        seen = by_size.setdefault(checkpoint.size, checkpoint)
        if seen.root_hash != checkpoint.root_hash:
            raise LogVerificationError(
                f"two checkpoints signed for size {checkpoint.size} with different roots: "
                "the log was forked"
            )
    return by_size


def _where(entries: Sequence[ExportedEntry], index: int) -> int | None:
    return entries[index].id if index < len(entries) else None


def verify_export(
    export: Export,
    key: VerifierKey,
    *,
    external: Sequence[str] = (),
    origin: str | None = None,
) -> Report:
    """Verify ``export`` under the pinned ``key`` (see the module docstring)."""
    notes = [(f"#{n + 1} of the export", t) for n, t in enumerate(export.checkpoints)]
    notes += [(f"#{n + 1} kept outside the log", t) for n, t in enumerate(external)]
    signed = _checkpoints(notes, key, origin)
    entries = export.entries
    tree = merkle.MemoryTree()
    covered = 0  # leaves below this size match a verified checkpoint
    previous: Checkpoint | None = signed.get(0)
    for position, entry in enumerate(entries):
        if entry.leaf_index != position:
            if entry.leaf_index > position:
                gap = f"entries {position}..{entry.leaf_index - 1} before it are missing"
            else:
                gap = "it is out of order or repeated"
            raise LogVerificationError(
                f"comes where leaf {position} was expected: {gap}", entry.leaf_index, entry.id
            )
        data = entry.leaf(position)
        if entry.leaf_hash is not None and merkle.leaf_hash(data) != entry.leaf_hash:
            raise LogVerificationError(
                "its content does not hash to the leaf hash stored when it was appended: "
                "it was changed or moved afterwards",
                position,
                entry.id,
            )
        tree.append(data)
        checkpoint = signed.get(tree.size)
        if checkpoint is None:
            continue
        if merkle.root(tree.size, tree) != checkpoint.root_hash:
            raise LogVerificationError(
                f"entries {covered}..{tree.size - 1} do not match the checkpoint signed at "
                f"size {tree.size}: the log was rewritten behind a published checkpoint; the "
                "first entry not covered by an earlier checkpoint is shown",
                covered,
                _where(entries, covered),
            )
        if previous is not None:
            proof = merkle.consistency_proof(previous.size, tree.size, tree)
            merkle.verify_consistency(
                previous.size, tree.size, previous.root_hash, checkpoint.root_hash, proof
            )
        previous, covered = checkpoint, tree.size
    beyond = [size for size in signed if size > len(entries)]
    if beyond:
        raise LogVerificationError(
            f"the log ends after {len(entries)} entries, but a checkpoint was signed at size "
            f"{max(beyond)}: entries from index {len(entries)} on were removed"
        )
    rules = check_rules(entries)
    return Report(len(entries), merkle.root(tree.size, tree), len(signed), covered, rules)


def _check_supply_chain(e: ExportedEntry, upload: dict[str, Any] | None, position: int) -> None:
    """A release is published only after an upload showing its SBOM and a passed scan."""
    if upload is None:
        raise RuleViolation(
            f"{e.target} was published, but the log shows no upload (build) of it before",
            position,
            e.id,
        )
    if upload.get("provenance") == "vendor-supplied" and "scan" not in upload:
        return  # ADR 0041: a vendor's image, listed with ``sbom: missing`` when it had none
    scan = upload.get("scan")
    missing = [
        what
        for what, present in (
            ("an SBOM", isinstance(upload.get("sbom"), dict)),
            ("a vulnerability scan", isinstance(scan, dict)),
        )
        if not present
    ]
    if missing:
        raise RuleViolation(
            f"{e.target} was published without {' or '.join(missing)} in its upload",
            position,
            e.id,
        )
    assert isinstance(scan, dict)
    if scan.get("decision") != "passed":
        raise RuleViolation(
            f"{e.target} was published although its vulnerability scan says "
            f"{scan.get('decision')!r}",
            position,
            e.id,
        )


@dataclass
class _Campaign:
    creator: str
    needs_approval: bool
    approved: bool = False


def check_rules(entries: Sequence[ExportedEntry]) -> int:
    """The two-person rules, in log order; returns how many campaigns and publications were
    checked.  Raises :class:`RuleViolation` at the first entry that breaks one."""
    campaigns: dict[str, _Campaign] = {}
    actors: dict[str, str] = {}  # "campaign:<name>" (dispatch actor) -> "campaign:<id>"
    approvals: dict[tuple[str, Any], set[str]] = {}
    uploads: dict[str, dict[str, Any]] = {}  # release id -> its upload's details
    checked = 0
    for position, e in enumerate(entries):
        d = e.details
        if e.action == "campaign.created":
            campaigns[e.target] = _Campaign(e.actor, bool(d.get("needs_approval")))
            actors[f"campaign:{d.get('name')}"] = e.target
            checked += 1
        elif e.action == "campaign.approved" and e.target in campaigns:
            approved = campaigns[e.target]
            if e.actor == approved.creator:
                raise RuleViolation(
                    f"{e.target} was approved by its own creator {e.actor!r}", position, e.id
                )
            approved.approved = True
        target = e.target if e.action in RUNNING else actors.get(e.actor)
        c = campaigns.get(target) if target else None
        if c is not None and c.needs_approval and not c.approved:
            raise RuleViolation(
                f"{target} ran ({e.action}) before a second person approved it",
                position,
                e.id,
            )
        if e.action == "release.upload":
            uploads[e.target] = d
        kind, _, verb = e.action.rpartition(".")
        if kind == "release" and verb == "published":
            _check_supply_chain(e, uploads.get(e.target), position)
        if kind == "campaign" or "proposal" not in d:
            continue
        if verb == "approved":
            approvals.setdefault((kind, d["proposal"]), set()).add(str(d.get("approver")))
        elif verb == "published":
            checked += 1
            have = approvals.get((kind, d["proposal"]), set())
            listed = [str(a) for a in d.get("approvers") or []]
            unseen = [a for a in listed if a not in have]
            if not listed or unseen:
                who = ", ".join(unseen) if unseen else "nobody"
                raise RuleViolation(
                    f"{e.target} was published with approvals the log does not show "
                    f"before it: {who}",
                    position,
                    e.id,
                )
            threshold = d.get("threshold")
            if isinstance(threshold, int) and len(set(listed)) < threshold:
                raise RuleViolation(
                    f"{e.target} was published with {len(set(listed))} of the {threshold} "
                    "approvals it needed",
                    position,
                    e.id,
                )
    return checked
