"""The TUF repository over HTTP (``/tuf/metadata/``, ``/tuf/targets/``) and the approval API.

TUF files are signed, and chargers verify them with python-tuf.  Root, timestamp, snapshot,
the top-level targets and fleet-wide images are public; a customer's tenant role
(``N.tenant-<id>.json``) and its images (``tenants/<id>/...``) are answered only to that
customer's stations and permitted operators, and 404 to everyone else (ADR 0026,
:mod:`chargeward.server.http.tenant_access`).
Targets are served from the content-addressed blob store by the hash in their consistent-
snapshot name (``firmware/ac22/1.4.0/<sha256>.main.cwfw``), and only while the published
targets metadata lists that path with that hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from chargeward.crypto.pki import verify_crl
from chargeward.errors import BundleError, NotFound
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.model.targets import TENANT_PREFIX, TENANT_ROLE_PREFIX, tenant_of_path
from chargeward.server.auth import accounts, totp
from chargeward.server.common.schemas import (
    ApprovalRequest,
    ProposalApprovalsView,
    ProposalView,
    ReleaseFilesView,
    ReleaseView,
    RoleStatusView,
)
from chargeward.server.http import tenant_access
from chargeward.server.http.api import Operator
from chargeward.server.http.authz import CurrentPrincipal, client_address
from chargeward.server.rollout import release_catalog
from chargeward.server.rollout import repository as repo_services
from chargeward.server.rollout.supply_chain import check_publication
from chargeward.server.state import ServerState
from chargeward.trust.approval import ApprovalRefused, NotKeyHolder

_HASHED_NAME = re.compile(r"^([0-9a-f]{64})\.(.+)$")
_METADATA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,194}\.json")  # a file name, ASCII


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.chargeward
    return state


State = Annotated[ServerState, Depends(_state)]
router = APIRouter()


def _tenant_of_metadata(name: str) -> str | None:
    """The tenant id of metadata file ``[N.]tenant-<id>.json``, or None."""
    role = name.removesuffix(".json")
    version, dot, rest = role.partition(".")
    if dot and version.isdigit():
        role = rest
    if not role.startswith(TENANT_ROLE_PREFIX):
        return None
    return role.removeprefix(TENANT_ROLE_PREFIX)


@router.get("/tuf/metadata/{name}", include_in_schema=False)
async def tuf_metadata(name: str, request: Request, state: State) -> FileResponse:
    # Only names a TUF client asks for (``3.targets.json``, a role name): never a path the
    # file system refuses (a 5,000-character name was an OSError, a 500; issue 26).
    if _METADATA_NAME.fullmatch(name) is None:
        raise NotFound("no such metadata")
    tid = _tenant_of_metadata(name)
    if tid is not None and not await tenant_access.may_read_tenant(request, state, tid):
        raise NotFound("no such metadata")  # as for a file that does not exist
    path = state.repository.metadata_file(name)
    return FileResponse(path, media_type="application/json")


@router.get("/tuf/targets/{path:path}", include_in_schema=False)
async def tuf_target(path: str, request: Request, state: State) -> FileResponse:
    tid = tenant_of_path(path)
    if path.startswith(TENANT_PREFIX) and (
        tid is None or not await tenant_access.may_read_tenant(request, state, tid)
    ):
        raise NotFound("no such target")  # as for one that does not exist
    directory, _, name = path.rpartition("/")
    match = _HASHED_NAME.fullmatch(name)
    if match is None:
        raise NotFound(f"no target {path!r}")
    sha256, base = match.groups()
    target_path = f"{directory}/{base}" if directory else base
    if await asyncio.to_thread(state.published_target_sha256, target_path) != sha256:
        raise NotFound("no such target" if tid is not None else f"no target {path!r}")
    return FileResponse(state.blobs.path(sha256), media_type="application/octet-stream")


@router.get("/api/v1/repository", response_model=list[RoleStatusView])
async def repository_status(_: Operator, state: State) -> list[RoleStatusView]:
    statuses = await asyncio.to_thread(state.repository.status, now=state.clock())
    return [RoleStatusView(**s.__dict__) for s in statuses]


@router.get("/api/v1/releases/{release_id}/proposal", response_model=ProposalView)
async def get_proposal(release_id: str, who: Operator, state: State) -> ProposalView:
    async with state.db.session() as s:
        return await repo_services.get_proposal(
            s, state.repository, release_id, actor=who, now=state.clock()
        )


@router.get("/api/v1/releases/{release_id}/approvals", response_model=list[ProposalApprovalsView])
async def release_approvals(
    release_id: str, _: Operator, state: State
) -> list[ProposalApprovalsView]:
    """Who approved the release, with which key and when (read only)."""
    async with state.db.snapshot() as s:
        return await repo_services.release_approvals(s, release_id)


@router.get("/api/v1/releases/{release_id}/files", response_model=ReleaseFilesView)
async def release_files(release_id: str, _: Operator, state: State) -> ReleaseFilesView:
    """The release's manifest.json and signing certificate, as uploaded."""
    async with state.db.snapshot() as s:
        return await release_catalog.release_files(s, release_id)


