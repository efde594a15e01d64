"""The offline vulnerability gate: may this release ship, given these advisories?

Every component and every library inside it is matched against the advisory set
(:mod:`chargeward.supply.matching`).  A finding *blocks* the release unless an allowlist
entry that has not expired accepts it, when

* it is **indeterminate** (a range could not be evaluated) - whatever its severity, or
* its severity is at or above the threshold; an advisory without a usable rating counts as
  ``UNKNOWN``, which ranks above ``CRITICAL`` and so always blocks.

The decision is a pure function of its inputs and ``now``::

    result = evaluate(components, advisories, allowlist, Severity.HIGH, now)
    report_json(result)        # the deterministic scan report (bytes)
    result.raise_if_refused()  # GateRefused listing every blocking finding
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chargeward.errors import ConfigError, GateRefused, InvalidValue, SupplyChainError
from chargeward.supply.advisories import AdvisorySet
from chargeward.supply.allowlist import Allowlist, AllowlistEntry
from chargeward.supply.components import ComponentList
from chargeward.supply.matching import Match, Status, match
from chargeward.supply.severity import Severity

REPORT_FORMAT = "chargeward-vulnerability-report/1"


@dataclass(frozen=True)
class Finding:
    """An advisory that affects, or may affect, one package of the release."""

    advisory: str
    aliases: tuple[str, ...]
    summary: str
    component: str
    component_purl: str
    package: str
    version: str
    purl: str
    severity: Severity
    status: Status
    reason: str
    accepted_by: AllowlistEntry | None
    expired_entry: AllowlistEntry | None
    blocking: bool

    def describe(self) -> str:
        return (
            f"{self.advisory} on {self.purl} in {self.component} "
            f"({self.severity.label}, {self.status}: {self.reason})"
        )


@dataclass(frozen=True)
class GateResult:
    release: str
    version: str
    threshold: Severity
    findings: tuple[Finding, ...]
    packages_checked: int
    advisory_count: int
    advisory_digest: str
    allowlist_sha256: str | None
    unused_entries: tuple[str, ...]
    evaluated_at: dt.datetime

    @property
    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.blocking)

    @property
    def accepted(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.accepted_by is not None)

    @property
    def refused(self) -> bool:
        return bool(self.blocking)

    def raise_if_refused(self) -> None:
        """Raise :class:`GateRefused` naming every blocking finding."""
        blocking = self.blocking
        if blocking:
            raise GateRefused(
                f"{self.release} {self.version}: vulnerability gate refused the release "
                f"({len(blocking)} blocking finding(s) at fail-on {self.threshold.label}): "
                + "; ".join(f.describe() for f in blocking)
            )


@dataclass(frozen=True)
class Package:
    """One package the gate checks: a component, or a library inside ``component``."""

    component: str
    component_purl: str
    name: str
    version: str
    purl: str


def evaluate(
    components: ComponentList,
    advisories: AdvisorySet,
    allowlist: Allowlist,
    threshold: Severity,
    now: dt.datetime,
) -> GateResult:
    """Match every package against ``advisories`` and decide (see the module notes)."""
    packages = []
    for component, library in components.packages():
        package = library or component
        packages.append(
            Package(component.name, component.purl, package.name, package.version, package.purl)
        )
    return evaluate_packages(
        components.name, components.version, packages, advisories, allowlist, threshold, now
    )


def evaluate_packages(
    release: str,
    version: str,
    packages: Sequence[Package],
    advisories: AdvisorySet,
    allowlist: Allowlist,
    threshold: Severity,
    now: dt.datetime,
) -> GateResult:
    """:func:`evaluate` for a flat list of packages (an SBOM's, on the server)."""
    if now.tzinfo is None:
        raise ConfigError("now must be a timezone-aware datetime")
    if threshold is Severity.UNKNOWN:
        raise ConfigError("the threshold must be a rating from none to critical")
    findings = []
    used: set[str] = set()
    for package in packages:
        for advisory in advisories.advisories:
            try:
                found = match(advisory, package.purl, package.version)
            except ValueError as e:  # a purl that does not parse: never clean
                found = Match("indeterminate", f"unreadable package URL: {e}", Severity.UNKNOWN)
            if found is None:
                continue
            ids = {advisory.id, *advisory.aliases}
            accepted, expired = allowlist.find(ids, package.purl, now)
            for entry in (accepted, expired):
                if entry is not None:
                    used.add(entry.ref)
            severe = found.status == "indeterminate" or found.severity >= threshold
            findings.append(
                Finding(
                    advisory=advisory.id,
                    aliases=advisory.aliases,
                    summary=advisory.summary,
                    component=package.component,
                    component_purl=package.component_purl,
                    package=package.name,
                    version=package.version,
                    purl=package.purl,
                    severity=found.severity,
                    status=found.status,
                    reason=found.reason,
                    accepted_by=accepted,
                    expired_entry=None if accepted else expired,
                    blocking=severe and accepted is None,
                )
            )
    findings.sort(key=lambda f: (f.component, f.package, f.purl, f.advisory))
    return GateResult(
        release=release,
        version=version,
        threshold=threshold,
        findings=tuple(findings),
        packages_checked=len(packages),
        advisory_count=len(advisories.advisories),
        advisory_digest=advisories.digest,
        allowlist_sha256=allowlist.sha256,
        unused_entries=tuple(e.ref for e in allowlist.entries if e.ref not in used),
        evaluated_at=now.astimezone(dt.UTC).replace(microsecond=0),
    )


def utc_text(moment: dt.datetime) -> str:
    """``2026-03-01T12:00:00Z``: the one time format of reports and VEX documents."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry_json(entry: AllowlistEntry) -> dict[str, Any]:
    return {
        "ref": entry.ref,
        "status": entry.status,
        "justification": entry.justification,
        "impact_statement": entry.impact_statement,
        "action_statement": entry.action_statement,
        "approvers": list(entry.approvers),
        "expires": utc_text(entry.expires),
    }


def _finding_json(f: Finding) -> dict[str, Any]:
    return {
        "advisory": f.advisory,
        "aliases": list(f.aliases),
        "summary": f.summary,
        "component": f.component,
        "package": f.package,
        "version": f.version,
        "purl": f.purl,
        "severity": f.severity.label,
        "status": f.status,
        "reason": f.reason,
        "blocking": f.blocking,
        "accepted_by": _entry_json(f.accepted_by) if f.accepted_by else None,
        "expired_entry": f.expired_entry.ref if f.expired_entry else None,
    }


def report_json(result: GateResult) -> bytes:
    """The scan report: canonical JSON (sorted keys, UTF-8), the same for the same inputs."""
    document = {
        "format": REPORT_FORMAT,
        "release": {"name": result.release, "version": result.version},
        "evaluated_at": utc_text(result.evaluated_at),
        "policy": {
            "fail_on": result.threshold.label,
            "indeterminate": "blocks unless accepted",
            "unrated": "blocks unless accepted",
        },
        "advisories": {
            "count": result.advisory_count,
            "digest": f"sha256:{result.advisory_digest}",
        },
        "allowlist": {
            "sha256": result.allowlist_sha256,
            "unused_entries": list(result.unused_entries),
        },
        "packages_checked": result.packages_checked,
        "decision": "refused" if result.refused else "passed",
        "findings": [_finding_json(f) for f in result.findings],
    }
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


@dataclass(frozen=True)
class ScanSummary:
    """What a vulnerability report says, as the audit log keeps it."""

    decision: str
    findings: int
    blocking: int
    accepted: int
    advisories: str  # "sha256:<digest of the advisory set>"

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "findings": self.findings,
            "blocking": self.blocking,
            "accepted": self.accepted,
            "advisories": self.advisories,
        }


def scan_summary(data: bytes, source: str) -> ScanSummary:
    """Read back a report that :func:`report_json` wrote; :class:`SupplyChainError` if it
    is not one."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != REPORT_FORMAT:
            raise InvalidValue(f"format is not {REPORT_FORMAT!r}")
        findings = doc["findings"]
        decision = doc["decision"]
        if decision not in ("passed", "refused") or not isinstance(findings, list):
            raise InvalidValue("decision or findings malformed")
        return ScanSummary(
            decision=decision,
            findings=len(findings),
            blocking=sum(1 for f in findings if f.get("blocking")),
            accepted=sum(1 for f in findings if f.get("accepted_by")),
            advisories=str(doc["advisories"]["digest"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SupplyChainError(f"{source}: not a vulnerability report: {e}") from e
