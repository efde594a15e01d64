"""The requirements matrix: regulations mapped to tests, and the tests' results from a JUnit
XML report (pytest ``--junitxml``).  Pure: takes bytes, returns rows; nothing is read here.

    >>> requirements = parse_requirements(REQUIREMENTS_TOML)       # doctest: +SKIP
    >>> report = parse_junit(Path("reports/pytest.xml").read_bytes())  # doctest: +SKIP
    >>> rows = build_matrix(requirements, report)                   # doctest: +SKIP
    >>> [r.requirement.id for r in rows if not r.satisfied]         # doctest: +SKIP

A test is named by its pytest node id without parameters (``tests/unit/test_x.py::test_y``);
every parametrised case in the report counts for it.  A node id with parameters
(``tests/unit/test_x.py::test_y[case]``) names that one case.  Its result is ``failed`` if any case
failed or errored, ``passed`` if the rest passed or were skipped and at least one passed,
``skipped`` if every case was skipped, and ``not run`` if the report has no case of it.
A requirement is satisfied only if it names tests and every one of them passed.
"""

from __future__ import annotations

import tomllib
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chargeward.errors import ConfigError

MAX_REPORT_BYTES = 64 << 20
MAX_REQUIREMENTS_BYTES = 1 << 20
WORDINGS = ("quoted", "paraphrased")
PASSED, FAILED, SKIPPED, NOT_RUN = "passed", "failed", "skipped", "not run"


class JUnitReportError(ConfigError):
    """A test report is missing, too large or not JUnit XML."""


@dataclass(frozen=True)
class Requirement:
    id: str
    framework: str
    text: str
    wording: str  # quoted | paraphrased
    tests: tuple[str, ...]


@dataclass(frozen=True)
class JUnitReport:
    """Outcomes per (classname, test name without parameters): passed, failed, error,
    skipped; plus the suite's own figures."""

    outcomes: Mapping[tuple[str, str], Counter[str]]
    timestamp: str | None = None
    hostname: str | None = None
    totals: Mapping[str, int] = field(default_factory=dict)
    cases: Mapping[tuple[str, str], Counter[str]] = field(default_factory=dict)  # full names


@dataclass(frozen=True)
class MappedTest:
    node_id: str
    result: str  # passed | failed | skipped | not run
    cases: Mapping[str, int]  # outcome -> number of cases


@dataclass(frozen=True)
class Row:
    requirement: Requirement
    tests: tuple[MappedTest, ...]

    @property
    def satisfied(self) -> bool:
        return bool(self.tests) and all(t.result == PASSED for t in self.tests)

    @property
    def status(self) -> str:
        """satisfied | failed | incomplete (a test skipped or not run) | no tests."""
        if not self.tests:
            return "no tests"
        if self.satisfied:
            return "satisfied"
        return "failed" if any(t.result == FAILED for t in self.tests) else "incomplete"


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"requirements: {what} must be a non-empty string")
    return value.strip()


def load_toml(data: bytes, what: str, limit: int = MAX_REQUIREMENTS_BYTES) -> dict[str, Any]:
    """A TOML document of at most ``limit`` bytes; :class:`ConfigError` naming ``what``."""
    if len(data) > limit:
        raise ConfigError(f"{what} is too large")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{what} is not valid TOML: {e}") from e


def parse_requirements(data: bytes) -> list[Requirement]:
    """The mapping (``requirements.toml``): ``[[requirement]]`` tables with ``id``,
    ``framework``, ``text``, ``wording`` and ``tests`` (pytest node ids)."""
    doc = load_toml(data, "requirements file")
    found: list[Requirement] = []
    for n, item in enumerate(doc.get("requirement", [])):
        rid = _text(item.get("id"), f"requirement {n} id")
        tests = item.get("tests", [])
        if not isinstance(tests, list) or not all(
            isinstance(t, str) and "::" in t and "[" not in t for t in tests
        ):
            raise ConfigError(f"requirements: {rid}: tests are node ids without parameters")
        wording = item.get("wording")
        if wording not in WORDINGS:
            raise ConfigError(f"requirements: {rid}: wording is one of {', '.join(WORDINGS)}")
        found.append(
            Requirement(
                rid,
                _text(item.get("framework"), f"{rid} framework"),
                _text(item.get("text"), f"{rid} text"),
                wording,
                tuple(tests),
            )
        )
    ids = [r.id for r in found]
    if len(set(ids)) != len(ids) or not ids:
        raise ConfigError("requirements: ids must be unique and at least one given")
    return found


