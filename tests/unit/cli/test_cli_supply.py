"""``chargeward supply``: SBOM, validation, scan and pinned check through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargeward.cli.common import console
from chargeward.cli.main import app, exit_code_for
from chargeward.errors import (
    ChargewardError,
    Conflict,
    GateRefused,
    PinnedComponentChanged,
    SupplyChainError,
)
from tests.support.cli_runner import ok

EXAMPLES = Path(__file__).parents[3] / "examples"
DIGEST = "ab" * 32
BUSYBOX_ACCEPTED = """
[[accept]]
advisory = "CVE-2023-42363"
purl = "pkg:generic/busybox@1.36.1"
status = "not_affected"
justification = "vulnerable_code_not_present"
approvers = ["j.smith@acme.example", "r.jones@acme.example"]
expires = 2099-01-01
"""


SBOM = ("supply", "sbom", "release/components.toml", "--release-digest", DIGEST, "-o")


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A copy of the example release and advisories in the runner's directory."""
    shutil.copytree(EXAMPLES / "release", tmp_path / "release")
    shutil.copytree(EXAMPLES / "advisories", tmp_path / "advisories")
    return tmp_path / "release"


def refused(runner: CliRunner, *args: str) -> ChargewardError:
    result = runner.invoke(app, list(args))
    assert result.exit_code != 0
    assert isinstance(result.exception, ChargewardError), result.output
    return result.exception


def only_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_sbom_then_validate(runner: CliRunner, release: Path) -> None:
    out = ok(runner, *SBOM, "sbom.json")
    assert "CycloneDX 1.6, valid" in out
    assert json.loads(Path("sbom.json").read_text())["metadata"]["component"]["type"] == "firmware"
    assert "12 components with a purl" in ok(runner, "supply", "validate-sbom", "sbom.json")
    again = refused(runner, *SBOM, "sbom.json")
    assert isinstance(again, Conflict)


def test_validate_sbom_rejects_a_corrupted_file(runner: CliRunner, release: Path) -> None:
    ok(runner, *SBOM, "sbom.json")
    doc = json.loads(Path("sbom.json").read_text())
    doc["components"][0]["hashes"][0]["alg"] = "SHA-999"
    Path("bad.json").write_text(json.dumps(doc))
    error = refused(runner, "supply", "validate-sbom", "bad.json")
    assert isinstance(error, SupplyChainError) and exit_code_for(error) == 6
    assert str(error).startswith("bad.json: components.0.hashes.0.alg:")


def test_bad_component_list_leaves_no_sbom(
    runner: CliRunner, release: Path, tmp_path: Path
) -> None:
    components = release / "components.toml"
    components.write_text(
        components.read_text().replace('purl = "pkg:generic/zlib@1.2.13"', 'purl = "zlib"')
    )
    before = only_files(tmp_path)
    error = refused(runner, *SBOM, "sbom.json")
    assert isinstance(error, SupplyChainError) and exit_code_for(error) == 6
    assert "components.toml: components[0].libraries[2].purl: not a package URL" in str(error)
    assert only_files(tmp_path) == before


def test_changed_image_is_refused(runner: CliRunner, release: Path) -> None:
    (release / "meter-fw.bin").write_bytes(b"tampered")
    error = refused(runner, *SBOM, "s.json")
    assert "components[4].hashes.sha256: does not match image meter-fw.bin" in str(error)
    assert not Path("s.json").exists()


SCAN = ("supply", "scan", "release/components.toml", "--advisories", "advisories")


def test_scan_refuses_and_lists_every_blocking_finding(
    runner: CliRunner, release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 240)  # one table row per line
    result = runner.invoke(
        app,
        [
            *SCAN,
            "--allowlist",
            "release/allowlist.toml",
            "--min-approvers",
            "2",
            "--report",
            "report.json",
            "--vex",
            "vex.json",
        ],
    )
    error = result.exception
    assert isinstance(error, GateRefused) and exit_code_for(error) == 3
    assert "CVE-2023-42363 on pkg:generic/busybox@1.36.1" in str(error)
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert "BLOCKS" in rows["CVE-2023-42363"]
    assert "accepted (accept[0], not_affected)" in rows["CVE-2024-5535"]
    assert "below fail-on high" in rows["GHSA-h75v-3vvj-5mfj"]
    report = json.loads(Path("report.json").read_text())
    assert report["decision"] == "refused"
    assert report["policy"]["fail_on"] == "high"
    vex = json.loads(Path("vex.json").read_text())
    assert len(vex["statements"]) == 3 and vex["author"] == "ACME Charging Ltd"


