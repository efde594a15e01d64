"""Charger-side benchmark: streaming verification of a signed 256 MiB image.

Run ``make bench``, ``python -m benchmarks.bench_verify`` or
``python benchmarks/bench_verify.py`` (``--help`` for options).  Two figures, each against a
baseline measured in the same run:

1. **Throughput** of ``chargeward.agent.verify.verify_image`` (whole-file SHA-256, ECDSA
   verification of the OCPP signature, CWFW header parse, payload SHA-256 against the header,
   model and rollback checks) as a ratio to Python's ``hashlib.sha256`` streaming the same
   file with the same chunk size (target: at least 0.9).  Rounds alternate baseline and
   verify on one file whose pages are already cached.
2. **Peak RSS growth** while verifying, in a fresh process: the peak RSS after the verify
   minus the RSS after the imports (target: at most 32 MiB; see :func:`rss_child`).  A fresh
   process doing only the ``hashlib`` pass is measured the same way for comparison.

CPU seconds (user + system, every thread) are reported beside wall time: the verifier keeps
two digests and runs them on two threads, so its CPU time is about twice the baseline's.
If a target is missed (or with ``--profile``) one more verify runs under cProfile.  Figures
are merged into ``benchmarks/results/latest.json``; the exit status is 1 if a target was
missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509
from rich.console import Console

from benchmarks.fixtures import MODEL, BenchKeys, SignedFirmware, signed_image, write_payload
from benchmarks.report import (
    RESULTS_DIR,
    mebibytes,
    print_profile,
    seconds,
    stats_row,
    stats_table,
    summary_table,
    verdict,
    write_results,
)
from benchmarks.timing import Stats, profile, timed
from chargeward.agent.verify import verify_image
from chargeward.crypto import certificate_pem, load_certificate
from chargeward.release.image import CHUNK

TARGET_RATIO = 0.9
TARGET_RSS_MIB = 32
ROLLBACK_FLOOR = 1
_REPO = Path(__file__).resolve().parents[1]


def hashlib_sha256(path: Path) -> str:
    """The baseline: Python's OpenSSL SHA-256 streaming ``path`` in ``CHUNK`` reads."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify(image: Path, certificate: x509.Certificate, signature: str) -> str:
    """The measured step, as the agent calls it; returns the whole-file SHA-256."""
    signed = verify_image(image, certificate, signature, model=MODEL, rollback_floor=ROLLBACK_FLOOR)
    return signed.sha256


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Sampler:
    """Wall and CPU seconds of each call of one measured function."""

    run: Callable[[], str]
    wall: list[float]
    cpu: list[float]

    def __call__(self) -> str:
        cpu = _cpu_seconds()
        out: list[str] = []
        self.wall.append(timed(lambda: out.append(self.run())))
        self.cpu.append(_cpu_seconds() - cpu)
        return out[0]