def node_key(node_id: str) -> tuple[str, str]:
    """``tests/unit/test_x.py::TestC::test_y`` -> (``tests.unit.test_x.TestC``, ``test_y``),
    the (classname, name) pytest writes to its JUnit report."""
    path, _, rest = node_id.partition("::")
    *classes, name = rest.split("::")
    module = path.removesuffix(".py").replace("/", ".")
    return ".".join([module, *classes]), name


def _outcome(case: ET.Element) -> str:
    tags = {child.tag for child in case}
    if "error" in tags:
        return "error"
    if "failure" in tags:
        return "failed"
    return "skipped" if "skipped" in tags else "passed"


def parse_junit(data: bytes) -> JUnitReport:
    """Parse a JUnit XML report; :class:`JUnitReportError` if it is not one."""
    if len(data) > MAX_REPORT_BYTES:
        raise JUnitReportError(f"test report is over {MAX_REPORT_BYTES} bytes")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise JUnitReportError("test report holds a DTD; JUnit XML has none")
    try:
        root = ET.fromstring(data)  # noqa: S314 (no DTD, so no entities; size capped)
    except ET.ParseError as e:
        raise JUnitReportError(f"test report is not well-formed XML: {e}") from e
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if root.tag not in ("testsuites", "testsuite") or not suites:
        raise JUnitReportError("test report is not JUnit XML (no <testsuite>)")
    outcomes: dict[tuple[str, str], Counter[str]] = {}
    cases: dict[tuple[str, str], Counter[str]] = {}
    totals: Counter[str] = Counter()
    for suite in suites:
        for case in suite.iter("testcase"):
            classname, name = case.get("classname"), case.get("name")
            if not classname or not name:
                raise JUnitReportError("test report has a <testcase> without classname or name")
            outcome = _outcome(case)
            outcomes.setdefault((classname, name.partition("[")[0]), Counter())[outcome] += 1
            cases.setdefault((classname, name), Counter())[outcome] += 1
            totals[outcome] += 1
    first = suites[0]
    return JUnitReport(outcomes, first.get("timestamp"), first.get("hostname"), dict(totals), cases)


def merge_junit(reports: Sequence[bytes]) -> bytes:
    """One JUnit XML report holding every suite of ``reports`` (e.g. the main and the slow
    test runs); each is checked as :func:`parse_junit` does first."""
    if len(reports) == 1:
        return reports[0]
    merged = ET.Element("testsuites")
    for data in reports:
        parse_junit(data)
        root = ET.fromstring(data)  # noqa: S314 (checked above: no DTD, size capped)
        merged.extend([root] if root.tag == "testsuite" else root.findall("testsuite"))
    out: bytes = ET.tostring(merged, encoding="utf-8", xml_declaration=True)
    return out


def result_of(report: JUnitReport, node_id: str) -> MappedTest:
    """The result of one mapped test or, with parameters, one case (see the module docstring)."""
    key = node_key(node_id)
    cases = (report.cases if "[" in key[1] else report.outcomes).get(key, Counter())
    if not cases:
        result = NOT_RUN
    elif cases["failed"] or cases["error"]:
        result = FAILED
    elif cases["passed"]:
        result = PASSED
    else:
        result = SKIPPED
    return MappedTest(node_id, result, dict(sorted(cases.items())))


def build_matrix(requirements: Sequence[Requirement], report: JUnitReport) -> list[Row]:
    return [Row(r, tuple(result_of(report, t) for t in r.tests)) for r in requirements]
