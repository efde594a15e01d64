"""The requirements matrix: regulations mapped to tests, and the tests' results from a JUnit
XML report (pytest ``--junitxml``).  Pure: takes bytes, returns rows; nothing is read here.

    requirements = parse_requirements(REQUIREMENTS_TOML)
    report = parse_junit(Path("reports/pytest.xml").read_bytes())
    rows = build_matrix(requirements, report)
    [r.requirement.id for r in rows if not r.satisfied]

A test is named by its pytest node id without parameters (``tests/unit/test_x.py::test_y``);
every parametrised case in the report counts for it.  A node id with parameters
(``tests/unit/test_x.py::test_y[case]``) names that one case.  Its result is ``failed`` if any case
failed or errored, ``passed`` if the rest passed or were skipped and at least one passed,
``skipped`` if every case was skipped, and ``not run`` if the report has no case of it.

Every requirement names the party that meets it (:data:`PARTIES`), or is split into parts,
one per party (docs/adr/0024-evidence-responsibility-and-signed-packs.md).  A ``pipeline`` or
``reference-agent`` part is satisfied only if it names tests and every one of them passed.  A
``platform`` part (hardware root of trust, bootloader, physical design, the manufacturer's
policies) is never satisfied by software: it is for the manufacturer to evidence, and its
tests, if any, only demonstrate the behaviour in simulation with the reference agent.  A
requirement is satisfied only if every part is.

The report's ``<properties>`` say which commit and environment produced it
(:mod:`chargeward.evidence.testrun`); :func:`parse_junit` reads them per suite.
"""

from __future__ import annotations

import tomllib
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chargeward.errors import ConfigError
from chargeward.limits import DEFAULT_FORMAT_LIMITS

WORDINGS = ("quoted", "paraphrased")
PASSED, FAILED, SKIPPED, NOT_RUN = "passed", "failed", "skipped", "not run"
PIPELINE, REFERENCE_AGENT, PLATFORM = "pipeline", "reference-agent", "platform"
PARTIES = (PIPELINE, REFERENCE_AGENT, PLATFORM)
SATISFIED, INCOMPLETE, NO_TESTS = "satisfied", "incomplete", "no tests"
MANUFACTURER = "manufacturer to evidence"
SIMULATED = "demonstrated in simulation by the reference agent"
_REQUIREMENT_KEYS = {"id", "framework", "text", "wording", "party", "tests", "part"}
_PART_KEYS = {"party", "claim", "tests"}


class JUnitReportError(ConfigError):
    """A test report is missing, too large or not JUnit XML."""


@dataclass(frozen=True)
class Part:
    """What one party meets of a requirement (``claim``), and the tests that show it."""

    party: str  # pipeline | reference-agent | platform
    claim: str
    tests: tuple[str, ...]


@dataclass(frozen=True)
class Requirement:
    id: str
    framework: str
    text: str
    wording: str  # quoted | paraphrased
    parts: tuple[Part, ...]

    @property
    def tests(self) -> tuple[str, ...]:
        """Every test mapped to the requirement, in order, each once."""
        return tuple(dict.fromkeys(t for p in self.parts for t in p.tests))


@dataclass(frozen=True)
class JUnitReport:
    """Outcomes per (classname, test name without parameters): passed, failed, error,
    skipped; plus the suite's own figures."""

    outcomes: Mapping[tuple[str, str], Counter[str]]
    timestamp: str | None = None
    hostname: str | None = None
    totals: Mapping[str, int] = field(default_factory=dict)
    cases: Mapping[tuple[str, str], Counter[str]] = field(default_factory=dict)  # full names
    properties: tuple[Mapping[str, str], ...] = ()  # each suite's <properties>, in order


@dataclass(frozen=True)
class MappedTest:
    node_id: str
    result: str  # passed | failed | skipped | not run
    cases: Mapping[str, int]  # outcome -> number of cases


def _test_status(tests: Sequence[MappedTest]) -> str:
    if not tests:
        return NO_TESTS
    if all(t.result == PASSED for t in tests):
        return SATISFIED
    return FAILED if any(t.result == FAILED for t in tests) else INCOMPLETE


@dataclass(frozen=True)
class PartRow:
    part: Part
    tests: tuple[MappedTest, ...]

    @property
    def status(self) -> str:
        """satisfied | failed | incomplete (a test skipped or not run) | no tests; a
        platform part is always "manufacturer to evidence", whatever its tests say."""
        return MANUFACTURER if self.part.party == PLATFORM else _test_status(self.tests)

    @property
    def simulation(self) -> str | None:
        """For a platform part with tests: what the reference agent showed in simulation."""
        if self.part.party != PLATFORM or not self.tests:
            return None
        status = _test_status(self.tests)
        return SIMULATED if status == SATISFIED else f"simulation {status}"


