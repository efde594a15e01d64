"""The audit log as a service: tree head, proofs, signed checkpoints, the checkpoint key.

Async, on a session; the tree work runs in ``session.run_sync`` on the session's connection
(:mod:`chargeward.audit.tree`).  Proof hashes are raw bytes here; the API sends them as hex.
These read the tree as committed: on PostgreSQL, entries of station reports still in the
audit queue are not in it yet.  A reader that must see them runs
:func:`chargeward.audit.sequencer.settle` first, in a transaction of its own (the server's
audit API and its checkpoint job do; ADR 0033).

    async with db.session() as s:
        note = await sign_checkpoint(s, signer, origin="chargeward.local/audit", now=now)
        proof = await inclusion_proof(s, index=5, size=8)

The checkpoint key is an Ed25519 key (:mod:`chargeward.crypto.ed25519`): by default a file
key at ``<data-dir>/audit/checkpoint.key``, made at the server's first start and opened with
``$CHARGEWARD_KEY_PASSPHRASE`` like the server's TUF online keys; or, with
``chargeward server --checkpoint-key pkcs11:token=...;object=...``, a key generated in a
PKCS#11 token beforehand (``chargeward keys generate --algorithm ed25519 URI``).  Its verifier key
(:func:`~chargeward.audit.checkpoint.verifier_key`, named after the log's origin) is what
auditors pin.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from chargeward.audit import merkle, tree
from chargeward.audit.checkpoint import Checkpoint, VerifierKey, verifier_key
from chargeward.audit.checkpoint import sign_checkpoint as sign_note
from chargeward.audit.tables import AuditCheckpoint
from chargeward.crypto.ed25519 import (
    MessageSigner,
    generate_ed25519_key,
    load_ed25519_signer,
)
from chargeward.crypto.keys import PassphraseSource
from chargeward.errors import NotFound
from chargeward.storage.appends import write_queued

DEFAULT_ORIGIN = "chargeward.local/audit"
KEY_FILE = Path("audit") / "checkpoint.key"
VKEY_FILE = Path("audit") / "checkpoint.vkey"  # public: the verifier key auditors pin


@dataclass(frozen=True)
class TreeHead:
    size: int
    root_hash: bytes


@dataclass(frozen=True)
class StoredCheckpoint:
    id: int
    size: int
    root_hash: bytes
    note: str
    created_at: dt.datetime


def _connection(ss: Session) -> Connection:
    """The session's connection, after writing what it has queued (so reads include it)."""
    write_queued(ss)
    return ss.connection()


def checkpoint_key_uri(data_dir: Path) -> str:
    return f"file:{(data_dir / KEY_FILE).resolve()}"


def open_checkpoint_key(
    data_dir: Path, passphrase: PassphraseSource, uri: str | None = None
) -> MessageSigner:
    """The checkpoint key at ``uri`` (a token key is never made here), or else the file key
    of ``data_dir``, made on first use."""
    if uri is not None:
        return load_ed25519_signer(uri, passphrase)
    uri = checkpoint_key_uri(data_dir)
    if not (data_dir / KEY_FILE).exists():
        return generate_ed25519_key(uri, passphrase)
    return load_ed25519_signer(uri, passphrase)


def vkey_of(signer: MessageSigner, origin: str) -> VerifierKey:
    """The verifier key auditors pin: the checkpoint key under the log's origin."""
    return verifier_key(origin, signer.public_key_raw())


async def head(s: AsyncSession) -> TreeHead:
    """The committed tree size and its root hash."""

    def read(ss: Session) -> TreeHead:
        c = _connection(ss)
        size = tree.tree_size(c)
        return TreeHead(size, merkle.root(size, tree.ConnectionReader(c)))

    return await s.run_sync(read)


async def _bounded(s: AsyncSession, size: int) -> None:
    current = await s.run_sync(lambda ss: tree.tree_size(_connection(ss)))
    if size > current:
        raise NotFound(f"the audit log has {current} entries, not {size}")


async def inclusion_proof(s: AsyncSession, *, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) from the stored tree (one query for the hashes)."""
    await _bounded(s, size)
    return await s.run_sync(
        lambda ss: merkle.inclusion_proof(index, size, tree.ConnectionReader(_connection(ss)))
    )


async def consistency_proof(s: AsyncSession, *, old: int, new: int) -> list[bytes]:
    """PROOF(old, D[new]) from the stored tree (one query for the hashes)."""
    await _bounded(s, new)
    return await s.run_sync(
        lambda ss: merkle.consistency_proof(old, new, tree.ConnectionReader(_connection(ss)))
    )


async def root_at(s: AsyncSession, size: int) -> bytes:
    await _bounded(s, size)
    return await s.run_sync(lambda ss: merkle.root(size, tree.ConnectionReader(_connection(ss))))


def _stored(row: AuditCheckpoint) -> StoredCheckpoint:
    return StoredCheckpoint(row.id, row.size, bytes(row.root_hash), row.note, row.created_at)


async def latest_checkpoint(s: AsyncSession) -> StoredCheckpoint | None:
    row = await s.scalar(
        select(AuditCheckpoint).order_by(AuditCheckpoint.size.desc(), AuditCheckpoint.id.desc())
    )
    return _stored(row) if row is not None else None


async def checkpoints(s: AsyncSession, *, limit: int = 100_000) -> list[StoredCheckpoint]:
    """Every stored checkpoint, oldest first."""
    rows = await s.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id).limit(limit))
    return [_stored(r) for r in rows]


async def sign_checkpoint(
    s: AsyncSession,
    signer: MessageSigner,
    *,
    origin: str,
    now: dt.datetime,
    force: bool = False,
) -> StoredCheckpoint | None:
    """Sign and store a checkpoint of the committed tree if it grew since the latest one
    (``force``: also when it did not, unless the latest already covers this size)."""
    current = await head(s)
    latest = await latest_checkpoint(s)
    if latest is not None and latest.size >= current.size:
        return latest if force else None
    if latest is None and current.size == 0 and not force:
        return None
    note = sign_note(Checkpoint(origin, current.size, current.root_hash), signer)
    row = AuditCheckpoint(size=current.size, root_hash=current.root_hash, note=note, created_at=now)
    s.add(row)
    await s.flush()
    return _stored(row)
