"""The audit log's Merkle tree in the database, on SQLite and PostgreSQL: contiguous leaf
indexes, a stored tree equal to a from-scratch recomputation, concurrent appends, the
back-fill of migration 0010, and proofs served by the API that verify."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, func, select, text

from chargeward import audit
from chargeward.audit import log, merkle, tree
from chargeward.audit.checkpoint import open_checkpoint, parse_vkey
from chargeward.audit.tables import AuditEntry, AuditNode
from chargeward.crypto.ed25519 import generate_ed25519_key
from chargeward.server.auth import tokens
from chargeward.server.http.api import create_app
from chargeward.server.state import ServerState
from chargeward.server.store.blobs import BlobStore
from chargeward.server.store.db import MIGRATIONS, Database
from chargeward.storage.appends import write_queued

NOW = dt.datetime(2026, 12, 8, 10, 0, 0, 123456, tzinfo=dt.UTC)
PASSPHRASE = b"correct horse battery staple"


async def _record(db: Database, first: int, count: int) -> None:
    async with db.session() as s:
        for n in range(first, first + count):
            await audit.record(
                s,
                actor="alice" if n % 2 else "station:CP-ü",
                action="test.append",
                target=f"t{n}",
                details={"n": n, "nested": {"z": [1, 2.5, None], "a": "ß"}, "tuple": (n, n)},
                transaction_id=audit.new_transaction_id() if n % 3 else None,
                now=NOW + dt.timedelta(seconds=n),
            )


async def _recomputed(db: Database) -> tuple[list[int], bytes, bytes]:
    """Leaf indexes in id order, stored root, and the root rebuilt from the entries."""
    async with db.session() as s:
        rows = await audit.entries(s, limit=100_000)
        stored = await log.head(s)
        indexes = [
            i for (i,) in (await s.execute(select(AuditEntry.leaf_index).order_by(AuditEntry.id)))
        ]
    scratch = merkle.MemoryTree()
    for r in rows:
        data = tree.leaf_of(vars(r), r.leaf_index)
        assert merkle.leaf_hash(data) == r.leaf_hash
        scratch.append(data)
    assert stored.size == len(rows)
    return indexes, stored.root_hash, merkle.root(scratch.size, scratch)


async def test_appends_get_contiguous_indexes_and_the_stored_tree_is_the_recomputed_one(
    db: Database,
) -> None:
    for first, count in ((0, 1), (1, 2), (3, 14), (17, 16), (33, 5)):  # across power-of-two edges
        await _record(db, first, count)
    indexes, stored, scratch = await _recomputed(db)
    assert indexes == list(range(38))
    assert stored == scratch
    async with db.session() as s:  # about two nodes a leaf, no more
        nodes = int(await s.scalar(select(func.count()).select_from(AuditNode)) or 0)
    assert nodes == sum(38 >> level for level in range(6))


async def test_a_rolled_back_append_leaves_no_gap(db: Database) -> None:
    await _record(db, 0, 3)

    async def abandoned() -> None:
        async with db.session() as s:
            await audit.record(s, actor="a", action="x", target="y", now=NOW)
            await s.run_sync(write_queued)  # leaf 3 is taken, then rolled back
            raise RuntimeError("abort the transaction")

    with pytest.raises(RuntimeError):
        await abandoned()
    await _record(db, 3, 2)
    indexes, stored, scratch = await _recomputed(db)
    assert indexes == [0, 1, 2, 3, 4] and stored == scratch


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_concurrent_appends_on_postgresql_get_distinct_consecutive_indexes(
    db: Database,
) -> None:
    async def writer(w: int) -> None:
        for batch in range(4):
            async with db.session() as s:
                for n in range(3):
                    await audit.record(
                        s, actor=f"w{w}", action="test.concurrent", target=f"{batch}.{n}", now=NOW
                    )
                    await asyncio.sleep(0)
                await s.flush()
                await asyncio.sleep(0.001)  # hold the head-row lock while others queue

    await asyncio.gather(*(writer(w) for w in range(6)))
    indexes, stored, scratch = await _recomputed(db)
    assert sorted(indexes) == list(range(6 * 4 * 3))
    assert stored == scratch


async def test_migration_0010_backfills_existing_entries_in_id_order(
    empty_database_url: str, tmp_path: Path
) -> None:
    def to_0009(connection: Connection) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0009")
        for n in range(11):
            connection.execute(
                text(
                    "INSERT INTO audit_entries (time, actor, action, target, details) "
                    "VALUES (:t, 'bob', 'old.entry', :target, :d)"
                ),
                {"t": NOW + dt.timedelta(minutes=n), "target": f"r{n}", "d": f'{{"n": {n}}}'},
            )

    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(empty_database_url)
    async with engine.begin() as conn:
        await conn.run_sync(to_0009)
    await engine.dispose()
    db = await Database.open(data_dir=tmp_path, url=empty_database_url)
    try:
        indexes, stored, scratch = await _recomputed(db)
        assert indexes == list(range(11)) and stored == scratch
        await _record(db, 11, 3)  # the log goes on from the back-filled tree
        indexes, stored, scratch = await _recomputed(db)
        assert indexes == list(range(14)) and stored == scratch
        with pytest.raises(Exception, match="append-only"):  # guards are back
            async with db.session() as s:
                await s.execute(text("UPDATE audit_entries SET actor = 'mallory'"))
    finally:
        await db.close()


@pytest.fixture
async def api(db: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with db.session() as s:
        token = await tokens.create_token(s, "root", actor="test", now=NOW, role="admin")
    state = ServerState(
        data_dir=tmp_path,
        db=db,
        blobs=BlobStore(tmp_path / "blobs"),
        url_key=b"k" * 32,
        public_url="http://test",
        clock=lambda: NOW,
        audit_signer=generate_ed25519_key(f"file:{tmp_path / 'cp.key'}", lambda: PASSPHRASE),
    )
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={"Authorization": f"Bearer {token}"}
    ) as client:
        yield client


async def test_proofs_served_by_the_api_verify(db: Database, api: httpx.AsyncClient) -> None:
    await _record(db, 0, 6)
    first = (await api.post("/api/v1/audit/checkpoints")).json()
    await _record(db, 6, 15)
    second = (await api.post("/api/v1/audit/checkpoints")).json()
    assert (first["size"], second["size"]) == (6 + 1, 21 + 1)  # the token's own audit entry
    key = parse_vkey((await api.get("/api/v1/audit/vkey")).text.strip())
    latest = (await api.get("/api/v1/audit/checkpoints/latest")).text
    head = open_checkpoint(latest, key)
    assert head.size == second["size"] and head.root_hash.hex() == second["root_hash"]
    entries = (await api.get("/api/v1/audit", params={"limit": 100})).json()
    assert [e["leaf_index"] for e in entries] == list(range(head.size))
    for index in (0, 5, 6, 13, head.size - 1):
        p = (
            await api.get(
                "/api/v1/audit/proofs/inclusion", params={"index": index, "size": head.size}
            )
        ).json()
        assert p["root_hash"] == head.root_hash.hex()
        merkle.verify_inclusion(
            bytes.fromhex(entries[index]["leaf_hash"]),
            index,
            head.size,
            [bytes.fromhex(h) for h in p["hashes"]],
            head.root_hash,
        )
    c = (
        await api.get(
            "/api/v1/audit/proofs/consistency", params={"old": first["size"], "new": head.size}
        )
    ).json()
    merkle.verify_consistency(
        first["size"],
        head.size,
        bytes.fromhex(first["root_hash"]),
        head.root_hash,
        [bytes.fromhex(h) for h in c["hashes"]],
    )
    r = await api.get("/api/v1/audit/proofs/inclusion", params={"index": 0, "size": 10_000})
    assert r.status_code == 404
