"""Taking an update as a binary delta from the running image (a Chargeward extension).

The CSMS may offer, in UpdateFirmware's ``customData`` (vendor ``org.chargeward``), a delta
that rebuilds the image ``location`` points at from the image this charger runs
(:mod:`chargeward.server.rollout.deltas`).  The charger then:

1. checks that it runs the delta's base (by SHA-256 of its running slot);
2. downloads the delta (resumable, like any firmware download);
3. with a TUF repository, checks the delta against its signed target: the same length and
   hash, made from this charger's running image, rebuilding the image with the digest the
   target names;
4. rebuilds the new image into the download area, checking the result's length and hash as
   it is written (:func:`chargeward.release.delta.apply_delta`);
5. goes on exactly as after a full download: the rebuilt file is checked against the OCPP
   signature and its own TUF target before anything is written to the inactive slot.

Anything that fails in 1-4 leaves nothing behind; the charger reports why and downloads the
full image from ``location``.  A delta the repository does not vouch for is also a security
event (someone served other bytes), but never a reason to stay on the old image.

    job = delta_offer(custom_data, model="AC22", max_bytes=1 << 29)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tuf.api.metadata import TargetFile

from chargeward.agent import download
from chargeward.crypto.signature import Digest
from chargeward.errors import BundleError, RepositoryRefused, TrustError
from chargeward.model.targets import DELTA_SUFFIX, FIRMWARE_PREFIX, DeltaCustom, tenant_path
from chargeward.ocpp.base import VENDOR_ID

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DeltaRefused(TrustError):
    """A delta offer or file this charger will not use (it downloads the full image)."""


@dataclass(frozen=True)
class DeltaJob:
    location: str
    sha256: str  # of the delta file
    length: int
    from_sha256: str  # the image it applies to
    target: str  # its TUF target path


def delta_offer(
    custom_data: object, *, model: str, max_bytes: int, customer: str | None = None
) -> DeltaJob | None:
    """The delta UpdateFirmware's ``customData`` offers (snake_case keys, as the OCPP layer
    hands them over), or None when there is none.  Raises DeltaRefused for an offer that is
    malformed: the update goes on with the full image.  The delta of a release locked to the
    charger's ``customer`` is listed under its tenant prefix (``tenants/<id>/firmware/<model>/``,
    ADR 0026); no other customer's prefix is accepted."""
    if not isinstance(custom_data, dict) or custom_data.get("vendor_id") != VENDOR_ID:
        return None
    offer: Any = custom_data.get("delta")
    if offer is None:
        return None
    if not isinstance(offer, dict):
        raise DeltaRefused("the delta offer is not an object")
    location, sha256, length = offer.get("location"), offer.get("sha256"), offer.get("length")
    base, target = offer.get("from_sha256"), offer.get("target")
    if not isinstance(location, str) or (problem := download.location_problem(location)):
        raise DeltaRefused(f"delta location refused: {problem or 'not a string'}")
    for name, value in (("sha256", sha256), ("from_sha256", base)):
        if not isinstance(value, str) or not _SHA256.fullmatch(value):
            raise DeltaRefused(f"delta {name} must be 64 lowercase hex digits")
    if isinstance(length, bool) or not isinstance(length, int) or not 0 < length <= max_bytes:
        raise DeltaRefused(f"delta length must be 1-{max_bytes} bytes")
    prefix = f"{FIRMWARE_PREFIX}{model}/"
    prefixes = (prefix,) if customer is None else (prefix, tenant_path(customer, prefix))
    if not isinstance(target, str) or not (
        target.startswith(prefixes) and target.endswith(DELTA_SUFFIX) and len(target) <= 256
    ):
        raise DeltaRefused(f"delta target must be a {DELTA_SUFFIX} file under {prefix}")
    assert isinstance(sha256, str)
    assert isinstance(base, str)
    return DeltaJob(location, sha256, length, base, target)


def check_delta_listing(info: TargetFile | None, job: DeltaJob, running: Digest) -> Digest:
    """The image digest the delta must rebuild, as the repository's signed target says.

    Raises RepositoryRefused when the repository does not list the delta, lists other bytes,
    or lists it for another base.
    """
    if info is None:
        raise RepositoryRefused("not-listed", f"the repository does not list {job.target}")
    if info.length != job.length or info.hashes.get("sha256") != job.sha256:
        raise RepositoryRefused("hash", f"{job.target} differs from what the repository lists")
    try:
        custom = DeltaCustom.from_dict(info.custom)
    except BundleError as e:
        raise RepositoryRefused("repository", f"{job.target}: {e}") from e
    if (custom.from_sha256, custom.from_length) != (running.sha256, running.length):
        raise RepositoryRefused("hash", f"{job.target} applies to another image than this one")
    return Digest(custom.to_sha256, custom.to_length)
