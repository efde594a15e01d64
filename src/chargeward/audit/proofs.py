"""Selected audit entries with RFC 6962 inclusion proofs against one signed checkpoint.

An evidence pack carries only the entries that concern its release or campaign, not the
whole log.  Each entry comes with the hashes that lead from its leaf to the root of a signed
checkpoint, so anyone holding the log's verifier key can check offline that the entry is in
the log exactly as shown (pure: no I/O; ``chargeward audit verify`` reads the file)::

    proofs = parse_proofs(path.read_text().splitlines())
    report = verify_proofs(proofs, parse_vkey(pinned))

The file is JSON lines: a header (format, verifier key), one checkpoint note, then one
record per entry: the entry's fields as in an export (:mod:`.verify`) plus ``inclusion``
(``{"size": N, "hashes": [hex, ...]}``, leaf to root).  For every entry the leaf is recomputed
from its canonical JSON (:mod:`.leaves`), so a changed field, a moved entry or a changed
proof hash fails; the checkpoint must be signed by the pinned key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chargeward.audit import merkle
from chargeward.audit.checkpoint import Checkpoint, MalformedNote, VerifierKey, open_checkpoint
from chargeward.audit.verify import (
    ExportedEntry,
    LogVerificationError,
    MalformedExport,
    entry_from_json,
    parse_records,
)
from chargeward.errors import TrustError

PROOFS_FORMAT = "chargeward-audit-proofs/1"


@dataclass(frozen=True)
class ProvenEntry:
    entry: ExportedEntry
    size: int  # the tree size the proof is for (the checkpoint's)
    hashes: tuple[bytes, ...]


@dataclass
class Proofs:
    vkey: str | None = None
    checkpoint: str | None = None
    entries: list[ProvenEntry] = field(default_factory=list)


@dataclass(frozen=True)
class ProofReport:
    entries: int
    checkpoint: Checkpoint


def is_proofs_file(first_line: str) -> bool:
    """Whether a file starting with ``first_line`` is a proofs file (not a full export)."""
    try:
        header = json.loads(first_line)
    except ValueError:
        return False
    return isinstance(header, dict) and header.get("format") == PROOFS_FORMAT


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"


def format_proofs(vkey: str, note: str, entries: Sequence[tuple[dict[str, Any], Any]]) -> str:
    """The file text: ``entries`` are (entry as the API shows it, inclusion proof answer)."""
    out = [_line({"type": "header", "format": PROOFS_FORMAT, "vkey": vkey})]
    out.append(_line({"type": "checkpoint", "note": note}))
    for entry, proof in entries:
        inclusion = {"size": proof["size"], "hashes": list(proof["hashes"])}
        out.append(_line({**entry, "type": "entry", "inclusion": inclusion}))
    return "".join(out)


def parse_proofs(lines: Iterable[str]) -> Proofs:
    """Parse a proofs file; :class:`MalformedExport` names the first bad line."""
    proofs = Proofs()

    def handle(number: int, record: dict[str, Any]) -> None:
        kind = record["type"]
        if kind == "header":
            if record.get("format") != PROOFS_FORMAT:
                raise MalformedExport(f"line {number}: not a {PROOFS_FORMAT} file")
            proofs.vkey = record.get("vkey")
        elif kind == "checkpoint":
            if proofs.checkpoint is not None:
                raise MalformedExport(f"line {number}: a second checkpoint")
            proofs.checkpoint = str(record["note"])
        elif kind == "entry":
            inclusion = record["inclusion"]
            hashes = tuple(bytes.fromhex(str(h)) for h in inclusion["hashes"])
            proofs.entries.append(
                ProvenEntry(entry_from_json(record), int(inclusion["size"]), hashes)
            )
        else:
            raise MalformedExport(f"line {number}: unknown record type {kind!r}")

    parse_records(lines, "proofs file", handle)
    return proofs


def verify_proofs(proofs: Proofs, key: VerifierKey, *, origin: str | None = None) -> ProofReport:
    """Check the checkpoint's signature, then every entry's leaf and inclusion proof."""
    if proofs.checkpoint is None:
        raise LogVerificationError("the file holds no checkpoint")
    try:
        checkpoint = open_checkpoint(proofs.checkpoint, key, origin=origin)
    except TrustError as e:
        kind = "malformed" if isinstance(e, MalformedNote) else "not trusted"
        raise LogVerificationError(f"the checkpoint is {kind}: {e}") from e
    for proven in proofs.entries:
        entry = proven.entry
        if proven.size != checkpoint.size:
            raise LogVerificationError(
                f"its proof is for a tree of {proven.size} entries, not the checkpoint's "
                f"{checkpoint.size}",
                entry.leaf_index,
                entry.id,
            )
        leaf = merkle.leaf_hash(entry.leaf(entry.leaf_index))
        if entry.leaf_hash is not None and leaf != entry.leaf_hash:
            raise LogVerificationError(
                "its content does not hash to the leaf hash the server stored: it was changed",
                entry.leaf_index,
                entry.id,
            )
        try:
            merkle.verify_inclusion(
                leaf, entry.leaf_index, checkpoint.size, proven.hashes, checkpoint.root_hash
            )
        except merkle.ProofError as e:
            raise LogVerificationError(
                f"it is not in the log under the signed checkpoint: {e}", entry.leaf_index, entry.id
            ) from e
    return ProofReport(len(proofs.entries), checkpoint)
