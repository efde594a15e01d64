"""The benchmark summary: a table on the console and ``benchmarks/results/latest.json``.

The JSON holds each benchmark's figures plus the host they were measured on.  Each run
replaces its own sections and keeps the others', so ``bench_publish`` and ``bench_verify``
both land in one file:

    >>> write_results(RESULTS_DIR / "latest.json", {"image_publish": {}})  # doctest: +SKIP

``latest.md`` holds the same runs as markdown tables, one ``## section`` per benchmark, each
replaced by its own run and the others kept:

    >>> print(markdown_table(["level", "MiB/s"], [["1", "812"]]))
    | level | MiB/s |
    |---|---:|
    | 1 | 812 |
    >>> write_markdown(RESULTS_DIR / "latest.md", "download_throughput", "...")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import ssl
import subprocess
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.timing import Stats

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCHEMA = 1


def verdict(passed: bool) -> str:
    return "[bold green]PASS[/]" if passed else "[bold red]FAIL[/]"


def seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def mebibytes(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def stats_row(name: str, stats: Stats) -> list[str]:
    return [name, seconds(stats.median), seconds(stats.min), seconds(stats.max)]


def stats_table(title: str, rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("measurement")
    for column in ("median", "min", "max"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def rows_table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    """A rich table like :func:`markdown_table`: the first column left, the others right."""
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(header):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def summary_table(results: dict[str, Any]) -> Table:
    """One line per benchmark: figure, target and verdict."""
    table = Table(title="Summary", title_justify="left")
    for column in ("benchmark", "median", "baseline", "ratio", "target", "result"):
        table.add_column(column, justify="left" if column == "benchmark" else "right")
    image = results.get("image_publish")
    if image is not None:
        table.add_row(
            f"build + sign + publish, {image['image_bytes'] >> 20} MiB image",
            seconds(image["pipeline"]["median_s"]),
            f"sha256sum {seconds(image['baseline']['median_s'])}",
            f"{image['ratio']:.2f}",
            f"ratio <= {image['target_ratio']}",
            verdict(image["pass"]),
        )
    verify = results.get("image_verify")
    if verify is not None:
        table.add_row(
            f"streaming verify, {verify['image_bytes'] >> 20} MiB image (throughput)",
            seconds(verify["verify"]["median_s"]),
            f"hashlib {seconds(verify['baseline']['median_s'])}",
            f"{verify['throughput_ratio']:.2f}",
            f"ratio >= {verify['target_ratio']}",
            verdict(verify["throughput_pass"]),
        )
        rss = verify["rss_growth"]
        table.add_row(
            "  peak RSS growth of that verify (fresh process)",
            mebibytes(rss["verify"]["max_kib"]),
            f"hashlib {mebibytes(rss['baseline']['max_kib'])}",
            "",
            f"<= {rss['target_mib']} MiB",
            verdict(rss["pass"]),
        )
    large = results.get("large_repository")
    if large is not None:
        table.add_row(
            f"publish one more release, {large['releases']:,} published",
            seconds(large["publish"]["median_s"]),
            f"json load+dump {seconds(large['baseline']['median_s'])}",
            f"{large['ratio']:.1f}",
            f"< {large['target_s']:.0f} s",
            verdict(large["pass"]),
        )
    conns = results.get("ocpp_connections")
    if conns is not None:
        csms, base = conns["csms"], conns["baseline"]
        table.add_row(
            f"OCPP connections held, one process ({conns['stations']:,} stations)",
            f"{csms['held']:,}",
            f"bare websockets {base['held']:,}",
            "",
            f">= {conns['targets']['connections']:,}",
            verdict(conns["checks"]["connections"]),
        )
        table.add_row(
            "  connect + BootNotification storm, all accepted",
            seconds(csms["storm_s"]),
            f"bare websockets {seconds(base['storm_s'])}",
            f"{csms['storm_s'] / base['storm_s']:.1f}" if base["storm_s"] else "",
            f"<= {conns['targets']['storm_s']:.0f} s",
            verdict(conns["checks"]["storm"]),
        )
        kib = csms["kib_per_connection"]
        table.add_row(
            "  RSS per idle connection",
            f"{kib:.1f} KiB" if kib is not None else "-",
            f"bare websockets {base['kib_per_connection'] or 0:.1f} KiB",
            f"{conns['memory_ratio']:.1f}",
            f"<= {conns['targets']['kib_per_connection']} KiB",
            verdict(conns["checks"]["memory"]),
        )
    return table


def _sha256sum_version() -> str:
    try:
        out = subprocess.run(
            ["sha256sum", "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.splitlines()[0] if out else "unknown"


def _cpu_flags() -> list[str]:
    """The CPU's hashing-relevant flags (Linux only; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return sorted(flags & {"sha_ni", "avx2", "avx512f"})


def host() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "cpu_flags": _cpu_flags(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "sha256sum": _sha256sum_version(),
    }


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write ``results`` with the run's time and host to ``path``.

    Sections of ``path`` that ``results`` does not name are kept (each stamped with the time
    it was measured, ``generated``); the top-level ``generated`` and ``host`` are this run's.
    """
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    kept: dict[str, Any] = {}
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        previous = None
    if isinstance(previous, dict) and previous.get("schema") == SCHEMA:
        kept = {k: v for k, v in previous.items() if k not in ("schema", "generated", "host")}
    document = {
        "schema": SCHEMA,
        "generated": now,
        "host": host(),
        **kept,
        **{name: {**section, "generated": now} for name, section in results.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, path)
    for name, section in results.items():  # and the same figures as markdown, beside it
        write_markdown(path.with_suffix(".md"), name, section_markdown(section))


def _figures(prefix: str, value: Any) -> list[list[str]]:
    """Rows ``name | median | min | max`` for every measurement in a section (a dict with
    ``median_s``), and ``name | value`` rows for plain figures (ratios, verdicts, counts)."""
    if isinstance(value, dict):
        if "median_s" in value:
            return [[prefix, *(f"{value[k]:g}" for k in ("median_s", "min_s", "max_s"))]]
        rows: list[list[str]] = []
        for key, inner in value.items():
            if key not in ("generated", "samples_s"):
                rows += _figures(f"{prefix}.{key}" if prefix else key, inner)
        return rows
    if isinstance(value, bool | int | float | str) and prefix:
        return [[prefix, str(value), "", ""]]
    return []


def section_markdown(section: dict[str, Any]) -> str:
    """A section of ``latest.json`` as a markdown table: each measurement's median, min and
    max in the unit its name gives (``_s``, ``_ms``, ``_kib``; plain seconds otherwise)."""
    rows = _figures("", section)
    return markdown_table(["figure", "median (or value)", "min", "max"], rows) if rows else ""


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table: the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(path: Path, section: str, body: str) -> None:
    """Replace ``## section`` of the markdown file ``path`` with ``body`` (stamped with the
    time), keeping every other section; a new section goes at the end."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        text = path.read_text()
    except OSError:
        text = "# Benchmark results (latest run of each)\n"
    block = f"## {section}\n\nMeasured {now}.\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def print_profile(console: Console, title: str, text: str, saved: Path) -> None:
    console.rule(f"[bold]profile: {title}")
    console.print(text.strip(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"full profile: {saved} (open with `python -m pstats {saved.name}`)")
