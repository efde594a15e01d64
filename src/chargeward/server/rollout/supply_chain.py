"""A release's supply-chain documents on the server, and the fleet exposure query.

* At upload (:func:`store_documents`), the SBOM, vulnerability report and VEX that the bundle
  carries (bound to the release id by its manifest) are kept; the SBOM is validated strictly
  and its packages indexed; a report whose gate refused the release refuses the upload.  What
  they say goes into the ``release.upload`` audit entry, which the offline audit verifier's
  rules read: a release is published only after an upload showing its SBOM and a passed scan.
* The report's ``decision`` is a claim of whoever built the release.  Before an upload is
  kept (:func:`check_upload`) and before a release is published (:func:`check_publication`)
  the server re-checks it (:mod:`chargeward.supply.report_check`): against its findings, and
  against the server's own evaluation of the SBOM with the OSV advisories in
  ``<data-dir>/advisories/`` (:data:`ADVISORIES_DIR`), under the server's own
  :class:`~chargeward.supply.report_check.GatePolicy` (``chargeward server --gate-fail-on``,
  ``--gate-min-approvers``): a report laxer than it, or whose accepted risks name too few
  approvers or last too long, does not hold.  A report that misstates the scan is refused
  (422) with a ``release.upload_refused`` / ``release.publish_refused`` audit entry.
  At publication the scan report and SBOM must also still be the ones whose digests the
  approvers signed in the targets' custom fields.
* :func:`require_supply_chain` is the rule that a release has an SBOM and a scan, applied
  before a release is proposed for TUF publication.
* :func:`add_provenance` keeps the release's in-toto provenance (DSSE) once it verifies under
  the release's firmware-signing certificate, naming every image and the bundle as uploaded.
* :func:`exposure` answers "which stations run a package affected by this advisory", from the
  SBOMs of the releases the stations report (EU CRA Art. 14: within 24 hours of an actively
  exploited vulnerability).

    >>> async with db.session() as s:                                   # doctest: +SKIP
    ...     report = await exposure(s, parse_advisory(raw, "CVE-2024-0001.json"))
    ...     [station.station_id for station in report.affected]
    ['CP-0001', 'CP-0042']
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from tuf.api.metadata import Metadata, Targets

from chargeward import audit
from chargeward.crypto.pki import certificate_ec_key, load_certificate
from chargeward.errors import (
    BundleError,
    Conflict,
    GateRefused,
    IntegrityError,
    NotFound,
    SupplyChainError,
)
from chargeward.model.targets import firmware_target_path, tenant_path
from chargeward.release.manifest import (
    PROVENANCE_NAME,
    SBOM_NAME,
    SCAN_REPORT_NAME,
    VEX_NAME,
    Manifest,
    image_path,
)
from chargeward.release.verify import VerifiedBundle
from chargeward.server.common import inputs
from chargeward.server.store.tables import (
    Proposal,
    Release,
    ReleaseComponent,
    ReleaseDocument,
    ReleaseImage,
    Station,
)
from chargeward.supply.advisories import Advisory, AdvisorySet, advisory_set, load_advisories
from chargeward.supply.gate import Package, scan_summary
from chargeward.supply.matching import match
from chargeward.supply.provenance import BUNDLE_SUBJECT, Subject, verify_provenance
from chargeward.supply.report_check import (
    DEFAULT_POLICY,
    GatePolicy,
    check_report,
    describe,
    read_report,
)
from chargeward.supply.sbom import SbomPackage, sbom_components

LOG = logging.getLogger("chargeward.server.supply_chain")  # its name before the move
MAX_PROVENANCE_BYTES = 1 << 20
ADVISORIES_DIR = "advisories"  # below the data directory: the server's OSV advisory set


def server_advisories(data_dir: Path) -> AdvisorySet | None:
    """The server's own OSV advisories (``<data-dir>/advisories/``); None if it keeps none."""
    directory = data_dir / ADVISORIES_DIR
    if not directory.exists():
        return None
    return load_advisories(directory)


def _packages(sbom: bytes, where: str) -> list[Package]:
    return [
        Package(p.name, p.purl, p.name, p.version, p.purl) for p in sbom_components(sbom, where)
    ]


