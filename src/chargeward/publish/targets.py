"""The TUF targets of a release: each image listed once per hardware model it supports.

Each target's custom fields carry the image's OCPP signature, so every image of a release
(also those OCPP never carries) is covered by both trust layers, the list of the release's
components, so a charger notices one the repository does not list, and, when the release has
them, the SHA-256 of its SBOM and of its vulnerability scan report, so the approvers'
threshold signature covers the SBOM and the report (with every accepted risk in it) too.

A release may also carry binary deltas the server made from images the fleet runs
(:mod:`chargeward.server.rollout.deltas`): each is listed beside the image it rebuilds, with both
ends' digests (:class:`~chargeward.model.targets.DeltaCustom`), so the approvers' threshold
signature covers the delta like any target.

A release locked to a customer is listed under that customer's opaque prefix
(``tenants/<id>/firmware/...``, :func:`~chargeward.model.targets.tenant_path`), i.e. in the
customer's delegated targets role (ADR 0026).

One function, used by the server when it proposes a release and by an approver's CLI when it
checks the proposal against the bundle in hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tuf.api.metadata import TargetFile

from chargeward.errors import BundleError
from chargeward.model.targets import (
    DeltaCustom,
    TargetCustom,
    delta_target_path,
    firmware_target_path,
    tenant_path,
)
from chargeward.release.manifest import SBOM_NAME, SCAN_REPORT_NAME
from chargeward.release.verify import VerifiedBundle


@dataclass(frozen=True)
class ImageFacts:
    component: str
    sha256: str
    length: int
    signature: str  # the OCPP firmware signature (base64), as in the manifest


@dataclass(frozen=True)
class DeltaFacts:
    """A delta rebuilding ``component`` of the release from that of release ``from_version``."""

    component: str
    from_version: str
    from_sha256: str
    from_length: int
    sha256: str  # of the delta file
    length: int


def release_targets(
    *,
    version: str,
    security_version: int,
    models: Sequence[str],
    release_class: str,
    customer: str | None,
    images: Iterable[ImageFacts],
    sbom_sha256: str | None = None,
    deltas: Iterable[DeltaFacts] = (),
    scan_report_sha256: str | None = None,
) -> dict[str, TargetFile]:
    listed = list(images)
    components = tuple(sorted(image.component for image in listed))
    out: dict[str, TargetFile] = {}
    for image in listed:
        custom = TargetCustom(
            models=tuple(models),
            version=version,
            security_version=security_version,
            component=image.component,
            release_class=release_class,
            customer=customer,
            sbom_sha256=sbom_sha256,
            signature=image.signature,
            components=components,
            scan_report_sha256=scan_report_sha256,
        ).to_dict()
        for model in models:
            path = tenant_path(customer, firmware_target_path(model, version, image.component))
            out[path] = TargetFile(
                length=image.length,
                hashes={"sha256": image.sha256},
                path=path,
                unrecognized_fields={"custom": custom},
            )
    by_component = {image.component: image for image in listed}
    for delta in deltas:
        rebuilt = by_component.get(delta.component)
        if rebuilt is None:
            raise BundleError(f"a delta for {delta.component!r}, which the release lacks")
        custom = DeltaCustom(
            component=delta.component,
            version=version,
            from_version=delta.from_version,
            from_sha256=delta.from_sha256,
            from_length=delta.from_length,
            to_sha256=rebuilt.sha256,
            to_length=rebuilt.length,
        ).to_dict()
        for model in models:
            path = tenant_path(
                customer, delta_target_path(model, version, delta.component, delta.from_version)
            )
            out[path] = TargetFile(
                length=delta.length,
                hashes={"sha256": delta.sha256},
                path=path,
                unrecognized_fields={"custom": custom},
            )
    return out


def bundle_targets(
    bundle: VerifiedBundle, deltas: Iterable[DeltaFacts] = ()
) -> dict[str, TargetFile]:
    """The targets of a verified bundle and the server's ``deltas`` for it (what an approver
    expects the release to add)."""
    m = bundle.manifest
    return release_targets(
        version=m.version,
        security_version=m.security_version,
        models=m.hardware_models,
        release_class=m.release_class,
        customer=m.customer,
        images=[ImageFacts(i.component, i.sha256, i.length, i.signature) for i in bundle.images],
        sbom_sha256=sbom.sha256 if (sbom := m.attestation(SBOM_NAME)) is not None else None,
        deltas=deltas,
        scan_report_sha256=(
            report.sha256 if (report := m.attestation(SCAN_REPORT_NAME)) is not None else None
        ),
    )
