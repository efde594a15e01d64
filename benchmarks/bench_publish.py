"""Release publishing benchmarks: a 256 MiB image, and a repository of 5,000 releases.

Run ``make bench``, ``python -m benchmarks.bench_publish`` or
``python benchmarks/bench_publish.py`` (``--help`` for options).  Two figures, each timed
against a baseline in the same run so that they read as ratios on any machine:

1. **Build + sign + publish of a 256 MiB image** (target: at most 1.5x ``sha256sum`` of the
   same payload).  Measured: ``build_bundle`` (CWFW envelope, SHA-256, ECDSA signature with a
   file key, bundle tar written and fsynced) and the TUF publish of its targets (propose, two
   approver signatures, ``signed_proposal``, ``publish_targets``).  Baseline and measured runs
   alternate, round by round, on one payload in one directory.
2. **Publish one more release into a repository of 5,000** (target: under 2 s): propose with
   5,001 targets, two approvers sign, ``signed_proposal``, ``publish_targets`` (targets,
   snapshot, timestamp).  Baseline: ``json.loads`` + ``json.dumps`` of the targets file.

If a target is missed (or with ``--profile``) the benchmark runs once more under cProfile
and prints where the time goes.  Figures go to ``benchmarks/results/latest.json``; the exit
status is 1 if a target was missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from tuf.api.metadata import TargetFile

from benchmarks.fixtures import (
    APPROVERS,
    MODEL,
    BenchKeys,
    prepopulate,
    synthetic_release,
    write_payload,
)
from benchmarks.report import (
    RESULTS_DIR,
    print_profile,
    seconds,
    stats_row,
    stats_table,
    summary_table,
    verdict,
    write_results,
)
from benchmarks.timing import Phases, Stats, profile, split_medians, stopwatch, timed
from chargeward.crypto import Signer
from chargeward.publish import ImageRepository
from chargeward.publish.targets import ImageFacts, release_targets
from chargeward.release.bundle import build_bundle
from chargeward.trust.approval import label_accounts, signed_proposal

TARGET_RATIO = 1.5
TARGET_PUBLISH_S = 2.0
_HASH_CHUNK = 1 << 20


def publish_release(
    repo: ImageRepository,
    keys: BenchKeys,
    additions: dict[str, TargetFile],
    *,
    now: dt.datetime,
    phases: Phases,
) -> int:
    """Propose ``additions``, have two approvers sign, publish; returns the targets version."""
    with phases("propose"):
        proposal = repo.propose(additions, now=now)
    with phases("sign"):
        approvals = [keys.approve(name, proposal) for name in APPROVERS[:2]]
    with phases("verify"):
        root = repo.root().signed
        signed = signed_proposal(root, proposal, approvals, label_accounts(root))
    with phases("write"):
        return repo.publish_targets(signed, keys.online(), now=now)


@dataclass
class ImageBench:
    """One payload, one signing pair and one repository, shared by every round."""

    work: Path
    payload: Path
    keys: BenchKeys
    signer: Signer
    certificate: x509.Certificate
    repo: ImageRepository
    now: dt.datetime

    def bundle(self, release: int) -> Path:
        return self.work / f"release-{release}.cwb"

    def build_and_publish(self, release: int, phases: Phases) -> None:
        """The measured step; the bundle it writes is left for the caller to delete."""
        out = self.bundle(release)
        with phases("build_bundle"):
            manifest = build_bundle(
                self.payload,
                out,
                version=f"2.0.{release}",
                security_version=1,
                hardware_models=[MODEL],
                signer=self.signer,
                signing_certificate=self.certificate,
                now=self.now,
            )
        additions = release_targets(
            version=manifest.version,
            security_version=manifest.security_version,
            models=list(manifest.hardware_models),
            release_class=manifest.release_class,
            customer=manifest.customer,
            images=[
                ImageFacts(i.component, i.sha256, i.length, i.signature) for i in manifest.images
            ],
        )
        publish_release(self.repo, self.keys, additions, now=self.now, phases=phases)

    def sha256sum(self) -> str:
        """The baseline: coreutils ``sha256sum FILE``; returns the hex digest it printed."""
        done = subprocess.run(
            ["sha256sum", str(self.payload)], capture_output=True, text=True, check=True
        )
        return done.stdout.split()[0]

    def hashlib_sha256(self) -> str:
        """A reference (not the baseline): Python's OpenSSL SHA-256 streaming the file."""
        h = hashlib.sha256()
        with self.payload.open("rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                h.update(chunk)
        return h.hexdigest()


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def bench_image(
    console: Console, work: Path, keys: BenchKeys, args: argparse.Namespace, now: dt.datetime
) -> dict[str, Any]:
    size = args.size_mib << 20
    payload = work / "payload.bin"
    with console.status(f"writing a {args.size_mib} MiB payload"):
        setup = timed(lambda: write_payload(payload, size))
    signer, certificate = keys.firmware_signing(now)
    repo = keys.init_repository(work / "tuf-image", now=now)
    bench = ImageBench(work, payload, keys, signer, certificate, repo, now)
    console.log(f"payload {payload} ({size:,} bytes) written in {seconds(setup)}")

    baseline: list[float] = []
    reference: list[float] = []
    measured: list[float] = []
    runs: list[Phases] = []
    digests: set[str] = set()
    with _progress(console) as progress:
        task = progress.add_task("image rounds", total=args.rounds)
        for n in range(1, args.rounds + 1):
            with stopwatch(baseline):
                digests.add(bench.sha256sum())
            phases = Phases()
            with stopwatch(measured):
                bench.build_and_publish(n, phases)
            runs.append(phases)
            bench.bundle(n).unlink()
            with stopwatch(reference):
                digests.add(bench.hashlib_sha256())
            progress.log(
                f"round {n}: sha256sum {seconds(baseline[-1])}, "
                f"build+sign+publish {seconds(measured[-1])} "
                f"(ratio {measured[-1] / baseline[-1]:.2f}), hashlib {seconds(reference[-1])}"
            )
            progress.advance(task)
    if len(digests) != 1:
        raise RuntimeError(f"sha256sum and hashlib disagree about the payload: {digests}")

    base, pipe, ref = Stats(tuple(baseline)), Stats(tuple(measured)), Stats(tuple(reference))
    ratio = pipe.median / base.median
    split = split_medians(runs)
    console.print(
        stats_table(
            f"{args.size_mib} MiB image, {args.rounds} rounds",
            [
                stats_row("sha256sum (baseline)", base),
                stats_row("build + sign + publish", pipe),
                stats_row("hashlib.sha256 (reference only)", ref),
            ],
        )
    )
    console.print(
        "split (medians): " + ", ".join(f"{k} {seconds(v)}" for k, v in split.items()),
        highlight=False,
    )
    passed = ratio <= TARGET_RATIO
    console.print(f"ratio of medians {ratio:.2f} (target <= {TARGET_RATIO}): {verdict(passed)}")
    result: dict[str, Any] = {
        "image_bytes": size,
        "rounds": args.rounds,
        "baseline": {"command": "sha256sum FILE", **base.to_dict()},
        "pipeline": {
            "steps": "build_bundle + propose + 2 approver signatures + signed_proposal"
            " + publish_targets",
            **pipe.to_dict(),
        },
        "reference_hashlib_sha256": ref.to_dict(),
        "split_median_s": {k: round(v, 4) for k, v in split.items()},
        "ratio": round(ratio, 3),
        "ratio_to_hashlib": round(pipe.median / ref.median, 3),
        "target_ratio": TARGET_RATIO,
        "pass": passed,
    }
    if args.profile or not passed:
        saved = RESULTS_DIR / "image-publish.prof"
        extra = args.rounds + 1
        text = profile(lambda: bench.build_and_publish(extra, Phases()), saved)
        bench.bundle(extra).unlink()
        print_profile(console, "build + sign + publish", text, saved)
        result["profile"] = str(saved.relative_to(RESULTS_DIR.parent.parent))
    payload.unlink()
    return result


def bench_large_repository(
    console: Console, work: Path, keys: BenchKeys, args: argparse.Namespace, now: dt.datetime
) -> dict[str, Any]:
    repo = keys.init_repository(work / "tuf-large", now=now)
    with console.status(f"publishing {args.releases:,} releases as one targets version"):
        setup = timed(lambda: prepopulate(repo, keys, releases=args.releases, now=now))
    first = repo.metadata_dir / f"{repo.targets().signed.version}.targets.json"
    console.log(
        f"{args.releases:,} releases published in {seconds(setup)}; "
        f"{first.name} is {first.stat().st_size:,} bytes"
    )

    baseline: list[float] = []
    measured: list[float] = []
    runs: list[Phases] = []
    with _progress(console) as progress:
        task = progress.add_task("publish one more", total=args.repeats)
        for n in range(args.repeats):
            current = repo.metadata_dir / f"{repo.targets().signed.version}.targets.json"
            with stopwatch(baseline):
                json.dumps(json.loads(current.read_bytes()))
            additions = synthetic_release(n, minor=1)
            phases = Phases()
            with stopwatch(measured):
                publish_release(repo, keys, additions, now=now, phases=phases)
            runs.append(phases)
            progress.log(
                f"release {args.releases + n + 1:,}: published in {seconds(measured[-1])} ("
                + ", ".join(f"{k} {seconds(v)}" for k, v in phases.seconds.items())
                + f"); json load+dump {seconds(baseline[-1])}"
            )
            progress.advance(task)
    targets = repo.targets().signed
    last = repo.metadata_dir / f"{targets.version}.targets.json"

    base, pipe = Stats(tuple(baseline)), Stats(tuple(measured))
    split = split_medians(runs)
    ratio = pipe.median / base.median
    console.print(
        stats_table(
            f"repository of {args.releases:,} releases, {args.repeats} publishes",
            [stats_row("json.loads + json.dumps (baseline)", base), stats_row("publish", pipe)]
            + [stats_row(f"  {k}", Stats(tuple(r.seconds[k] for r in runs))) for k in split],
        )
    )
    passed = pipe.median < TARGET_PUBLISH_S
    console.print(
        f"median {seconds(pipe.median)} (target < {TARGET_PUBLISH_S:.0f} s): {verdict(passed)}; "
        f"{ratio:.1f}x json load+dump of {last.name} ({last.stat().st_size:,} bytes, "
        f"{len(targets.targets):,} targets)"
    )
    result: dict[str, Any] = {
        "releases": args.releases,
        "repeats": args.repeats,
        "setup_s": round(setup, 3),
        "targets_count": len(targets.targets),
        "targets_file_bytes": last.stat().st_size,
        "baseline": {"command": "json.loads + json.dumps of the targets file", **base.to_dict()},
        "publish": {
            "steps": "propose + 2 approver signatures + signed_proposal + publish_targets",
            **pipe.to_dict(),
        },
        "split_median_s": {k: round(v, 4) for k, v in split.items()},
        "ratio": round(ratio, 2),
        "target_s": TARGET_PUBLISH_S,
        "pass": passed,
    }
    if args.profile or not passed:
        saved = RESULTS_DIR / "large-repository.prof"
        additions = synthetic_release(args.repeats, minor=1)
        text = profile(
            lambda: publish_release(repo, keys, additions, now=now, phases=Phases()), saved
        )
        print_profile(console, "publish one more release", text, saved)
        result["profile"] = str(saved.relative_to(RESULTS_DIR.parent.parent))
    return result


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_publish",
        description="Time release publishing against same-run baselines.",
    )
    parser.add_argument("--size-mib", type=int, default=256, help="image payload size")
    parser.add_argument("--rounds", type=int, default=5, help="image rounds")
    parser.add_argument("--releases", type=int, default=5000, help="releases published first")
    parser.add_argument("--repeats", type=int, default=5, help="publishes into the large repo")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where payload and repositories are made"
    )
    parser.add_argument("--profile", action="store_true", help="profile even when on target")
    parser.add_argument(
        "--results", type=Path, default=RESULTS_DIR / "latest.json", help="JSON written here"
    )
    parser.add_argument(
        "--only", choices=("image", "repository"), default=None, help="run one benchmark"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    # Wide enough for the tables and profiles when piped (make, CI logs).
    console = Console(width=None if sys.stdout.isatty() else 120)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="chargeward-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        console.log(f"working in {work}")
        keys = BenchKeys.create(work / "keys")
        if args.only in (None, "image"):
            console.rule("[bold]build + sign + publish of one image")
            results["image_publish"] = bench_image(console, work, keys, args, now)
        if args.only in (None, "repository"):
            console.rule(f"[bold]publish into a repository of {args.releases:,} releases")
            results["large_repository"] = bench_large_repository(console, work, keys, args, now)
    console.print(summary_table(results))
    write_results(args.results, results)
    console.print(f"figures written to {args.results}")
    return 0 if all(r["pass"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
