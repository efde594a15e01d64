"""The TUF targets of a release: each image listed once per hardware model it supports.

The custom fields carry the release's facts and, when the release has one, the SHA-256 of its
SBOM, so the approvers' threshold signature covers the SBOM too.

One function, used by the server when it proposes a release and by an approver's CLI when it
checks the proposal against the bundle in hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tuf.api.metadata import TargetFile

from chargeward.model.targets import TargetCustom, firmware_target_path


@dataclass(frozen=True)
class ImageFacts:
    component: str
    sha256: str
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
) -> dict[str, TargetFile]:
    out: dict[str, TargetFile] = {}
    for image in images:
        custom = TargetCustom(
            models=tuple(models),
            version=version,
            security_version=security_version,
            component=image.component,
            release_class=release_class,
            customer=customer,
            sbom_sha256=sbom_sha256,
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
