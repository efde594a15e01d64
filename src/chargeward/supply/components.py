"""A release's component list: what the firmware is made of, declared next to its images.

The file (TOML, or JSON when named ``*.json``) names the release and its components, each
with the libraries inside it::

    [release]
    name = "acme-ac22"
    version = "4.2.0"
    supplier = "ACME Charging Ltd"

    [[components]]
    kind = "metering-firmware"          # see COMPONENT_KINDS
    name = "meter-fw"
    version = "2.1.0"
    purl = "pkg:generic/acme/meter-fw@2.1.0"
    licence = "LicenseRef-ACME-Proprietary"
    image = "meter-fw.bin"              # optional: file beside the list, hashed and checked
    hashes = { sha256 = "..." }         # required unless an image is named
    pinned = true                       # certified: must not change between releases

    [[components.libraries]]
    name = "mbedtls"
    version = "3.5.2"
    purl = "pkg:github/Mbed-TLS/mbedtls@3.5.2"
    licence = "Apache-2.0 OR GPL-2.0-or-later"
    cpe = "cpe:2.3:a:arm:mbed_tls:3.5.2:*:*:*:*:*:*:*"   # optional, like hashes

Reading::

    components = load_components(Path("4.2.0/components.toml"))
    previous = load_components(Path("4.1.0/components.toml"))
    check_pinned(components, previous=previous)

:func:`parse_components` is the I/O-free core: it takes the bytes and, to check images, a
function that returns the SHA-256 of a named image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from license_expression import ExpressionError, get_spdx_licensing

from chargeward.errors import ChargewardError, PinnedComponentChanged, SupplyChainError
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.supply._fields import Fields, read_document, read_input

#: Component kinds and the CycloneDX component type each becomes in the SBOM.
COMPONENT_KINDS: dict[str, str] = {
    "controller-os": "operating-system",
    "charging-application": "application",
    "ui": "application",
    "modem-firmware": "firmware",
    "metering-firmware": "firmware",
    "bootloader": "firmware",
    "firmware": "firmware",
    "application": "application",
}

_SPDX = get_spdx_licensing()


@dataclass(frozen=True)
class Library:
    """A third-party or in-house library built into a component."""

    name: str
    version: str
    purl: str
    licence: str
    sha256: str | None = None
    cpe: str | None = None


@dataclass(frozen=True)
class Component:
    """One separately built part of the firmware, usually one image."""

    kind: str
    name: str
    version: str
    purl: str
    licence: str
    sha256: str
    image: str | None = None
    pinned: bool = False
    libraries: tuple[Library, ...] = ()


@dataclass(frozen=True)
class ComponentList:
    """A release and everything it contains.  ``source`` names the file it came from."""

    name: str
    version: str
    supplier: str
    components: tuple[Component, ...]
    source: str = "components"

    def packages(self) -> Iterator[tuple[Component, Library | None]]:
        """Every component, then each of its libraries, in declaration order."""
        for component in self.components:
            yield component, None
            for library in component.libraries:
                yield component, library


def _licence(fields: Fields, key: str) -> str:
    value = fields.text(key)
    try:
        parsed = _SPDX.parse(value, validate=False, strict=True)
    except ExpressionError as e:
        raise fields.error(key, f"not an SPDX licence expression: {e}") from e
    unknown = [k for k in _SPDX.unknown_license_keys(parsed) if not k.startswith("LicenseRef-")]
    if parsed is None or unknown:
        raise fields.error(key, f"unknown SPDX licence id {', '.join(unknown) or value!r}")
    normalized: str = parsed.render()  # canonical case and spacing: "mit or x" -> "MIT OR X"
    return normalized


def _purl(fields: Fields, version: str) -> str:
    """The canonical purl, carrying ``version`` (added if the purl has none)."""
    purl = fields.purl("purl")
    if purl.version is not None and purl.version != version:
        raise fields.error("purl", f"version {purl.version!r} differs from version {version!r}")
    canonical: str = purl._replace(version=version).to_string()
    return canonical


def _library(fields: Fields) -> Library:
    fields.only("name", "version", "purl", "licence", "hashes", "cpe")
    version = fields.text("version")
    hashes = fields.table("hashes")
    cpe = fields.optional_text("cpe")
    if cpe is not None and not cpe.startswith(("cpe:2.3:", "cpe:/")):
        raise fields.error("cpe", "must be a CPE 2.3 name (cpe:2.3:...) or a CPE URI (cpe:/...)")
    if hashes is not None:
        hashes.only("sha256")
    return Library(
        name=fields.text("name"),
        version=version,
        purl=_purl(fields, version),
        licence=_licence(fields, "licence"),
        sha256=hashes.sha256("sha256") if hashes else None,
        cpe=cpe,
    )


def _image_sha256(
    fields: Fields, declared: str | None, image_sha256: Callable[[str], str] | None
) -> str:
    image = fields.optional_text("image")
    if image is not None and (image in (".", "..") or "/" in image or "\\" in image):
        raise fields.error("image", "must be a file name beside the component list, not a path")
    if image is None or image_sha256 is None:
        if declared is None:
            raise fields.error("hashes.sha256", "missing (declare it or name an image)")
        return declared
    try:
        actual = image_sha256(image)
    except ChargewardError as e:
        raise fields.error("image", str(e)) from e
    if declared is not None and declared != actual:
        raise fields.error("hashes.sha256", f"does not match image {image} (sha256 {actual})")
    return actual


def _unique(fields: Fields, key: str, names: list[tuple[str, str]]) -> None:
    seen: dict[str, int] = {}
    for i, (name, purl) in enumerate(names):
        for value in (f"name {name!r}", f"purl {purl}"):
            if value in seen:
                raise fields.error(f"{key}[{i}]", f"duplicate {value} (as {key}[{seen[value]}])")
            seen[value] = i


def _component(fields: Fields, image_sha256: Callable[[str], str] | None) -> Component:
    fields.only(
        "kind", "name", "version", "purl", "licence", "hashes", "image", "pinned", "libraries"
    )
    kind = fields.text("kind")
    if kind not in COMPONENT_KINDS:
        raise fields.error("kind", f"unknown kind {kind!r}; one of {', '.join(COMPONENT_KINDS)}")
    hashes = fields.table("hashes")
    if hashes is not None:
        hashes.only("sha256")
    version = fields.text("version")
    tables = fields.tables("libraries")
    libraries = [_library(t) for t in tables]
    _unique(fields, "libraries", [(lib.name, lib.purl) for lib in libraries])
    return Component(
        kind=kind,
        name=fields.text("name"),
        version=version,
        purl=_purl(fields, version),
        licence=_licence(fields, "licence"),
        sha256=_image_sha256(fields, hashes.sha256("sha256") if hashes else None, image_sha256),
        image=fields.optional_text("image"),
        pinned=fields.flag("pinned"),
        libraries=tuple(libraries),
    )


def parse_components(
    data: bytes, source: str, *, image_sha256: Callable[[str], str] | None = None
) -> ComponentList:
    """Parse a component list.  ``source`` names the file in errors and picks TOML or JSON.

    With ``image_sha256`` (image file name -> hex SHA-256), each named image is hashed and
    must match a declared ``hashes.sha256``; without it declared hashes are taken as given.
    """
    doc = read_document(data, source, max_bytes=DEFAULT_FORMAT_LIMITS.component_list_bytes)
    doc.only("release", "components")
    release = doc.table("release", required=True)
    assert release is not None
    release.only("name", "version", "supplier")
    tables = doc.tables("components", required=True)
    if not tables:
        raise doc.error("components", "a release needs at least one component")
    components = [_component(t, image_sha256) for t in tables]
    _unique(doc, "components", [(c.name, c.purl) for c in components])
    return ComponentList(
        name=release.text("name"),
        version=release.text("version"),
        supplier=release.text("supplier"),
        components=tuple(components),
        source=source,
    )


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in chunks; a missing file is a :class:`SupplyChainError`."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError as e:
        raise SupplyChainError(f"cannot read {path}: {e.strerror}") from e
    return digest.hexdigest()


def load_components(path: Path) -> ComponentList:
    """Read and parse the component list at ``path``, hashing the images beside it."""
    data = read_input(path, DEFAULT_FORMAT_LIMITS.component_list_bytes)
    return parse_components(
        data, str(path), image_sha256=lambda name: file_sha256(path.parent / name)
    )


def check_pinned(components: ComponentList, *, previous: ComponentList) -> None:
    """Refuse a release in which a component pinned in ``previous`` changed or disappeared.

    A pinned (certified, e.g. MID metering) component must keep its version, purl and image
    hash and stay pinned; re-certification means starting from a new baseline on purpose.
    """
    current = {c.name: c for c in components.components}
    problems = []
    for old in previous.components:
        new = current.get(old.name)
        if not old.pinned:
            continue
        if new is None:
            problems.append(f"{old.name} is missing")
            continue
        problems += [
            f"{old.name} {what} {before} -> {after}"
            for what, before, after in (
                ("version", old.version, new.version),
                ("purl", old.purl, new.purl),
                ("sha256", old.sha256, new.sha256),
                ("pinned", old.pinned, new.pinned),
            )
            if before != after
        ]
    if problems:
        raise PinnedComponentChanged(
            f"{components.source}: pinned components changed since {previous.name} "
            f"{previous.version}: {'; '.join(problems)}"
        )
