"""The files of a release an evidence pack carries: ``manifest.json``, the signing
certificate and, when the bundle holds them, its supply-chain documents.

    >>> files = read_bundle(Path("acme-1.2.0.cwb"))     # doctest: +SKIP
    >>> files.release_id, sorted(files.supply)          # doctest: +SKIP

The bundle gets the release module's structural checks (:func:`read_manifest`); nothing in
it is trusted here: the pack shows what the release says, and the signatures let a reader
check it with ``chargeward release verify``.
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from chargeward.errors import BundleError
from chargeward.release.archive import MAX_CERTIFICATE_BYTES, open_bundle, read_member
from chargeward.release.manifest import CERTIFICATE_NAME
from chargeward.release.verify import read_manifest

# Supply-chain members a bundle may carry; the pack lists the missing ones as such.
SUPPLY_MEMBERS = (
    "sbom.cdx.json",
    "vulnerability-report.json",
    "vex.openvex.json",
    "provenance.dsse.json",
)
MAX_SUPPLY_BYTES = 16 << 20


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


def _supply_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if not member.isreg():
        raise BundleError(f"member {member.name!r}: not a regular file")
    return read_member(tar, member, MAX_SUPPLY_BYTES)


def read_supply(tar: tarfile.TarFile) -> dict[str, bytes]:
    """The supply-chain members present in an open bundle, by name."""
    found: dict[str, bytes] = {}
    for member in tar:
        if member.name in SUPPLY_MEMBERS:
            if member.name in found:
                raise BundleError(f"member {member.name!r}: appears twice")
            found[member.name] = _supply_member(tar, member)
    return found


def read_bundle(path: Path) -> ReleaseFiles:
    """Read ``path`` (:class:`BundleError` or :class:`NotFound` if it is not a bundle)."""
    manifest = read_manifest(path)  # every structural check of the release module
    with open_bundle(path) as tar:
        try:
            certificate = read_member(tar, tar.getmember(CERTIFICATE_NAME), MAX_CERTIFICATE_BYTES)
            supply = read_supply(tar)
        except (KeyError, tarfile.TarError, OSError) as e:
            raise BundleError(f"cannot read bundle {path}: {e}") from e
    return ReleaseFiles(manifest.to_json(), certificate, f"bundle {path.name}", supply)
