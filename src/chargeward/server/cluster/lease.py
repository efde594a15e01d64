"""The leader's lease: one ``cluster_leader`` row, renewed by its holder, taken by another node
once it ran out or its holder's connection is gone; every new leader raises its ``epoch``
(ADR 0034).  Statements only; :class:`~chargeward.server.cluster.cluster.Node` decides when.

    epoch = await take(conn, "node-a", lease=10.0)        # None: another node holds it
    ok = await renew(conn, "node-a", epoch, lease=10.0)   # False: lost it
    await held(session, "node-a", epoch)                  # in a leader job's transaction
"""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward.server.store.cluster_tables import ClusterLeader

LEADER_ROW = 1
TAKEOVER_LOCK_WAIT = "1s"  # a takeover waiting on the old leader's writes tries next round


async def renew(conn: asyncpg.Connection, node_id: str, epoch: int, *, lease: float) -> bool:
    """Extend this node's lease by ``lease`` seconds from the database's now, if it still
    holds it and it has not run out."""
    renewed = await conn.fetchval(
        "UPDATE cluster_leader SET lease_until = now() + make_interval(secs => $1)"
        " WHERE id = $2 AND node_id = $3 AND epoch = $4 AND lease_until > now()"
        " RETURNING epoch",
        lease,
        LEADER_ROW,
        node_id,
        epoch,
    )
    return renewed is not None


async def take(conn: asyncpg.Connection, node_id: str, *, lease: float) -> int | None:
    """The new epoch if this node took the lease: it was free, ran out, or no backend has its
    holder's pid any more (the holder's lease connection closed: a killed node).  The lease
    connection is ``conn``: its backend pid is recorded."""
    try:
        async with conn.transaction():
            # A takeover waits for the old leader's fenced transactions (FOR SHARE).
            await conn.execute(f"SET LOCAL lock_timeout = '{TAKEOVER_LOCK_WAIT}'")
            epoch = await conn.fetchval(
                "UPDATE cluster_leader SET node_id = $1, epoch = epoch + 1,"
                " lease_until = now() + make_interval(secs => $2),"
                " backend_pid = pg_backend_pid()"
                " WHERE id = $3 AND (node_id IS NULL OR lease_until <= now()"
                " OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a"
                " WHERE a.pid = cluster_leader.backend_pid))"
                " RETURNING epoch",
                node_id,
                lease,
                LEADER_ROW,
            )
    except asyncpg.LockNotAvailableError:
        return None
    return None if epoch is None else int(epoch)


async def held(s: AsyncSession, node_id: str, epoch: int) -> bool:
    """Whether the lease is still ``node_id``'s at ``epoch`` and has not run out; if so it
    stays so until ``s``'s transaction ends (the row is locked FOR SHARE)."""
    found = await s.scalar(
        select(ClusterLeader.epoch)
        .where(
            ClusterLeader.id == LEADER_ROW,
            ClusterLeader.node_id == node_id,
            ClusterLeader.epoch == epoch,
            ClusterLeader.lease_until > func.clock_timestamp(),
        )
        .with_for_update(read=True)
    )
    return found is not None
