"""The attack catalogue cannot go stale: every test it names exists, every attack test is in
it, and docs/security.md shows each attack's result from the JUnit report."""

from __future__ import annotations

import pytest

from chargeward.errors import ConfigError
from chargeward.evidence.attacks import parse_catalogue, render
from chargeward.evidence.matrix import parse_junit
from chargeward.evidence.pack import attack_catalogue as catalogue
from tests.support.nodeids import ROOT, repository_tests


def test_every_listed_test_exists_in_the_repository() -> None:
    known = repository_tests()
    listed = catalogue().tests()
    assert sorted(t for t in listed if t.partition("[")[0] not in known) == []
    # A case is named by the id its test file gives it.
    for node_id in (t for t in listed if "[" in t):
        path, case = node_id.partition("::")[0], node_id.partition("[")[2].removesuffix("]")
        assert f'"{case}"' in (ROOT / path).read_text(), node_id


def test_every_attack_test_is_in_the_catalogue() -> None:
    attack_tests = {t for t in repository_tests() if t.startswith("tests/attack/")}
    assert len(attack_tests) >= 15
    listed = {t.partition("[")[0] for t in catalogue().tests()}
    assert sorted(attack_tests - listed) == []


def test_the_catalogue_covers_the_classes_of_attack() -> None:
    c = catalogue()
    assert [k.id for k in c.classes] == [
        "tuf", "signature", "downgrade", "tamper", "replay", "brute-force", "fuzzing",
        "archive", "tls", "auth", "tenant", "audit", "supply", "http",
    ]  # fmt: skip
    assert len(c.attacks) >= 50
    assert len({a.attack for a in c.attacks}) == len(c.attacks)


REPORT = (
    b'<testsuites><testsuite timestamp="2026-01-05T10:00:00" hostname="ci">'
    b'<testcase classname="tests.attack.test_a" name="test_x[one]"/>'
    b'<testcase classname="tests.attack.test_a" name="test_x[two]"><failure/></testcase>'
    b'<testcase classname="tests.attack.test_a" name="test_y"/>'
    b"</testsuite></testsuites>"
)
SMALL = b"""
[[class]]
id = "c"
name = "Class | one"
[[attack]]
class = "c"
attack = "Attack one"
defence = "Defence one"
refusal = "409 `no`"
tests = ["tests/attack/test_a.py::test_x[one]", "tests/attack/test_a.py::test_y"]
[[attack]]
class = "c"
attack = "Attack two"
defence = "Defence two"
refusal = "403"
tests = ["tests/attack/test_a.py::test_x"]
[[attack]]
class = "c"
attack = "Attack three"
defence = "Defence three"
refusal = "401"
tests = ["tests/attack/test_a.py::test_z"]
"""


def test_results_come_from_the_report_case_by_case() -> None:
    md = render(parse_catalogue(SMALL), parse_junit(REPORT), "pytest.xml")
    rows = [line for line in md.splitlines() if line.startswith("| Attack ")]
    assert rows[0].endswith("| passed |")  # its one case passed, the other case is not its
    assert "`tests/attack/test_a.py::test_x[one]` (passed)" in rows[0]
    assert rows[1].endswith("| **failed** |")  # the whole test: one case failed
    assert rows[2].endswith("| **not run** |")
    assert "**3 attacks in 1 classes, performed by 4 tests: 1 passed, 1 failed, 1 not run.**" in md
    assert "| Class \\| one | 3 | 1 |" in md
    assert "`pytest.xml` (2026-01-05T10:00:00 on ci)" in md


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ((b'class = "c"\nattack = "Attack one"', b'class = "x"\nattack = "Attack one"'), "class"),
        ((b'tests = ["tests/attack/test_a.py::test_x"]', b"tests = []"), "at least one"),
        ((b'"tests/attack/test_a.py::test_y"', b'"test_y"'), "node ids"),
        ((b'defence = "Defence two"', b'defence = " "'), "defence"),
        (
            (b'name = "Class | one"', b'name = "C"\n[[class]]\nid = "d"\nname = "D"'),
            "without attacks: d",
        ),
    ],
)
def test_a_bad_catalogue_is_refused(change: tuple[bytes, bytes], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_catalogue(SMALL.replace(*change, 1))
