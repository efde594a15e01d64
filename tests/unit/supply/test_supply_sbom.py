"""CycloneDX SBOM: valid against the 1.6 schema, reproducible, corrupted copies rejected."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from chargeward.errors import ConfigError, SupplyChainError
from chargeward.supply.components import ComponentList, load_components
from chargeward.supply.sbom import build_sbom, sbom_components, validate_sbom

EXAMPLE = Path(__file__).parents[3] / "examples" / "release" / "components.toml"
DIGEST = "9f2c" + "0" * 60
CREATED = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def components() -> ComponentList:
    return load_components(EXAMPLE)


@pytest.fixture(scope="module")
def sbom(components: ComponentList) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(build_sbom(components, DIGEST, CREATED))
    return document


def test_sbom_describes_the_release(sbom: dict[str, Any]) -> None:
    release = sbom["metadata"]["component"]
    assert (release["type"], release["name"], release["version"]) == (
        "firmware",
        "acme-ac22-firmware",
        "4.2.0",
    )
    assert release["supplier"]["name"] == "ACME Charging Ltd"
    assert sbom["specVersion"] == "1.6"
    assert sbom["metadata"]["timestamp"] == "2026-03-01T12:00:00+00:00"
    by_name = {c["name"]: c for c in sbom["components"]}
    assert by_name["acme-linux"]["type"] == "operating-system"
    assert by_name["acme-meter-fw"]["type"] == "firmware"
    assert by_name["openssl"]["purl"] == "pkg:generic/openssl@3.0.13"
    assert by_name["openssl"]["cpe"].startswith("cpe:2.3:a:openssl:openssl:3.0.13")
    assert by_name["openssl"]["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    assert by_name["mbedtls"]["licenses"] == [{"expression": "Apache-2.0 OR GPL-2.0-or-later"}]
    meter_hash = by_name["acme-meter-fw"]["hashes"][0]
    assert meter_hash["alg"] == "SHA-256" and meter_hash["content"].startswith("408ec5a2")


def test_dependency_graph_is_release_components_libraries(sbom: dict[str, Any]) -> None:
    graph = {d["ref"]: set(d.get("dependsOn", [])) for d in sbom["dependencies"]}
    assert graph["release:acme-ac22-firmware@4.2.0"] == {
        "component:acme-linux",
        "component:acme-chargectl",
        "component:acme-hmi",
        "component:eg25-g-firmware",
        "component:acme-meter-fw",
    }
    assert graph["component:acme-linux"] == {
        f"component:acme-linux/library:{name}" for name in ("openssl", "busybox", "zlib", "curl")
    }
    assert graph["component:acme-linux/library:zlib"] == set()


def test_two_builds_are_byte_identical(components: ComponentList) -> None:
    first = build_sbom(components, DIGEST, CREATED)
    assert build_sbom(components, DIGEST, CREATED) == first
    serial = json.loads(first)["serialNumber"]
    assert serial.startswith("urn:uuid:") and uuid.UUID(serial[9:]).version == 5
    other = json.loads(build_sbom(components, "1" * 64, CREATED))["serialNumber"]
    assert other != serial


def test_timestamp_comes_from_source_date_epoch(
    components: ComponentList, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    data = build_sbom(components, DIGEST)
    assert json.loads(data)["metadata"]["timestamp"] == "2026-01-01T00:00:00+00:00"
    assert build_sbom(components, DIGEST) == data
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
        build_sbom(components, DIGEST)


def test_release_digest_must_be_hex(components: ComponentList) -> None:
    with pytest.raises(ConfigError, match="64 lower-case hexadecimal"):
        build_sbom(components, "not-a-digest", CREATED)


def _corrupt(sbom: dict[str, Any], change: str) -> bytes:
    doc = json.loads(json.dumps(sbom))
    index = next(i for i, c in enumerate(doc["components"]) if c["name"] == "openssl")
    if change == "hash-algorithm":
        doc["components"][index]["hashes"] = [{"alg": "SHA-999", "content": "0" * 64}]
    elif change == "missing-name":
        del doc["components"][index]["name"]
    elif change == "unknown-field":
        doc["components"][index]["vendorNotes"] = "strict validation refuses this"
    elif change == "component-type":
        doc["metadata"]["component"]["type"] = "gadget"
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ("hash-algorithm", "components.{i}.hashes.0.alg: 'SHA-999' is not one of"),
        ("missing-name", "components.{i}: 'name' is a required property"),
        ("unknown-field", "components.{i}: Additional properties are not allowed"),
        ("component-type", "metadata.component.type: 'gadget' is not one of"),
    ],
)
def test_corrupted_sbom_is_rejected(sbom: dict[str, Any], change: str, where: str) -> None:
    validate_sbom(json.dumps(sbom).encode())
    index = next(i for i, c in enumerate(sbom["components"]) if c["name"] == "openssl")
    with pytest.raises(SupplyChainError) as e:
        validate_sbom(_corrupt(sbom, change), "sbom.cdx.json")
    assert str(e.value).startswith("sbom.cdx.json: " + where.format(i=index))


def test_non_sbom_input_is_rejected() -> None:
    with pytest.raises(SupplyChainError, match=r"x\.json: not JSON"):
        validate_sbom(b"{", "x.json")
    with pytest.raises(SupplyChainError, match=r"not a CycloneDX 1\.6 document"):
        validate_sbom(b'{"bomFormat": "CycloneDX", "specVersion": "1.4"}', "x.json")


def test_sbom_components_reads_packages_back(components: ComponentList) -> None:
    packages = sbom_components(build_sbom(components, DIGEST, CREATED))
    purls = {p.purl for p in packages}
    assert "pkg:pypi/jinja2@3.1.2" in purls
    assert ("openssl", "3.0.13", "pkg:generic/openssl@3.0.13") in packages
    assert len(packages) == sum(1 for _ in components.packages())
