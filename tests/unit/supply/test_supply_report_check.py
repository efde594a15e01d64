"""The server's re-check of a scan report: findings, decision, accepted risks, completeness."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from chargeward.errors import SupplyChainError
from chargeward.supply.advisories import advisory_set, parse_advisory
from chargeward.supply.allowlist import Allowlist, parse_allowlist
from chargeward.supply.gate import Package, evaluate_packages, report_json
from chargeward.supply.report_check import GatePolicy, check_report, read_report
from chargeward.supply.severity import Severity

OSV = Path(__file__).resolve().parents[2] / "osv_records"
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
OPENSSL = [
    Package("os", "pkg:generic/acme/os@1", "openssl", "3.0.13", "pkg:generic/openssl@3.0.13")
]
ADVISORIES = advisory_set([parse_advisory((OSV / "CVE-2024-5535.json").read_bytes(), "a.json")])
ACCEPTED = parse_allowlist(
    b'[[accept]]\nadvisory = "CVE-2024-5535"\npurl = "pkg:generic/openssl@3.0.13"\n'
    b'status = "not_affected"\njustification = "vulnerable_code_not_present"\n'
    b'approvers = ["a@acme.example"]\nexpires = 2027-01-01\n',
    "allowlist.toml",
)


def report(allowlist: Allowlist, edit: Any = None) -> bytes:
    gate = evaluate_packages("acme", "1.0.0", OPENSSL, ADVISORIES, allowlist, Severity.HIGH, NOW)
    doc = json.loads(report_json(gate))
    if edit is not None:
        edit(doc)
    return json.dumps(doc).encode()


def problems(data: bytes, *, now: dt.datetime = NOW, version: str = "1.0.0") -> list[str]:
    return check_report(read_report(data, "r.json"), OPENSSL, ADVISORIES, now=now, version=version)


def test_a_true_report_holds() -> None:
    assert problems(report(ACCEPTED)) == []


def test_a_rating_lowered_below_fail_on_does_not_unblock() -> None:
    def lower(doc: dict[str, Any]) -> None:
        doc["decision"] = "passed"
        doc["findings"][0].update(severity="low", blocking=False)

    found = problems(report(Allowlist(), lower))
    assert any("(critical, affected) is marked as not blocking" in p for p in found), found
    assert any(p.startswith("decision is passed, but 1 finding(s) block") for p in found)


def test_an_accepted_risk_that_has_expired_accepts_nothing() -> None:
    later = dt.datetime(2027, 1, 2, tzinfo=dt.UTC)
    found = problems(report(ACCEPTED), now=later)
    assert any("its accepted risk has expired" in p for p in found), found


def test_a_report_for_another_version_or_missing_a_finding() -> None:
    found = problems(report(ACCEPTED), version="1.0.1")
    assert found == ["the report is about version 1.0.0, not 1.0.1"]
    empty = report(ACCEPTED, lambda doc: doc.update(findings=[]))
    assert problems(empty)[0].startswith("the report omits CVE-2024-5535 on pkg:generic/openssl")


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.pop("policy"),
        lambda d: d["policy"].update(fail_on="whenever"),
        lambda d: d["findings"][0].update(status="clean"),
        lambda d: d["findings"][0]["accepted_by"].update(expires="tomorrow"),
    ],
)
def test_a_malformed_report_is_bad_input(edit: Any) -> None:
    with pytest.raises(SupplyChainError, match=r"r\.json: not a vulnerability report"):
        read_report(report(ACCEPTED, edit), "r.json")


HIGH_JINJA = advisory_set(
    [
        parse_advisory(
            json.dumps(
                {
                    "id": "GHSA-test-high",
                    "modified": "2024-01-01T00:00:00Z",
                    "affected": [
                        {
                            "package": {"ecosystem": "PyPI", "name": "jinja2"},
                            "ranges": [
                                {
                                    "type": "ECOSYSTEM",
                                    "events": [{"introduced": "0"}, {"fixed": "3.1.4"}],
                                }
                            ],
                        }
                    ],
                    "database_specific": {"severity": "HIGH"},
                }
            ).encode(),
            "high.json",
        )
    ]
)
JINJA = [Package("py", "pkg:generic/acme/os@1", "jinja2", "3.1.2", "pkg:pypi/jinja2@3.1.2")]


def test_a_report_made_with_a_laxer_fail_on_than_the_server_minimum_is_refused() -> None:
    # An honest gate run at --fail-on critical: the HIGH finding does not block, "passed".
    gate = evaluate_packages(
        "acme", "1.0.0", JINJA, HIGH_JINJA, Allowlist(), Severity.CRITICAL, NOW
    )
    data = report_json(gate)
    assert json.loads(data)["decision"] == "passed"
    found = check_report(read_report(data, "r.json"), JINJA, HIGH_JINJA, now=NOW, version="1.0.0")
    assert found[0] == "the report's fail-on critical is laxer than the server's minimum high"
    assert any(
        "GHSA-test-high on pkg:pypi/jinja2@3.1.2 (high, affected) is marked" in p for p in found
    )
    # A server configured with a laxer minimum accepts it; a stricter report always holds.
    lax = GatePolicy(fail_on=Severity.CRITICAL)
    assert (
        check_report(
            read_report(data, "r"), JINJA, HIGH_JINJA, now=NOW, version="1.0.0", policy=lax
        )
        == []
    )
    strict = evaluate_packages("acme", "1.0.0", JINJA, HIGH_JINJA, Allowlist(), Severity.LOW, NOW)
    assert (
        check_report(
            read_report(report_json(strict), "r"), JINJA, HIGH_JINJA, now=NOW, version="1.0.0"
        )
        == []
    )


def _self_accept(accepted_by: dict[str, Any]) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["decision"] = "passed"
        for f in doc["findings"]:
            f.update(blocking=False, accepted_by=accepted_by)

    return edit


@pytest.mark.parametrize(
    ("accepted_by", "why"),
    [
        ({"expires": "2999-01-01T00:00:00Z"}, "names 0 approver(s), at least 1 needed"),
        (
            {"expires": "2999-01-01T00:00:00Z", "approvers": ["a@acme.example"]},
            "expires 2999-01-01T00:00:00Z, more than 366 days after the scan",
        ),
        ({"expires": "2027-01-01T00:00:00Z", "approvers": ["", " "]}, "names 0 approver(s)"),
    ],
)
def test_an_accepted_risk_needs_approvers_and_a_bounded_expiry(
    accepted_by: dict[str, Any], why: str
) -> None:
    found = problems(report(Allowlist(), _self_accept(accepted_by)))
    assert any(
        p.startswith("CVE-2024-5535 on pkg:generic/openssl@3.0.13: its accepted risk ") and why in p
        for p in found
    ), found
    assert any(p.startswith("decision is passed, but 1 finding(s) block") for p in found), found


def test_the_server_policy_sets_the_approvers_an_accepted_risk_needs() -> None:
    data = report(ACCEPTED)
    assert problems(data) == []
    two = GatePolicy(min_approvers=2)
    found = check_report(
        read_report(data, "r"), OPENSSL, ADVISORIES, now=NOW, version="1.0.0", policy=two
    )
    assert any("names 1 approver(s), at least 2 needed" in p for p in found), found


def test_a_report_dated_in_the_future_gains_no_longer_acceptance() -> None:
    """The acceptance cap counts from the server's time when the report claims a later scan."""
    far = "2998-06-01T00:00:00Z"

    def future(d: dict[str, Any]) -> None:
        d.update(evaluated_at="2998-01-01T00:00:00Z")
        for f in d["findings"]:
            if isinstance(f.get("accepted_by"), dict):
                f["accepted_by"]["expires"] = far

    found = problems(report(ACCEPTED, future))
    assert any("days after the scan" in p for p in found), found
