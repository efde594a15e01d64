"""Signed releases for local simulations: a throw-away manufacturer PKI and one bundle per
version, with the SBOM and scan report that publication requires.

    >>> made = make_releases(Path("work"), ["1.0.0", "1.1.0"], image_bytes=32 << 10)
    ...                                                                 # doctest: +SKIP
    >>> made.bundles["1.1.0"]                                           # doctest: +SKIP
    PosixPath('work/sim-1.1.0.cwb')
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chargeward.demo import DEMO_LIBRARIES, make_pki
from chargeward.release.bundle import build_bundle
from chargeward.supply.advisories import advisory_set
from chargeward.supply.allowlist import Allowlist
from chargeward.supply.attest import image_components, release_documents
from chargeward.supply.severity import Severity


@dataclass(frozen=True)
class Releases:
    root_pem: Path
    passphrase: str  # protects the generated keys of this run only
    bundles: dict[str, Path]


def make_releases(
    work: Path, versions: Sequence[str], *, image_bytes: int, models: Sequence[str]
) -> Releases:
    """Security versions rise with the order of ``versions`` (1, 2, ...)."""
    (work / "pki").mkdir(parents=True, exist_ok=True)
    passphrase = secrets.token_urlsafe(18)
    signer, cert, root_pem = make_pki(work / "pki", passphrase.encode())
    bundles = {}
    for sv, version in enumerate(versions, start=1):
        payload = work / f"firmware-{version}.bin"
        payload.write_bytes(os.urandom(image_bytes) + f"simulated firmware {version}\n".encode())
        components = image_components(
            "sim-firmware", version, "Demo Chargers Ltd", {"main": payload}, DEMO_LIBRARIES
        )
        made = release_documents(
            components, advisory_set([]), Allowlist(), threshold=Severity.HIGH, now=_now()
        )
        out = work / f"sim-{version}.cwb"
        build_bundle(
            payload,
            out,
            version=version,
            security_version=sv,
            hardware_models=list(models),
            signer=signer,
            signing_certificate=cert,
            attestations=made.documents,
        )
        bundles[version] = out
    return Releases(root_pem, passphrase, bundles)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