@dataclass(frozen=True)
class Row:
    requirement: Requirement
    parts: tuple[PartRow, ...]

    @property
    def tests(self) -> tuple[MappedTest, ...]:
        return tuple({t.node_id: t for p in self.parts for t in p.tests}.values())

    @property
    def satisfied(self) -> bool:
        return all(p.status == SATISFIED for p in self.parts)

    @property
    def status(self) -> str:
        """failed (any test, simulations included) | incomplete | no tests (a software part
        lacks them) | manufacturer to evidence (a platform part is left) | satisfied."""
        if any(t.result == FAILED for t in self.tests):
            return FAILED
        software = [p.status for p in self.parts if p.part.party != PLATFORM]
        for status in (INCOMPLETE, NO_TESTS):
            if status in software:
                return status
        return SATISFIED if self.satisfied else MANUFACTURER


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"requirements: {what} must be a non-empty string")
    return value.strip()


def load_toml(
    data: bytes, what: str, limit: int = DEFAULT_FORMAT_LIMITS.requirements_bytes
) -> dict[str, Any]:
    """A TOML document of at most ``limit`` bytes; :class:`ConfigError` naming ``what``."""
    if len(data) > limit:
        raise ConfigError(f"{what} is too large")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{what} is not valid TOML: {e}") from e


def _tests(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
        isinstance(t, str) and "::" in t and "[" not in t for t in value
    ):
        raise ConfigError(f"requirements: {where}: tests are node ids without parameters")
    return tuple(value)


def _party(value: object, where: str) -> str:
    if value is None:
        raise ConfigError(f"requirements: {where}: party is missing ({', '.join(PARTIES)})")
    if value not in PARTIES:
        raise ConfigError(
            f"requirements: {where}: unknown party {value!r} (one of {', '.join(PARTIES)})"
        )
    return str(value)


def _unknown(item: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(item.keys() - allowed)
    if extra:
        raise ConfigError(f"requirements: {where}: unknown keys {', '.join(extra)}")


def _parts(item: Mapping[str, Any], rid: str, text: str) -> tuple[Part, ...]:
    """``party`` and ``tests`` on the requirement, or ``[[requirement.part]]`` tables."""
    split = item.get("part")
    if split is None:
        return (Part(_party(item.get("party"), rid), text, _tests(item.get("tests", []), rid)),)
    if "party" in item or "tests" in item:
        raise ConfigError(f"requirements: {rid}: give party and tests in its parts only")
    if not isinstance(split, list) or not split:
        raise ConfigError(f"requirements: {rid}: part is a list of [[requirement.part]] tables")
    parts = []
    for n, raw in enumerate(split):
        where = f"{rid} part {n + 1}"
        if not isinstance(raw, dict):
            raise ConfigError(f"requirements: {where}: a part is a table")
        _unknown(raw, _PART_KEYS, where)
        parts.append(
            Part(
                _party(raw.get("party"), where),
                _text(raw.get("claim"), f"{where} claim"),
                _tests(raw.get("tests", []), where),
            )
        )
    parties = [p.party for p in parts]
    if len(set(parties)) != len(parties):
        raise ConfigError(f"requirements: {rid}: one part per party")
    return tuple(parts)


def parse_requirements(data: bytes) -> list[Requirement]:
    """The mapping (``requirements.toml``): ``[[requirement]]`` tables with ``id``,
    ``framework``, ``text``, ``wording`` and either ``party`` and ``tests`` (pytest node ids)
    or ``[[requirement.part]]`` tables of ``party``, ``claim`` and ``tests``."""
    doc = load_toml(data, "requirements file")
    items = doc.get("requirement", [])
    if not isinstance(items, list):
        raise ConfigError("requirements: requirement is a list of [[requirement]] tables")
    found: list[Requirement] = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"requirements: requirement {n} is not a table")
        rid = _text(item.get("id"), f"requirement {n} id")
        _unknown(item, _REQUIREMENT_KEYS, rid)
        wording = item.get("wording")
        if wording not in WORDINGS:
            raise ConfigError(f"requirements: {rid}: wording is one of {', '.join(WORDINGS)}")
        text = _text(item.get("text"), f"{rid} text")
        found.append(
            Requirement(
                rid,
                _text(item.get("framework"), f"{rid} framework"),
                text,
                wording,
                _parts(item, rid, text),
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
    if len(data) > DEFAULT_FORMAT_LIMITS.test_report_bytes:
        raise JUnitReportError(
            f"test report is over {DEFAULT_FORMAT_LIMITS.test_report_bytes} bytes"
        )
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
    return JUnitReport(
        outcomes,
        first.get("timestamp"),
        first.get("hostname"),
        dict(totals),
        cases,
        tuple(_properties(suite) for suite in suites),
    )


def _properties(suite: ET.Element) -> dict[str, str]:
    """A suite's ``<properties>`` (pytest's ``record_testsuite_property``); a name given
    twice is refused: which one would count is not for the reader to guess."""
    found: dict[str, str] = {}
    for prop in suite.findall("properties/property"):
        name, value = prop.get("name"), prop.get("value")
        if not name or value is None:
            raise JUnitReportError("test report has a <property> without name or value")
        if name in found:
            raise JUnitReportError(f"test report gives property {name!r} twice in one suite")
        found[name] = value
    return found


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
    return [
        Row(r, tuple(PartRow(p, tuple(result_of(report, t) for t in p.tests)) for p in r.parts))
        for r in requirements
    ]