def report_problems(
    documents: Mapping[str, bytes],
    version: str,
    advisories: AdvisorySet | None,
    *,
    now: dt.datetime,
    policy: GatePolicy = DEFAULT_POLICY,
) -> list[str]:
    """How the release's scan report misstates its scan (empty: it holds or there is none).

    With ``advisories`` None the report is checked against itself only.
    """
    report = documents.get(SCAN_REPORT_NAME)
    if report is None:
        return []
    where = f"release {version}"
    if scan_summary(report, f"{where}: {SCAN_REPORT_NAME}").decision != "passed":
        return []  # it refuses the release itself: store_documents says so (409)
    parsed = read_report(report, f"{where}: {SCAN_REPORT_NAME}")
    sbom = documents.get(SBOM_NAME)
    if sbom is None:
        return ["the vulnerability report comes without the SBOM it was made from"]
    packages = _packages(sbom, f"{where}: {SBOM_NAME}")
    own = advisories if advisories is not None else advisory_set([])
    return check_report(parsed, packages, own, now=now, version=version, policy=policy)


async def _refuse(
    db: Any,
    *,
    action: str,
    release_id: str,
    version: str,
    problems: list[str],
    details: dict[str, Any],
    actor: str,
    now: dt.datetime,
    error: type[GateRefused] | type[IntegrityError] = GateRefused,
    what: str = "its vulnerability report does not hold",
) -> None:
    """Record the refusal in its own transaction (kept although the request fails), raise."""
    async with db.session() as s:
        await audit.record(
            s,
            actor=actor,
            action=action,
            target=release_id,
            details={"version": version, "problems": problems[:20], **details},
            now=now,
        )
    raise error(f"release {version}: {what}: {describe(problems)}")


def _advisory_details(advisories: AdvisorySet | None) -> dict[str, Any]:
    if advisories is None:
        return {"advisories": None}
    return {
        "advisories": {
            "count": len(advisories.advisories),
            "digest": f"sha256:{advisories.digest}",
        }
    }


async def check_upload(
    db: Any,
    data_dir: Path,
    bundle: VerifiedBundle,
    *,
    actor: str,
    now: dt.datetime,
    policy: GatePolicy = DEFAULT_POLICY,
) -> None:
    """Refuse (audited, :class:`GateRefused`) a bundle whose scan report does not hold."""
    advisories = await asyncio.to_thread(server_advisories, data_dir)
    if advisories is None:
        LOG.warning(
            "no %s/ in the data directory: scan reports are checked against themselves only",
            ADVISORIES_DIR,
        )
    version = bundle.manifest.version
    documents = bundle.attestations
    problems = await asyncio.to_thread(
        report_problems, documents, version, advisories, now=now, policy=policy
    )
    if problems:
        report = documents[SCAN_REPORT_NAME]
        await _refuse(
            db,
            action="release.upload_refused",
            release_id=bundle.manifest_sha256,
            version=version,
            problems=problems,
            details={"scan_report_sha256": _sha256(report), **_advisory_details(advisories)},
            actor=actor,
            now=now,
        )


def _signed_digests(proposal: Proposal, paths: set[str]) -> dict[str, set[str | None]]:
    """The document digests that the proposal's targets at ``paths`` (the release's images)
    carry in their custom fields."""
    md = Metadata[Targets].from_bytes(proposal.metadata_json.encode())
    listed = dict(md.signed.targets)
    for text in (proposal.roles_json or {}).values():  # tenant roles (ADR 0026)
        listed.update(Metadata[Targets].from_bytes(str(text).encode()).signed.targets)
    signed: dict[str, set[str | None]] = {SBOM_NAME: set(), SCAN_REPORT_NAME: set()}
    for path, tf in listed.items():
        custom = tf.unrecognized_fields.get("custom")
        if path not in paths or not isinstance(custom, dict):
            continue
        signed[SBOM_NAME].add(custom.get("sbom_sha256"))
        signed[SCAN_REPORT_NAME].add(custom.get("scan_report_sha256"))
    return signed


