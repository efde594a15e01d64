"""Component lists: parsing, image hashes, clear errors naming file and field, pinned parts."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from pathlib import Path

import pytest

from chargeward.errors import PinnedComponentChanged, SupplyChainError
from chargeward.supply.components import (
    ComponentList,
    check_pinned,
    load_components,
    parse_components,
)

EXAMPLE = Path(__file__).parents[3] / "examples" / "release" / "components.toml"
SHA = "a" * 64

MINIMAL = f"""
[release]
name = "ac22"
version = "1.0.0"
supplier = "ACME"

[[components]]
kind = "controller-os"
name = "os"
version = "1.0.0"
purl = "pkg:generic/acme/os@1.0.0"
licence = "MIT"
hashes = {{ sha256 = "{SHA}" }}

[[components.libraries]]
name = "zlib"
version = "1.3.1"
purl = "pkg:generic/zlib@1.3.1"
licence = "Zlib"
"""


def test_example_component_list_parses_with_its_image_checked() -> None:
    components = load_components(EXAMPLE)
    assert components.name == "acme-ac22-firmware"
    kinds = [c.kind for c in components.components]
    assert kinds == [
        "controller-os",
        "charging-application",
        "ui",
        "modem-firmware",
        "metering-firmware",
    ]
    meter = components.components[-1]
    assert meter.pinned and meter.image == "meter-fw.bin"
    assert meter.sha256 == "408ec5a270351fe54524f32237d7e462ee738491f5ba5ea9d6619286399030da"
    names = [lib.name for lib in components.components[0].libraries]
    assert names == ["openssl", "busybox", "zlib", "curl"]
    # purls are canonical: github names lower-cased
    assert components.components[1].libraries[0].purl == "pkg:github/mbed-tls/mbedtls@3.5.2"


def test_json_form_reads_like_toml() -> None:
    as_json = json.dumps(tomllib.loads(MINIMAL)).encode()
    assert parse_components(as_json, "c.json") == dataclasses.replace(
        parse_components(MINIMAL.encode(), "c.toml"), source="c.json"
    )


def test_purl_without_version_gets_the_declared_one() -> None:
    text = MINIMAL.replace('"pkg:generic/zlib@1.3.1"', '"pkg:generic/zlib"')
    lib = parse_components(text.encode(), "c.toml").components[0].libraries[0]
    assert lib.purl == "pkg:generic/zlib@1.3.1"


def test_image_hash_is_computed_and_must_match(tmp_path: Path) -> None:
    (tmp_path / "os.img").write_bytes(b"image bytes")
    text = MINIMAL.replace(f'hashes = {{ sha256 = "{SHA}" }}', 'image = "os.img"')
    (tmp_path / "c.toml").write_text(text)
    parsed = load_components(tmp_path / "c.toml")
    assert parsed.components[0].sha256 == hashlib.sha256(b"image bytes").hexdigest()

    wrong = MINIMAL.replace('licence = "MIT"', 'licence = "MIT"\nimage = "os.img"')
    (tmp_path / "bad.toml").write_text(wrong)
    with pytest.raises(SupplyChainError) as e:
        load_components(tmp_path / "bad.toml")
    assert "bad.toml: components[0].hashes.sha256: does not match image os.img" in str(e.value)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('name = "ac22"', 'name = "ac22', "c.toml: malformed document:"),
        ('supplier = "ACME"\n', "", "c.toml: release.supplier: missing"),
        (
            '"pkg:generic/zlib@1.3.1"',
            '"zlib-1.3.1"',
            "c.toml: components[0].libraries[0].purl: not a package URL",
        ),
        (
            '"pkg:generic/zlib@1.3.1"',
            '"pkg:generic/zlib@1.2"',
            "c.toml: components[0].libraries[0].purl: version '1.2' differs",
        ),
        (f'"{SHA}"', '"abc123"', "c.toml: components[0].hashes.sha256: must be 64 hexadecimal"),
        (f'hashes = {{ sha256 = "{SHA}" }}', "", "c.toml: components[0].hashes.sha256: missing"),
        ('kind = "controller-os"', 'kind = "os"', "c.toml: components[0].kind: unknown kind"),
        ('licence = "Zlib"', 'licence = "Zlibby"', "components[0].libraries[0].licence: unknown"),
        (
            'licence = "Zlib"',
            'license = "Zlib"',
            "c.toml: components[0].libraries[0].license: unknown field (did you mean 'licence'?)",
        ),
        ('name = "zlib"', "name = 3", "components[0].libraries[0].name: must be a string, not int"),
        (
            'licence = "MIT"',
            'licence = "MIT"\nimage = "../../etc/passwd"',
            "c.toml: components[0].image: must be a file name",
        ),
        (
            'licence = "MIT"',
            'licence = "MIT"\npinned = "yes"',
            "components[0].pinned: must be a bool",
        ),
    ],
)
def test_bad_component_list_names_file_and_field(old: str, new: str, message: str) -> None:
    assert old in MINIMAL
    with pytest.raises(SupplyChainError) as e:
        parse_components(MINIMAL.replace(old, new, 1).encode(), "c.toml")
    assert message in str(e.value)


def test_duplicate_component_and_library_are_refused() -> None:
    lib = MINIMAL[MINIMAL.index("[[components.libraries]]") :]
    with pytest.raises(SupplyChainError, match=r"c.toml: components\[0\].libraries\[1\]: dup"):
        parse_components((MINIMAL + lib).encode(), "c.toml")
    component = MINIMAL[MINIMAL.index("[[components]]") :]
    with pytest.raises(SupplyChainError, match=r"c.toml: components\[1\]: duplicate name 'os'"):
        parse_components((MINIMAL + component).encode(), "c.toml")


def test_json_duplicate_keys_are_refused() -> None:
    with pytest.raises(SupplyChainError, match=r"c\.json: malformed document: repeats the key"):
        parse_components(b'{"release": {}, "release": {}}', "c.json")


def _with(components: ComponentList, **changes: object) -> ComponentList:
    meter = dataclasses.replace(components.components[-1], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(components, components=(*components.components[:-1], meter))


def test_pinned_component_must_not_change() -> None:
    previous = load_components(EXAMPLE)
    check_pinned(previous, previous=previous)
    # an unpinned component may change freely
    os_changed = dataclasses.replace(
        previous,
        components=(
            dataclasses.replace(previous.components[0], version="4.3.0"),
            *previous.components[1:],
        ),
    )
    check_pinned(os_changed, previous=previous)
    for changes, what in [
        ({"version": "2.2.0"}, "acme-meter-fw version 2.1.0 -> 2.2.0"),
        ({"sha256": "b" * 64}, "acme-meter-fw sha256 408ec5a2"),
        ({"pinned": False}, "acme-meter-fw pinned True -> False"),
    ]:
        with pytest.raises(PinnedComponentChanged, match=what):
            check_pinned(_with(previous, **changes), previous=previous)
    gone = dataclasses.replace(previous, components=previous.components[:-1])
    with pytest.raises(PinnedComponentChanged, match="acme-meter-fw is missing"):
        check_pinned(gone, previous=previous)
