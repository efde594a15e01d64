"""The attack catalogue: every attack the test suite performs, the defence, and the tests that
prove it, with their latest results from a JUnit report.  Pure: bytes in, Markdown out.

    $ pytest tests/attack --junitxml=reports/pytest.xml
    $ chargeward evidence attacks --test-report reports/pytest.xml -o docs/security.md

    catalogue = parse_catalogue(ATTACKS_TOML)
    markdown = render(catalogue, parse_junit(report), "pytest.xml")

``attacks.toml`` holds ``[[class]]`` tables (``id``, ``name``) in display order and
``[[attack]]`` tables (``class``, ``attack``, ``defence``, ``refusal``: what a user sees,
``tests``: pytest node ids, with parameters to name one case).  An attack's result is
``failed`` if any of its tests failed, else ``not run`` or ``skipped`` if any was, else
``passed`` (see :mod:`.matrix` for one test's result).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from chargeward.errors import ConfigError
from chargeward.evidence.matrix import (
    FAILED,
    NOT_RUN,
    PASSED,
    SKIPPED,
    JUnitReport,
    MappedTest,
    load_toml,
    result_of,
)
from chargeward.limits import DEFAULT_FORMAT_LIMITS

_WORST_FIRST = (FAILED, NOT_RUN, SKIPPED)


@dataclass(frozen=True)
class AttackClass:
    id: str
    name: str


@dataclass(frozen=True)
class Attack:
    klass: str
    attack: str
    defence: str
    refusal: str
    tests: tuple[str, ...]


@dataclass(frozen=True)
class Catalogue:
    classes: tuple[AttackClass, ...]
    attacks: tuple[Attack, ...]

    def tests(self) -> set[str]:
        return {t for a in self.attacks for t in a.tests}

    def of(self, klass: AttackClass) -> list[Attack]:
        return [a for a in self.attacks if a.klass == klass.id]


def _text(item: dict[str, object], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"attack catalogue: {where}: {key} must be a non-empty string")
    return " ".join(value.split())


def _tests(item: dict[str, object], where: str) -> tuple[str, ...]:
    tests = item.get("tests")
    if not isinstance(tests, list) or not tests:
        raise ConfigError(f"attack catalogue: {where}: tests must name at least one test")
    if not all(isinstance(t, str) and t.startswith("tests/") and "::" in t for t in tests):
        raise ConfigError(f"attack catalogue: {where}: tests are pytest node ids")
    return tuple(tests)


def parse_catalogue(data: bytes) -> Catalogue:
    """Parse and check ``attacks.toml``; :class:`ConfigError` naming what is wrong."""
    doc = load_toml(data, "attack catalogue", DEFAULT_FORMAT_LIMITS.attack_catalogue_bytes)
    classes = tuple(
        AttackClass(_text(c, "id", f"class {n}"), _text(c, "name", f"class {n}"))
        for n, c in enumerate(doc.get("class", []))
    )
    ids = [c.id for c in classes]
    if not ids or len(set(ids)) != len(ids):
        raise ConfigError("attack catalogue: class ids must be unique and at least one given")
    attacks = []
    for n, item in enumerate(doc.get("attack", [])):
        name = _text(item, "attack", f"attack {n}")
        klass = _text(item, "class", name)
        if klass not in ids:
            raise ConfigError(f"attack catalogue: {name}: unknown class {klass!r}")
        attacks.append(
            Attack(
                klass,
                name,
                _text(item, "defence", name),
                _text(item, "refusal", name),
                _tests(item, name),
            )
        )
    empty = [c.id for c in classes if not any(a.klass == c.id for a in attacks)]
    if empty:
        raise ConfigError(f"attack catalogue: classes without attacks: {', '.join(empty)}")
    return Catalogue(classes, tuple(attacks))


def attack_result(tests: tuple[MappedTest, ...]) -> str:
    """The attack's result from its tests' results (see the module docstring)."""
    seen = {t.result for t in tests}
    return next((r for r in _WORST_FIRST if r in seen), PASSED)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _row(attack: Attack, tests: tuple[MappedTest, ...]) -> str:
    proof = "<br>".join(f"`{t.node_id}` ({t.result})" for t in tests)
    result = attack_result(tests)
    shown = f"**{result}**" if result != PASSED else result
    cells = [_cell(attack.attack), _cell(attack.defence), _cell(attack.refusal), proof, shown]
    return "| " + " | ".join(cells) + " |"


def render(catalogue: Catalogue, report: JUnitReport, report_name: str) -> str:
    """``docs/security.md``: a summary, then one table per class of attack."""
    results = {a: tuple(result_of(report, t) for t in a.tests) for a in catalogue.attacks}
    outcome = Counter(attack_result(r) for r in results.values())
    summary = ", ".join(
        f"{outcome[r]} {r}" for r in (PASSED, FAILED, NOT_RUN, SKIPPED) if outcome[r]
    )
    when = " ".join(x for x in (report.timestamp, report.hostname and f"on {report.hostname}") if x)
    lines = [
        "# Security: the attacks the test suite performs",
        "",
        "Generated by `chargeward evidence attacks --test-report reports/pytest.xml "
        "--test-report reports/pytest-slow.xml -o docs/security.md` (`make security-report`, "
        "after `make test` and `make test-slow`) from the catalogue "
        "`src/chargeward/evidence/attacks.toml`; do not edit by hand.  Each attack names the "
        "tests that perform it; its result is the worst of theirs in the test report "
        f"`{report_name}`{f' ({when})' if when else ''}.",
        "",
        f"**{len(catalogue.attacks)} attacks in {len(catalogue.classes)} classes, performed by "
        f"{len(catalogue.tests())} tests: {summary}.**",
        "",
        "| class | attacks | passed |",
        "|---|---:|---:|",
    ]
    for klass in catalogue.classes:
        mine = catalogue.of(klass)
        passed = sum(attack_result(results[a]) == PASSED for a in mine)
        lines.append(f"| {_cell(klass.name)} | {len(mine)} | {passed} |")
    for klass in catalogue.classes:
        lines += [
            "",
            f"## {klass.name}",
            "",
            "| attack | defence | what the user sees | tests | result |",
            "|---|---|---|---|---|",
        ]
        lines += [_row(a, results[a]) for a in catalogue.of(klass)]
    return "\n".join(lines) + "\n"