async def check_publication(
    db: Any,
    data_dir: Path,
    ref: str,
    *,
    actor: str,
    now: dt.datetime,
    policy: GatePolicy = DEFAULT_POLICY,
) -> None:
    """Before a release is published: its scan report still holds against the server's
    advisories today, and its SBOM and scan report are still the ones the approvers signed."""
    async with db.snapshot() as s:
        if (number := inputs.row_id(ref)) is not None:
            proposal = await s.get(Proposal, number)
            if proposal is None or proposal.release_id is None:
                return  # not found (said by publish) or not a release
            release_id: str = proposal.release_id
        else:
            from chargeward.server.rollout.release_catalog import find_release

            release_id = (await find_release(s, ref)).id
        release = await s.get(Release, release_id)
        assert release is not None
        version = release.version
        rows = await documents_of(s, release_id)
        documents = {name: row.data for name, row in rows.items()}
        stored = {name: row.sha256 for name, row in rows.items()}
        latest = (
            await s.scalars(
                select(Proposal)
                .where(Proposal.release_id == release_id, Proposal.state == "open")
                .order_by(Proposal.id.desc())
                .limit(1)
            )
        ).first()
        components = (
            await s.scalars(
                select(ReleaseImage.component).where(ReleaseImage.release_id == release_id)
            )
        ).all()
        paths = {
            tenant_path(release.customer, firmware_target_path(model, version, component))
            for model in release.hardware_models["models"]
            for component in components
        }
        signed = _signed_digests(latest, paths) if latest is not None else None
    altered = [
        f"{name} is not the document it was uploaded as"
        for name, data in sorted(documents.items())
        if _sha256(data) != stored[name]
    ]
    if signed is not None:
        for name, digests in signed.items():
            held = _sha256(documents[name]) if name in documents else None
            if digests and digests != {held}:
                altered.append(
                    f"{name} (sha256 {str(held)[:16]}) is not the one the approvers signed "
                    f"({', '.join(sorted(str(d)[:16] for d in digests))})"
                )
    if altered:
        await _refuse(
            db,
            action="release.publish_refused",
            release_id=release_id,
            version=version,
            problems=altered,
            details={"reason": "documents altered"},
            actor=actor,
            now=now,
            error=IntegrityError,
            what="its supply-chain documents changed after upload",
        )
    advisories = await asyncio.to_thread(server_advisories, data_dir)
    problems = await asyncio.to_thread(
        report_problems, documents, version, advisories, now=now, policy=policy
    )
    if problems:
        await _refuse(
            db,
            action="release.publish_refused",
            release_id=release_id,
            version=version,
            problems=problems,
            details={
                "scan_report_sha256": stored.get(SCAN_REPORT_NAME),
                **_advisory_details(advisories),
            },
            actor=actor,
            now=now,
        )


