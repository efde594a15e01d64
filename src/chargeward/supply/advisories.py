"""OSV advisories read from a local directory: the offline vulnerability database.

Each ``*.json`` file below the directory holds one advisory in the OSV schema
(https://ossf.github.io/osv-schema/); other files are ignored.  Only what the gate needs is
kept: id, aliases, the affected packages with their ``versions`` and ``ranges``, and the
severity.  Structure errors are :class:`~chargeward.errors.SupplyChainError` naming file and
field; ranges that cannot be *evaluated* are kept and judged indeterminate by the matcher.

Records converted from the NVD by OSV.dev name no ``affected[].package``: only GIT ranges
with their ``repo`` (and the repository's tags under ``versions``).  Such an entry is kept
with an empty ecosystem and name, and the matcher finds it by repository.

    advisories = load_advisories(Path("advisories"))
    advisories.digest  # names exactly this set of advisory files' contents
    # -> 'c0ffee...'
    parse_advisory(data, "CVE-2024-5535.json").aliases
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from chargeward.errors import SupplyChainError
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.supply._fields import Fields, read_document, read_input
from chargeward.supply.severity import Severity, severity_of_osv

EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")


@dataclass(frozen=True)
class Range:
    """One OSV range: its ``type`` (SEMVER, ECOSYSTEM, GIT, ...) and ``(kind, version)`` events."""

    type: str
    events: tuple[tuple[str, str], ...]
    repo: str | None = None  # GIT ranges: the repository the commits are in

    @property
    def open_ended(self) -> bool:
        """No event ends the range: every later version is affected too."""
        return not any(kind != "introduced" for kind, _ in self.events)


@dataclass(frozen=True)
class AffectedPackage:
    ecosystem: str
    name: str
    purl: str | None
    ranges: tuple[Range, ...]
    versions: tuple[str, ...]
    severity: tuple[Severity, ...] = ()

    @property
    def repos(self) -> tuple[str, ...]:
        """The repositories of its GIT ranges."""
        return tuple(dict.fromkeys(r.repo for r in self.ranges if r.repo))


@dataclass(frozen=True)
class Advisory:
    id: str
    aliases: tuple[str, ...]
    summary: str
    affected: tuple[AffectedPackage, ...]
    severity: tuple[Severity, ...]
    withdrawn: bool
    source: str
    sha256: str

    def severity_for(self, package: AffectedPackage) -> Severity:
        """The highest rating given for ``package``; ``UNKNOWN`` if none is given."""
        return max((*self.severity, *package.severity), default=Severity.UNKNOWN)


@dataclass(frozen=True)
class AdvisorySet:
    """The advisories a scan used; ``digest`` is the SHA-256 over their ids and file digests."""

    advisories: tuple[Advisory, ...]
    digest: str


def _severities(fields: Fields) -> list[Severity]:
    result = []
    for entry in fields.tables("severity"):
        result.append(severity_of_osv(entry.text("type"), entry.text("score")))
    specific = fields.table("database_specific")
    if specific is not None and isinstance(specific.value.get("severity"), str):
        result.append(Severity.parse(specific.text("severity")))
    return result


def _range(fields: Fields) -> Range:
    events = []
    for event in fields.tables("events", required=True):
        keys = list(event.value)
        if len(keys) != 1 or keys[0] not in EVENT_KINDS:
            raise event.error(None, f"an event has exactly one of {', '.join(EVENT_KINDS)}")
        events.append((keys[0], event.text(keys[0])))
    if not any(kind == "introduced" for kind, _ in events):
        raise fields.error("events", "a range needs an 'introduced' event")
    kinds = {kind for kind, _ in events}
    if {"fixed", "last_affected"} <= kinds:
        raise fields.error("events", "a range has 'fixed' or 'last_affected' events, not both")
    kind = fields.text("type")
    repo = fields.optional_text("repo")
    if kind == "GIT" and repo is None:
        raise fields.error("repo", "a GIT range names its repository")
    return Range(kind, tuple(events), repo)


def _affected(fields: Fields) -> AffectedPackage:
    package = fields.table("package")
    ecosystem = name = ""
    purl = None
    if package is not None:
        ecosystem, name = package.text("ecosystem"), package.text("name")
        if "purl" in package.value:
            purl = package.purl("purl").to_string()
    ranges = tuple(_range(r) for r in fields.tables("ranges"))
    if package is None and not any(r.repo for r in ranges):
        raise fields.error("package", "missing, and no GIT range names a repository")
    return AffectedPackage(
        ecosystem=ecosystem,
        name=name,
        purl=purl,
        ranges=ranges,
        versions=tuple(fields.texts("versions")),
        severity=tuple(_severities(fields)),
    )


def parse_advisory(data: bytes, source: str) -> Advisory:
    """Parse one OSV advisory (JSON); ``source`` names it in errors."""
    doc = read_document(data, source, max_bytes=DEFAULT_FORMAT_LIMITS.advisory_bytes, as_json=True)
    details = doc.value.get("details")
    details = details if isinstance(details, str) else ""
    return Advisory(
        id=doc.text("id"),
        aliases=tuple(doc.texts("aliases")),
        # NVD-converted records have details but no summary: their first line stands in.
        summary=doc.optional_text("summary") or details.strip().partition("\n")[0][:200],
        affected=tuple(_affected(a) for a in doc.tables("affected")),
        severity=tuple(_severities(doc)),
        withdrawn=doc.optional_text("withdrawn") is not None,
        source=source,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def advisory_set(advisories: Iterable[Advisory]) -> AdvisorySet:
    """Collect advisories, refusing two with one id; sorted by id, with the set's digest."""
    by_id: dict[str, Advisory] = {}
    for advisory in advisories:
        other = by_id.setdefault(advisory.id, advisory)
        if other is not advisory:
            raise SupplyChainError(
                f"{advisory.source}: id: advisory {advisory.id} also in {other.source}"
            )
    ordered = tuple(by_id[i] for i in sorted(by_id))
    listing = "".join(f"{a.sha256}  {a.id}\n" for a in ordered)
    return AdvisorySet(ordered, hashlib.sha256(listing.encode()).hexdigest())


def load_advisories(directory: Path) -> AdvisorySet:
    """Read every ``*.json`` file below ``directory`` (symbolic links are not followed)."""
    if not directory.is_dir():
        raise SupplyChainError(f"{directory}: not a directory of OSV advisories")
    paths = sorted(p for p in directory.rglob("*.json") if p.is_file() and not p.is_symlink())
    if len(paths) > DEFAULT_FORMAT_LIMITS.advisory_files:
        raise SupplyChainError(
            f"{directory}: more than {DEFAULT_FORMAT_LIMITS.advisory_files} advisory files"
        )
    advisories = []
    for path in paths:
        advisories.append(
            parse_advisory(read_input(path, DEFAULT_FORMAT_LIMITS.advisory_bytes), str(path))
        )
    return advisory_set(advisories)
