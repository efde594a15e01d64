"""The gate and fleet exposure on OSV records in the shapes OSV.dev serves (tests/osv_records).

OpenSSL, BusyBox, zlib and curl as NVD-converted records (no ``affected[].package``, GIT
ranges, tags as versions) and OSS-Fuzz records; a Debian DSA and DLA; PyPI advisories that
alias each other; a withdrawn one.  Bad records give one line through the CLI, never a
traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chargeward.cli.main import app, exit_code_for
from chargeward.crypto.pki import certificate_pem
from chargeward.errors import SupplyChainError
from chargeward.release.bundle import build_bundle
from chargeward.server.runtime import add_manufacturer_root
from chargeward.server.store.tables import Station
from chargeward.supply.advisories import load_advisories, parse_advisory
from chargeward.supply.allowlist import Allowlist, parse_allowlist
from chargeward.supply.attest import image_components, release_documents
from chargeward.supply.components import Library
from chargeward.supply.gate import evaluate
from chargeward.supply.matching import match
from chargeward.supply.severity import Severity
from tests.support.api_app import running_api
from tests.support.cli_runner import RUNNER_PASSPHRASE

OSV = Path(__file__).resolve().parents[2] / "osv_records"
NOW = dt.datetime.now(dt.UTC)
IN_A_YEAR = (NOW + dt.timedelta(days=300)).date().isoformat().encode()  # within 366 days


def record(name: str) -> Any:
    return parse_advisory((OSV / name).read_bytes(), name)


def test_every_record_shape_loads() -> None:
    loaded = load_advisories(OSV)
    assert len(loaded.advisories) == len(list(OSV.glob("*.json")))
    nvd = next(a for a in loaded.advisories if a.id == "CVE-2024-5535")
    [entry] = nvd.affected
    assert (entry.ecosystem, entry.name, entry.repos) == (
        "",
        "",
        ("https://github.com/openssl/openssl",),
    )
    assert nvd.summary.startswith("Issue summary: Calling the OpenSSL API")


@pytest.mark.parametrize(
    ("name", "purl", "version", "status"),
    [
        # NVD-converted, tags as versions
        ("CVE-2024-5535.json", "pkg:generic/openssl", "3.0.13", "affected"),
        ("CVE-2024-5535.json", "pkg:generic/openssl", "1.1.1w", "affected"),
        ("CVE-2024-5535.json", "pkg:generic/openssl", "3.0.15", None),
        ("CVE-2024-5535.json", "pkg:github/openssl/openssl", "3.0.13", "affected"),
        ("CVE-2024-5535.json", "pkg:generic/libressl", "3.0.13", None),
        ("CVE-2024-5535.json", "pkg:generic/openssl", "3.0.13-acme1", "indeterminate"),
        # a listed release with a packaging suffix or a trailing zero is never clean
        ("CVE-2024-5535.json", "pkg:generic/openssl", "3.0.13-1", "indeterminate"),
        ("CVE-2024-5535.json", "pkg:generic/openssl", "3.0.13_1", "indeterminate"),
        ("CVE-2024-5535.json", "pkg:generic/openssl", "3.0.13.0", "affected"),
        ("CVE-2024-5535.json", "pkg:generic/openssl", "1.1.1w-1", "indeterminate"),
        ("CVE-2024-5535.json", "pkg:generic/openssl", "1.1.1x", "indeterminate"),
        ("CVE-2024-5535.json", "pkg:generic/openssl", "3.0.15-1", None),
        ("CVE-2023-42363.json", "pkg:generic/busybox", "1.36.1-1", "indeterminate"),
        ("CVE-2022-37434.json", "pkg:generic/zlib", "1.2.12-1", "indeterminate"),
        ("CVE-2022-37434.json", "pkg:generic/zlib", "1.2.12.1", "indeterminate"),
        ("CVE-2024-2398.json", "pkg:generic/curl", "8.6.0-r1", "indeterminate"),
        ("CVE-2023-42363.json", "pkg:generic/busybox", "1.36.1", "affected"),
        ("CVE-2023-42363.json", "pkg:generic/busybox", "1.37.0", None),
        ("CVE-2022-37434.json", "pkg:generic/zlib", "1.2.12", "affected"),
        ("CVE-2022-37434.json", "pkg:generic/zlib", "1.3.1", None),
        ("CVE-2024-2398.json", "pkg:generic/curl", "8.5.0", "affected"),
        ("CVE-2024-2398.json", "pkg:generic/curl", "8.7.1", None),
        # the conversion's output before OSV.dev adds tags: commits only
        ("CVE-2024-7264.json", "pkg:generic/curl", "8.11.1", "indeterminate"),
        # OSS-Fuzz: package without purl, tags OpenSSL_1_1_1-preN; empty versions list
        ("OSV-2018-153.json", "pkg:generic/openssl", "1.1.1-pre3", "affected"),
        ("OSV-2018-153.json", "pkg:generic/openssl", "3.0.13", None),
        ("OSV-2024-635.json", "pkg:generic/openssl", "3.0.15", "indeterminate"),
        # Debian, by release
        ("DSA-5764-1.json", "pkg:deb/debian/openssl", "3.0.13-1~deb12u1", "affected"),
        ("DSA-5764-1.json", "pkg:deb/debian/openssl", "3.0.15-1~deb12u1", None),
        ("DLA-3942-1.json", "pkg:deb/debian/openssl", "1.1.1w-0+deb11u1", "affected"),
        # PyPI
        ("GHSA-h75v-3vvj-5mfj.json", "pkg:pypi/jinja2", "3.1.2", "affected"),
        ("GHSA-h75v-3vvj-5mfj.json", "pkg:pypi/jinja2", "3.1.3", None),
        ("PYSEC-2024-4.json", "pkg:pypi/Jinja2", "3.1.2", "affected"),
        ("GHSA-4xh5-x5gv-qwph.json", "pkg:pypi/jinja2", "3.1.2", None),  # withdrawn
    ],
)
def test_record_verdicts(name: str, purl: str, version: str, status: str | None) -> None:
    found = match(record(name), f"{purl}@{version}", version)
    assert (found.status if found else None) == status, found


def _components(*libraries: Library) -> Any:
    payload = Path(__file__)
    return image_components("acme", "1.0.0", "ACME", {"main": payload}, list(libraries))


def test_aliased_records_are_accepted_by_one_alias() -> None:
    jinja = Library("jinja2", "3.1.2", "pkg:pypi/jinja2@3.1.2", "BSD-3-Clause")
    advisories = load_advisories(OSV)
    accepted = parse_allowlist(
        b'[[accept]]\nadvisory = "CVE-2024-22195"\npurl = "pkg:pypi/jinja2@3.1.2"\n'
        b'status = "not_affected"\njustification = "vulnerable_code_not_in_execute_path"\n'
        b'approvers = ["a@acme.example"]\nexpires = 2099-01-01\n',
        "allowlist.toml",
    )
    result = evaluate(_components(jinja), advisories, accepted, Severity.LOW, NOW)
    assert {f.advisory for f in result.findings} == {"GHSA-h75v-3vvj-5mfj", "PYSEC-2024-4"}
    assert not result.refused and len(result.accepted) == 2


def test_a_clean_c_library_set_passes_every_record() -> None:
    libraries = [
        Library("openssl", "3.0.15", "pkg:generic/openssl@3.0.15", "Apache-2.0"),
        Library("zlib", "1.3.1", "pkg:generic/zlib@1.3.1", "Zlib"),
        Library("busybox", "1.37.0", "pkg:generic/busybox@1.37.0", "GPL-2.0-only"),
    ]
    advisories = load_advisories(OSV)
    result = evaluate(_components(*libraries), advisories, Allowlist(), Severity.HIGH, NOW)
    # Only the OSS-Fuzz record without any released version remains: it cannot be judged.
    assert [(f.advisory, f.status) for f in result.findings] == [("OSV-2024-635", "indeterminate")]


BAD_RECORDS = {
    "not JSON": b'{"id": "X", "affected": [',
    "no id": b'{"affected": []}',
    "no package and no repository": b'{"id": "X", "affected": [{"ranges": '
    b'[{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}]}',
    "GIT range without repo": b'{"id": "X", "affected": [{"ranges": '
    b'[{"type": "GIT", "events": [{"introduced": "0"}]}]}]}',
    "event with two kinds": b'{"id": "X", "affected": [{"package": {"ecosystem": "PyPI", '
    b'"name": "a"}, "ranges": [{"type": "ECOSYSTEM", "events": '
    b'[{"introduced": "0", "fixed": "1"}]}]}]}',
    "versions not strings": b'{"id": "X", "affected": [{"package": {"ecosystem": "PyPI", '
    b'"name": "a"}, "versions": [1]}]}',
    "affected not a list": b'{"id": "X", "affected": {"package": {}}}',
    "bad purl": b'{"id": "X", "affected": [{"package": {"ecosystem": "GIT", "name": "z", '
    b'"purl": "zlib"}}]}',
    "not UTF-8": b'{"id": "\xff"}',
}


def _one_line(result: Any) -> str:
    error = result.exception
    assert isinstance(error, SupplyChainError), (result.output, error)
    assert exit_code_for(error) == 6
    assert "Traceback" not in result.output
    assert "\n" not in str(error)
    return str(error)


@pytest.mark.parametrize("shape", sorted(BAD_RECORDS))
def test_bad_record_is_one_line_in_supply_scan_and_release_build(
    shape: str, tmp_path: Path, pki: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(OSV, tmp_path / "osv")
    (tmp_path / "osv" / "bad.json").write_bytes(BAD_RECORDS[shape])
    (tmp_path / "fw.bin").write_bytes(b"fw")
    (tmp_path / "components.toml").write_text(
        '[release]\nname = "acme"\nversion = "1.0.0"\nsupplier = "ACME"\n'
        '[[components]]\nkind = "firmware"\nname = "main"\nversion = "1.0.0"\n'
        'purl = "pkg:generic/acme/main@1.0.0"\nlicence = "MIT"\nimage = "fw.bin"\n'
    )
    runner = CliRunner()
    scan = runner.invoke(app, ["supply", "scan", "components.toml", "--advisories", "osv"])
    assert _one_line(scan).startswith("osv/bad.json: ")
    (tmp_path / "signing.pem").write_text(certificate_pem(pki.signing_cert))
    build = runner.invoke(
        app,
        [
            *("release", "build", "--components", "components.toml", "--advisories", "osv"),
            *("--model", "AC22", "--security-version", "1", "--out", "r.cwb"),
            *("--signing-key", pki.signer.uri, "--signing-cert", "signing.pem"),
            *("--data-dir", "data"),
        ],
        env={"CHARGEWARD_KEY_PASSPHRASE": RUNNER_PASSPHRASE},
    )
    assert _one_line(build).startswith("osv/bad.json: ")
    assert not (tmp_path / "r.cwb").exists()


async def test_exposure_reports_osv_dev_shapes_and_lists_vex_covered_stations(
    tmp_path: Path, pki: Any
) -> None:
    data = tmp_path / "server"
    (data / "tmp").mkdir(parents=True)
    add_manufacturer_root(data, certificate_pem(pki.root).encode())
    advisories = load_advisories(OSV)

    def bundle(version: str, accepted: Allowlist) -> bytes:
        payload = tmp_path / f"fw-{version}.bin"
        payload.write_bytes(version.encode() * 100)
        openssl = Library("openssl", "3.0.13", "pkg:generic/openssl@3.0.13", "Apache-2.0")
        components = image_components("acme", version, "ACME", {"main": payload}, [openssl])
        made = release_documents(components, advisories, accepted, threshold=Severity.HIGH, now=NOW)
        out = tmp_path / f"fw-{version}.cwb"
        build_bundle(
            payload,
            out,
            version=version,
            security_version=1,
            hardware_models=["AC22"],
            signer=pki.signer,
            signing_certificate=pki.signing_cert,
            attestations=made.documents,
        )
        return out.read_bytes()

    both = parse_allowlist(
        b'[[accept]]\nadvisory = "CVE-2024-5535"\npurl = "pkg:generic/openssl@3.0.13"\n'
        b'status = "not_affected"\njustification = "vulnerable_code_not_in_execute_path"\n'
        b'approvers = ["a@acme.example"]\nexpires = ' + IN_A_YEAR + b"\n"
        b'[[accept]]\nadvisory = "OSV-2024-635"\npurl = "pkg:generic/openssl@3.0.13"\n'
        b'status = "under_investigation"\napprovers = ["a@acme.example"]\n'
        b"expires = " + IN_A_YEAR + b"\n",
        "allowlist.toml",
    )
    async with running_api(data, NOW) as api:
        for version in ("1.0.0", "1.1.0"):
            r = await api.client.post("/api/v1/releases", content=bundle(version, both))
            assert r.status_code == 201, r.text
        async with api.db.session() as s:
            for station_id, version in (("CP-1", "1.0.0"), ("CP-2", "1.1.0")):
                s.add(
                    Station(
                        id=station_id,
                        password_hash="x",
                        model="AC22",
                        firmware_version=version,
                        created_at=NOW,
                    )
                )
        nvd = (OSV / "CVE-2024-5535.json").read_bytes()
        report = await api.call("POST", "/api/v1/exposure", content=nvd)
        assert report["affected"] == [] and report["indeterminate"] == []
        assert [s["station_id"] for s in report["accepted"]] == ["CP-1", "CP-2"]
        [package] = report["accepted"][0]["packages"]
        assert package["status"] == "affected"
        assert package["accepted"] == "VEX not_affected: vulnerable_code_not_in_execute_path"
        # A record the release's VEX does not cover: affected, as before.
        dsa_free = json.loads(nvd)
        dsa_free["id"], dsa_free["aliases"] = "CVE-2099-0001", []
        other = await api.call("POST", "/api/v1/exposure", content=json.dumps(dsa_free).encode())
        assert [s["station_id"] for s in other["affected"]] == ["CP-1", "CP-2"]
        assert other["affected"][0]["packages"][0]["accepted"] is None
