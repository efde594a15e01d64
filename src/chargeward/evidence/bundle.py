"""The files of a release an evidence pack carries: ``manifest.json``, the signing
certificate and, when the bundle holds them, its supply-chain documents.

    files = read_bundle(Path("acme-1.2.0.cwb"))
    files.release_id, sorted(files.supply)

The bundle gets the release module's structural checks, and each document must match the
digest its manifest lists (:func:`~chargeward.release.verify.read_documents`); nothing in it
is trusted here: the pack shows what the release says, and the signatures let a reader
check it with ``chargeward release verify``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from chargeward.release.manifest import ATTESTATION_NAMES, PROVENANCE_NAME
from chargeward.release.verify import read_documents

# Supply-chain members a bundle may carry; the pack lists the missing ones as such.
# The provenance is never inside the bundle (it names the bundle): it comes from the server.
SUPPLY_MEMBERS = (*ATTESTATION_NAMES, PROVENANCE_NAME)


@dataclass(frozen=True)
class ReleaseFiles:
    """A release's signed files (from its bundle or the server) and supply-chain documents."""

    manifest: bytes  # manifest.json, byte for byte
    certificate: bytes  # signing-certificate.pem
    source: str  # where they came from
    supply: dict[str, bytes] = field(default_factory=dict)

    @property
    def release_id(self) -> str:
        return hashlib.sha256(self.manifest).hexdigest()


def read_bundle(path: Path) -> ReleaseFiles:
    """Read ``path`` (:class:`BundleError` or :class:`NotFound` if it is not a bundle)."""
    # The release module's structural checks; documents must match the manifest's digests.
    manifest, certificate, supply = read_documents(path)
    return ReleaseFiles(manifest.to_json(), certificate, f"bundle {path.name}", supply)
