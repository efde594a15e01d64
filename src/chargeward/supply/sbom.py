"""CycloneDX 1.6 SBOM of a release, built from its component list; validated strictly.

The release is ``metadata.component`` (type firmware, supplier), each component a firmware,
operating-system or application component with its purl, SPDX licence and SHA-256, each
library a library component; the dependency graph is release -> components -> libraries.

Reproducible: the serial number is a UUID5 of the release digest and the timestamp is
``created`` (default: ``SOURCE_DATE_EPOCH``), so the same inputs give the same bytes::

    sbom = build_sbom(components, release_digest="9f2c...", created=None)
    validate_sbom(sbom)                              # SupplyChainError if not valid
    sbom_components(sbom)[0]
    # -> SbomPackage(name='acme-linux', version='4.2.0', purl='pkg:generic/acme/acme-linux@4.2.0')
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from cyclonedx.contrib.hash.factories import HashTypeFactory
from cyclonedx.contrib.license.exceptions import InvalidSpdxLicenseException
from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.model import Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component as CdxComponent
from cyclonedx.model.component import ComponentType
from cyclonedx.model.contact import OrganizationalEntity
from cyclonedx.model.license import License, LicenseExpression
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from packageurl import PackageURL

from chargeward.errors import ConfigError, SupplyChainError
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.supply._fields import read_input
from chargeward.supply.components import COMPONENT_KINDS, Component, ComponentList, Library

SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"
_SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://chargeward.dev/ns/sbom")
_DIGEST = re.compile(r"[0-9a-f]{64}")


class SbomPackage(NamedTuple):
    name: str
    version: str
    purl: str


def created_from_environment(environ: Mapping[str, str] = os.environ) -> dt.datetime:
    """``SOURCE_DATE_EPOCH`` as a UTC time if set (reproducible builds), else the clock."""
    epoch = environ.get(SOURCE_DATE_EPOCH)
    if epoch is None:
        return dt.datetime.now(dt.UTC).replace(microsecond=0)
    try:
        return dt.datetime.fromtimestamp(int(epoch, 10), dt.UTC)
    except (ValueError, OverflowError, OSError) as e:
        raise ConfigError(f"{SOURCE_DATE_EPOCH}={epoch!r} is not seconds since 1970") from e


def _licence(expression: str) -> License:
    try:
        return LicenseFactory().make_with_id(expression)
    except InvalidSpdxLicenseException:
        return LicenseExpression(expression)  # an expression, or a LicenseRef-


def _library(component: Component, library: Library) -> CdxComponent:
    return CdxComponent(
        type=ComponentType.LIBRARY,
        name=library.name,
        version=library.version,
        bom_ref=f"component:{component.name}/library:{library.name}",
        purl=PackageURL.from_string(library.purl),
        licenses=[_licence(library.licence)],
        hashes=[HashTypeFactory().from_hashlib_alg("sha256", library.sha256)]
        if library.sha256
        else [],
        cpe=library.cpe,
    )


def _component(component: Component) -> CdxComponent:
    properties = [Property(name="chargeward:kind", value=component.kind)]
    if component.image:
        properties.append(Property(name="chargeward:image", value=component.image))
    if component.pinned:
        properties.append(Property(name="chargeward:pinned", value="true"))
    return CdxComponent(
        type=ComponentType(COMPONENT_KINDS[component.kind]),
        name=component.name,
        version=component.version,
        bom_ref=f"component:{component.name}",
        purl=PackageURL.from_string(component.purl),
        licenses=[_licence(component.licence)],
        hashes=[HashTypeFactory().from_hashlib_alg("sha256", component.sha256)],
        properties=properties,
    )


def build_sbom(
    components: ComponentList, release_digest: str, created: dt.datetime | None = None
) -> bytes:
    """The release's CycloneDX 1.6 JSON SBOM, validated before it is returned.

    ``release_digest`` (64 hex digits) names the release; ``created`` (timezone-aware)
    defaults to :func:`created_from_environment`.
    """
    if not _DIGEST.fullmatch(release_digest):
        raise ConfigError("the release digest must be 64 lower-case hexadecimal digits")
    if created is None:
        created = created_from_environment()
    elif created.tzinfo is None:
        raise ConfigError("created must be a timezone-aware datetime")
    release = CdxComponent(
        type=ComponentType.FIRMWARE,
        name=components.name,
        version=components.version,
        bom_ref=f"release:{components.name}@{components.version}",
        supplier=OrganizationalEntity(name=components.supplier),
    )
    bom = Bom(
        serial_number=uuid.uuid5(_SERIAL_NAMESPACE, release_digest),
        metadata=BomMetaData(
            component=release,
            timestamp=created.astimezone(dt.UTC).replace(microsecond=0),
            properties=[Property(name="chargeward:release-digest", value=release_digest)],
        ),
    )
    parts = []
    for component in components.components:
        part = _component(component)
        libraries = [_library(component, lib) for lib in component.libraries]
        bom.components.update([part, *libraries])
        bom.register_dependency(part, libraries)
        for library in libraries:
            bom.register_dependency(library, [])
        parts.append(part)
    bom.register_dependency(release, parts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library warns about things validation checks
        text = make_outputter(bom, OutputFormat.JSON, SchemaVersion.V1_6).output_as_string(indent=2)
    data = (text + "\n").encode()
    validate_sbom(data)
    return data


def validate_sbom(data: bytes, source: str = "SBOM") -> None:
    """Check ``data`` against the CycloneDX 1.6 JSON schema (strict: no unknown fields)."""
    if len(data) > DEFAULT_FORMAT_LIMITS.sbom_bytes:
        raise SupplyChainError(f"{source}: larger than {DEFAULT_FORMAT_LIMITS.sbom_bytes} bytes")
    try:
        document = json.loads(data)
    except ValueError as e:
        raise SupplyChainError(f"{source}: not JSON: {e}") from e
    if not isinstance(document, dict) or document.get("specVersion") != "1.6":
        raise SupplyChainError(f"{source}: not a CycloneDX 1.6 document (specVersion)")
    # Imported here: jsonschema's format checkers take about a second to import, which every
    # CLI command and server start would otherwise pay.
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode())
    if error is not None:
        detail = error.data
        where = ".".join(str(p) for p in getattr(detail, "absolute_path", ())) or "(document)"
        message = getattr(detail, "message", str(detail))
        raise SupplyChainError(f"{source}: {where}: {message}")


def read_sbom(path: Path) -> bytes:
    """The bytes of the SBOM file at ``path`` (size-capped), not yet validated."""
    return read_input(path, DEFAULT_FORMAT_LIMITS.sbom_bytes)


def _walk(components: Any) -> Iterator[dict[str, Any]]:
    for component in components or []:
        yield component
        yield from _walk(component.get("components"))


def sbom_components(data: bytes, source: str = "SBOM") -> list[SbomPackage]:
    """``(name, version, purl)`` of every component with a purl, after validating ``data``."""
    validate_sbom(data, source)
    document = json.loads(data)
    return [
        SbomPackage(c["name"], c.get("version", ""), c["purl"])
        for c in _walk(document.get("components"))
        if "purl" in c
    ]
