"""The TUF targets of a release: each image listed once per hardware model it supports.

Each target's custom fields carry the image's OCPP signature, so every image of a release
(also those OCPP never carries) is covered by both trust layers, the list of the release's
components, so a charger notices one the repository does not list, and, when the release has
one, the SHA-256 of its SBOM, so the approvers' threshold signature covers the SBOM too.

One function, used by the server when it proposes a release and by an approver's CLI when it
checks the proposal against the bundle in hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tuf.api.metadata import TargetFile

from chargeward.model.targets import TargetCustom, firmware_target_path
from chargeward.release.manifest import SBOM_NAME
from chargeward.release.verify import VerifiedBundle


@dataclass(frozen=True)
class ImageFacts:
    component: str
    sha256: str
    length: int
    signature: str  # the OCPP firmware signature (base64), as in the manifest


def release_targets(
    *,
    version: str,
    security_version: int,
    models: Sequence[str],
    release_class: str,
    customer: str | None,
    images: Iterable[ImageFacts],
    sbom_sha256: str | None = None,
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
        ).to_dict()
        for model in models:
            path = firmware_target_path(model, version, image.component)
            out[path] = TargetFile(
                length=image.length,
                hashes={"sha256": image.sha256},
                path=path,
                unrecognized_fields={"custom": custom},
            )
    return out


def bundle_targets(bundle: VerifiedBundle) -> dict[str, TargetFile]:
    """The targets of a verified bundle (what an approver expects the release to add)."""
    m = bundle.manifest
    return release_targets(
        version=m.version,
        security_version=m.security_version,
        models=m.hardware_models,
        release_class=m.release_class,
        customer=m.customer,
        images=[ImageFacts(i.component, i.sha256, i.length, i.signature) for i in bundle.images],
        sbom_sha256=sbom.sha256 if (sbom := m.attestation(SBOM_NAME)) is not None else None,
    )
