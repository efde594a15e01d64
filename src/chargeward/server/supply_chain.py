"""A release's supply-chain documents on the server, and the fleet exposure query.

* At upload (:func:`store_documents`), the SBOM, vulnerability report and VEX that the bundle
  carries (bound to the release id by its manifest) are kept; the SBOM is validated strictly
  and its packages indexed; a report whose gate refused the release refuses the upload.  What
  they say goes into the ``release.upload`` audit entry, which the offline audit verifier's
  rules read: a release is published only after an upload showing its SBOM and a passed scan.
* :func:`require_supply_chain` is that rule on the server, applied before a release is
  proposed for TUF publication.
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

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.crypto.pki import certificate_ec_key, load_certificate
from chargeward.errors import BundleError, Conflict, NotFound, SupplyChainError
from chargeward.release.manifest import (
    PROVENANCE_NAME,
    SBOM_NAME,
    SCAN_REPORT_NAME,
    VEX_NAME,
    Manifest,
    image_path,
)
from chargeward.server.tables import Release, ReleaseComponent, ReleaseDocument, Station
from chargeward.supply.advisories import Advisory
from chargeward.supply.gate import scan_summary
from chargeward.supply.matching import match
from chargeward.supply.provenance import BUNDLE_SUBJECT, Subject, verify_provenance
from chargeward.supply.sbom import SbomPackage, sbom_components

MAX_PROVENANCE_BYTES = 1 << 20


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
        affected = any(p.status == "affected" for p in self.packages)
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


async def exposure(s: AsyncSession, advisory: Advisory) -> ExposureReport:
    """Stations running a release whose SBOM lists a package ``advisory`` affects.

    A station runs the releases whose version it reports (BootNotification firmwareVersion)
    and that are built for its model.  Stations whose release is unknown, or has no SBOM,
    are listed as ``unknown``: never silently clean.
    """
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
    affected: list[ExposedStation] = []
    indeterminate: list[ExposedStation] = []
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
            (affected if exposed.status == "affected" else indeterminate).append(exposed)
    return ExposureReport(
        advisory=advisory.id,
        aliases=advisory.aliases,
        stations_checked=len(stations),
        releases_matched=sum(1 for r in releases if r.id in hits),
        affected=affected,
        indeterminate=indeterminate,
        unknown=unknown,
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
