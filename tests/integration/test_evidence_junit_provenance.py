"""The suite's own JUnit report names the commit and environment of its run: tests/conftest.py
writes them from the pytest-xdist controller (workers cannot), and an evidence pack reads them
back.  Slow: it starts a pytest run with one xdist worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chargeward.evidence.matrix import parse_junit
from chargeward.evidence.testrun import run_properties

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_suites_junit_report_carries_its_provenance(tmp_path: Path) -> None:
    """tests/conftest.py writes the properties, also when pytest-xdist runs the tests."""
    out = tmp_path / "report.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "1",
         f"--junitxml={out}",
         "tests/unit/evidence/test_evidence_matrix.py::test_node_ids_map_to_the_names_pytest_reports"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (props,) = parse_junit(out.read_bytes()).properties
    assert props == run_properties(ROOT) | {"chargeward.dirty": props["chargeward.dirty"]}
