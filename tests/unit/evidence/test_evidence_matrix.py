"""The requirements matrix: the mapping names real tests, results come only from the JUnit
report, and a requirement is satisfied only when every test mapped to it passed."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from chargeward.errors import ConfigError, IntegrityError
from chargeward.evidence.bundle import SUPPLY_MEMBERS, read_bundle
from chargeward.evidence.matrix import (
    FAILED,
    INCOMPLETE,
    MANUFACTURER,
    NOT_RUN,
    PARTIES,
    PASSED,
    PLATFORM,
    SATISFIED,
    SIMULATED,
    SKIPPED,
    JUnitReportError,
    Part,
    Requirement,
    build_matrix,
    merge_junit,
    node_key,
    parse_junit,
    parse_requirements,
    result_of,
)
from chargeward.evidence.pack import requirements
from chargeward.release.bundle import build_bundle
from tests.support.nodeids import repository_tests

if TYPE_CHECKING:
    from conftest import Pki


def report(*cases: tuple[str, str, str]) -> bytes:
    """A pytest-style report of (classname, name, outcome) cases."""
    bodies = {
        "passed": "",
        "failed": '<failure message="assert 1 == 2">trace</failure>',
        "error": '<error message="fixture failed">trace</error>',
        "skipped": '<skipped type="pytest.skip" message="no softhsm">skip</skipped>',
    }
    xml = "".join(
        f'<testcase classname="{c}" name="{n}" time="0.01">{bodies[o]}</testcase>'
        for c, n, o in cases
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" '
        f'failures="0" skipped="0" tests="{len(cases)}" time="0.1" '
        f'timestamp="2026-01-05T10:00:00" hostname="ci">{xml}</testsuite></testsuites>'
    ).encode()


def test_every_mapped_test_exists_in_the_repository() -> None:
    known = repository_tests()
    assert len(known) > 300  # the collector sees the suite
    mapped = {t for r in requirements() for t in r.tests}
    assert sorted(mapped - known) == []
    merkle = "tests/unit/audit/test_merkle.py"
    assert f"{merkle}::TestRfc6962Examples::test_root_of_the_seven_leaf_tree" in known


def test_the_mapping_covers_the_regulations_asked_for() -> None:
    ids = {r.id for r in requirements()}
    for wanted in (
        "UK-SCP Sch.1 para 2",
        "UK-SCP Sch.1 para 3(3)(b)",
        "UK-SCP Sch.1 para 3(4)(a)",
        "UK-SCP Sch.1 para 10",
        "ETSI EN 303 645 5.1",
        "ETSI EN 303 645 5.3",
        "ETSI EN 303 645 5.4",
        "ETSI EN 303 645 5.7",
        "CRA Annex I Part I (2)(f)",
        "CRA Annex I Part II (1)",
        "CRA Annex I Part II (7)",
    ):
        assert wanted in ids
    # Only the paragraph 3 texts quote the Regulations; every other text says it does not.
    quoted = {r.id for r in requirements() if r.wording == "quoted"}
    assert quoted and all(i.startswith("UK-SCP Sch.1 para 3") for i in quoted)


def test_node_ids_map_to_the_names_pytest_reports() -> None:
    assert node_key("tests/unit/test_x.py::test_y") == ("tests.unit.test_x", "test_y")
    assert node_key("tests/unit/audit/test_merkle.py::TestA::test_b") == (
        "tests.unit.audit.test_merkle.TestA",
        "test_b",
    )


def test_each_outcome_is_read_and_a_test_absent_from_the_report_is_not_run() -> None:
    parsed = parse_junit(
        report(
            ("tests.unit.test_a", "test_ok", "passed"),
            ("tests.unit.test_a", "test_bad", "failed"),
            ("tests.unit.test_a", "test_broken", "error"),
            ("tests.unit.test_a", "test_skip", "skipped"),
            ("tests.unit.test_a", "test_param[sqlite]", "passed"),
            ("tests.unit.test_a", "test_param[postgresql]", "skipped"),
            ("tests.unit.test_a", "test_mixed[1]", "passed"),
            ("tests.unit.test_a", "test_mixed[2]", "failed"),
        )
    )
    results = {
        name: result_of(parsed, f"tests/unit/test_a.py::{name}").result
        for name in ("test_ok", "test_bad", "test_broken", "test_skip", "test_param",
                     "test_mixed", "test_absent")
    }  # fmt: skip
    assert results == {
        "test_ok": PASSED,
        "test_bad": FAILED,
        "test_broken": FAILED,  # an error is not a pass
        "test_skip": SKIPPED,
        "test_param": PASSED,  # one case passed, the other skipped
        "test_mixed": FAILED,  # one failing case fails the test
        "test_absent": NOT_RUN,
    }
    assert result_of(parsed, "tests/unit/test_a.py::test_param").cases == {
        "passed": 1,
        "skipped": 1,
    }
    assert parsed.timestamp == "2026-01-05T10:00:00" and parsed.hostname == "ci"
    assert parsed.totals == {"passed": 3, "failed": 2, "error": 1, "skipped": 2}


def test_a_requirement_with_one_failing_test_is_not_satisfied() -> None:
    def req(rid: str, *numbers: int) -> Requirement:
        tests = tuple(f"t/test_a.py::test_{n}" for n in numbers)
        return Requirement(rid, "F", "text", "paraphrased", (Part("pipeline", "text", tests),))

    # all pass, one fails, one skipped, one not run, no tests
    reqs = [req("R1", 1, 2), req("R2", 1, 3), req("R3", 4), req("R4", 1, 9), req("R5")]
    parsed = parse_junit(
        report(
            ("t.test_a", "test_1", "passed"),
            ("t.test_a", "test_2", "passed"),
            ("t.test_a", "test_3", "failed"),
            ("t.test_a", "test_4", "skipped"),
        )
    )
    rows = {row.requirement.id: row for row in build_matrix(reqs, parsed)}
    assert {i: (r.satisfied, r.status) for i, r in rows.items()} == {
        "R1": (True, "satisfied"),
        "R2": (False, "failed"),
        "R3": (False, "incomplete"),
        "R4": (False, "incomplete"),
        "R5": (False, "no tests"),
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<testsuites><testsuite>", "not well-formed XML"),
        (b"", "not well-formed XML"),
        (b"<html><body/></html>", "not JUnit XML"),
        (b"<testsuites/>", "not JUnit XML"),
        (b'<testsuite><testcase name="x"/></testsuite>', "without classname or name"),
        (
            b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY a "aaaa">]><testsuite>&a;</testsuite>',
            "holds a DTD",
        ),
    ],
)
def test_a_malformed_report_is_refused_with_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(JUnitReportError, match=message):
        parse_junit(data)


def test_a_single_testsuite_root_is_accepted() -> None:
    parsed = parse_junit(b'<testsuite><testcase classname="m" name="test_x"/></testsuite>')
    assert result_of(parsed, "m.py::test_x").result == PASSED


def test_the_main_and_the_slow_runs_reports_merge_into_one() -> None:
    main = report(
        ("tests.unit.test_a", "test_ok", "passed"), ("tests.unit.test_a", "test_x", "failed")
    )
    slow = parse_junit(
        merge_junit([main, b'<testsuite><testcase classname="tests.b" name="test_s"/></testsuite>'])
    )
    assert result_of(slow, "tests/b.py::test_s").result == PASSED
    assert result_of(slow, "tests/unit/test_a.py::test_x").result == FAILED
    assert slow.totals == {"passed": 2, "failed": 1}
    with pytest.raises(JUnitReportError, match="not JUnit XML"):
        merge_junit([main, b"<html/>"])


def test_a_bad_mapping_is_refused() -> None:
    good = (
        b'[[requirement]]\nid="A"\nframework="F"\ntext="t"\nwording="quoted"\n'
        b'party="pipeline"\ntests=[]\n'
    )
    assert parse_requirements(good)[0].id == "A"
    with pytest.raises(Exception, match="node ids without parameters"):
        parse_requirements(good.replace(b"tests=[]", b'tests=["tests/x.py::test_y[1]"]'))
    with pytest.raises(Exception, match="wording"):
        parse_requirements(good.replace(b'"quoted"', b'"roughly"'))
    with pytest.raises(Exception, match="unique"):
        parse_requirements(good + good)


def _tar(members: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_supply_chain_documents_come_from_the_bundle_bound_to_its_manifest(
    tmp_path: Path, pki: Pki
) -> None:
    sbom = b'{"bomFormat": "CycloneDX"}'
    payload = tmp_path / "fw.bin"
    payload.write_bytes(b"firmware\n" * 100)
    bundle = tmp_path / "r.cwb"
    build_bundle(
        payload,
        bundle,
        version="1.0.0",
        security_version=1,
        hardware_models=["AC22"],
        signer=pki.signer,
        signing_certificate=pki.signing_cert,
        attestations={"sbom.cdx.json": sbom},
    )
    files = read_bundle(bundle)
    assert files.supply == {"sbom.cdx.json": sbom}
    assert "vex.openvex.json" in SUPPLY_MEMBERS and "provenance.dsse.json" in SUPPLY_MEMBERS
    # A document swapped after the build no longer matches the manifest's digest.
    with tarfile.open(bundle) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    members["sbom.cdx.json"] = sbom.replace(b"CycloneDX", b"CycloneDx")
    tampered = tmp_path / "tampered.cwb"
    tampered.write_bytes(_tar(members).getvalue())
    with pytest.raises(IntegrityError, match="SHA-256 differs from the manifest"):
        read_bundle(tampered)


# -- who meets each requirement ----------------------------------------------------------------

HEAD = b'[[requirement]]\nid="A"\nframework="F"\ntext="t"\nwording="paraphrased"\n'
PART = b'[[requirement.part]]\nparty="%s"\nclaim="c"\ntests=[]\n'


def test_a_requirement_may_be_split_into_parts_one_per_party() -> None:
    (one,) = parse_requirements(HEAD + b'party="platform"\ntests=["t/test_a.py::test_1"]\n')
    assert one.parts == (Part("platform", "t", ("t/test_a.py::test_1",)),)
    (split,) = parse_requirements(HEAD + PART % b"pipeline" + PART % b"reference-agent")
    assert [p.party for p in split.parts] == ["pipeline", "reference-agent"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'party="chargeward"\ntests=[]\n', "A: unknown party 'chargeward' (one of pipeline, "
         "reference-agent, platform)"),
        (b'party="Platform"\ntests=[]\n', "unknown party 'Platform'"),
        (b"party=3\ntests=[]\n", "unknown party 3"),
        (b"tests=[]\n", "A: party is missing"),
        (b"", "A: party is missing"),
        (PART % b"pipeline" + PART % b"hardware", "A part 2: unknown party 'hardware'"),
        (b'[[requirement.part]]\nclaim="c"\ntests=[]\n', "A part 1: party is missing"),
        (PART % b"pipeline" + PART % b"pipeline", "A: one part per party"),
        (b'[[requirement.part]]\nparty="platform"\ntests=[]\n', "A part 1 claim must be"),
        (b'party="pipeline"\n' + PART % b"platform", "party and tests in its parts only"),
        (b'party="pipeline"\nowner="x"\n', "A: unknown keys owner"),
        ((PART % b"platform").replace(b"tests", b"test"), "A part 1: unknown keys test"),
        (b"part=[]\n", "part is a list"),
    ],
)  # fmt: skip
def test_every_requirement_must_name_a_known_party(body: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_requirements(HEAD + body)


def test_every_shipped_requirement_names_who_meets_it() -> None:
    for r in requirements():
        assert r.parts, r.id
        assert all(p.party in PARTIES and p.claim for p in r.parts), r.id
        assert len({p.party for p in r.parts}) == len(r.parts), r.id
    by_id = {r.id: r for r in requirements()}
    # Secure boot is the charger platform's (hardware root of trust, bootloader), wherever
    # it is asked for; so are secure storage's hardware key and the disclosure policy.
    assert [p.party for p in by_id["UK-SCP Sch.1 para 3(4)(a)"].parts] == [PLATFORM]
    assert [p.party for p in by_id["CRA Annex I Part II (4)-(6)"].parts] == [PLATFORM]
    for rid in ("ETSI EN 303 645 5.7", "ETSI EN 303 645 5.4", "UK-SCP Sch.1 para 4"):
        assert PLATFORM in {p.party for p in by_id[rid].parts}, rid
    assert [p.party for p in by_id["CRA Annex I Part II (7)"].parts] == ["pipeline"]


def _passing(reqs: list[Requirement], **outcomes: str) -> bytes:
    cases = []
    for node in dict.fromkeys(t for r in reqs for t in r.tests):
        cls, name = node_key(node)
        cases.append((cls, name, outcomes.get(name, "passed")))
    return report(*cases)


def test_secure_boot_is_a_platform_obligation_even_when_every_test_passes() -> None:
    reqs = requirements()
    rows = {r.requirement.id: r for r in build_matrix(reqs, parse_junit(_passing(reqs)))}
    boot = rows["UK-SCP Sch.1 para 3(4)(a)"]
    assert all(t.result == PASSED for t in boot.tests) and boot.tests
    assert (boot.satisfied, boot.status) == (False, MANUFACTURER)
    ((part),) = boot.parts
    assert (part.status, part.simulation) == (MANUFACTURER, SIMULATED)
    # No requirement with a platform part counts as satisfied, whatever its tests say.
    for row in rows.values():
        has_platform = any(p.part.party == PLATFORM for p in row.parts)
        assert row.satisfied is not has_platform, row.requirement.id
        assert row.status == (MANUFACTURER if has_platform else SATISFIED), row.requirement.id


def test_platform_parts_are_never_satisfied_and_a_failing_simulation_fails() -> None:
    def row(*parts: tuple[str, tuple[int, ...]], **outcomes: str) -> tuple[str, list[str]]:
        req = Requirement(
            "R", "F", "t", "paraphrased",
            tuple(Part(party, party, tuple(f"t/test_a.py::test_{n}" for n in ns))
                  for party, ns in parts),
        )  # fmt: skip
        (got,) = build_matrix([req], parse_junit(_passing([req], **outcomes)))
        return got.status, [p.status for p in got.parts]

    assert row(("pipeline", (1,)), ("platform", (2,))) == (MANUFACTURER, [SATISFIED, MANUFACTURER])
    assert row(("platform", ())) == (MANUFACTURER, [MANUFACTURER])
    assert row(("reference-agent", (1,))) == (SATISFIED, [SATISFIED])
    # A failing simulation of a platform behaviour is a failure of the reference agent.
    assert row(("pipeline", (1,)), ("platform", (2,)), test_2="failed")[0] == FAILED
    assert row(("pipeline", (1,)), ("platform", (2,)), test_1="skipped") == (
        INCOMPLETE, [INCOMPLETE, MANUFACTURER]
    )  # fmt: skip
    assert row(("pipeline", ()), ("platform", (2,)))[0] == "no tests"
