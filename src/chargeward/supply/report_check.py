"""Is a release's vulnerability report true?  The server's own re-check of an uploaded scan.

Whoever builds a release writes its scan report, so its ``decision`` is only a claim.
:func:`check_report` re-derives it and lists every way it is wrong:

* the report's fail-on level may not be laxer than the server's (:class:`GatePolicy`,
  default ``high``: the level ``supply scan`` and ``release build`` refuse at by default);
* each finding blocks when it is indeterminate or rated at or above the stricter of the two
  levels and no accepted risk covers it that is still valid at ``now``, names at least the
  policy's number of approvers and expires at most :attr:`GatePolicy.max_acceptance` after
  the scan or the server's time, whichever is earlier (a report dated in the future gains
  nothing); the report's own ``blocking`` flags and its ``decision`` must agree;
* the server evaluates the release's SBOM against its own advisory set: every finding it
  makes must be in the report (by advisory id or alias, and package URL), with the server's
  rating and status counting when they are worse than the report's;
* the report is about this release (name and version as the manifest says).

Accepted risks in the report are not trusted blindly either: they expire, and the report's
SHA-256 goes into the TUF targets' custom fields, so the approvers' threshold signature
covers every acceptance in it.

    report = read_report(data, "vulnerability-report.json")
    problems = check_report(report, packages, advisories, now=now, version="4.2.0")
    problems
    # -> ['decision is passed, but 1 finding(s) block: CVE-2024-5535 on pkg:generic/openssl@3.0.13']
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chargeward.errors import InvalidValue, SupplyChainError
from chargeward.supply.advisories import AdvisorySet
from chargeward.supply.allowlist import Allowlist
from chargeward.supply.gate import REPORT_FORMAT, Package, evaluate_packages, utc_text
from chargeward.supply.severity import Severity

MAX_PROBLEMS = 20  # named in a refusal; the count says how many more there are


@dataclass(frozen=True)
class GatePolicy:
    """What the server requires of every scan report, whatever the builder chose."""

    fail_on: Severity = Severity.HIGH  # the laxest fail-on level a report may use
    min_approvers: int = 1  # distinct approvers each accepted risk names
    max_acceptance: dt.timedelta = dt.timedelta(days=366)  # from the scan to the expiry


DEFAULT_POLICY = GatePolicy()


@dataclass(frozen=True)
class ReportFinding:
    advisory: str
    aliases: tuple[str, ...]
    purl: str
    severity: Severity
    status: str
    blocking: bool
    accepted_until: dt.datetime | None  # the accepted risk's expiry; None: not accepted
    approvers: tuple[str, ...] = ()  # who accepted the risk (distinct, non-empty)

    def ids(self) -> set[str]:
        return {self.advisory, *self.aliases}


@dataclass(frozen=True)
class ScanReport:
    """A report as :func:`chargeward.supply.gate.report_json` writes it, read back."""

    release: str
    version: str
    threshold: Severity
    evaluated_at: dt.datetime
    decision: str
    findings: tuple[ReportFinding, ...]
    advisories: str
    sha256: str


def _time(value: object) -> dt.datetime:
    if not isinstance(value, str):
        raise InvalidValue("a time must be text")
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise InvalidValue(f"{value!r} needs a UTC offset")
    return moment


def _finding(raw: Any) -> ReportFinding:
    if not isinstance(raw, dict):
        raise InvalidValue("a finding must be an object")
    accepted = raw.get("accepted_by")
    status = raw["status"]
    if status not in ("affected", "indeterminate"):
        raise InvalidValue(f"finding status {status!r}")
    if not isinstance(raw["blocking"], bool) or not isinstance(raw["aliases"], list):
        raise InvalidValue("finding blocking or aliases malformed")
    approvers = accepted.get("approvers", []) if isinstance(accepted, dict) else []
    if not isinstance(approvers, list) or not all(isinstance(a, str) for a in approvers):
        raise InvalidValue("accepted_by.approvers must be a list of names")
    return ReportFinding(
        advisory=str(raw["advisory"]),
        aliases=tuple(str(a) for a in raw["aliases"]),
        purl=str(raw["purl"]),
        severity=Severity.parse(str(raw["severity"])),
        status=status,
        blocking=raw["blocking"],
        accepted_until=_time(accepted["expires"]) if isinstance(accepted, dict) else None,
        approvers=tuple(dict.fromkeys(a.strip() for a in approvers if a.strip())),
    )


def read_report(data: bytes, source: str) -> ScanReport:
    """Parse a scan report; :class:`SupplyChainError` naming ``source`` if it is not one."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != REPORT_FORMAT:
            raise InvalidValue(f"format is not {REPORT_FORMAT!r}")
        decision = doc["decision"]
        if decision not in ("passed", "refused") or not isinstance(doc["findings"], list):
            raise InvalidValue("decision or findings malformed")
        threshold = Severity.parse(str(doc["policy"]["fail_on"]))
        if threshold is Severity.UNKNOWN:
            raise InvalidValue("policy.fail_on is not a rating")
        return ScanReport(
            release=str(doc["release"]["name"]),
            version=str(doc["release"]["version"]),
            threshold=threshold,
            evaluated_at=_time(doc["evaluated_at"]),
            decision=decision,
            findings=tuple(_finding(f) for f in doc["findings"]),
            advisories=str(doc["advisories"]["digest"]),
            sha256=hashlib.sha256(data).hexdigest(),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SupplyChainError(f"{source}: not a vulnerability report: {e}") from e


def _acceptance_problem(f: ReportFinding, since: dt.datetime, policy: GatePolicy) -> str | None:
    """Why the finding's accepted risk accepts nothing (None: it holds or there is none)."""
    if f.accepted_until is None:
        return None
    if len(f.approvers) < policy.min_approvers:
        return f"names {len(f.approvers)} approver(s), at least {policy.min_approvers} needed"
    if f.accepted_until - since > policy.max_acceptance:
        return (
            f"expires {utc_text(f.accepted_until)}, more than "
            f"{policy.max_acceptance.days} days after the scan"
        )
    return None


def _blocks(severity: Severity, status: str, threshold: Severity, accepted: bool) -> bool:
    return (status == "indeterminate" or severity >= threshold) and not accepted


def check_report(
    report: ScanReport,
    packages: Sequence[Package],
    advisories: AdvisorySet,
    *,
    now: dt.datetime,
    version: str,
    policy: GatePolicy = DEFAULT_POLICY,
) -> list[str]:
    """Every way ``report`` misstates the release's scan (empty: it holds; module notes)."""
    problems = []
    if report.threshold > policy.fail_on:
        problems.append(
            f"the report's fail-on {report.threshold.label} is laxer than the server's "
            f"minimum {policy.fail_on.label}"
        )
    if report.version != version:
        problems.append(f"the report is about version {report.version}, not {version}")
    threshold = min(report.threshold, policy.fail_on)
    own = evaluate_packages(
        report.release, version, packages, advisories, Allowlist(), threshold, now
    )
    own_by_key = {(i, f.purl): f for f in own.findings for i in (f.advisory, *f.aliases)}
    blocking = []
    for f in report.findings:
        ours = next((own_by_key[(i, f.purl)] for i in f.ids() if (i, f.purl) in own_by_key), None)
        severity = max(f.severity, ours.severity) if ours else f.severity
        statuses = {f.status, ours.status} if ours else {f.status}
        status = "indeterminate" if "indeterminate" in statuses else "affected"
        refused = _acceptance_problem(f, min(report.evaluated_at, now), policy)
        if refused is not None:
            problems.append(f"{f.advisory} on {f.purl}: its accepted risk {refused}")
        accepted = refused is None and f.accepted_until is not None and f.accepted_until > now
        if _blocks(severity, status, threshold, accepted):
            blocking.append(f"{f.advisory} on {f.purl}")
            if not f.blocking:
                expired = refused is None and f.accepted_until is not None
                problems.append(
                    f"{f.advisory} on {f.purl} ({severity.label}, {status}) is marked as not "
                    f"blocking at fail-on {threshold.label}"
                    + (" (its accepted risk has expired)" if expired else "")
                )
    if report.decision == "passed" and blocking:
        problems.append(
            f"decision is passed, but {len(blocking)} finding(s) block: " + ", ".join(blocking)
        )
    listed = {(i, f.purl) for f in report.findings for i in f.ids()}
    for g in own.findings:
        if not any((i, g.purl) in listed for i in (g.advisory, *g.aliases)):
            problems.append(
                f"the report omits {g.advisory} on {g.purl} ({g.severity.label}, "
                f"{g.status}: {g.reason})"
            )
    return problems


def describe(problems: Sequence[str]) -> str:
    """The problems in one line, the first :data:`MAX_PROBLEMS` of them named."""
    shown = "; ".join(problems[:MAX_PROBLEMS])
    more = len(problems) - MAX_PROBLEMS
    return shown + (f"; and {more} more" if more > 0 else "")
