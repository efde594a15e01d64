"""The supply-chain documents a release bundle carries, made in one step before it is built.

:func:`release_documents` runs the vulnerability gate over the declared components and, if it
passes, returns the SBOM, the scan report and (when risks were accepted) the OpenVEX document,
named as the bundle members they become (:mod:`chargeward.release.manifest`).  A refused gate
raises :class:`~chargeward.errors.GateRefused` listing every blocking finding, so no bundle is
ever built around a release the gate refused.

    components = load_components(Path("release/components.toml"))
    made = release_documents(components, load_advisories(Path("osv")), allowlist,
                             threshold=Severity.HIGH, now=now)
    sorted(made.documents)
    # -> ['sbom.cdx.json', 'vulnerability-report.json']
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from chargeward.errors import InvalidValue
from chargeward.release.manifest import SBOM_NAME, SCAN_REPORT_NAME, VEX_NAME
from chargeward.supply.advisories import AdvisorySet
from chargeward.supply.allowlist import Allowlist
from chargeward.supply.components import Component, ComponentList, Library, file_sha256
from chargeward.supply.gate import GateResult, evaluate, report_json
from chargeward.supply.sbom import build_sbom
from chargeward.supply.severity import Severity
from chargeward.supply.vex import openvex


def release_digest(components: ComponentList) -> str:
    """A stable name for the release's content (the SBOM's serial number derives from it):
    SHA-256 of its name, version and each component's name, version and image digest."""
    content = {
        "name": components.name,
        "version": components.version,
        "components": sorted([c.name, c.version, c.sha256] for c in components.components),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ReleaseDocuments:
    gate: GateResult
    documents: dict[str, bytes]  # bundle member name -> bytes


def release_documents(
    components: ComponentList,
    advisories: AdvisorySet,
    allowlist: Allowlist,
    *,
    threshold: Severity,
    now: dt.datetime,
    sbom_created: dt.datetime | None = None,
    author: str | None = None,
) -> ReleaseDocuments:
    """Gate the release, then make its SBOM, scan report and VEX (see the module notes).

    ``now`` is when the gate decides (accepted risks expire); ``sbom_created`` is the SBOM's
    timestamp (default ``$SOURCE_DATE_EPOCH`` or the clock, for reproducible SBOMs).
    """
    result = evaluate(components, advisories, allowlist, threshold, now)
    result.raise_if_refused()
    documents = documents_for(components, result, sbom_created=sbom_created, author=author)
    return ReleaseDocuments(result, documents)


def documents_for(
    components: ComponentList,
    gate: GateResult,
    *,
    sbom_created: dt.datetime | None = None,
    author: str | None = None,
) -> dict[str, bytes]:
    """The documents of a release whose gate passed (``gate`` as :func:`evaluate` gave it)."""
    if gate.refused:
        raise InvalidValue("documents are made only for a release the gate passed")
    documents = {
        SBOM_NAME: build_sbom(components, release_digest(components), sbom_created),
        SCAN_REPORT_NAME: report_json(gate),
    }
    if gate.accepted:
        documents[VEX_NAME] = openvex(gate, author=author or components.supplier)
    return documents


def image_components(
    name: str,
    version: str,
    supplier: str,
    images: Mapping[str, Path],
    libraries: Sequence[Library] = (),
    *,
    licence: str = "LicenseRef-Proprietary",
) -> ComponentList:
    """A component list for firmware images that need no hand-written list: each image one
    ``firmware`` component (hashed from its file) with ``libraries`` built into every one.

    For simple products and for demonstrations; real releases declare their components in a
    file (:func:`~chargeward.supply.components.load_components`).
    """
    vendor = re.sub(r"[^a-z0-9]+", "-", supplier.lower()).strip("-") or "vendor"
    return ComponentList(
        name=name,
        version=version,
        supplier=supplier,
        components=tuple(
            Component(
                kind="firmware",
                name=component,
                version=version,
                purl=f"pkg:generic/{vendor}/{component}@{version}",
                licence=licence,
                sha256=file_sha256(path),
                image=path.name,
                libraries=tuple(libraries),
            )
            for component, path in sorted(images.items())
        ),
        source=f"{name} {version} (images)",
    )