def _proc_status_kib(name: str) -> int | None:
    """A ``/proc/self/status`` memory figure (``VmRSS``, ``VmHWM``) in KiB; None off Linux."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux ``clear_refs``); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_child(kind: str, image: Path, certificate: Path, signature: Path) -> dict[str, int]:
    """In a fresh process: peak RSS (KiB) before and after one verify or hashlib pass.

    ``ru_maxrss`` is a high-water mark over the whole life of the process (on Linux it even
    includes the parent's, copied at exec), so it can hide growth under an earlier peak.
    Where Linux allows it the mark is reset first and ``growth_kib`` is ``VmHWM`` after the
    pass minus ``VmRSS`` before it; elsewhere it is the ``ru_maxrss`` difference.
    """
    cert = load_certificate(certificate.read_text())
    sig = signature.read_text().strip()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reset = _reset_peak_rss()
    rss_before = _proc_status_kib("VmRSS")
    if kind == "verify":
        verify(image, cert, sig)
    else:
        hashlib_sha256(image)
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_after = _proc_status_kib("VmHWM")
    figures = {"ru_maxrss_before_kib": maxrss_before, "ru_maxrss_after_kib": maxrss_after}
    if reset and rss_before is not None and peak_after is not None:
        figures |= {"rss_before_kib": rss_before, "peak_after_kib": peak_after}
        return figures | {"growth_kib": peak_after - rss_before}
    return figures | {"growth_kib": maxrss_after - maxrss_before}


def measure_rss(kind: str, image: SignedFirmware, work: Path) -> dict[str, int]:
    cert, sig = work / "signing.pem", work / "image.sig"
    cert.write_text(certificate_pem(image.certificate))
    sig.write_text(image.signature)
    child = ["--rss-child", kind, str(image.path), str(cert), str(sig)]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_verify", *child],
        capture_output=True,
        text=True,
        check=True,
        cwd=_REPO,
    )
    figures: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _rss_summary(samples: list[dict[str, int]]) -> dict[str, Any]:
    growth = [s["growth_kib"] for s in samples]
    return {
        "median_kib": sorted(growth)[len(growth) // 2],
        "min_kib": min(growth),
        "max_kib": max(growth),
        "samples": samples,
    }


def bench_verify(
    console: Console, work: Path, keys: BenchKeys, args: argparse.Namespace, now: dt.datetime
) -> dict[str, Any]:
    size = args.size_mib << 20
    payload = work / "payload.bin"
    with console.status(f"writing and signing a {args.size_mib} MiB image"):
        setup = timed(lambda: write_payload(payload, size))
        image = signed_image(keys, payload, work / "main.cwfw", now=now)
        payload.unlink()
    length = image.path.stat().st_size
    console.log(f"image {image.path} ({length:,} bytes) written in {seconds(setup)}")

    baseline = Sampler(lambda: hashlib_sha256(image.path), [], [])
    measured = Sampler(lambda: verify(image.path, image.certificate, image.signature), [], [])
    digests = {baseline()}  # warm-up: the file's pages are cached for every timed round
    for n in range(1, args.rounds + 1):
        digests.add(baseline())
        digests.add(measured())
        console.log(
            f"round {n}: hashlib {seconds(baseline.wall[-1])}, verify {seconds(measured.wall[-1])}"
            f" (throughput ratio {baseline.wall[-1] / measured.wall[-1]:.2f})"
        )
    if len(digests) != 1:
        raise RuntimeError(f"verify and hashlib disagree about the image: {digests}")
    del baseline.wall[0], baseline.cpu[0]

    rss_verify: list[dict[str, int]] = []
    rss_baseline: list[dict[str, int]] = []
    with console.status("peak RSS in fresh processes"):
        for _ in range(args.rss_rounds):
            rss_baseline.append(measure_rss("hashlib", image, work))
            rss_verify.append(measure_rss("verify", image, work))

    base, ver = Stats(tuple(baseline.wall)), Stats(tuple(measured.wall))
    base_cpu, ver_cpu = Stats(tuple(baseline.cpu)), Stats(tuple(measured.cpu))
    ratio = base.median / ver.median
    rss = {"verify": _rss_summary(rss_verify), "baseline": _rss_summary(rss_baseline)}
    console.print(
        stats_table(
            f"{args.size_mib} MiB image, {args.rounds} rounds (wall)",
            [stats_row("hashlib.sha256 (baseline)", base), stats_row("verify_image", ver)],
        )
    )
    console.print(
        f"throughput: hashlib {length / base.median / 2**20:,.0f} MiB/s, "
        f"verify {length / ver.median / 2**20:,.0f} MiB/s; CPU seconds (median) "
        f"hashlib {seconds(base_cpu.median)}, verify {seconds(ver_cpu.median)}",
        highlight=False,
    )
    throughput_pass = ratio >= TARGET_RATIO
    worst = rss["verify"]["max_kib"]
    rss_pass = worst <= TARGET_RSS_MIB * 1024
    console.print(
        f"throughput ratio of medians {ratio:.2f} (target >= {TARGET_RATIO}): "
        f"{verdict(throughput_pass)}"
    )
    console.print(
        f"peak RSS growth over {args.rss_rounds} fresh processes: verify "
        f"{mebibytes(rss['verify']['median_kib'])} median, {mebibytes(worst)} max; hashlib "
        f"{mebibytes(rss['baseline']['median_kib'])} median (target <= {TARGET_RSS_MIB} MiB): "
        f"{verdict(rss_pass)}"
    )
    result: dict[str, Any] = {
        "image_bytes": length,
        "chunk_bytes": CHUNK,
        "rounds": args.rounds,
        "baseline": {
            "command": "hashlib.sha256 over the image, CHUNK reads",
            **base.to_dict(),
            "cpu": base_cpu.to_dict(),
        },
        "verify": {
            "steps": "verify_image: file SHA-256 + ECDSA P-256 + CWFW header + payload SHA-256"
            " + model and rollback checks",
            **ver.to_dict(),
            "cpu": ver_cpu.to_dict(),
        },
        "throughput_ratio": round(ratio, 3),
        "cpu_ratio": round(ver_cpu.median / base_cpu.median, 3),
        "target_ratio": TARGET_RATIO,
        "throughput_pass": throughput_pass,
        "rss_growth": {**rss, "target_mib": TARGET_RSS_MIB, "pass": rss_pass},
        "pass": throughput_pass and rss_pass,
    }
    if args.profile or not result["pass"]:
        saved = RESULTS_DIR / "image-verify.prof"
        text = profile(lambda: verify(image.path, image.certificate, image.signature), saved)
        print_profile(console, "verify_image", text, saved)
        result["profile"] = str(saved.relative_to(RESULTS_DIR.parent.parent))
    return result


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_verify",
        description="Time streaming image verification against hashlib in the same run.",
    )
    parser.add_argument("--size-mib", type=int, default=256, help="image payload size")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds")
    parser.add_argument("--rss-rounds", type=int, default=3, help="fresh processes per kind")
    parser.add_argument("--workdir", type=Path, default=None, help="where the image is made")
    parser.add_argument("--profile", action="store_true", help="profile even when on target")
    parser.add_argument(
        "--results", type=Path, default=RESULTS_DIR / "latest.json", help="JSON merged here"
    )
    parser.add_argument("--rss-child", nargs=4, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.rss_child:
        kind, image, cert, sig = args.rss_child
        print(json.dumps(rss_child(kind, Path(image), Path(cert), Path(sig))))
        return 0
    console = Console(width=None if sys.stdout.isatty() else 120)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chargeward-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        console.log(f"working in {work}")
        keys = BenchKeys.create(work / "keys")
        console.rule("[bold]streaming verify of one image")
        results = {"image_verify": bench_verify(console, work, keys, args, now)}
    console.print(summary_table(results))
    write_results(args.results, results)
    console.print(f"figures merged into {args.results}")
    return 0 if results["image_verify"]["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
