"""How stations report a release (model.reported, ADR 0037): the one decision and the safe
pattern dialect."""

from __future__ import annotations

import time

import pytest

from chargeward.errors import InvalidValue
from chargeward.model.reported import (
    Brings,
    ReportedVersions,
    check_pattern,
    from_json,
    parse_option,
    reports_release,
)

STRINGS = "reported_version"
PATTERNS = "reported_version_pattern"


def test_undeclared_a_release_is_reported_only_by_its_own_version() -> None:
    plain = Brings("1.1.0", None)
    assert reports_release(plain, "AC22", "1.1.0")
    assert not reports_release(plain, "AC22", "TP-FW 1.1.0-b7")
    assert not reports_release(plain, None, None)
    assert ReportedVersions().to_json() is None


def test_declared_strings_count_for_their_model_only_beside_the_version() -> None:
    declared = parse_option(STRINGS, ["AC22=TP-FW 1.1.0-b7", "AC22=TP-FW 1.1.0-b7r"])
    release = Brings("1.1.0", declared.to_json())
    assert reports_release(release, "AC22", "TP-FW 1.1.0-b7")
    assert reports_release(release, "AC22", "TP-FW 1.1.0-b7r")
    assert reports_release(release, "AC22", "1.1.0")
    assert not reports_release(release, "DC50", "TP-FW 1.1.0-b7")
    assert not reports_release(release, None, "TP-FW 1.1.0-b7")
    assert not reports_release(release, "AC22", "TP-FW 1.1.0-b8")


def test_a_pattern_matches_in_full() -> None:
    declared = parse_option(PATTERNS, [r"AC22=(TP|XY)-FW 1\.1\.0(-b[0-9]+)?"])
    release = Brings("1.1.0", declared.to_json())
    assert reports_release(release, "AC22", "XY-FW 1.1.0-b12")
    assert reports_release(release, "AC22", "TP-FW 1.1.0")
    assert not reports_release(release, "AC22", "TP-FW 1.1.0-b12 patched")  # fullmatch
    assert not reports_release(release, "AC22", "see TP-FW 1.1.0")


def test_the_stored_form_round_trips_and_merges() -> None:
    both = parse_option(STRINGS, ["AC22=TP-FW 1.1.0-b7"]).merged(
        parse_option(PATTERNS, [r"AC22=TP-FW 1\.1\.0-b[0-9]+"])
    )
    text = both.to_json()
    assert text is not None and from_json(text) == both
    assert both.document() == {
        "AC22": {"versions": ["TP-FW 1.1.0-b7"], "pattern": r"TP-FW 1\.1\.0-b[0-9]+"}
    }
    with pytest.raises(InvalidValue, match="one pattern per model"):
        parse_option(PATTERNS, ["AC22=a", "AC22=b"])


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("(", "is not a regular expression"),
        ("(a+)+$", "repeats a repetition"),
        ("(ab|a)*c", "repeats alternatives"),
        (r"(a)\1", "groupref"),
        ("(?=a)a", "assert"),
        ("(?i)tp-fw", "inline flags"),
        ("a*b*c*d*e*", "5 variable repetitions"),
        ("a" * 201, "1-200 characters"),
        ("", "1-200 characters"),
    ],
)
def test_a_bad_pattern_is_refused_naming_the_field(pattern: str, why: str) -> None:
    with pytest.raises(InvalidValue, match=f"^{PATTERNS}: ") as e:
        parse_option(PATTERNS, [f"AC22={pattern}"])
    assert why in str(e.value)


@pytest.mark.parametrize(
    "item", ["no-equals", "=TP-FW 1", "AC22=", "AC22=" + "x" * 51, "A" * 21 + "=x", "AC22=a\nb"]
)
def test_a_bad_string_is_refused_naming_the_field(item: str) -> None:
    with pytest.raises(InvalidValue, match=f"^{STRINGS}: "):
        parse_option(STRINGS, [item])


def test_the_worst_allowed_pattern_stays_fast_on_the_longest_report() -> None:
    """The dialect's bound: four variable repetitions over 50 characters that fail to match."""
    worst = Brings("1", parse_option(PATTERNS, ["AC22=a*a*a*a*b"]).to_json())
    started = time.perf_counter()
    assert not reports_release(worst, "AC22", "a" * 50)
    assert not reports_release(worst, "AC22", "a" * 51)  # longer than OCPP allows: no match
    assert time.perf_counter() - started < 1.0


def test_declared_models_must_be_the_releases() -> None:
    declared = parse_option(STRINGS, ["AC23=TP-FW 1"])
    declared.check_models(["AC23", "AC22"])
    with pytest.raises(InvalidValue, match="'AC23' is not one of the release's hardware models"):
        declared.check_models(["AC22"])
    assert check_pattern("TP-FW [0-9.]+") == "TP-FW [0-9.]+"
