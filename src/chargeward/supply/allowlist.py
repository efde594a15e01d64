"""Accepted risks: advisories a release may ship with, each approved, justified and expiring.

The allowlist (TOML, or JSON when named ``*.json``) holds ``accept`` entries::

    [[accept]]
    advisory = "CVE-2024-5535"                  # OSV id or one of its aliases
    purl = "pkg:generic/openssl@3.0.13"         # the exact package, version included
    status = "not_affected"                     # OpenVEX status
    justification = "vulnerable_code_not_in_execute_path"
    impact_statement = "SSL_select_next_proto is not called: no NPN/ALPN callback."
    approvers = ["j.smith@acme.example", "r.jones@acme.example"]
    expires = 2026-07-01                        # TOML date (JSON: "2026-07-01")

An entry accepts nothing from ``expires`` on (00:00 UTC of that date, or the exact time if a
datetime with offset is given).  ``not_affected`` needs a ``justification`` (an OpenVEX
value) or an ``impact_statement``; ``affected`` needs an ``action_statement``.  Approvers
count once each, and a policy may ask for more than one (``min_approvers``).

    allowlist = load_allowlist(Path("allowlist.toml"), min_approvers=2)
    ids = {"GHSA-...", "CVE-2024-5535"}
    allowlist.find(ids, "pkg:generic/openssl@3.0.13", now)
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from chargeward.errors import ConfigError, SupplyChainError
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.supply._fields import Fields, read_document, read_input

STATUSES = ("not_affected", "affected", "fixed", "under_investigation")
JUSTIFICATIONS = (
    "component_not_present",
    "vulnerable_code_not_present",
    "vulnerable_code_not_in_execute_path",
    "vulnerable_code_cannot_be_controlled_by_adversary",
    "inline_mitigations_already_exist",
)


@dataclass(frozen=True)
class AllowlistEntry:
    """One accepted risk.  ``ref`` names it in its file (``accept[3]``)."""

    ref: str
    advisory: str
    purl: str
    status: str
    approvers: tuple[str, ...]
    expires: dt.datetime
    justification: str | None = None
    impact_statement: str | None = None
    action_statement: str | None = None

    def covers(self, advisory_ids: Collection[str], purl: str) -> bool:
        """Whether this entry is about that advisory (by id or alias) and that exact package."""
        return self.advisory in advisory_ids and self.purl == purl

    def expired(self, now: dt.datetime) -> bool:
        return now >= self.expires


@dataclass(frozen=True)
class Allowlist:
    """Accepted risks; ``sha256`` is the digest of the file they came from (``None``: none)."""

    entries: tuple[AllowlistEntry, ...] = ()
    source: str = "no allowlist"
    sha256: str | None = None

    def find(
        self, advisory_ids: Collection[str], purl: str, now: dt.datetime
    ) -> tuple[AllowlistEntry | None, AllowlistEntry | None]:
        """``(accepting entry, expired entry)`` for a finding; either may be ``None``."""
        matching = [e for e in self.entries if e.covers(advisory_ids, purl)]
        live = next((e for e in matching if not e.expired(now)), None)
        stale = next((e for e in matching if e.expired(now)), None)
        return live, stale


def _expires(fields: Fields) -> dt.datetime:
    value = fields.value.get("expires")
    if value is None:
        raise fields.error("expires", "missing (every accepted risk expires)")
    if isinstance(value, str):
        try:
            value = (
                dt.datetime.fromisoformat(value) if "T" in value else dt.date.fromisoformat(value)
            )
        except ValueError as e:
            raise fields.error("expires", f"not an ISO 8601 date or time: {e}") from e
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise fields.error("expires", "a time needs a UTC offset (or give a date)")
        return value.astimezone(dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), dt.UTC)
    raise fields.error("expires", "must be a date (2026-07-01) or a time with offset")


def _entry(fields: Fields, min_approvers: int) -> AllowlistEntry:
    fields.only(
        "advisory", "purl", "status", "justification", "impact_statement",
        "action_statement", "approvers", "expires",
    )  # fmt: skip
    purl = fields.purl("purl")
    if not purl.version:
        raise fields.error("purl", "must name the exact package version (…@version)")
    status = fields.text("status")
    if status not in STATUSES:
        raise fields.error("status", f"must be one of {', '.join(STATUSES)}")
    justification = fields.optional_text("justification")
    if justification is not None and justification not in JUSTIFICATIONS:
        raise fields.error("justification", f"must be one of {', '.join(JUSTIFICATIONS)}")
    impact = fields.optional_text("impact_statement")
    action = fields.optional_text("action_statement")
    if status == "not_affected" and justification is None and impact is None:
        raise fields.error(
            "justification", "not_affected needs a justification or impact_statement"
        )
    if status == "affected" and action is None:
        raise fields.error("action_statement", "affected needs an action_statement")
    approvers = tuple(dict.fromkeys(a.strip() for a in fields.texts("approvers")))
    if len(approvers) < min_approvers:
        raise fields.error(
            "approvers", f"{len(approvers)} distinct approver(s), at least {min_approvers} needed"
        )
    return AllowlistEntry(
        ref=fields.path,
        advisory=fields.text("advisory"),
        purl=purl.to_string(),
        status=status,
        approvers=approvers,
        expires=_expires(fields),
        justification=justification,
        impact_statement=impact,
        action_statement=action,
    )


def parse_allowlist(data: bytes, source: str, *, min_approvers: int = 1) -> Allowlist:
    """Parse an allowlist; every entry needs at least ``min_approvers`` distinct approvers."""
    if min_approvers < 1:
        raise ConfigError("min_approvers must be at least 1")
    doc = read_document(data, source, max_bytes=DEFAULT_FORMAT_LIMITS.allowlist_bytes)
    doc.only("accept")
    entries = [_entry(t, min_approvers) for t in doc.tables("accept")]
    seen: dict[tuple[str, str], str] = {}
    for entry in entries:
        key = (entry.advisory, entry.purl)
        if key in seen:
            raise SupplyChainError(f"{source}: {entry.ref}: duplicate of {seen[key]}")
        seen[key] = entry.ref
    return Allowlist(tuple(entries), source, hashlib.sha256(data).hexdigest())


def load_allowlist(path: Path, *, min_approvers: int = 1) -> Allowlist:
    """Read and parse the allowlist at ``path``."""
    data = read_input(path, DEFAULT_FORMAT_LIMITS.allowlist_bytes)
    return parse_allowlist(data, str(path), min_approvers=min_approvers)
