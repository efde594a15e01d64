"""Audit-log benchmark: the Merkle tree core on a log of 1,000,000 entries.

Run ``python -m benchmarks.bench_merkle`` (``--help``; ``--leaves 100000`` for a quick look).
Everything runs on :class:`chargeward.audit.merkle.MemoryTree`, so the figures are the pure
core's cost; a database behind the same :class:`~chargeward.audit.merkle.NodeReader` adds
one query per operation.

1. **Append rate**: ``MemoryTree.append`` (leaf hash, one batched read, the completed
   subtrees, storing about two nodes a leaf), timed per chunk of leaves.  Baseline in the same
   run, chunk by chunk: hashing the same leaves with ``hashlib.sha256(0x00 || entry)`` alone.
2. **Proof generation at full size**: ``inclusion_proof`` for random leaves and
   ``consistency_proof`` from random earlier sizes, each call timed on its own; every proof is
   then verified (untimed).  Target: under 5 ms per proof (the slowest call counts).  The
   number of batched reads and of nodes read per proof is reported beside the times.

Figures are merged into ``benchmarks/results/latest.json`` (``--results`` elsewhere); exit
status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from benchmarks.report import RESULTS_DIR, print_profile, verdict, write_results
from benchmarks.timing import Stats, profile, timed
from chargeward.audit.merkle import (
    Key,
    MemoryTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from chargeward.progress import progress_bar

TARGET_PROOF_S = 0.005


def entries(start: int, count: int) -> list[bytes]:
    """Audit entries of realistic size (about 160 bytes of JSON-like text)."""
    return [
        (
            f'{{"id":{n},"actor":"release-bot","action":"release.sign",'
            f'"target":"fw-{n % 977:04d}","tx":"{n:032x}","details":{{"v":"1.{n % 50}.0"}}}}'
        ).encode()
        for n in range(start, start + count)
    ]


def hashlib_leaves(chunk: Sequence[bytes]) -> None:
    """The baseline: one SHA-256 per leaf, nothing else."""
    sha256 = hashlib.sha256
    for entry in chunk:
        sha256(b"\x00" + entry).digest()


def append_all(tree: MemoryTree, batch: Sequence[bytes]) -> None:
    """The measured step: one ``append`` per leaf, as the log appends entries."""
    for entry in batch:
        tree.append(entry)


class CountingReader:
    """Counts batched reads and nodes read, passing them to the tree."""

    def __init__(self, tree: MemoryTree) -> None:
        self.tree, self.calls, self.keys = tree, 0, 0

    def get_many(self, keys: Sequence[Key]) -> Mapping[Key, bytes]:
        self.calls += 1
        self.keys += len(keys)
        return self.tree.get_many(keys)


def micro(value: float) -> str:
    return f"{value * 1e6:,.1f} µs" if value < 1e-3 else f"{value * 1e3:,.2f} ms"


def _row(name: str, stats: Stats, fmt: Callable[[float], str]) -> list[str]:
    return [name, fmt(stats.median), fmt(stats.min), fmt(stats.max)]


def _table(title: str, rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("measurement")
    for column in ("median", "min", "max"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def bench_append(console: Console, tree: MemoryTree, leaves: int, chunk: int) -> dict[str, Any]:
    """Seconds per leaf, one sample per chunk: hashlib alone, then ``MemoryTree.append``."""
    base: list[float] = []
    appended: list[float] = []
    total = 0.0
    with progress_bar(console) as bar:
        task = bar.add_task("appending leaves", total=leaves)
        while tree.size < leaves:
            batch = entries(tree.size, min(chunk, leaves - tree.size))
            base.append(timed(functools.partial(hashlib_leaves, batch)) / len(batch))
            spent = timed(functools.partial(append_all, tree, batch))
            appended.append(spent / len(batch))
            total += spent
            bar.update(task, completed=tree.size)
    b, a = Stats(tuple(base)), Stats(tuple(appended))
    console.print(
        _table(
            f"{leaves:,} leaves appended, timed in chunks of {chunk:,} (time per leaf)",
            [
                _row("hashlib.sha256(0x00 || entry) (baseline)", b, micro),
                _row("MemoryTree.append", a, micro),
            ],
        )
    )
    console.print(
        f"append rate {1 / a.median:,.0f} leaves/s, hashlib alone {1 / b.median:,.0f} leaves/s "
        f"(ratio of medians {a.median / b.median:.1f}); "
        f"{total:.1f} s for all appends",
        highlight=False,
    )
    return {
        "leaves": leaves,
        "chunk": chunk,
        "baseline": {"command": "hashlib.sha256(0x00 || entry) per leaf", **_brief(b)},
        "append": {"command": "MemoryTree.append per leaf", **_brief(a)},
        "leaves_per_s": round(1 / a.median),
        "baseline_leaves_per_s": round(1 / b.median),
        "ratio": round(a.median / b.median, 2),
    }


def _brief(stats: Stats) -> dict[str, Any]:
    """Median, min, max and 99th percentile in microseconds (samples left out)."""
    ordered = sorted(stats.samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "median_us": round(stats.median * 1e6, 2),
        "min_us": round(stats.min * 1e6, 2),
        "max_us": round(stats.max * 1e6, 2),
        "p99_us": round(p99 * 1e6, 2),
        "samples": len(ordered),
    }


def _time_each(calls: list[Callable[[], list[bytes]]]) -> tuple[list[float], list[list[bytes]]]:
    samples: list[float] = []
    proofs: list[list[bytes]] = []
    for call in calls:
        start = time.perf_counter()
        proofs.append(call())
        samples.append(time.perf_counter() - start)
    return samples, proofs


def bench_proofs(console: Console, tree: MemoryTree, count: int, seed: int) -> dict[str, Any]:
    n = tree.size
    rnd = random.Random(seed)
    indexes = [rnd.randrange(n) for _ in range(count)]
    olds = [rnd.randrange(1, n) for _ in range(count)]
    head = root(n, tree)
    root_times = [timed(lambda: root(n, tree)) for _ in range(count)]
    inc_times, inc_proofs = _time_each(
        [functools.partial(inclusion_proof, i, n, tree) for i in indexes]
    )
    con_times, con_proofs = _time_each(
        [functools.partial(consistency_proof, m, n, tree) for m in olds]
    )
    with console.status("verifying every proof"):
        for i, proof in zip(indexes, inc_proofs, strict=True):
            data = entries(i, 1)[0]
            verify_inclusion(leaf_hash(data), i, n, proof, head)
        for m, proof in zip(olds, con_proofs, strict=True):
            verify_consistency(m, n, root(m, tree), head, proof)
    reads: dict[str, dict[str, int]] = {}
    for name, make, args in (
        ("inclusion", inclusion_proof, indexes[:200]),
        ("consistency", consistency_proof, olds[:200]),
    ):
        calls, keys = [], []
        for arg in args:
            reader = CountingReader(tree)
            make(arg, n, reader)
            calls.append(reader.calls)
            keys.append(reader.keys)
        reads[name] = {"max_batched_reads": max(calls), "max_nodes_read": max(keys)}
    r, inc, con = Stats(tuple(root_times)), Stats(tuple(inc_times)), Stats(tuple(con_times))
    console.print(
        _table(
            f"proof generation on a tree of {n:,} leaves, {count:,} random calls each",
            [
                _row("root (for comparison: fold of the perfect roots)", r, micro),
                _row("inclusion_proof", inc, micro),
                _row("consistency_proof", con, micro),
            ],
        )
    )
    console.print(
        f"per proof: {reads['inclusion']['max_batched_reads']} batched read, at most "
        f"{reads['inclusion']['max_nodes_read']} nodes (inclusion) and "
        f"{reads['consistency']['max_nodes_read']} nodes (consistency); proof lengths "
        f"{statistics.median(len(p) for p in inc_proofs):.0f} / "
        f"{statistics.median(len(p) for p in con_proofs):.0f} hashes (median)",
        highlight=False,
    )
    passed = inc.max < TARGET_PROOF_S and con.max < TARGET_PROOF_S
    console.print(
        f"slowest proof {micro(max(inc.max, con.max))} "
        f"(target < {TARGET_PROOF_S * 1000:.0f} ms): {verdict(passed)}"
    )
    return {
        "tree_size": n,
        "calls": count,
        "root": _brief(r),
        "inclusion": _brief(inc),
        "consistency": _brief(con),
        "reads": reads,
        "target_s": TARGET_PROOF_S,
        "pass": passed,
    }


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_merkle",
        description="Time Merkle appends against hashlib, and proof generation at 1M leaves.",
    )
    parser.add_argument("--leaves", type=int, default=1_000_000, help="log size")
    parser.add_argument("--chunk", type=int, default=50_000, help="leaves per timed chunk")
    parser.add_argument("--proofs", type=int, default=2000, help="timed calls per proof kind")
    parser.add_argument("--seed", type=int, default=6962)
    parser.add_argument("--profile", action="store_true", help="profile proof generation")
    parser.add_argument(
        "--results", type=Path, default=RESULTS_DIR / "latest.json", help="JSON merged here"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    tree = MemoryTree()
    console.rule(f"[bold]audit log Merkle tree: {args.leaves:,} leaves")
    append = bench_append(console, tree, args.leaves, args.chunk)
    proofs = bench_proofs(console, tree, args.proofs, args.seed)
    result = {**append, "proofs": proofs, "pass": proofs["pass"]}
    if args.profile or not result["pass"]:
        saved = RESULTS_DIR / "merkle-proofs.prof"
        saved.parent.mkdir(parents=True, exist_ok=True)
        n = tree.size
        text = profile(lambda: [inclusion_proof(i, n, tree) for i in range(0, n, n // 1000)], saved)
        print_profile(console, "1,000 inclusion proofs", text, saved)
    write_results(args.results, {"merkle_log": result})
    console.print(f"figures merged into {args.results}")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
