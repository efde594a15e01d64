"""A JUnit report names the commit and environment of its run (tests/conftest.py writes it),
and an evidence pack refuses a report that does not, or that comes from another commit."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from chargeward.evidence.matrix import JUnitReportError, merge_junit, parse_junit
from chargeward.evidence.testrun import (
    ReportProvenanceRefused,
    RunProvenance,
    check_report,
    git_checkout,
    package_checkout,
    run_properties,
)
from tests.support.evidence import COMMIT_A, COMMIT_B, junit

ROOT = Path(__file__).resolve().parents[3]
NODE = "tests/unit/test_a.py::test_x"


def test_each_suites_properties_are_read_and_survive_a_merge() -> None:
    main = parse_junit(junit({NODE: "passed"}, commit=COMMIT_A, dirty=True))
    run = RunProvenance.from_properties(main.properties[0])
    assert run is not None
    assert (run.commit, run.dirty, run.python, run.packages) == (
        COMMIT_A, True, "CPython 3.11.7", {"cryptography": "44.0.0"}
    )  # fmt: skip
    merged = parse_junit(merge_junit([junit({NODE: "passed"}), junit({NODE: "failed"})]))
    assert [p["chargeward.commit"] for p in merged.properties] == [COMMIT_A, COMMIT_A]


def test_a_property_given_twice_is_refused() -> None:
    twice = junit({NODE: "passed"}).replace(
        b"</properties>", b'<property name="chargeward.commit" value="%s" /></properties>'
        % COMMIT_B.encode()
    )  # fmt: skip
    with pytest.raises(JUnitReportError, match=re.escape("property 'chargeward.commit' twice")):
        parse_junit(twice)


def test_the_report_must_come_from_the_commit_the_pack_is_about() -> None:
    same = check_report(parse_junit(junit({NODE: "passed"})), expected_commit=COMMIT_A.upper())
    assert (same.commit, same.same_commit, same.dirty) == (COMMIT_A, True, False)
    other = parse_junit(junit({NODE: "passed"}, commit=COMMIT_B))
    with pytest.raises(ReportProvenanceRefused, match=f"under commit {COMMIT_B}, not {COMMIT_A}"):
        check_report(other, expected_commit=COMMIT_A)
    flagged = check_report(other, expected_commit=COMMIT_A, allow_other_commit=True)
    assert (flagged.commit, flagged.same_commit) == (COMMIT_B, False)
    with pytest.raises(ReportProvenanceRefused, match="suite 1 does not name the commit"):
        check_report(parse_junit(junit({NODE: "passed"}, commit=None)), expected_commit=COMMIT_A)
    mixed = parse_junit(merge_junit([junit({NODE: "passed"}), junit({}, commit=COMMIT_B)]))
    with pytest.raises(ReportProvenanceRefused, match="different commits"):
        check_report(mixed, expected_commit=COMMIT_A, allow_other_commit=True)
    unnamed = parse_junit(merge_junit([junit({NODE: "passed"}), junit({}, commit=None)]))
    with pytest.raises(ReportProvenanceRefused, match="suite 2 does not name"):
        check_report(unnamed, expected_commit=COMMIT_A)
    with pytest.raises(Exception, match="not a full git commit id"):
        check_report(parse_junit(junit({NODE: "passed"})), expected_commit="main")


def test_run_properties_name_this_checkout_and_the_key_packages() -> None:
    props = run_properties(ROOT)
    checkout = git_checkout(ROOT)
    if checkout is not None:
        assert package_checkout() == checkout  # the default commit of `evidence export`
        assert props["chargeward.commit"] == checkout.commit
        assert props["chargeward.dirty"] == str(checkout.dirty).lower()
    import cryptography

    assert props["chargeward.package.cryptography"] == cryptography.__version__
    assert props["chargeward.python"].endswith(sys.version.split()[0])
    assert git_checkout(Path("/")) is None  # not a work tree
