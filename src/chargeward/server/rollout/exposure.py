"""The fleet exposure query: which stations run a package an advisory affects.

:func:`exposure` answers from the SBOMs of the releases the stations report (EU CRA Art. 14:
within 24 hours of an actively exploited vulnerability).  The SBOMs, scan reports and VEX
documents it reads are kept at upload by :mod:`chargeward.server.rollout.supply_chain`.

    async with db.session() as s:
        report = await exposure(s, parse_advisory(raw, "CVE-2024-0001.json"))
        [station.station_id for station in report.affected]
    # -> ['CP-0001', 'CP-0042']
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward.errors import SupplyChainError
from chargeward.model.reported import reports_release
from chargeward.release.manifest import SCAN_REPORT_NAME, VEX_NAME
from chargeward.server.store.tables import Release, ReleaseComponent, ReleaseDocument, Station
from chargeward.supply.advisories import Advisory
from chargeward.supply.matching import match
from chargeward.supply.report_check import read_report


@dataclass(frozen=True)
class ExposedPackage:
    name: str
    version: str
    purl: str
    status: str  # affected | indeterminate
    reason: str
    accepted: str | None = None  # the release's VEX statement or accepted risk covering it


@dataclass
class ExposedStation:
    station_id: str
    model: str | None
    site_id: str | None
    firmware_version: str | None
    releases: list[str]
    packages: list[ExposedPackage] = field(default_factory=list)

    @property
    def status(self) -> str:
        if all(p.accepted for p in self.packages):
            return "accepted"
        affected = any(p.status == "affected" and not p.accepted for p in self.packages)
        return "affected" if affected else "indeterminate"


@dataclass(frozen=True)
class ExposureReport:
    advisory: str
    aliases: tuple[str, ...]
    stations_checked: int
    releases_matched: int
    affected: list[ExposedStation]  # at least one package affected
    indeterminate: list[ExposedStation]  # only packages the advisory may affect
    unknown: list[str]  # stations whose running release has no SBOM on this server
    # every exposed package covered by the release's VEX or an accepted risk: listed, with
    # the statement, never dropped
    accepted: list[ExposedStation] = field(default_factory=list)


def _vex_statements(vex: bytes) -> list[tuple[set[str], set[str], str]]:
    """``(vulnerability ids, product purls, what it says)`` of an OpenVEX document."""
    try:
        doc = json.loads(vex)
        out = []
        for st in doc.get("statements", []):
            vuln = st.get("vulnerability", {})
            ids = {str(vuln.get("name")), *map(str, vuln.get("aliases", []))}
            purls = set()
            for product in st.get("products", []):
                purls.add(str(product.get("@id")))
                purls.update(str(sub.get("@id")) for sub in product.get("subcomponents", []))
            why = next(
                (
                    st[k]
                    for k in ("justification", "impact_statement", "action_statement")
                    if k in st
                ),
                "",
            )
            out.append((ids, purls, f"VEX {st.get('status')}" + (f": {why}" if why else "")))
        return out
    except (ValueError, TypeError, AttributeError):
        return []  # a VEX this server cannot read accepts nothing


def _accepted_risks(report: bytes, now: dt.datetime) -> list[tuple[set[str], set[str], str]]:
    """The report's accepted findings still valid at ``now``, in :func:`_vex_statements`' form."""
    try:
        parsed = read_report(report, SCAN_REPORT_NAME)
        doc = json.loads(report)
    except (SupplyChainError, ValueError):
        return []
    out = []
    for f, raw in zip(parsed.findings, doc["findings"], strict=True):
        if f.accepted_until is None or f.accepted_until <= now:
            continue
        entry = raw["accepted_by"]
        out.append(
            (
                f.ids(),
                {f.purl},
                f"accepted risk ({entry.get('status')}, until {entry.get('expires')}, "
                f"approved by {', '.join(map(str, entry.get('approvers', [])))})",
            )
        )
    return out


async def _acceptances(
    s: AsyncSession, release_ids: set[str], now: dt.datetime
) -> dict[str, list[tuple[set[str], set[str], str]]]:
    rows = await s.scalars(
        select(ReleaseDocument).where(
            ReleaseDocument.release_id.in_(release_ids),
            ReleaseDocument.name.in_([VEX_NAME, SCAN_REPORT_NAME]),
        )
    )
    out: dict[str, list[tuple[set[str], set[str], str]]] = {}
    for row in rows.all():
        made = _vex_statements(row.data) if row.name == VEX_NAME else _accepted_risks(row.data, now)
        out.setdefault(row.release_id, []).extend(made)
    return out


async def exposure(
    s: AsyncSession, advisory: Advisory, *, now: dt.datetime | None = None
) -> ExposureReport:
    """Stations running a release whose SBOM lists a package ``advisory`` affects.

    A station runs the releases built for its model whose version it reports (BootNotification
    firmwareVersion), or that declare what it reports for its model (ADR 0037).  Stations
    whose release is unknown, or has no SBOM, are listed as ``unknown``: never silently clean.
    A package the release's VEX document or an accepted risk in its scan report (not expired
    at ``now``) covers is listed with that statement; a station whose exposed packages are all
    covered is ``accepted``.
    """
    now = now or dt.datetime.now(dt.UTC)
    ids = {advisory.id, *advisory.aliases}
    releases = (await s.scalars(select(Release))).all()
    by_version: dict[str, list[Release]] = {}
    declaring = [r for r in releases if r.reported_versions is not None]
    for r in releases:
        by_version.setdefault(r.version, []).append(r)
    with_sbom = set((await s.scalars(select(ReleaseComponent.release_id).distinct())).all())
    hits: dict[str, list[ExposedPackage]] = {}
    for row in (await s.scalars(select(ReleaseComponent))).all():
        found = _match(advisory, row)
        if found is not None:
            hits.setdefault(row.release_id, []).append(found)
    statements = await _acceptances(s, set(hits), now)
    for release_id, packages in hits.items():
        covered = statements.get(release_id, [])
        hits[release_id] = [
            dataclasses.replace(
                p,
                accepted=next(
                    (why for vids, purls, why in covered if vids & ids and p.purl in purls), None
                ),
            )
            for p in packages
        ]
    affected: list[ExposedStation] = []
    indeterminate: list[ExposedStation] = []
    accepted: list[ExposedStation] = []
    unknown: list[str] = []
    stations = (await s.scalars(select(Station).order_by(Station.id))).all()
    for st in stations:
        candidates = {r.id: r for r in (*by_version.get(st.firmware_version or "", []), *declaring)}
        running = [
            r
            for _, r in sorted(candidates.items())
            if reports_release(r, st.model, st.firmware_version)
            and (not st.model or st.model in r.hardware_models.get("models", []))
        ]
        if not running or not any(r.id in with_sbom for r in running):
            unknown.append(st.id)
            continue
        exposed = ExposedStation(
            st.id, st.model, st.site_id, st.firmware_version, sorted(r.id for r in running)
        )
        for r in running:
            exposed.packages.extend(hits.get(r.id, []))
        if exposed.packages:
            lists = {"affected": affected, "indeterminate": indeterminate, "accepted": accepted}
            lists[exposed.status].append(exposed)
    return ExposureReport(
        advisory=advisory.id,
        aliases=advisory.aliases,
        stations_checked=len(stations),
        releases_matched=sum(1 for r in releases if r.id in hits),
        affected=affected,
        indeterminate=indeterminate,
        unknown=unknown,
        accepted=accepted,
    )


def _match(advisory: Advisory, row: ReleaseComponent) -> ExposedPackage | None:
    if not row.purl:
        return None
    try:
        found = match(advisory, row.purl, row.version)
    except ValueError:  # a purl this server stored but cannot read: fail closed
        return ExposedPackage(row.name, row.version, row.purl, "indeterminate", "unreadable purl")
    if found is None:
        return None
    return ExposedPackage(row.name, row.version, row.purl, found.status, found.reason)