@router.post("/api/v1/releases/{release_id}/approvals", response_model=ProposalView)
async def approve(
    release_id: str,
    body: ApprovalRequest,
    request: Request,
    principal: CurrentPrincipal,
    state: State,
) -> ProposalView:
    """An approver's signature over the proposal; with ``totp``, confirmed by a fresh code
    of the caller's login session (a wrong code refuses it and counts towards lockout).

    An approval made with another account's key is refused with 403 ``not_key_holder``, one
    the rules forbid otherwise (the uploader's, an unbound key) with 409; both are audited."""
    now = state.clock()
    try:
        async with state.db.session() as s:
            refusal = None
            if body.totp is not None:
                refusal = await totp.confirm_totp(
                    s, principal, body.totp, address=client_address(request), now=now
                )
            if refusal is None:
                return await repo_services.approve(
                    s,
                    state.repository,
                    release_id,
                    keyid=body.keyid,
                    signature=body.signature,
                    role_signatures=dict(body.roles),
                    actor=principal.name,
                    confirmed=body.totp is not None,
                    now=now,
                )
    except ApprovalRefused as e:
        async with state.db.session() as s:
            await repo_services.record_refused_approval(
                s, release_id, e, keyid=body.keyid, actor=principal.name, now=now
            )
        if isinstance(e, NotKeyHolder):
            raise accounts.Refusal(403, "not_key_holder", str(e)) from e
        raise
    raise refusal  # after the commit: the failure counts


@router.post("/api/v1/releases/{release_id}/publish", response_model=ReleaseView)
async def publish(release_id: str, who: Operator, state: State) -> ReleaseView:
    await publish_proposal(release_id, who, state)
    async with state.db.session() as s:
        return await release_catalog.release_view(s, release_id)


@router.get("/api/v1/proposals/{ref}", response_model=ProposalView)
async def get_any_proposal(ref: str, who: Operator, state: State) -> ProposalView:
    return await get_proposal(ref, who, state)


@router.post("/api/v1/proposals/{ref}/approvals", response_model=ProposalView)
async def approve_any(
    ref: str, body: ApprovalRequest, request: Request, principal: CurrentPrincipal, state: State
) -> ProposalView:
    return await approve(ref, body, request, principal, state)


@router.post("/api/v1/proposals/{ref}/publish", response_model=ProposalView)
async def publish_proposal(ref: str, who: Operator, state: State) -> ProposalView:
    await check_publication(
        state.db, state.data_dir, ref, actor=who, now=state.clock(), policy=state.gate_policy
    )
    async with state.db.session() as s:
        return await repo_services.publish(
            s, state.repository, state.online_signers, ref, actor=who, now=state.clock()
        )


@router.post("/api/v1/repository/revocations", response_model=ProposalView, status_code=201)
async def propose_crl(request: Request, who: Operator, state: State) -> ProposalView:
    """A new firmware-signing CRL (DER), issued by a trusted Manufacturer Root CA."""
    der = await request.body()
    if len(der) > DEFAULT_FORMAT_LIMITS.crl_bytes:
        raise BundleError(
            f"CRL is {len(der)} bytes; the limit is {DEFAULT_FORMAT_LIMITS.crl_bytes}"
        )
    verify_crl(der, state.manufacturer_roots(), now=state.clock())
    digest = hashlib.sha256(der).hexdigest()
    tmp = state.data_dir / "tmp" / f"crl-{digest}"
    tmp.write_bytes(der)
    try:
        state.blobs.put(tmp, digest, len(der))
    finally:
        tmp.unlink(missing_ok=True)
    async with state.db.session() as s:
        return await repo_services.propose_revocation(
            s, state.repository, digest, len(der), actor=who, now=state.clock()
        )
