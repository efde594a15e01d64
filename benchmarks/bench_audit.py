"""Audit-log benchmark: the Merkle log in the database, on SQLite and PostgreSQL.

Run ``python -m benchmarks.bench_audit`` (``--help``; ``--backends sqlite`` for one).

1. **Append throughput** (entries/s) through the real path: ``audit.record`` for each entry
   of a batch, then commit (the appends writer locks the tree head, assigns leaf indexes,
   reads the completed subtrees in one query and inserts entries and nodes with one
   executemany each).  Baseline in the same run, batch for batch alternately: a plain
   executemany of the same rows into ``audit_entries`` without the tree.  Target: at least
   5,000 entries/s (median).
2. **Proof generation at 1,000,000 entries**: the nodes of a 1,000,000-leaf tree are built
   with :class:`~chargeward.audit.merkle.MemoryTree` and loaded in bulk (SQLite
   executemany, PostgreSQL ``COPY``); each inclusion and consistency proof is then timed on
   its own through :mod:`chargeward.audit.log` (a read-only session, the size check and the
   one batched node query) and verified (untimed) against a root from the same database.
   Target: under 5 ms per proof (median; the slowest is reported too).

PostgreSQL comes from ``CHARGEWARD_BENCH_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``); a throwaway database is made and
dropped.  Figures are merged into ``benchmarks/results/latest.json``; exit status 1 if a
target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import secrets
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from sqlalchemy import insert, update
from sqlalchemy.engine import make_url

from benchmarks.fixtures import scratch_postgres
from benchmarks.report import RESULTS_DIR, stats_table, verdict, write_results
from benchmarks.timing import Stats
from chargeward import audit
from chargeward.audit import log, merkle
from chargeward.audit.tables import AuditEntry, AuditTreeHead
from chargeward.progress import progress_bar
from chargeward.server.store.db import Database

TARGET_RATE = 5_000.0  # entries/s
TARGET_PROOF_S = 0.005
NOW = dt.datetime(2026, 12, 8, tzinfo=dt.UTC)


@asynccontextmanager
async def database(backend: str, workdir: Path) -> AsyncIterator[Database]:
    if backend == "sqlite":
        path = workdir / f"sqlite-{secrets.token_hex(4)}"
        db = await Database.open(data_dir=path, url=f"sqlite:///{(path / 'bench.db').resolve()}")
        try:
            yield db
        finally:
            await db.close()
        return
    async with scratch_postgres() as url:
        db = await Database.open(data_dir=workdir, url=url)
        try:
            yield db
        finally:
            await db.close()


def _row(n: int) -> dict[str, Any]:
    return {
        "time": NOW + dt.timedelta(microseconds=n),
        "actor": f"station:CP-{n % 997:05d}",
        "action": "station.firmware_status",
        "target": f"CP-{n % 997:05d}",
        "transaction_id": f"{n:032x}"[:36],
        "details": {"status": "Installed", "request_id": n, "version": f"1.{n % 50}.0"},
    }


async def bench_appends(
    console: Console, db: Database, backend: str, batches: int, size: int
) -> dict[str, Any]:
    tree_rates: list[float] = []
    plain_rates: list[float] = []
    n = 0
    with progress_bar(console) as progress:
        task = progress.add_task(f"{backend}: appending", total=batches)
        for _ in range(batches):
            rows = [_row(n + i) for i in range(size)]
            start = time.perf_counter()
            async with db.session() as s:
                for row in rows:
                    at = row.pop("time")
                    await audit.record(s, **row, now=at)
            tree_rates.append(size / (time.perf_counter() - start))
            plain = [
                {**_row(n + i), "leaf_index": 10**12 + n + i, "leaf_hash": bytes(32)}
                for i in range(size)
            ]
            start = time.perf_counter()
            async with db.session() as s:
                await (await s.connection()).execute(insert(AuditEntry), plain)
            plain_rates.append(size / (time.perf_counter() - start))
            n += size
            progress.advance(task)
    tree_s, plain_s = Stats(tuple(tree_rates)), Stats(tuple(plain_rates))
    return {
        "batch": size,
        "batches": batches,
        "tree_entries_per_s": _rate(tree_s),
        "plain_entries_per_s": _rate(plain_s),
        "pass": tree_s.median >= TARGET_RATE,
    }


def _rate(s: Stats) -> dict[str, float]:
    return {"median": round(s.median), "min": round(s.min), "max": round(s.max)}


def build_tree(console: Console, leaves: int) -> merkle.MemoryTree:
    tree = merkle.MemoryTree()
    chunk = 50_000
    with progress_bar(console) as progress:
        task = progress.add_task("building a tree in memory", total=leaves)
        for start in range(0, leaves, chunk):
            count = min(chunk, leaves - start)
            tree.extend(
                f'{{"index":{i},"bench":true}}'.encode() for i in range(start, start + count)
            )
            progress.advance(task, count)
    return tree


def _nodes(tree: merkle.MemoryTree) -> list[tuple[int, int, bytes]]:
    rows: list[tuple[int, int, bytes]] = []
    level = 0
    while True:
        try:
            tree.get(level, 0)
        except (KeyError, IndexError):
            return rows
        index = 0
        while True:
            try:
                rows.append((level, index, tree.get(level, index)))
            except KeyError:
                break
            index += 1
        level += 1


async def load_nodes(
    db: Database, backend: str, nodes: list[tuple[int, int, bytes]], size: int
) -> None:
    if backend == "sqlite":
        path = make_url(str(db.engine.url)).database
        assert path is not None
        await db.close()  # one writer: load with the stdlib driver in one transaction

        def load() -> None:
            con = sqlite3.connect(path)
            with con:
                con.execute("DELETE FROM audit_nodes")
                con.executemany(
                    "INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes
                )
                con.execute("UPDATE audit_tree_head SET size = ? WHERE id = 1", (size,))
            con.close()

        await asyncio.to_thread(load)
        return
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.execute("DELETE FROM audit_nodes")
        await driver.copy_records_to_table(
            "audit_nodes", records=nodes, columns=["level", "idx", "hash"]
        )
        await conn.commit()
    async with db.session() as s:
        await s.execute(update(AuditTreeHead).where(AuditTreeHead.id == 1).values(size=size))


async def bench_proofs(
    console: Console, db: Database, backend: str, size: int, count: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    inclusion: list[float] = []
    consistency: list[float] = []
    async with db.snapshot() as s:
        root = await log.root_at(s, size)
    with progress_bar(console) as progress:
        task = progress.add_task(f"{backend}: proofs at {size:,}", total=2 * count)
        for _ in range(count):
            index = rng.randrange(size)
            start = time.perf_counter()
            async with db.snapshot() as s:
                proof = await log.inclusion_proof(s, index=index, size=size)
            inclusion.append(time.perf_counter() - start)
            leaf = merkle.leaf_hash(f'{{"index":{index},"bench":true}}'.encode())
            merkle.verify_inclusion(leaf, index, size, proof, root)
            progress.advance(task)
            old = rng.randrange(1, size)
            start = time.perf_counter()
            async with db.snapshot() as s:
                proof = await log.consistency_proof(s, old=old, new=size)
            consistency.append(time.perf_counter() - start)
            async with db.snapshot() as s:
                old_root = await log.root_at(s, old)
            merkle.verify_consistency(old, size, old_root, root, proof)
            progress.advance(task)
    inc, con = Stats(tuple(inclusion)), Stats(tuple(consistency))
    return {
        "size": size,
        "proofs": count,
        "inclusion": inc.to_dict() | {"samples_s": []},
        "consistency": con.to_dict() | {"samples_s": []},
        "pass": max(inc.median, con.median) < TARGET_PROOF_S,
    }


def _ms(value: float) -> str:
    return f"{value * 1e3:,.2f} ms"


async def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    results: dict[str, Any] = {"targets": {"entries_per_s": TARGET_RATE, "proof_s": TARGET_PROOF_S}}
    tree = build_tree(console, args.leaves)
    nodes = _nodes(tree)
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        for backend in args.backends:
            async with database(backend, Path(tmp)) as db:
                results[f"{backend}_append"] = await bench_appends(
                    console, db, backend, args.batches, args.batch
                )
            async with database(backend, Path(tmp)) as db:
                await load_nodes(db, backend, nodes, tree.size)
                if backend == "sqlite":  # reopened after the bulk load
                    db = await Database.open(data_dir=Path(tmp), url=str(db.engine.url))
                try:
                    results[f"{backend}_proofs"] = await bench_proofs(
                        console, db, backend, tree.size, args.proofs, args.seed
                    )
                finally:
                    await db.close()
    return results


def report(console: Console, results: dict[str, Any], backends: Sequence[str]) -> bool:
    ok = True
    rows = []
    for backend in backends:
        a = results[f"{backend}_append"]
        for name in ("tree", "plain"):
            r = a[f"{name}_entries_per_s"]
            rows.append(
                [
                    f"{backend}: {name} entries/s (batch {a['batch']})",
                    f"{r['median']:,}",
                    f"{r['min']:,}",
                    f"{r['max']:,}",
                ]
            )
        p = results[f"{backend}_proofs"]
        for name in ("inclusion", "consistency"):
            s = p[name]
            rows.append(
                [
                    f"{backend}: {name} proof at {p['size']:,}",
                    _ms(s["median_s"]),
                    _ms(s["min_s"]),
                    _ms(s["max_s"]),
                ]
            )
        console.print(
            f"{backend}: append {verdict(a['pass'])} (≥ {TARGET_RATE:,.0f}/s), "
            f"proofs {verdict(p['pass'])} (< 5 ms)"
        )
        ok = ok and a["pass"] and p["pass"]
    console.print(stats_table("audit log in the database (median, min, max)", rows))
    return ok


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--batches", type=int, default=40, help="append batches per backend")
    parser.add_argument("--batch", type=int, default=200, help="entries per transaction")
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=200, help="of each kind per backend")
    parser.add_argument("--seed", type=int, default=6962)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR / "latest.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.rule(f"[bold]audit log in the database: {', '.join(args.backends)}")
    results = asyncio.run(run(args, console))
    results["pass"] = report(console, results, args.backends)
    write_results(args.results, {"audit_db": results})
    console.print(f"figures merged into {args.results}")
    return 0 if results["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
