"""REST API for the audit log's Merkle tree, as an ``APIRouter``.

    GET  /api/v1/audit/tree                        {"size", "root_hash"} of the committed tree
    GET  /api/v1/audit/checkpoints                 every signed checkpoint, oldest first
    GET  /api/v1/audit/checkpoints/latest          the latest signed note (text/plain)
    POST /api/v1/audit/checkpoints                 sign one now (admin; audit:sign)
    GET  /api/v1/audit/vkey                        the verifier key to pin (text/plain)
    GET  /api/v1/audit/proofs/inclusion?index=&size=
    GET  /api/v1/audit/proofs/consistency?old=&new=

Hashes in JSON answers are **lowercase hex** (32 bytes, 64 digits); the signed notes carry
the root in base64 as C2SP tlog-checkpoint requires.  Proof hashes are listed leaf to root
(RFC 9162 sections 2.1.3 and 2.1.4) and verify with :func:`chargeward.audit.merkle.verify_inclusion`
and :func:`~chargeward.audit.merkle.verify_consistency`.  The entries themselves, each with
its ``leaf_index``, come from ``GET /api/v1/audit`` (:mod:`chargeward.server.http.api`).

Every read of the tree, and signing, first appends what station reports queued on PostgreSQL
(:func:`chargeward.audit.sequencer.settle`, ADR 0033), so the tree an operator reads includes
what stations reported before the request.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from chargeward.audit import log, sequencer
from chargeward.errors import NotFound
from chargeward.server.http.api import Operator
from chargeward.server.state import ServerState

router = APIRouter(tags=["audit"])
Size = Annotated[int, Query(ge=0, le=2**63 - 1)]


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.chargeward
    return state


async def _settled(request: Request) -> None:
    """Station reports' queued entries into the log first, so a read right after an action
    sees them (PostgreSQL; ADR 0033)."""
    await sequencer.settle(_state(request).db.session)


class TreeHeadOut(BaseModel):
    size: int
    root_hash: str


class CheckpointOut(BaseModel):
    id: int
    size: int
    root_hash: str
    note: str
    created_at: dt.datetime


class InclusionOut(BaseModel):
    index: int
    size: int
    root_hash: str
    hashes: list[str]


class ConsistencyOut(BaseModel):
    old: int
    new: int
    old_root: str
    new_root: str
    hashes: list[str]


def _out(c: log.StoredCheckpoint) -> CheckpointOut:
    return CheckpointOut(
        id=c.id, size=c.size, root_hash=c.root_hash.hex(), note=c.note, created_at=c.created_at
    )


@router.get("/api/v1/audit/tree", response_model=TreeHeadOut)
async def tree_head(request: Request, _: Operator) -> TreeHeadOut:
    await _settled(request)
    async with _state(request).db.snapshot() as s:
        current = await log.head(s)
    return TreeHeadOut(size=current.size, root_hash=current.root_hash.hex())


@router.get("/api/v1/audit/checkpoints", response_model=list[CheckpointOut])
async def list_checkpoints(request: Request, _: Operator) -> list[CheckpointOut]:
    async with _state(request).db.snapshot() as s:
        return [_out(c) for c in await log.checkpoints(s)]


@router.get("/api/v1/audit/checkpoints/latest", response_class=PlainTextResponse)
async def latest_checkpoint(request: Request, _: Operator) -> PlainTextResponse:
    async with _state(request).db.snapshot() as s:
        latest = await log.latest_checkpoint(s)
    if latest is None:
        raise NotFound("no audit checkpoint has been signed yet")
    return PlainTextResponse(latest.note)


@router.post("/api/v1/audit/checkpoints", response_model=CheckpointOut, status_code=201)
async def sign_checkpoint(request: Request, _: Operator) -> CheckpointOut:
    state = _state(request)
    signer = state.checkpoint_signer()
    await _settled(request)
    async with state.db.session() as s:
        signed = await log.sign_checkpoint(
            s, signer, origin=state.audit_origin, now=state.clock(), force=True
        )
    assert signed is not None  # force: the latest checkpoint or a new one
    return _out(signed)


@router.get("/api/v1/audit/vkey", response_class=PlainTextResponse)
async def vkey(request: Request, _: Operator) -> PlainTextResponse:
    state = _state(request)
    return PlainTextResponse(log.vkey_of(state.checkpoint_signer(), state.audit_origin).vkey + "\n")


@router.get("/api/v1/audit/proofs/inclusion", response_model=InclusionOut)
async def inclusion(request: Request, _: Operator, index: Size, size: Size) -> InclusionOut:
    if index >= size:
        raise NotFound(f"leaf {index} is not in a tree of {size} entries")
    await _settled(request)
    async with _state(request).db.snapshot() as s:
        proof = await log.inclusion_proof(s, index=index, size=size)
        root = await log.root_at(s, size)
    return InclusionOut(
        index=index, size=size, root_hash=root.hex(), hashes=[h.hex() for h in proof]
    )


@router.get("/api/v1/audit/proofs/consistency", response_model=ConsistencyOut)
async def consistency(request: Request, _: Operator, old: Size, new: Size) -> ConsistencyOut:
    if old > new:
        raise NotFound(f"no consistency proof from {old} entries back to {new}")
    await _settled(request)
    async with _state(request).db.snapshot() as s:
        proof = await log.consistency_proof(s, old=old, new=new)
        old_root, new_root = await log.root_at(s, old), await log.root_at(s, new)
    return ConsistencyOut(
        old=old,
        new=new,
        old_root=old_root.hex(),
        new_root=new_root.hex(),
        hashes=[h.hex() for h in proof],
    )
