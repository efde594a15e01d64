"""A release's supply-chain documents on the server: kept at upload, re-checked at publication.

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
* The fleet exposure query ("which stations run a package affected by this advisory") reads
  these documents: :mod:`chargeward.server.rollout.exposure`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from collections.abc import Mapping
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
from chargeward.limits import DEFAULT_SERVER_LIMITS, ServerLimits
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
)
from chargeward.server.store.vendor_tables import VendorRelease
from chargeward.supply.advisories import AdvisorySet, advisory_set, load_advisories
from chargeward.supply.gate import Package, scan_summary
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
    """Refuse to publish a release without an SBOM and a passed vulnerability scan.

    A vendor-supplied release (ADR 0041) is listed without them, flagged ``sbom: missing``
    in its upload's audit entry: the vendor built it, and shipped what it shipped."""
    if await s.get(VendorRelease, release.id) is not None:
        return
    have = await documents_of(s, release.id)
    missing = [name for name in (SBOM_NAME, SCAN_REPORT_NAME) if name not in have]
    if missing:
        raise Conflict(
            f"release {release.version} cannot be published: its bundle has no "
            f"{' and no '.join(missing)} (build it with `chargeward release build "
            "--components ... --advisories ...`)"
        )


async def add_provenance(
    s: AsyncSession,
    release: Release,
    envelope: bytes,
    *,
    actor: str,
    now: dt.datetime,
    limits: ServerLimits = DEFAULT_SERVER_LIMITS,
) -> ReleaseDocument:
    """Verify and keep ``envelope`` (at most ``limits.provenance_bytes``): signed by the
    release's firmware-signing key, naming each image (``images/<component>.cwfw``) and the
    bundle as uploaded, with their digests."""
    if len(envelope) > limits.provenance_bytes:
        raise BundleError(f"provenance is larger than {limits.provenance_bytes} bytes")
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