def test_scan_without_allowlist_names_each_finding(runner: CliRunner, release: Path) -> None:
    error = refused(runner, *SCAN, "--fail-on", "medium")
    for advisory in (
        "CVE-2024-5535",
        "CVE-2023-45853",
        "CVE-2024-2398",
        "CVE-2023-42363",
        "GHSA-h75v-3vvj-5mfj",
    ):
        assert f"{advisory} on " in str(error)


def test_scan_passes_once_every_blocking_finding_is_accepted(
    runner: CliRunner, release: Path
) -> None:
    allowlist = release / "allowlist.toml"
    allowlist.write_text(allowlist.read_text() + BUSYBOX_ACCEPTED)
    out = ok(runner, *SCAN, "--allowlist", str(allowlist), "--report", "report.json")
    assert "passed: acme-ac22-firmware 4.2.0" in out
    assert json.loads(Path("report.json").read_text())["decision"] == "passed"


@pytest.mark.parametrize(
    ("target", "breakage", "message"),
    [
        (
            "release/allowlist.toml",
            ('status = "affected"\n', ""),
            "allowlist.toml: accept[2].status: missing",
        ),
        (
            "advisories/c/CVE-2024-2398.json",
            ('"introduced": "7.44.0"', '"introduced": 7'),
            "CVE-2024-2398.json: affected[0].ranges[0].events[0].introduced: must be a string",
        ),
        (
            "release/components.toml",
            ("[release]", "[release"),
            "components.toml: malformed document",
        ),
    ],
)
def test_scan_with_bad_input_writes_nothing(
    runner: CliRunner,
    release: Path,
    tmp_path: Path,
    target: str,
    breakage: tuple[str, str],
    message: str,
) -> None:
    path = tmp_path / target
    assert breakage[0] in path.read_text()
    path.write_text(path.read_text().replace(*breakage, 1))
    before = only_files(tmp_path)
    error = refused(
        runner,
        *SCAN,
        "--allowlist",
        "release/allowlist.toml",
        "--report",
        "report.json",
        "--vex",
        "vex.json",
    )
    assert isinstance(error, SupplyChainError) and exit_code_for(error) == 6
    assert message in str(error)
    assert only_files(tmp_path) == before


def test_allowlist_below_the_approver_minimum_is_refused(runner: CliRunner, release: Path) -> None:
    error = refused(runner, *SCAN, "--allowlist", "release/allowlist.toml", "--min-approvers", "3")
    assert "accept[0].approvers: 2 distinct approver(s), at least 3 needed" in str(error)


def test_check_pinned(runner: CliRunner, release: Path, tmp_path: Path) -> None:
    shutil.copytree(release, tmp_path / "next")
    assert "acme-meter-fw" in ok(
        runner,
        "supply",
        "check-pinned",
        "next/components.toml",
        "--previous",
        "release/components.toml",
    )
    components = tmp_path / "next" / "components.toml"
    components.write_text(
        components.read_text().replace(
            'version = "2.1.0"\npurl = "pkg:generic/acme/meter-fw@2.1.0"',
            'version = "2.2.0"\npurl = "pkg:generic/acme/meter-fw@2.2.0"',
        )
    )
    error = refused(
        runner,
        "supply",
        "check-pinned",
        "next/components.toml",
        "--previous",
        "release/components.toml",
    )
    assert isinstance(error, PinnedComponentChanged) and exit_code_for(error) == 3
    assert "acme-meter-fw version 2.1.0 -> 2.2.0" in str(error)
