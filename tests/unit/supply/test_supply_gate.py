"""The offline vulnerability gate: version ranges, fail-closed verdicts, allowlist, VEX, report."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from chargeward.errors import GateRefused, SupplyChainError
from chargeward.supply.advisories import (
    Advisory,
    advisory_set,
    load_advisories,
    parse_advisory,
)
from chargeward.supply.allowlist import Allowlist, load_allowlist, parse_allowlist
from chargeward.supply.components import ComponentList, load_components, parse_components
from chargeward.supply.gate import GateResult, evaluate, report_json
from chargeward.supply.matching import match
from chargeward.supply.severity import Severity
from chargeward.supply.versions import compare, in_range
from chargeward.supply.vex import openvex

EXAMPLES = Path(__file__).parents[3] / "examples"
NOW = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
HIGH_VECTOR = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"  # 7.5
LOW_VECTOR = "CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N"  # 1.8


def osv(
    id_: str = "OSV-1",
    *,
    package: dict[str, str] | None = None,
    ranges: list[dict[str, Any]] | None = None,
    versions: list[str] | None = None,
    severity: str | None = HIGH_VECTOR,
    **extra: Any,
) -> Advisory:
    affected: dict[str, Any] = {
        "package": package or {"ecosystem": "GIT", "name": "zlib", "purl": "pkg:generic/zlib"}
    }
    if ranges is not None:
        affected["ranges"] = ranges
    if versions is not None:
        affected["versions"] = versions
    doc: dict[str, Any] = {"id": id_, "affected": [affected], **extra}
    if severity is not None:
        doc["severity"] = [{"type": "CVSS_V3", "score": severity}]
    return parse_advisory(json.dumps(doc).encode(), f"{id_}.json")


def semver(*events: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"type": "SEMVER", "events": [{k: v} for k, v in events]}]


def release(*libraries: tuple[str, str]) -> ComponentList:
    libs = "".join(
        f'[[components.libraries]]\nname = "{name}"\nversion = "{version}"\n'
        f'purl = "pkg:generic/{name}@{version}"\nlicence = "MIT"\n'
        for name, version in libraries
    )
    text = (
        '[release]\nname = "ac22"\nversion = "1.0.0"\nsupplier = "ACME"\n'
        '[[components]]\nkind = "controller-os"\nname = "os"\nversion = "1.0.0"\n'
        'purl = "pkg:generic/acme/os@1.0.0"\nlicence = "MIT"\n'
        f'hashes = {{ sha256 = "{"a" * 64}" }}\n' + libs
    )
    return parse_components(text.encode(), "components.toml")


def allow(*entries: str, min_approvers: int = 1) -> Allowlist:
    return parse_allowlist(
        "\n".join(entries).encode(), "allowlist.toml", min_approvers=min_approvers
    )


def entry(
    advisory: str = "OSV-1",
    purl: str = "pkg:generic/zlib@1.2.13",
    expires: str = "2027-01-01",
    extra: str = 'status = "not_affected"\njustification = "component_not_present"',
    approvers: str = '["a@acme.example"]',
) -> str:
    return (
        f'[[accept]]\nadvisory = "{advisory}"\npurl = "{purl}"\n{extra}\n'
        f"approvers = {approvers}\nexpires = {expires}\n"
    )


def gate(
    advisories: list[Advisory],
    allowlist: Allowlist | None = None,
    threshold: Severity = Severity.HIGH,
    components: ComponentList | None = None,
    now: dt.datetime = NOW,
) -> GateResult:
    return evaluate(
        components or release(("zlib", "1.2.13")),
        advisory_set(advisories),
        allowlist or Allowlist(),
        threshold,
        now,
    )


# --- version order -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "smaller", "larger"),
    [
        ("semver", "1.2.3-alpha", "1.2.3-alpha.1"),
        ("semver", "1.2.3-alpha.beta", "1.2.3-beta"),
        ("semver", "1.2.3-rc.9", "1.2.3-rc.10"),
        ("semver", "1.2.3", "1.10.0"),
        ("semver", "v1.2.3-rc.1", "1.2.3"),
        ("pypi", "2.0rc1", "2.0"),
        ("pypi", "2.0", "2.0.post1"),
        ("debian", "1.0~rc1", "1.0"),
        ("debian", "1.0", "1.0a"),
        ("debian", "1.0", "1.0.1"),
        ("debian", "1:0.9", "2:0.1"),
        ("debian", "1.2.3-1~deb12u1", "1.2.3-1"),
        ("debian", "7.88.1-10+deb12u5", "7.88.1-10+deb12u12"),
    ],
)
def test_version_order(scheme: str, smaller: str, larger: str) -> None:
    assert compare(scheme, smaller, larger) == -1
    assert compare(scheme, larger, smaller) == 1
    assert compare(scheme, smaller, smaller) == 0


def test_build_metadata_does_not_order_semver() -> None:
    assert compare("semver", "1.2.3+build.1", "1.2.3+build.2") == 0


@pytest.mark.parametrize(
    ("events", "affected", "clean"),
    [
        # introduced inclusive, fixed exclusive
        ([("introduced", "1.2.0"), ("fixed", "1.4.0")], ["1.2.0", "1.3.9"], ["1.1.9", "1.4.0"]),
        # last_affected inclusive
        ([("introduced", "1.0.0"), ("last_affected", "1.3.0")], ["1.3.0"], ["1.3.1", "0.9.0"]),
        # introduced "0": from the very beginning
        ([("introduced", "0"), ("fixed", "0.0.2")], ["0.0.0", "0.0.1"], ["0.0.2"]),
        ([("introduced", "0")], ["0.0.0", "99.0.0"], []),
        # two affected spans, events given out of order
        (
            [
                ("fixed", "2.0.3"),
                ("introduced", "1.0.0"),
                ("introduced", "2.0.0"),
                ("fixed", "1.1.0"),
            ],
            ["1.0.5", "2.0.0", "2.0.2"],
            ["1.1.0", "1.5.0", "2.0.3"],
        ),
        # limit: nothing at or above it is affected
        ([("introduced", "0"), ("limit", "2.0.0")], ["1.9.9"], ["2.0.0", "2.1.0"]),
        # a pre-release of the fixed version is still affected
        ([("introduced", "1.0.0"), ("fixed", "2.0.0")], ["2.0.0-rc.1"], ["2.0.0"]),
    ],
)
def test_range_edges(events: list[tuple[str, str]], affected: list[str], clean: list[str]) -> None:
    for version in affected:
        assert in_range("semver", version, events), version
    for version in clean:
        assert not in_range("semver", version, events), version


# --- verdicts: fail closed -----------------------------------------------------------------


def test_listed_version_is_affected_even_with_a_git_range() -> None:
    git = [{"type": "GIT", "repo": "https://x", "events": [{"introduced": "0"}, {"fixed": "abc"}]}]
    found = match(osv(ranges=git, versions=["1.2.13"]), "pkg:generic/zlib@1.2.13", "1.2.13")
    assert found is not None and found.status == "affected"
    assert match(osv(ranges=git, versions=["1.2.12"]), "pkg:generic/zlib@1.2.13", "1.2.13") is None


@pytest.mark.parametrize(
    ("advisory", "reason"),
    [
        (
            osv(ranges=[{"type": "GIT", "repo": "r", "events": [{"introduced": "0"}]}]),
            "GIT range without a versions list",
        ),
        (osv(ranges=semver(("introduced", "0"), ("fixed", "1.3"))), "not a semantic version"),
        (
            osv(
                package={"ecosystem": "Hackage", "name": "zlib", "purl": "pkg:generic/zlib"},
                ranges=[{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}],
            ),
            "no version rule for ecosystem Hackage",
        ),
        (osv(ranges=[{"type": "CALVER", "events": [{"introduced": "0"}]}]), "unknown range type"),
        (osv(), "neither versions nor ranges"),
    ],
)
def test_unevaluable_ranges_are_indeterminate(advisory: Advisory, reason: str) -> None:
    found = match(advisory, "pkg:generic/zlib@1.2.13", "1.2.13")
    assert found is not None
    assert found.status == "indeterminate"
    assert reason in found.reason


def test_unparseable_component_version_is_indeterminate() -> None:
    advisory = osv(ranges=semver(("introduced", "1.0.0"), ("fixed", "2.0.0")))
    found = match(advisory, "pkg:generic/zlib@1.2.13a", "1.2.13a")
    assert found is not None and found.status == "indeterminate"


def test_withdrawn_advisory_matches_nothing() -> None:
    advisory = osv(versions=["1.2.13"], withdrawn="2025-01-01T00:00:00Z")
    assert match(advisory, "pkg:generic/zlib@1.2.13", "1.2.13") is None


def test_matching_by_ecosystem_and_name() -> None:
    pypi = osv(
        package={"ecosystem": "PyPI", "name": "Jinja2"},
        ranges=[{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.1.4"}]}],
    )
    assert match(pypi, "pkg:pypi/jinja2@3.1.2", "3.1.2") is not None
    assert match(pypi, "pkg:pypi/jinja2@3.1.4", "3.1.4") is None
    assert match(pypi, "pkg:npm/jinja2@3.1.2", "3.1.2") is None
    debian = osv(
        package={"ecosystem": "Debian:12", "name": "curl"},
        ranges=[
            {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "7.88.1-10+deb12u6"}]}
        ],
    )
    assert match(debian, "pkg:deb/debian/curl@7.88.1-10%2Bdeb12u5", "7.88.1-10+deb12u5")
    assert match(debian, "pkg:deb/debian/curl@7.88.1-10%2Bdeb12u12", "7.88.1-10+deb12u12") is None
    # a purl in the advisory matches on type, namespace and name, not on the version
    by_purl = osv(versions=["1.2.13"])
    assert match(by_purl, "pkg:generic/zlib@1.2.13", "1.2.13") is not None
    assert match(by_purl, "pkg:generic/other/zlib@1.2.13", "1.2.13") is None


def test_severity_from_cvss_vector_and_database_rating() -> None:
    assert osv(severity=HIGH_VECTOR).severity == (Severity.HIGH,)
    rated = osv(severity=None, database_specific={"severity": "MODERATE"})
    assert rated.severity == (Severity.MEDIUM,)
    unrated = osv(severity=None, versions=["1.2.13"])
    found = match(unrated, "pkg:generic/zlib@1.2.13", "1.2.13")
    assert found is not None and found.severity is Severity.UNKNOWN
    broken = osv(severity="CVSS:3.1/AV:X", versions=["1.2.13"])
    assert broken.severity == (Severity.UNKNOWN,)


# --- the gate --------------------------------------------------------------------------------


def test_vulnerable_component_blocks() -> None:
    result = gate([osv(ranges=semver(("introduced", "0"), ("last_affected", "1.3.0")))])
    assert result.refused
    (finding,) = result.findings
    assert (finding.advisory, finding.purl, finding.severity) == (
        "OSV-1",
        "pkg:generic/zlib@1.2.13",
        Severity.HIGH,
    )
    with pytest.raises(GateRefused, match=r"OSV-1 on pkg:generic/zlib@1\.2\.13 in os \(high"):
        result.raise_if_refused()


def test_findings_below_threshold_are_listed_but_do_not_block() -> None:
    result = gate([osv(severity=LOW_VECTOR, versions=["1.2.13"])])
    assert [f.severity for f in result.findings] == [Severity.LOW]
    assert not result.refused
    result.raise_if_refused()
    assert gate([osv(severity=LOW_VECTOR, versions=["1.2.13"])], threshold=Severity.LOW).refused


def test_indeterminate_blocks_whatever_its_severity() -> None:
    git = [{"type": "GIT", "repo": "r", "events": [{"introduced": "0"}]}]
    result = gate([osv(ranges=git, severity=LOW_VECTOR)], threshold=Severity.CRITICAL)
    assert result.refused
    assert result.findings[0].status == "indeterminate"


def test_unrated_advisory_blocks_at_any_threshold() -> None:
    result = gate([osv(severity=None, versions=["1.2.13"])], threshold=Severity.CRITICAL)
    assert result.refused


def test_every_blocking_finding_is_named_in_the_refusal() -> None:
    result = gate(
        [osv("OSV-1", versions=["1.2.13"]), osv("OSV-2", versions=["1.2.13"])],
        components=release(("zlib", "1.2.13")),
    )
    with pytest.raises(GateRefused) as e:
        result.raise_if_refused()
    assert "2 blocking finding(s)" in str(e.value)
    assert "OSV-1 on" in str(e.value) and "OSV-2 on" in str(e.value)


def test_allowlisted_finding_passes_and_appears_in_vex() -> None:
    advisory = osv(versions=["1.2.13"], aliases=["CVE-2099-0001"])
    result = gate([advisory], allow(entry(advisory="CVE-2099-0001")))  # accepted by alias
    assert not result.refused
    result.raise_if_refused()
    (finding,) = result.accepted
    assert finding.accepted_by is not None and finding.accepted_by.ref == "accept[0]"
    vex = json.loads(openvex(result, author="ACME PSIRT"))
    assert vex["@context"] == "https://openvex.dev/ns/v0.2.0"
    assert vex["timestamp"] == "2026-12-01T09:30:00Z"
    (statement,) = vex["statements"]
    assert statement["vulnerability"] == {"name": "OSV-1", "aliases": ["CVE-2099-0001"]}
    assert statement["status"] == "not_affected"
    assert statement["justification"] == "component_not_present"
    product = statement["products"][0]
    assert product["@id"] == "pkg:generic/acme/os@1.0.0"
    assert product["subcomponents"] == [
        {"@id": "pkg:generic/zlib@1.2.13", "identifiers": {"purl": "pkg:generic/zlib@1.2.13"}}
    ]
    assert openvex(result, author="ACME PSIRT") == openvex(result, author="ACME PSIRT")


def test_allowlist_entry_for_another_version_does_not_accept() -> None:
    result = gate([osv(versions=["1.2.13"])], allow(entry(purl="pkg:generic/zlib@1.2.12")))
    assert result.refused
    assert result.unused_entries == ("accept[0]",)


def test_expired_allowlist_entry_blocks_again() -> None:
    advisory = osv(versions=["1.2.13"])
    allowlist = allow(entry(expires="2026-12-01"))
    before = gate([advisory], allowlist, now=dt.datetime(2026, 11, 30, 23, 59, tzinfo=dt.UTC))
    assert not before.refused
    after = gate([advisory], allowlist, now=dt.datetime(2026, 12, 1, 0, 0, tzinfo=dt.UTC))
    assert after.refused
    (finding,) = after.findings
    assert finding.accepted_by is None
    assert finding.expired_entry is not None and finding.expired_entry.ref == "accept[0]"
    assert json.loads(openvex(after, author="x"))["statements"] == []


def test_report_is_deterministic_and_records_the_advisory_digest() -> None:
    advisories = [
        osv("OSV-2", versions=["1.2.13"]),
        osv("OSV-1", severity=LOW_VECTOR, versions=["1.2.13"]),
    ]
    first = report_json(gate(advisories, allow(entry(advisory="OSV-2"))))
    assert first == report_json(gate(list(reversed(advisories)), allow(entry(advisory="OSV-2"))))
    report = json.loads(first)
    assert report["decision"] == "passed"
    assert report["advisories"] == {
        "count": 2,
        "digest": f"sha256:{advisory_set(advisories).digest}",
    }
    assert [f["advisory"] for f in report["findings"]] == ["OSV-1", "OSV-2"]
    assert report["findings"][1]["accepted_by"]["approvers"] == ["a@acme.example"]
    assert report["evaluated_at"] == "2026-12-01T09:30:00Z"
    changed = [osv("OSV-2", versions=["1.2.13", "1.2.14"]), advisories[1]]
    assert advisory_set(changed).digest != advisory_set(advisories).digest


def test_example_data_gives_the_documented_outcome() -> None:
    result = evaluate(
        load_components(EXAMPLES / "release" / "components.toml"),
        load_advisories(EXAMPLES / "advisories"),
        load_allowlist(EXAMPLES / "release" / "allowlist.toml", min_approvers=2),
        Severity.HIGH,
        NOW,
    )
    assert [(f.advisory, f.status) for f in result.blocking] == [
        ("CVE-2023-42363", "indeterminate")
    ]
    assert {f.advisory for f in result.accepted} == {
        "CVE-2024-5535",
        "CVE-2023-45853",
        "CVE-2024-2398",
    }
    assert "CVE-2022-37434" not in {f.advisory for f in result.findings}  # fixed in 1.2.13


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('status = "not_affected"', "accept[0].justification: not_affected needs a justification"),
        ('status = "affected"', "accept[0].action_statement: affected needs an action_statement"),
        ('status = "wontfix"', "accept[0].status: must be one of"),
        (
            'status = "not_affected"\njustification = "not_exploitable"',
            "accept[0].justification: must be one of",
        ),
    ],
)
def test_bad_allowlist_status_is_refused(change: str, message: str) -> None:
    with pytest.raises(SupplyChainError) as e:
        allow(entry(extra=change))
    assert str(e.value).startswith(f"allowlist.toml: {message}")


def test_allowlist_needs_distinct_approvers_an_expiry_and_an_exact_purl() -> None:
    with pytest.raises(SupplyChainError, match=r"accept\[0\].approvers: 1 distinct approver"):
        allow(entry(approvers='["a@x", "a@x"]'), min_approvers=2)
    allow(entry(approvers='["a@x", "b@x"]'), min_approvers=2)
    with pytest.raises(SupplyChainError, match=r"accept\[0\].approvers: 0 distinct"):
        allow(entry(approvers="[]"))
    with pytest.raises(SupplyChainError, match=r"accept\[0\].purl: must name the exact"):
        allow(entry(purl="pkg:generic/zlib"))
    text = entry().replace("expires = 2027-01-01\n", "")
    with pytest.raises(SupplyChainError, match=r"accept\[0\].expires: missing"):
        allow(text)
    with pytest.raises(SupplyChainError, match=r"accept\[0\].expires: a time needs a UTC offset"):
        allow(entry(expires="2027-01-01T00:00:00"))
    with pytest.raises(
        SupplyChainError, match=r"allowlist.toml: accept\[1\]: duplicate of accept\[0\]"
    ):
        allow(entry(), entry())


def test_allowlist_in_json_with_iso_dates() -> None:
    document = {
        "accept": [
            {
                "advisory": "OSV-1",
                "purl": "pkg:generic/zlib@1.2.13",
                "status": "fixed",
                "approvers": ["a@x"],
                "expires": "2027-01-01T12:00:00+01:00",
            }
        ]
    }
    parsed = parse_allowlist(json.dumps(document).encode(), "allow.json")
    assert parsed.entries[0].expires == dt.datetime(2027, 1, 1, 11, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b'{"id": "X", "affected": [}', "bad.json: malformed document"),
        (b'{"affected": []}', "bad.json: id: missing"),
        (
            b'{"id": "X", "affected": [{"package": {"name": "z"}}]}',
            "bad.json: affected[0].package.ecosystem: missing",
        ),
        (
            b'{"id": "X", "affected": [{"package":'
            b' {"ecosystem": "GIT", "name": "z", "purl": "zlib"}}]}',
            "bad.json: affected[0].package.purl: not a package URL",
        ),
        (
            b'{"id": "X", "affected": [{"package": {"ecosystem": "GIT", "name": "z"},'
            b' "ranges": [{"type": "SEMVER",'
            b' "events": [{"introduced": "0", "fixed": "1.0.0"}]}]}]}',
            "bad.json: affected[0].ranges[0].events[0]: an event has exactly one of",
        ),
        (
            b'{"id": "X", "affected": [{"package": {"ecosystem": "GIT", "name": "z"},'
            b' "ranges": [{"type": "SEMVER", "events": [{"fixed": "1.0.0"}]}]}]}',
            "bad.json: affected[0].ranges[0].events: a range needs an 'introduced' event",
        ),
        (
            b'{"id": "X", "affected": [{"package": {"ecosystem": "GIT", "name": "z"},'
            b' "versions": ["1.0", 2]}]}',
            "bad.json: affected[0].versions[1]: must be a non-empty string",
        ),
    ],
)
def test_bad_osv_advisory_names_file_and_field(document: bytes, message: str) -> None:
    with pytest.raises(SupplyChainError) as e:
        parse_advisory(document, "bad.json")
    assert str(e.value).startswith(message)


def test_advisory_directory_is_read_recursively_and_refuses_duplicate_ids(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "one.json").write_text('{"id": "OSV-1"}')
    (tmp_path / "README.md").write_text("not an advisory")
    assert [a.id for a in load_advisories(tmp_path).advisories] == ["OSV-1"]
    (tmp_path / "two.json").write_text('{"id": "OSV-1", "aliases": []}')
    with pytest.raises(SupplyChainError, match="advisory OSV-1 also in"):
        load_advisories(tmp_path)
    with pytest.raises(SupplyChainError, match="not a directory"):
        load_advisories(tmp_path / "missing")


def test_no_advisories_no_findings() -> None:
    result = gate([])
    assert result.findings == () and not result.refused
    assert result.packages_checked == 2  # the component and its library
