"""Server services for the TUF image repository: proposals, k-of-n approvals, publishing.

A release uploaded by one person is *pending*: the server proposes the next ``targets``
metadata (everything published plus the release's images, one target per hardware model),
approvers fetch it, check it and sign it with their own keys (``chargeward release approve``),
and once enough distinct approvers have signed, ``publish`` writes targets, snapshot and
timestamp in that order.  If another proposal is published first, an open proposal is made
again on the new base, and approvals given to the old bytes no longer count.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence

from securesystemslib.signer import Signature
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from tuf.api.metadata import Metadata, TargetFile, Targets

from chargeward import audit
from chargeward.errors import Conflict, NotFound
from chargeward.publish import ImageRepository, OnlineSigners
from chargeward.publish.targets import ImageFacts, release_targets
from chargeward.server.schemas import ProposalView, ProposedTarget
from chargeward.server.services import find_release, station_actor
from chargeward.server.tables import Approval, Proposal, Release, ReleaseImage, Station
from chargeward.trust.approval import (
    Approval as ApprovalRecord,
)
from chargeward.trust.approval import (
    approval_status,
    check_approval,
    signed_proposal,
)


def _release_targets(release: Release, images: Sequence[ReleaseImage]) -> dict[str, TargetFile]:
    return release_targets(
        version=release.version,
        security_version=release.security_version,
        models=release.hardware_models["models"],
        release_class=release.release_class,
        customer=release.customer,
        images=[ImageFacts(i.component, i.sha256, i.length) for i in images],
    )


async def _images(s: AsyncSession, release_id: str) -> list[ReleaseImage]:
    rows = await s.scalars(
        select(ReleaseImage)
        .where(ReleaseImage.release_id == release_id)
        .order_by(ReleaseImage.component)
    )
    return list(rows.all())


async def _open_proposal(s: AsyncSession, release_id: str) -> Proposal | None:
    rows = await s.scalars(
        select(Proposal)
        .where(Proposal.release_id == release_id)
        .order_by(Proposal.id.desc())
        .limit(1)
    )
    return rows.first()


async def _approvals(s: AsyncSession, proposal_id: int) -> list[ApprovalRecord]:
    rows = await s.scalars(
        select(Approval).where(Approval.proposal_id == proposal_id).order_by(Approval.id)
    )
    return [ApprovalRecord(a.keyid, a.owner, a.signature, a.submitted_by) for a in rows.all()]


def _metadata(proposal: Proposal) -> Metadata[Targets]:
    return Metadata[Targets].from_bytes(proposal.metadata_json.encode())


async def release_proposal(
    s: AsyncSession,
    repo: ImageRepository,
    release: Release,
    *,
    actor: str,
    now: dt.datetime,
) -> Proposal:
    """The release's proposal on the current repository state (made or remade as needed)."""
    proposal = await _open_proposal(s, release.id)
    current = repo.targets().signed.version
    if proposal is not None and (proposal.state == "published" or proposal.base_version == current):
        return proposal
    additions = _release_targets(release, await _images(s, release.id))
    md = await asyncio.to_thread(repo.propose, additions, now=now)
    text = md.to_bytes().decode()
    if proposal is None:
        proposal = Proposal(
            kind="release",
            release_id=release.id,
            base_version=current,
            metadata_json=text,
            state="open",
            created_by=release.uploaded_by,
            created_at=now,
        )
        s.add(proposal)
        await s.flush()
        action = "release.proposed"
    else:
        proposal.base_version = current
        proposal.metadata_json = text
        action = "release.reproposed"  # another release was published first
    await audit.record(
        s,
        actor=actor,
        action=action,
        target=release.id,
        details={"proposal": proposal.id, "base_targets_version": current},
        now=now,
    )
    return proposal


async def proposal_view(s: AsyncSession, repo: ImageRepository, proposal: Proposal) -> ProposalView:
    md = _metadata(proposal)
    root = repo.root().signed
    status = approval_status(root, md, await _approvals(s, proposal.id))
    added = []
    if proposal.release_id is not None:
        release = await s.get(Release, proposal.release_id)
        assert release is not None
        for path, tf in _release_targets(release, await _images(s, release.id)).items():
            added.append(
                ProposedTarget(
                    path=path,
                    length=tf.length,
                    sha256=tf.hashes["sha256"],
                    custom=tf.unrecognized_fields["custom"],
                )
            )
    summary = "published" if proposal.state == "published" else status.describe()
    return ProposalView(
        id=proposal.id,
        kind=proposal.kind,
        release_id=proposal.release_id,
        state=proposal.state,
        base_version=proposal.base_version,
        created_by=proposal.created_by,
        metadata=proposal.metadata_json,
        added=added,
        approvers=list(status.approvers),
        threshold=status.threshold,
        missing=0 if proposal.state == "published" else status.missing,
        summary=summary,
    )


async def get_proposal(
    s: AsyncSession, repo: ImageRepository, release_id: str, *, actor: str, now: dt.datetime
) -> ProposalView:
    release = await find_release(s, release_id)
    proposal = await release_proposal(s, repo, release, actor=actor, now=now)
    return await proposal_view(s, repo, proposal)


async def approve(
    s: AsyncSession,
    repo: ImageRepository,
    release_id: str,
    *,
    keyid: str,
    signature: str,
    actor: str,
    now: dt.datetime,
) -> ProposalView:
    """Record one approver's signature over the release's current proposal."""
    release = await find_release(s, release_id)
    proposal = await release_proposal(s, repo, release, actor=actor, now=now)
    if proposal.state == "published":
        raise Conflict(f"release {release.version} is already published")
    md = _metadata(proposal)
    record = check_approval(
        repo.root().signed,
        md,
        Signature(keyid, signature),
        uploader=release.uploaded_by,
        submitted_by=actor,
    )
    existing = await _approvals(s, proposal.id)
    repeat = any(a.owner == record.owner for a in existing)
    s.add(
        Approval(
            proposal_id=proposal.id,
            keyid=record.keyid,
            owner=record.owner,
            signature=record.signature,
            submitted_by=actor,
            created_at=now,
        )
    )
    await s.flush()
    await audit.record(
        s,
        actor=actor,
        action="release.approved",
        target=release.id,
        details={
            "approver": record.owner,
            "keyid": record.keyid,
            "proposal": proposal.id,
            "counted": not repeat,
        },
        now=now,
    )
    return await proposal_view(s, repo, proposal)


async def publish(
    s: AsyncSession,
    repo: ImageRepository,
    online: Callable[[], OnlineSigners],
    release_id: str,
    *,
    actor: str,
    now: dt.datetime,
) -> int:
    """Publish an approved release; refuses below threshold, saying how many are missing."""
    release = await find_release(s, release_id)
    proposal = await release_proposal(s, repo, release, actor=actor, now=now)
    if proposal.state == "published":
        raise Conflict(f"release {release.version} is already published")
    root = repo.root().signed
    md, approvals = _metadata(proposal), await _approvals(s, proposal.id)
    status = approval_status(root, md, approvals)
    signed = signed_proposal(root, md, approvals)
    version = await asyncio.to_thread(repo.publish_targets, signed, online(), now=now)
    proposal.state = "published"
    proposal.published_at = now
    proposal.targets_version = version
    await audit.record(
        s,
        actor=actor,
        action="release.published",
        target=release.id,
        details={
            "version": release.version,
            "targets_version": version,
            "approvers": list(status.approvers),
            "targets": sorted(_release_targets(release, await _images(s, release.id))),
        },
        now=now,
    )
    return version


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
