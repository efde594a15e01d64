"""Benchmark results land as JSON and as a markdown table beside it, section by section."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.report import write_results


def test_each_benchmark_replaces_only_its_own_section_in_json_and_markdown(
    tmp_path: Path,
) -> None:
    out = tmp_path / "latest.json"
    stats = {"median_s": 1.5, "min_s": 1.25, "max_s": 2.0, "samples_s": [1.25, 1.5, 2.0]}
    write_results(out, {"alpha": {"wall_s": stats, "ratio": 2.5, "pass": True}})
    write_results(out, {"beta": {"cpu_ms": {**stats, "median_s": 7.0}}})
    write_results(out, {"alpha": {"wall_s": {**stats, "median_s": 1.75}, "ratio": 3.0}})
    document = json.loads(out.read_text())
    assert document["alpha"]["wall_s"]["median_s"] == 1.75 and "beta" in document
    markdown = (tmp_path / "latest.md").read_text()
    assert markdown.count("## alpha") == 1 and markdown.count("## beta") == 1
    assert "| wall_s | 1.75 | 1.25 | 2 |" in markdown
    assert "| ratio | 3.0 |  |  |" in markdown and "| ratio | 2.5" not in markdown
    assert "| cpu_ms | 7 | 1.25 | 2 |" in markdown