async def store_documents(
    s: AsyncSession,
    release_id: str,
    manifest: Manifest,
    documents: Mapping[str, bytes],
    *,
    actor: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """Keep the bundle's supply-chain documents; returns what the upload's audit entry adds."""
    details: dict[str, Any] = {}
    where = f"release {manifest.version}"
    sbom = documents.get(SBOM_NAME)
    if sbom is not None:
        packages = sbom_components(sbom, f"{where}: {SBOM_NAME}")
        for p in packages:
            _check_package(p, f"{where}: {SBOM_NAME}")
            s.add(
                ReleaseComponent(release_id=release_id, name=p.name, version=p.version, purl=p.purl)
            )
        details["sbom"] = {"sha256": _sha256(sbom), "packages": len(packages)}
    report = documents.get(SCAN_REPORT_NAME)
    if report is not None:
        summary = scan_summary(report, f"{where}: {SCAN_REPORT_NAME}")
        if summary.decision != "passed":
            raise Conflict(
                f"{where}: its vulnerability report refuses it "
                f"({summary.blocking} blocking finding(s)); it cannot be uploaded"
            )
        # The report against itself (the server's advisories: check_upload, before this).
        problems = report_problems(documents, manifest.version, None, now=now)
        if problems:
            raise GateRefused(
                f"{where}: its vulnerability report does not hold: {describe(problems)}"
            )
        details["scan"] = {"sha256": _sha256(report), **summary.as_dict()}
    vex = documents.get(VEX_NAME)
    if vex is not None:
        details["vex"] = {"sha256": _sha256(vex)}
    for name, data in sorted(documents.items()):
        s.add(
            ReleaseDocument(
                release_id=release_id,
                name=name,
                sha256=_sha256(data),
                data=data,
                added_by=actor,
                added_at=now,
            )
        )
    return details


# The widths of release_components' columns: a longer value is refused, never cut short.
PACKAGE_LIMITS = {"name": 200, "version": 100, "purl": 500}


def _check_package(package: SbomPackage, where: str) -> None:
    for field_name, limit in PACKAGE_LIMITS.items():
        if len(getattr(package, field_name)) > limit:
            raise SupplyChainError(
                f"{where}: package {package.purl[:80]!r}: {field_name} is longer than "
                f"{limit} characters"
            )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def documents_of(s: AsyncSession, release_id: str) -> dict[str, ReleaseDocument]:
    rows = await s.scalars(select(ReleaseDocument).where(ReleaseDocument.release_id == release_id))
    return {row.name: row for row in rows}


async def document(s: AsyncSession, release_id: str, name: str) -> ReleaseDocument:
    row = await s.get(ReleaseDocument, (release_id, name))
    if row is None:
        raise NotFound(f"release {release_id[:12]} has no {name}")
    return row


async def require_supply_chain(s: AsyncSession, release: Release) -> None:
    """Refuse to publish a release without an SBOM and a passed vulnerability scan."""
    have = await documents_of(s, release.id)
    missing = [name for name in (SBOM_NAME, SCAN_REPORT_NAME) if name not in have]
    if missing:
        raise Conflict(
            f"release {release.version} cannot be published: its bundle has no "
            f"{' and no '.join(missing)} (build it with `chargeward release build "
            "--components ... --advisories ...`)"
        )


async def add_provenance(
    s: AsyncSession, release: Release, envelope: bytes, *, actor: str, now: dt.datetime
) -> ReleaseDocument:
    """Verify and keep ``envelope``: signed by the release's firmware-signing key, naming each
    image (``images/<component>.cwfw``) and the bundle as uploaded, with their digests."""
    if len(envelope) > MAX_PROVENANCE_BYTES:
        raise BundleError(f"provenance is larger than {MAX_PROVENANCE_BYTES} bytes")
    if await s.get(ReleaseDocument, (release.id, PROVENANCE_NAME)) is not None:
        raise Conflict(f"release {release.version} already has its provenance")
    manifest = Manifest.from_json(release.manifest_json.encode())
    subjects = [Subject(image_path(i.component), i.sha256) for i in manifest.images]
    if release.bundle_sha256 is not None:
        subjects.append(Subject(BUNDLE_SUBJECT, release.bundle_sha256))
    key = certificate_ec_key(load_certificate(release.signing_certificate_pem.encode()))
    statement = verify_provenance(envelope, [key], subjects)
    row = ReleaseDocument(
        release_id=release.id,
        name=PROVENANCE_NAME,
        sha256=_sha256(envelope),
        data=envelope,
        added_by=actor,
        added_at=now,
    )
    s.add(row)
    await audit.record(
        s,
        actor=actor,
        action="release.provenance",
        target=release.id,
        details={
            "sha256": row.sha256,
            "subjects": sorted(x.name for x in subjects),
            "keyid": statement.keyid,
            "external_parameters": dict(statement.build_definition.get("externalParameters", {})),
        },
        now=now,
    )
    return row


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

    A station runs the releases whose version it reports (BootNotification firmwareVersion)
    and that are built for its model.  Stations whose release is unknown, or has no SBOM,
    are listed as ``unknown``: never silently clean.  A package the release's VEX document
    or an accepted risk in its scan report (not expired at ``now``) covers is listed with
    that statement; a station whose exposed packages are all covered is ``accepted``.
    """
    now = now or dt.datetime.now(dt.UTC)
    ids = {advisory.id, *advisory.aliases}
    releases = (await s.scalars(select(Release))).all()
    by_version: dict[str, list[Release]] = {}
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
        running = [
            r
            for r in by_version.get(st.firmware_version or "", [])
            if not st.model or st.model in r.hardware_models.get("models", [])
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
