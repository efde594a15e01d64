"""Bandwidth benchmark: one rollout to a 1,000-station simulated fleet on 256 kbit/s lines,
three ways, in the same run: full images (the baseline), deltas, and site-local caching.

Run ``make bench`` or ``python -m benchmarks.bench_bandwidth`` (``--stations 200`` for a
quick look, ``--runs 3`` for medians).  The fleet is 50 sites of 20 chargers (the real agent
code, one process, through the real server); every charger's own line is capped at
32,000 bytes/s (256 kbit/s, a cellular modem each) with 50 ms latency.  The release is a
minor one: 1.1.0 rewrites 5 % of 1.0.0's image (``--image-kib``, 256 KiB by default).

- **full**: the release uploaded before the fleet reported its version, so the server has no
  delta to offer; every charger downloads the whole image over its line;
- **delta**: uploaded after, so the server made a delta from 1.0.0 and offers it; each charger
  rebuilds the image from its running slot;
- **cached**: full images, but each site has a Local Controller (OCPP PublishFirmware) that
  downloads the image once over its own line and serves the site's chargers on the LAN.

Per way: bytes the server sent for the campaign (its ``download_usage``), bytes over the
sites' WAN lines and over their LANs (the simulated links count them), and the wall time
from ``campaign create`` to completed; ratios against full.  Figures are merged into
``benchmarks/results/latest.json`` (``bandwidth``) and ``latest.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console

from benchmarks.report import (
    RESULTS_DIR,
    markdown_table,
    rows_table,
    write_markdown,
    write_results,
)
from chargeward.sim.runner import SimOptions, run_scenario
from chargeward.sim.scenario import parse_scenario

LINE = 32_000  # bytes/s: 256 kbit/s
SITE_SIZE = 20
WAYS = ("full", "delta", "cached")


def scenario(way: str, stations: int, image_kib: int) -> bytes:
    sites = max(1, stations // SITE_SIZE)
    lines = [
        "seed = 12", "duration = 1800",
        "[releases]", 'versions = ["1.0.0", "1.1.0"]', f"image_kib = {image_kib}",
        "change = 0.05", f"deltas = {'true' if way == 'delta' else 'false'}",
        "[campaign]", 'release = "1.1.0"', 'stages = { canary = "1%", then = ["100%"] }',
        'gates = { success = "95%", error = "5%" }',
        'concurrency = { global = 2000, per_site = 100, keep_available = 0 }',
    ]  # fmt: skip
    for i in range(sites):
        count = SITE_SIZE if i < sites - 1 else stations - SITE_SIZE * (sites - 1)
        lines += [
            "[[sites]]", f'id = "site-{i:03d}"', 'timezone = "UTC"', 'windows = "always"',
            f"local_controller = {'true' if way == 'cached' else 'false'}",
            f"link = {{ latency_ms = 50, station_bandwidth = {LINE} }}",
            "[[fleet]]", f"count = {count}", f'site = "site-{i:03d}"', 'firmware = "1.0.0"',
            f'prefix = "S{i:03d}"',
        ]  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


async def one(way: str, stations: int, image_kib: int, console: Console) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"cw-bench-bw-{way}-") as tmp:
        doc = parse_scenario(scenario(way, stations, image_kib), f"bandwidth-{way}")
        opts = SimOptions(workdir=Path(tmp), live=False, checks=False)
        s = await run_scenario(doc, opts, Console(quiet=True))
    counts = s["campaign"]["counts"]
    if counts["succeeded"] != stations or s["final_versions"] != {"1.1.0": stations}:
        raise RuntimeError(f"{way}: the rollout did not finish everywhere: {counts}")
    console.print(f"{way}: {s['wall_s']:.1f} s, server sent {s['bytes']['server_sent']:,} bytes")
    return {"wall_s": s["wall_s"], **{k: s["bytes"][k] for k in ("server_sent", "wan", "lan")}}


def summarise(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for way, runs in samples.items():
        out[way] = {
            k: {
                "median": statistics.median(r[k] for r in runs),
                "min": min(r[k] for r in runs),
                "max": max(r[k] for r in runs),
            }
            for k in ("wall_s", "server_sent", "wan", "lan")
        }
    base = out["full"]
    for way in WAYS:
        out[way]["server_bytes_to_full"] = out[way]["server_sent"]["median"] / max(
            1, base["server_sent"]["median"]
        )
        out[way]["wall_to_full"] = out[way]["wall_s"]["median"] / base["wall_s"]["median"]
    return out


HEADERS = [
    "way", "server sent (median, min-max)", "over WAN lines", "over site LANs",
    "wall time (median, min-max)", "server bytes / full", "wall / full",
]  # fmt: skip


def rows(result: dict[str, Any]) -> list[list[str]]:
    def spread(v: dict[str, float], unit: str, scale: float = 1.0) -> str:
        return (
            f"{v['median'] / scale:,.1f} {unit} ({v['min'] / scale:,.1f}-{v['max'] / scale:,.1f})"
        )

    mib = float(1 << 20)
    return [
        [
            way,
            spread(r["server_sent"], "MiB", mib),
            f"{r['wan']['median'] / mib:,.1f} MiB",
            f"{r['lan']['median'] / mib:,.1f} MiB",
            spread(r["wall_s"], "s"),
            f"{r['server_bytes_to_full']:.3f}",
            f"{r['wall_to_full']:.2f}",
        ]
        for way, r in result.items()
        if way in WAYS
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--image-kib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=1, help="rollouts per way (default 1)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR / "latest.json")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 160))
    samples: dict[str, list[dict[str, Any]]] = {w: [] for w in WAYS}
    for _ in range(args.runs):
        for way in WAYS:  # interleaved: the machine's load hits every way alike
            samples[way].append(asyncio.run(one(way, args.stations, args.image_kib, console)))
    result = summarise(samples)
    result["setup"] = {
        "stations": args.stations, "line_bytes_per_s": LINE, "image_kib": args.image_kib,
        "runs": args.runs, "sites": max(1, args.stations // SITE_SIZE),
    }  # fmt: skip
    title = (
        f"{args.stations:,} stations on {LINE * 8 // 1000} kbit/s lines, "
        f"{args.image_kib} KiB image, 5 % changed"
    )
    console.print(rows_table(title, HEADERS, rows(result)))
    write_results(args.results, {"bandwidth": result})
    write_markdown(RESULTS_DIR / "latest.md", "bandwidth", markdown_table(HEADERS, rows(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
