"""Signed releases for local simulations and the demo: a throw-away manufacturer PKI and one
bundle per version, each gated against OSV advisories and carrying the SBOM and scan report
that publication requires.

    made = make_releases(Path("work"), ["1.0.0", "1.1.0"], image_bytes=32 << 10)

    made.bundles["1.1.0"], made.gates["1.1.0"].packages_checked
    # -> (PosixPath('work/sim-1.1.0.cwb'), 3)
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chargeward.local import DEMO_LIBRARIES, make_pki
from chargeward.release.bundle import build_bundle
from chargeward.supply.advisories import AdvisorySet, advisory_set
from chargeward.supply.allowlist import Allowlist
from chargeward.supply.attest import image_components, release_documents
from chargeward.supply.gate import GateResult
from chargeward.supply.severity import Severity


@dataclass(frozen=True)
class Releases:
    root_pem: Path
    passphrase: str  # protects the generated keys of this run only
    bundles: dict[str, Path]
    gates: dict[str, GateResult] = field(default_factory=dict)
    release_ids: dict[str, str] = field(default_factory=dict)


def make_releases(
    work: Path,
    versions: Sequence[str],
    *,
    image_bytes: int,
    models: Sequence[str],
    advisories: AdvisorySet | None = None,
    change: float | None = None,
) -> Releases:
    """Security versions rise with the order of ``versions`` (1, 2, ...).  A release the
    gate refuses raises :class:`~chargeward.errors.GateRefused` (no bundle is written).

    Each image is random bytes; with ``change`` each later one is the one before with that
    share rewritten in a few places (a minor release, for deltas), else all new."""
    (work / "pki").mkdir(parents=True, exist_ok=True)
    passphrase = secrets.token_urlsafe(18)
    signer, cert, root_pem = make_pki(work / "pki", passphrase.encode())
    made = Releases(root_pem, passphrase, {})
    image = b""
    for sv, version in enumerate(versions, start=1):
        payload = work / f"firmware-{version}.bin"
        image = _next_image(image, image_bytes, change)
        payload.write_bytes(image + f"simulated firmware {version}\n".encode())
        components = image_components(
            "sim-firmware", version, "Demo Chargers Ltd", {"main": payload}, DEMO_LIBRARIES
        )
        docs = release_documents(
            components,
            advisories if advisories is not None else advisory_set([]),
            Allowlist(),
            threshold=Severity.HIGH,
            now=dt.datetime.now(dt.UTC),
        )
        out = work / f"sim-{version}.cwb"
        manifest = build_bundle(
            payload,
            out,
            version=version,
            security_version=sv,
            hardware_models=list(models),
            signer=signer,
            signing_certificate=cert,
            attestations=docs.documents,
        )
        made.bundles[version] = out
        made.gates[version] = docs.gate
        made.release_ids[version] = manifest.release_id
    return made


def _next_image(previous: bytes, size: int, change: float | None) -> bytes:
    if change is None or len(previous) != size:
        return os.urandom(size)
    image = bytearray(previous)
    patches = 8
    length = max(1, int(size * change) // patches)
    for i in range(patches):  # spread over the image, like code changed in a few modules
        at = (i * size) // patches
        image[at : at + length] = os.urandom(len(image[at : at + length]))
    return bytes(image)
