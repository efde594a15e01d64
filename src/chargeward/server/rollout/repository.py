"""Server services for the TUF image repository: proposals, k-of-n approvals, publishing.

A change to the repository is a *proposal*: the next ``targets`` metadata, i.e. everything
published plus a release's images (one target per hardware model) or a new firmware-signing
CRL.  Approvers fetch it, check it and sign it with their own keys (``chargeward release
approve`` / ``chargeward repo approve``), and every tenant role file (customer-locked
releases, ADR 0026) it changes with the same key; once enough distinct approvers have signed,
``publish`` writes targets, snapshot and timestamp in that order.  If another proposal is
published first, an open proposal is made again on the new base, and approvals given to the
old bytes no longer count; so is one fetched less than ``proposal_renew`` before it expires
(publishing refuses targets metadata that is expired or about to be).

Approvals are checked against the approver-key registry
(:mod:`chargeward.server.rollout.approver_keys`): an account submits approvals made with its own
key only, and the uploader's account cannot approve.  A refused approval is audited
(``<kind>.approval_refused``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

from securesystemslib.signer import Signature
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from tuf.api.metadata import Metadata, TargetFile, Targets

from chargeward import audit
from chargeward.errors import Conflict, NotFound
from chargeward.model.targets import REVOCATION_TARGET
from chargeward.publish import ImageRepository, OnlineSigners
from chargeward.publish.repository import ProposedFiles
from chargeward.publish.targets import ImageFacts, release_targets
from chargeward.release.manifest import SBOM_NAME, SCAN_REPORT_NAME
from chargeward.server.common import inputs
from chargeward.server.common.schemas import (
    ApprovalRecordView,
    ProposalApprovalsView,
    ProposalView,
    ProposedTarget,
)
from chargeward.server.fleet.station_registry import station_actor
from chargeward.server.rollout import approver_keys, campaigns
from chargeward.server.rollout.deltas import release_deltas
from chargeward.server.rollout.release_catalog import find_release
from chargeward.server.rollout.supply_chain import require_supply_chain
from chargeward.server.store.tables import (
    Approval,
    Proposal,
    Release,
    ReleaseDocument,
    ReleaseImage,
    Station,
)
from chargeward.trust.approval import Approval as ApprovalRecord
from chargeward.trust.approval import (
    ApprovalRefused,
    approval_status,
    check_approval,
    signed_files,
)


async def _release_targets(s: AsyncSession, release: Release) -> dict[str, TargetFile]:
    images = await _images(s, release.id)
    sbom = await s.get(ReleaseDocument, (release.id, SBOM_NAME))
    report = await s.get(ReleaseDocument, (release.id, SCAN_REPORT_NAME))
    return release_targets(
        version=release.version,
        security_version=release.security_version,
        models=release.hardware_models["models"],
        release_class=release.release_class,
        customer=release.customer,
        images=[ImageFacts(i.component, i.sha256, i.length, i.signature) for i in images],
        sbom_sha256=sbom.sha256 if sbom is not None else None,
        deltas=await release_deltas(s, release.id),
        scan_report_sha256=report.sha256 if report is not None else None,
    )


async def _images(s: AsyncSession, release_id: str) -> list[ReleaseImage]:
    rows = await s.scalars(
        select(ReleaseImage)
        .where(ReleaseImage.release_id == release_id)
        .order_by(ReleaseImage.component)
    )
    return list(rows.all())


async def _approvals(s: AsyncSession, proposal_id: int) -> list[ApprovalRecord]:
    rows = await s.scalars(
        select(Approval).where(Approval.proposal_id == proposal_id).order_by(Approval.id)
    )
    return [
        ApprovalRecord(a.keyid, a.owner, a.signature, a.submitted_by, a.role_signatures or {})
        for a in rows.all()
    ]


def _metadata(proposal: Proposal) -> Metadata[Targets]:
    return Metadata[Targets].from_bytes(proposal.metadata_json.encode())


def _roles(proposal: Proposal) -> dict[str, Metadata[Targets]]:
    """The tenant role files the proposal changes besides the top-level targets."""
    return {
        name: Metadata[Targets].from_bytes(str(text).encode())
        for name, text in (proposal.roles_json or {}).items()
    }


def _store_files(proposal: Proposal, files: ProposedFiles) -> None:
    proposal.metadata_json = files.targets.to_bytes().decode()
    proposal.roles_json = {n: md.to_bytes().decode() for n, md in files.roles.items()} or None


def _subject(proposal: Proposal) -> str:
    return proposal.release_id or f"proposal {proposal.id}"


async def _additions(s: AsyncSession, proposal: Proposal) -> dict[str, TargetFile]:
    """What the proposal adds to the repository (recomputed from its source)."""
    if proposal.release_id is not None:
        release = await find_release(s, proposal.release_id)
        return await _release_targets(s, release)
    listed = _metadata(proposal).signed.targets
    return {REVOCATION_TARGET: listed[REVOCATION_TARGET]}


async def _current(
    s: AsyncSession,
    repo: ImageRepository,
    proposal: Proposal,
    *,
    actor: str,
    now: dt.datetime,
    renew: bool = False,
) -> Proposal:
    """``proposal`` on the current repository state, remade if another one was published
    (or, with ``renew``, if it expires within the policy's ``proposal_renew``)."""
    current = await asyncio.to_thread(repo.targets_version)
    if proposal.state == "published":
        return proposal
    expiring = renew and _metadata(proposal).signed.expires - now < repo.policy.proposal_renew
    if proposal.base_version == current and not expiring:
        return proposal
    files = await asyncio.to_thread(repo.propose_files, await _additions(s, proposal), now=now)
    proposal.base_version = current
    _store_files(proposal, files)
    await audit.record(
        s,
        actor=actor,
        action=f"{proposal.kind}.reproposed",  # another proposal was published first
        target=_subject(proposal),
        details={
            "proposal": proposal.id,
            "base_targets_version": current,
            **({"reason": "expiring"} if expiring else {}),
        },
        now=now,
    )
    return proposal


async def _new_proposal(
    s: AsyncSession,
    repo: ImageRepository,
    *,
    kind: str,
    additions: dict[str, TargetFile],
    release_id: str | None,
    created_by: str,
    actor: str,
    now: dt.datetime,
) -> Proposal:
    current = await asyncio.to_thread(repo.targets_version)
    files = await asyncio.to_thread(repo.propose_files, additions, now=now)
    proposal = Proposal(
        kind=kind,
        release_id=release_id,
        base_version=current,
        state="open",
        created_by=created_by,
        created_at=now,
    )
    _store_files(proposal, files)
    s.add(proposal)
    await s.flush()
    await audit.record(
        s,
        actor=actor,
        action=f"{kind}.proposed",
        target=_subject(proposal),
        details={"proposal": proposal.id, "targets": sorted(additions)},
        now=now,
    )
    return proposal


async def release_proposal(
    s: AsyncSession,
    repo: ImageRepository,
    release: Release,
    *,
    actor: str,
    now: dt.datetime,
    renew: bool = False,
) -> Proposal:
    """The release's proposal on the current repository state (made or remade as needed)."""
    rows = await s.scalars(
        select(Proposal)
        .where(Proposal.release_id == release.id)
        .order_by(Proposal.id.desc())
        .limit(1)
    )
    proposal = rows.first()
    if proposal is None:
        await require_supply_chain(s, release)
        return await _new_proposal(
            s,
            repo,
            kind="release",
            additions=await _release_targets(s, release),
            release_id=release.id,
            created_by=release.uploaded_by,
            actor=actor,
            now=now,
        )
    return await _current(s, repo, proposal, actor=actor, now=now, renew=renew)


async def propose_revocation(
    s: AsyncSession,
    repo: ImageRepository,
    crl_sha256: str,
    crl_length: int,
    *,
    actor: str,
    now: dt.datetime,
) -> ProposalView:
    """Propose a new firmware-signing CRL (already verified and stored by the caller)."""
    target = TargetFile(length=crl_length, hashes={"sha256": crl_sha256}, path=REVOCATION_TARGET)
    proposal = await _new_proposal(
        s,
        repo,
        kind="revocation",
        additions={REVOCATION_TARGET: target},
        release_id=None,
        created_by=actor,
        actor=actor,
        now=now,
    )
    return await proposal_view(s, repo, proposal)


async def _proposal(
    s: AsyncSession,
    repo: ImageRepository,
    ref: str,
    *,
    actor: str,
    now: dt.datetime,
    renew: bool = False,
) -> Proposal:
    """A proposal by number, or the proposal of a release (id or prefix)."""
    if (number := inputs.row_id(ref)) is not None:
        proposal = await s.get(Proposal, number)
        if proposal is None:
            raise NotFound(f"no proposal {ref}")
        return await _current(s, repo, proposal, actor=actor, now=now, renew=renew)
    release = await find_release(s, ref)
    return await release_proposal(s, repo, release, actor=actor, now=now, renew=renew)


async def _open_proposal(
    s: AsyncSession, repo: ImageRepository, ref: str, *, actor: str, now: dt.datetime
) -> Proposal:
    """Like :func:`_proposal`, refusing one that is already published."""
    proposal = await _proposal(s, repo, ref, actor=actor, now=now)
    if proposal.state == "published":
        raise Conflict(f"{_subject(proposal)} is already published")
    return proposal


async def proposal_view(s: AsyncSession, repo: ImageRepository, proposal: Proposal) -> ProposalView:
    md, roles = _metadata(proposal), _roles(proposal)
    accounts = await approver_keys.bound_accounts(s)
    status = approval_status(
        repo.root().signed, md, await _approvals(s, proposal.id), accounts, roles
    )
    added = [
        ProposedTarget(
            path=path,
            length=tf.length,
            sha256=tf.hashes["sha256"],
            custom=tf.unrecognized_fields.get("custom", {}),
        )
        for path, tf in sorted((await _additions(s, proposal)).items())
    ]
    published = proposal.state == "published"
    return ProposalView(
        id=proposal.id,
        kind=proposal.kind,
        release_id=proposal.release_id,
        state=proposal.state,
        base_version=proposal.base_version,
        created_by=proposal.created_by,
        metadata=proposal.metadata_json,
        roles={n: str(text) for n, text in (proposal.roles_json or {}).items()},
        added=added,
        approvers=list(status.approvers),
        threshold=status.threshold,
        missing=0 if published else status.missing,
        summary="published" if published else status.describe(),
    )


async def release_approvals(s: AsyncSession, release_id: str) -> list[ProposalApprovalsView]:
    """Every proposal of a release, oldest first, with the approvals each received.

    Read only: unlike :func:`get_proposal` it never makes or remakes a proposal.
    """
    release = await find_release(s, release_id)
    proposals = (
        await s.scalars(
            select(Proposal).where(Proposal.release_id == release.id).order_by(Proposal.id)
        )
    ).all()
    rows = (
        await s.scalars(
            select(Approval)
            .where(Approval.proposal_id.in_([p.id for p in proposals]))
            .order_by(Approval.id)
        )
    ).all()
    return [
        ProposalApprovalsView(
            proposal=p.id,
            kind=p.kind,
            state=p.state,
            base_version=p.base_version,
            created_by=p.created_by,
            created_at=p.created_at,
            published_at=p.published_at,
            targets_version=p.targets_version,
            approvals=[
                ApprovalRecordView(
                    approver=a.owner,
                    keyid=a.keyid,
                    signature=a.signature,
                    submitted_by=a.submitted_by,
                    submitted_at=a.created_at,
                )
                for a in rows
                if a.proposal_id == p.id
            ],
        )
        for p in proposals
    ]


async def get_proposal(
    s: AsyncSession, repo: ImageRepository, ref: str, *, actor: str, now: dt.datetime
) -> ProposalView:
    proposal = await _proposal(s, repo, ref, actor=actor, now=now, renew=True)
    return await proposal_view(s, repo, proposal)


async def approve(
    s: AsyncSession,
    repo: ImageRepository,
    ref: str,
    *,
    keyid: str,
    signature: str,
    actor: str,
    now: dt.datetime,
    confirmed: bool = False,
    role_signatures: dict[str, str] | None = None,
) -> ProposalView:
    """Record one approver's signature over a proposal's current bytes (``confirmed``: the
    submitter confirmed it with a fresh TOTP code, as the dashboard requires).

    :class:`~chargeward.trust.approval.ApprovalRefused` when the rules forbid it; the caller
    audits that with :func:`record_refused_approval` after this transaction is rolled back."""
    proposal = await _open_proposal(s, repo, ref, actor=actor, now=now)
    record = check_approval(
        repo.root().signed,
        _metadata(proposal),
        Signature(keyid, signature),
        uploader=proposal.created_by,
        submitted_by=actor,
        accounts=await approver_keys.bound_accounts(s),
        roles=_roles(proposal),
        role_signatures=role_signatures,
    )
    repeat = any(a.owner == record.owner for a in await _approvals(s, proposal.id))
    s.add(
        Approval(
            proposal_id=proposal.id,
            keyid=record.keyid,
            owner=record.owner,
            signature=record.signature,
            role_signatures=dict(record.roles) or None,
            submitted_by=actor,
            created_at=now,
        )
    )
    await s.flush()
    await audit.record(
        s,
        actor=actor,
        action=f"{proposal.kind}.approved",
        target=_subject(proposal),
        details={
            "approver": record.owner,
            "keyid": record.keyid,
            "proposal": proposal.id,
            "counted": not repeat,
            **({"confirmed_with": "totp"} if confirmed else {}),
        },
        now=now,
    )
    return await proposal_view(s, repo, proposal)


async def record_refused_approval(
    s: AsyncSession,
    ref: str,
    refusal: ApprovalRefused,
    *,
    keyid: str,
    actor: str,
    now: dt.datetime,
) -> None:
    """Audit an approval the rules refused (``<kind>.approval_refused``), in its own
    transaction: the refused request's own was rolled back."""
    kind, subject, number = "release", ref, None
    if (number := inputs.row_id(ref)) is not None:
        proposal = await s.get(Proposal, number)
        if proposal is not None:
            kind, subject, number = proposal.kind, _subject(proposal), proposal.id
    else:
        subject = (await find_release(s, ref)).id
    await audit.record(
        s,
        actor=actor,
        action=f"{kind}.approval_refused",
        target=subject,
        details={
            "reason": refusal.reason,
            "keyid": keyid,
            "proposal": number,
            "error": str(refusal),
        },
        now=now,
    )


async def publish(
    s: AsyncSession,
    repo: ImageRepository,
    online: Callable[[], OnlineSigners],
    ref: str,
    *,
    actor: str,
    now: dt.datetime,
) -> ProposalView:
    """Publish an approved proposal; refuses below threshold, saying how many are missing."""
    proposal = await _open_proposal(s, repo, ref, actor=actor, now=now)
    root = repo.root().signed
    md, roles = _metadata(proposal), _roles(proposal)
    approvals = await _approvals(s, proposal.id)
    accounts = await approver_keys.bound_accounts(s)
    status = approval_status(root, md, approvals, accounts, roles)
    signed, signed_roles = signed_files(root, md, roles, approvals, accounts)
    version = await asyncio.to_thread(
        repo.publish_targets, signed, online(), now=now, roles=signed_roles
    )
    proposal.state = "published"
    proposal.published_at = now
    proposal.targets_version = version
    await audit.record(
        s,
        actor=actor,
        action=f"{proposal.kind}.published",
        target=_subject(proposal),
        details={
            "proposal": proposal.id,
            "targets_version": version,
            "approvers": list(status.approvers),
            "threshold": status.threshold,  # what the offline verifier checks against
            "targets": sorted(await _additions(s, proposal)),
        },
        now=now,
    )
    return await proposal_view(s, repo, proposal)


async def record_available_update(
    s: AsyncSession, station_id: str, data: dict[str, object], *, now: dt.datetime
) -> None:
    """A station reported a newer security release for it (DataTransfer)."""
    station = await s.get(Station, station_id)
    if station is None:
        raise NotFound(f"no station {station_id!r}")
    station.available_update = {**data, "reported_at": now.isoformat()}
    await audit.record(
        s,
        actor=station_actor(station_id),
        action="station.update_available",
        target=station_id,
        details=dict(data),
        now=now,
    )
    version = data.get("version")
    if isinstance(version, str):  # standing policy: join the running security campaign
        await campaigns.join_security_campaign(s, station, version, now=now)
