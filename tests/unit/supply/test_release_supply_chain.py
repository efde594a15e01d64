"""The supply-chain gate around a release, end to end through the real code paths.

``chargeward release build --components`` gates the declared components against offline OSV
advisories and packs the SBOM, scan report and VEX into the bundle (several images when the
list names several); ``--provenance`` signs SLSA provenance naming each image and the bundle.
The server keeps the documents, puts the SBOM digest into the TUF target custom fields,
refuses to propose a release without them, verifies provenance against the release's signing
key, and answers the fleet exposure query from the SBOMs of the releases stations run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chargeward.cli.main import app
from chargeward.crypto.pki import certificate_pem
from chargeward.errors import (
    AttestationRefused,
    GateRefused,
    PinnedComponentChanged,
    SupplyChainError,
)
from chargeward.release.bundle import build_bundle, verify_bundle
from chargeward.server.runtime import add_manufacturer_root
from chargeward.server.store.tables import Station
from chargeward.supply.provenance import verify_provenance
from chargeward.supply.sbom import sbom_components, validate_sbom
from tests.support.api_app import Api, running_api
from tests.support.cli_runner import RUNNER_PASSPHRASE

NOW = dt.datetime.now(dt.UTC)  # certificates are made now too
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

COMPONENTS = """
[release]
name = "acme-ac22-firmware"
version = "{version}"
supplier = "ACME Charging Ltd"

[[components]]
kind = "controller-os"
name = "main"
version = "{version}"
purl = "pkg:generic/acme/acme-linux@{version}"
licence = "MIT"
image = "main.bin"

[[components.libraries]]
name = "zlib"
version = "{zlib}"
purl = "pkg:generic/zlib@{zlib}"
licence = "Zlib"

[[components]]
kind = "modem-firmware"
name = "modem"
version = "{version}"
purl = "pkg:generic/acme/modem@{version}"
licence = "LicenseRef-ACME-Proprietary"
image = "modem.bin"
"""

ZLIB_ADVISORY = {
    "id": "CVE-2022-37434",
    "summary": "zlib inflateGetHeader heap overflow",
    "affected": [
        {
            "package": {
                "ecosystem": "GIT",
                "name": "https://github.com/madler/zlib",
                "purl": "pkg:generic/zlib",
            },
            "versions": ["1.2.11", "1.2.12"],
        }
    ],
    "database_specific": {"severity": "CRITICAL"},
}


def write_release(directory: Path, version: str, zlib: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.bin").write_bytes(f"controller {version}\n".encode() * 2000)
    (directory / "modem.bin").write_bytes(f"modem {version}\n".encode() * 500)
    path = directory / "components.toml"
    path.write_text(COMPONENTS.format(version=version, zlib=zlib))
    return path


@pytest.fixture
def advisories(tmp_path: Path) -> Path:
    d = tmp_path / "osv"
    d.mkdir()
    (d / "CVE-2022-37434.json").write_text(json.dumps(ZLIB_ADVISORY))
    return d


@pytest.fixture
def keys(tmp_path: Path, pki: Any) -> tuple[str, Path]:
    """The firmware-signing key (as a URI the CLI opens) and certificate."""
    cert = tmp_path / "signing.pem"
    cert.write_text(certificate_pem(pki.signing_cert))
    return pki.signer.uri, cert


def build(
    tmp_path: Path, keys: tuple[str, Path], components: Path, advisories: Path, *extra: str
) -> Any:
    key, cert = keys
    return CliRunner().invoke(
        app,
        [
            *("release", "build", "--components", str(components)),
            *("--advisories", str(advisories), "--model", "AC22", "--security-version", "3"),
            *("--signing-key", key, "--signing-cert", str(cert)),
            *("--out", str(tmp_path / "release.cwb"), "--data-dir", str(tmp_path / "data")),
            *extra,
        ],
        env={"CHARGEWARD_KEY_PASSPHRASE": RUNNER_PASSPHRASE},
    )


def test_build_gates_then_packs_images_sbom_and_report(
    tmp_path: Path, keys: tuple[str, Path], advisories: Path, pki: Any
) -> None:
    components = write_release(tmp_path / "rel", "4.2.0", zlib="1.3.1")
    result = build(tmp_path, keys, components, advisories)
    assert result.exit_code == 0, (result.output, result.exception)
    verified = verify_bundle(tmp_path / "release.cwb", [pki.root], workdir=tmp_path / "w")
    assert [i.component for i in verified.images] == ["main", "modem"]
    assert verified.manifest.version == "4.2.0"
    assert sorted(verified.attestations) == ["sbom.cdx.json", "vulnerability-report.json"]
    sbom = verified.attestations["sbom.cdx.json"]
    validate_sbom(sbom)
    assert {"pkg:generic/zlib@1.3.1", "pkg:generic/acme/modem@4.2.0"} <= {
        p.purl for p in sbom_components(sbom)
    }
    report = json.loads(verified.attestations["vulnerability-report.json"])
    assert report["decision"] == "passed" and report["advisories"]["count"] == 1


def test_a_vulnerable_component_blocks_the_build_and_no_bundle_is_written(
    tmp_path: Path, keys: tuple[str, Path], advisories: Path
) -> None:
    components = write_release(tmp_path / "rel", "4.2.0", zlib="1.2.12")
    result = build(tmp_path, keys, components, advisories)
    assert result.exit_code != 0
    assert isinstance(result.exception, GateRefused)
    assert "CVE-2022-37434 on pkg:generic/zlib@1.2.12" in str(result.exception)
    assert not (tmp_path / "release.cwb").exists()


def test_an_accepted_risk_passes_and_is_stated_as_vex(
    tmp_path: Path, keys: tuple[str, Path], advisories: Path, pki: Any
) -> None:
    components = write_release(tmp_path / "rel", "4.2.0", zlib="1.2.12")
    allowlist = tmp_path / "allowlist.toml"
    allowlist.write_text(
        """
