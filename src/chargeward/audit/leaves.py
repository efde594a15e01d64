"""The bytes of one audit-log leaf: the entry as canonical JSON (pure, no I/O).

The server hashes these bytes when it appends an entry (RFC 9162 ``leaf_hash``), and the
offline verifier recomputes them from an export, so both must agree byte for byte:

    >>> import datetime as dt
    >>> canonical_entry(
    ...     index=0, time=dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC), actor="alice",
    ...     action="release.upload", target="r1", transaction_id=None, details={"v": "1.2.0"})
    b'{"action":"release.upload","actor":"alice","details":{"v":"1.2.0"},"index":0,"target":"r1","time":"2026-11-21T12:00:00.000000Z","transaction_id":null}'

Sorted keys, no whitespace, UTF-8 (non-ASCII text as itself, not ``\\u`` escapes), time as
RFC 3339 UTC with microseconds.  The leaf index is part of the leaf, so an entry cannot be
moved to another position without changing its hash.  Never change this form: every stored
tree and every published checkpoint depends on it.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from chargeward.errors import InvalidValue

FIELDS = ("index", "time", "actor", "action", "target", "transaction_id", "details")


def format_time(time: dt.datetime) -> str:
    """RFC 3339 in UTC with microseconds: ``2026-11-21T12:00:00.000000Z``."""
    if time.tzinfo is None:
        raise InvalidValue("audit times must be timezone-aware")
    return time.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    """The inverse of :func:`format_time` (any RFC 3339 offset is accepted)."""
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise InvalidValue(f"time {text!r} has no UTC offset")
    return value.astimezone(dt.UTC)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8; NaN and infinities are refused."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def canonical_entry(
    *,
    index: int,
    time: dt.datetime,
    actor: str,
    action: str,
    target: str,
    transaction_id: str | None,
    details: dict[str, Any],
) -> bytes:
    """The leaf bytes of the entry at leaf ``index``."""
    return canonical_json(
        {
            "index": index,
            "time": format_time(time),
            "actor": actor,
            "action": action,
            "target": target,
            "transaction_id": transaction_id,
            "details": details,
        }
    )