[[accept]]
advisory = "CVE-2022-37434"
purl = "pkg:generic/zlib@1.2.12"
status = "not_affected"
justification = "vulnerable_code_not_in_execute_path"
approvers = ["psirt-lead", "product-owner"]
expires = 2099-06-30
"""
    )
    result = build(tmp_path, keys, components, advisories, "--allowlist", str(allowlist))
    assert result.exit_code == 0, (result.output, result.exception)
    verified = verify_bundle(tmp_path / "release.cwb", [pki.root], workdir=tmp_path / "w")
    vex = json.loads(verified.attestations["vex.openvex.json"])
    assert vex["@context"] == "https://openvex.dev/ns/v0.2.0"
    [statement] = vex["statements"]
    assert statement["status"] == "not_affected"
    assert statement["vulnerability"]["name"] == "CVE-2022-37434"


def test_components_need_advisories_and_bad_lists_name_the_field(
    tmp_path: Path, keys: tuple[str, Path], advisories: Path
) -> None:
    components = write_release(tmp_path / "rel", "4.2.0", zlib="1.3.1")
    key, cert = keys
    result = CliRunner().invoke(
        app,
        [
            *("release", "build", "--components", str(components), "--model", "AC22"),
            *("--security-version", "3", "--signing-key", key, "--signing-cert", str(cert)),
            *("--out", str(tmp_path / "release.cwb")),
        ],
    )
    assert "--components needs --advisories" in str(result.exception)
    components.write_text(components.read_text().replace('purl = "pkg:generic/zlib@1.3.1"', ""))
    result = build(tmp_path, keys, components, advisories)
    assert isinstance(result.exception, SupplyChainError)
    assert "components[0].libraries[0]" in str(result.exception)
    assert not (tmp_path / "release.cwb").exists()


def test_provenance_names_every_image_and_the_bundle(
    tmp_path: Path, keys: tuple[str, Path], advisories: Path, pki: Any
) -> None:
    components = write_release(tmp_path / "rel", "4.2.0", zlib="1.3.1")
    out = tmp_path / "release.provenance.json"
    from chargeward.supply.rebuild import OutputDigests, RebuildResult, RebuildStatus

    rebuilt = tmp_path / "rebuild.json"
    rebuilt.write_bytes(
        RebuildResult(
            RebuildStatus.REPRODUCIBLE,
            "make firmware",
            1700000000,
            (OutputDigests("out/main.bin", "c" * 64, "c" * 64),),
        ).to_json()
    )
    result = build(
        tmp_path,
        keys,
        components,
        advisories,
        *("--provenance", str(out), "--source-repo", "https://git.example/acme/fw"),
        *("--source-commit", "a" * 40, "--rebuild-result", str(rebuilt)),
    )
    assert result.exit_code == 0, (result.output, result.exception)
    verified = verify_bundle(tmp_path / "release.cwb", [pki.root], workdir=tmp_path / "w")
    bundle_digest = hashlib.sha256((tmp_path / "release.cwb").read_bytes()).hexdigest()
    from chargeward.supply.provenance import Subject

    expected = [Subject(f"images/{i.component}.cwfw", i.sha256) for i in verified.images]
    statement = verify_provenance(
        out.read_bytes(),
        [pki.signing_cert.public_key()],
        [*expected, Subject("bundle", bundle_digest)],
    )
    assert statement.build_definition["externalParameters"]["source"]["commit"] == "a" * 40 or (
        "a" * 40 in json.dumps(statement.build_definition)
    )
    with pytest.raises(AttestationRefused, match="bundle"):
        verify_provenance(
            out.read_bytes(),
            [pki.signing_cert.public_key()],
            [*expected, Subject("bundle", "0" * 64)],
        )


# --- the server side ----------------------------------------------------------------------


@pytest.fixture
async def api(tmp_path: Path, pki: Any) -> AsyncIterator[Api]:
    data = tmp_path / "server"
    (data / "tmp").mkdir(parents=True)
    add_manufacturer_root(data, certificate_pem(pki.root).encode())
    async with running_api(data, NOW) as api:
        yield api


def library_bundle(tmp_path: Path, pki: Any, version: str, zlib: str, attested: bool) -> Path:
    from chargeward.supply.advisories import advisory_set
    from chargeward.supply.allowlist import Allowlist
    from chargeward.supply.attest import image_components, release_documents
    from chargeward.supply.components import Library
    from chargeward.supply.severity import Severity

    payload = tmp_path / f"fw-{version}.bin"
    payload.write_bytes(f"firmware {version}\n".encode() * 1000)
    components = image_components(
        "acme-fw",
        version,
        "ACME",
        {"main": payload},
        [Library("zlib", zlib, f"pkg:generic/zlib@{zlib}", "Zlib")],
    )
    made = release_documents(
        components, advisory_set([]), Allowlist(), threshold=Severity.HIGH, now=NOW
    )
    out = tmp_path / f"fw-{version}.cwb"
    build_bundle(
        payload,
        out,
        version=version,
        security_version=1,
        hardware_models=["AC22"],
        signer=pki.signer,
        signing_certificate=pki.signing_cert,
        attestations=made.documents if attested else None,
    )
    return out


def bundle_with(tmp_path: Path, pki: Any, documents: dict[str, str]) -> Path:
    """A signed bundle carrying hand-made supply-chain documents (as an attacker might)."""
    payload = tmp_path / "fw.bin"
    payload.write_bytes(b"firmware\n" * 100)
    bundle = tmp_path / "hand-made.cwb"
    build_bundle(
        payload,
        bundle,
        version="1.0.1",
        security_version=1,
        hardware_models=["AC22"],
        signer=pki.signer,
        signing_certificate=pki.signing_cert,
        attestations={name: text.encode() for name, text in documents.items()},
    )
    return bundle


async def upload(api: Api, bundle: Path) -> dict[str, Any]:
    result: dict[str, Any] = await api.call(
        "POST", "/api/v1/releases", expect=201, content=bundle.read_bytes()
    )
    return result


async def test_upload_keeps_the_documents_and_audits_what_they_say(
    api: Api, tmp_path: Path, pki: Any
) -> None:
    bundle = library_bundle(tmp_path, pki, "1.0.0", "1.3.1", attested=True)
    release = await upload(api, bundle)
    assert sorted(release["documents"]) == ["sbom.cdx.json", "vulnerability-report.json"]
    assert release["bundle_sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    listed = await api.call("GET", f"/api/v1/releases/{release['id']}/documents")
    assert {d["name"] for d in listed} == set(release["documents"])
    sbom = await api.client.get(f"/api/v1/releases/{release['id']}/documents/sbom.cdx.json")
    assert hashlib.sha256(sbom.content).hexdigest() == release["documents"]["sbom.cdx.json"]
    entries = await api.call("GET", "/api/v1/audit", params={"limit": 100})
    [entry] = [e for e in entries if e["action"] == "release.upload"]
    assert entry["details"]["sbom"]["sha256"] == release["documents"]["sbom.cdx.json"]
    assert entry["details"]["scan"]["decision"] == "passed"


async def test_a_refusing_scan_report_refuses_the_upload(
    api: Api, tmp_path: Path, pki: Any
) -> None:
    refused = {
        "format": "chargeward-vulnerability-report/1",
        "decision": "refused",
        "advisories": {"count": 1, "digest": "sha256:" + "0" * 64},
        "findings": [{"advisory": "CVE-1", "blocking": True, "accepted_by": None}],
    }
    bundle = bundle_with(tmp_path, pki, {"vulnerability-report.json": json.dumps(refused)})
    r = await api.client.post("/api/v1/releases", content=bundle.read_bytes())
    assert r.status_code == 409, r.text
    assert "vulnerability report refuses it (1 blocking finding(s))" in r.text
    assert (await api.call("GET", "/api/v1/releases")) == []


async def test_a_corrupt_sbom_refuses_the_upload_naming_the_field(
    api: Api, tmp_path: Path, pki: Any
) -> None:
    sbom = {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": "one"}
    bundle = bundle_with(tmp_path, pki, {"sbom.cdx.json": json.dumps(sbom)})
    r = await api.client.post("/api/v1/releases", content=bundle.read_bytes())
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_supply_chain"
    assert "sbom.cdx.json: version" in r.json()["error"]["message"]


async def test_provenance_is_kept_only_when_it_names_this_release(
    api: Api, tmp_path: Path, pki: Any
) -> None:
    from chargeward.supply.provenance import ProvenanceInputs, Subject, create_provenance

    bundle = library_bundle(tmp_path, pki, "1.0.0", "1.3.1", attested=True)
    release = await upload(api, bundle)
    [image] = release["images"]

    def envelope(bundle_sha256: str) -> bytes:
        inputs = ProvenanceInputs(
            subjects=(
                Subject("images/main.cwfw", image["sha256"]),
                Subject("bundle", bundle_sha256),
            ),
            source_repo="https://git.example/acme/fw",
            source_commit="b" * 40,
            started_on=NOW,
        )
        return create_provenance(inputs, pki.signer, clock=lambda: NOW).to_json()

    r = await api.client.put(
        f"/api/v1/releases/{release['id']}/provenance", content=envelope("0" * 64)
    )
    assert r.status_code == 422 and "bundle" in r.text, r.text
    good = envelope(release["bundle_sha256"])
    kept = await api.call(
        "PUT", f"/api/v1/releases/{release['id']}/provenance", expect=201, content=good
    )
    assert kept["sha256"] == hashlib.sha256(good).hexdigest()
    again = await api.client.put(f"/api/v1/releases/{release['id']}/provenance", content=good)
    assert again.status_code == 409


async def test_exposure_lists_exactly_the_stations_running_affected_versions(
    api: Api, tmp_path: Path, pki: Any
) -> None:
    old = await upload(api, library_bundle(tmp_path, pki, "1.0.0", "1.2.12", attested=True))
    new = await upload(api, library_bundle(tmp_path, pki, "1.1.0", "1.3.1", attested=True))
    fleet = {f"CP-{i:03d}": ("1.0.0" if i % 3 == 0 else "1.1.0") for i in range(30)}
    fleet["CP-900"] = "0.9.0"  # a version this server has no release (or SBOM) for
    async with api.db.session() as s:
        for station_id, version in fleet.items():
            s.add(
                Station(
                    id=station_id,
                    password_hash="x",
                    model="AC22",
                    firmware_version=version,
                    created_at=NOW,
                )
            )
    report = await api.call("POST", "/api/v1/exposure", content=json.dumps(ZLIB_ADVISORY).encode())
    affected = sorted(s["station_id"] for s in report["affected"])
    assert affected == sorted(k for k, v in fleet.items() if v == "1.0.0")
    assert all(s["releases"] == [old["id"]] for s in report["affected"])
    assert report["affected"][0]["packages"][0]["purl"] == "pkg:generic/zlib@1.2.12"
    assert report["unknown"] == ["CP-900"]
    assert report["indeterminate"] == [] and report["stations_checked"] == 31
    assert new["id"] not in {r for s in report["affected"] for r in s["releases"]}
    bad = await api.client.post("/api/v1/exposure", content=b'{"id": 5}')
    assert bad.status_code == 422


async def test_publication_needs_the_sbom_and_scan_and_signs_the_sbom_digest(
    api: Api, tmp_path: Path, pki: Any
) -> None:
    from tests.support.trust import TufKeys

    TufKeys.create(tmp_path / "tuf-keys").init_repo(api.state.data_dir / "tuf", NOW)
    bare = await upload(api, library_bundle(tmp_path, pki, "2.0.0", "1.3.1", attested=False))
    assert bare["documents"] == {}
    r = await api.client.get(f"/api/v1/releases/{bare['id']}/proposal")
    assert r.status_code == 409, r.text
    assert "has no sbom.cdx.json and no vulnerability-report.json" in r.text
    attested = await upload(api, library_bundle(tmp_path, pki, "2.0.1", "1.3.1", attested=True))
    proposal = await api.call("GET", f"/api/v1/releases/{attested['id']}/proposal")
    sbom_sha256 = attested["documents"]["sbom.cdx.json"]
    assert proposal["added"], proposal
    assert all(t["custom"]["sbom_sha256"] == sbom_sha256 for t in proposal["added"])


def test_a_changed_pinned_component_refuses_the_build(
    tmp_path: Path, keys: tuple[str, Path], advisories: Path
) -> None:
    previous = write_release(tmp_path / "4.1.0", "4.1.0", zlib="1.3.1")
    pinned = previous.read_text().replace(
        'image = "modem.bin"\n', 'image = "modem.bin"\npinned = true\n'
    )
    previous.write_text(pinned)
    components = write_release(tmp_path / "4.2.0", "4.2.0", zlib="1.3.1")
    components.write_text(
        components.read_text().replace(
            'image = "modem.bin"\n', 'image = "modem.bin"\npinned = true\n'
        )
    )
    result = build(tmp_path, keys, components, advisories, "--previous", str(previous))
    assert isinstance(result.exception, PinnedComponentChanged), result.output
    assert "modem" in str(result.exception)
    assert not (tmp_path / "release.cwb").exists()
    # The same modem image and version as before: the build goes on.
    (tmp_path / "4.2.0" / "modem.bin").write_bytes((tmp_path / "4.1.0" / "modem.bin").read_bytes())
    components.write_text(
        components.read_text()
        .replace('purl = "pkg:generic/acme/modem@4.2.0"', 'purl = "pkg:generic/acme/modem@4.1.0"')
        .replace('name = "modem"\nversion = "4.2.0"', 'name = "modem"\nversion = "4.1.0"')
    )
    result = build(tmp_path, keys, components, advisories, "--previous", str(previous))
    assert result.exit_code == 0, (result.output, result.exception)


def test_cli_fleet_exposure_names_the_affected_stations(
    tmp_path: Path, pki: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import httpx

    from chargeward.server.store.db import Database
    from tests.unit.cli.test_cli_fleet import http_api

    data = tmp_path / "server"
    (data / "tmp").mkdir(parents=True)
    add_manufacturer_root(data, certificate_pem(pki.root).encode())
    bundle = library_bundle(tmp_path, pki, "1.0.0", "1.2.12", attested=True)

    async def stations() -> None:
        db = await Database.open(data_dir=data)
        try:
            async with db.session() as s:
                for station_id, version in (("CP-001", "1.0.0"), ("CP-002", "0.9.0")):
                    s.add(
                        Station(
                            id=station_id,
                            password_hash="x",
                            model="AC22",
                            firmware_version=version,
                            created_at=NOW,
                        )
                    )
        finally:
            await db.close()

    advisory = tmp_path / "CVE-2022-37434.json"
    advisory.write_text(json.dumps(ZLIB_ADVISORY))
    with http_api(data) as (url, token):
        monkeypatch.setenv("CHARGEWARD_SERVER", url)
        monkeypatch.setenv("CHARGEWARD_API_TOKEN", token)
        r = httpx.post(
            f"{url}/api/v1/releases",
            content=bundle.read_bytes(),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201, r.text
        asyncio.run(stations())
        runner = CliRunner()
        result = runner.invoke(app, ["fleet", "exposure", str(advisory), "--data-dir", str(data)])
        assert result.exit_code == 3, (result.output, result.exception)
        assert "CP-001" in result.output and "pkg:generic/zlib@1.2.12" in result.output
        assert (
            "1 affected, 0 possibly affected, 0 covered by VEX or an accepted risk, 1 unknown"
            in result.output
        )
        advisory.write_text('{"id": "X", "affected": [{"package": {}}]}')
        bad = runner.invoke(app, ["fleet", "exposure", str(advisory), "--data-dir", str(data)])
        assert isinstance(bad.exception, SupplyChainError)
        assert str(advisory) in str(bad.exception) and "affected[0].package" in str(bad.exception)


async def test_an_sbom_package_too_long_to_index_is_refused_not_cut_short(
    api: Api, tmp_path: Path, pki: Any
) -> None:
    from chargeward.supply.attest import image_components
    from chargeward.supply.components import Library
    from chargeward.supply.sbom import build_sbom

    payload = tmp_path / "lib.bin"
    payload.write_bytes(b"x" * 100)
    long_version = "1." + "9" * 120
    lib = Library("zlib", long_version, f"pkg:generic/zlib@{long_version}", "Zlib")
    components = image_components("acme-fw", "1.0.0", "ACME", {"main": payload}, [lib])
    sbom = build_sbom(components, "ab" * 32).decode()
    r = await api.client.post(
        "/api/v1/releases", content=bundle_with(tmp_path, pki, {"sbom.cdx.json": sbom}).read_bytes()
    )
    assert r.status_code == 422, r.text
    assert "version is longer than 100 characters" in r.json()["error"]["message"]
    assert (await api.call("GET", "/api/v1/releases")) == []
