"""What an approver checks before signing a targets proposal.

An approver signs the *whole* targets metadata, so a proposal must be exactly the published,
verified targets plus the release under review — nothing slipped in, nothing altered:

    >>> published = fetch_published_targets(server + "/tuf/", trusted_root)   # doctest: +SKIP
    >>> review_proposal(proposal, published, expected)                      # doctest: +SKIP

``fetch_published_targets`` uses python-tuf's client with the approver's own trusted root, so
a server cannot hide extra targets in the "already published" part of a proposal.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from tuf.api.exceptions import DownloadError, RepositoryError
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.ngclient import Updater

from chargeward.errors import TransportError, TrustError


def fetch_published_targets(tuf_url: str, trusted_root: bytes) -> Targets:
    """Refresh the repository at ``tuf_url`` from ``trusted_root``; the verified targets."""
    base = tuf_url.rstrip("/") + "/"
    with tempfile.TemporaryDirectory(prefix="chargeward-review-") as tmp:
        updater = Updater(
            metadata_dir=tmp,
            metadata_base_url=base + "metadata/",
            target_base_url=base + "targets/",
            bootstrap=trusted_root,
        )
        try:
            updater.refresh()
        except DownloadError as e:
            raise TransportError(f"cannot fetch the repository at {base}: {e}") from e
        except RepositoryError as e:
            raise TrustError(f"the published repository does not verify: {e}") from e
        md = Metadata[Targets].from_bytes((Path(tmp) / "targets.json").read_bytes())
        return md.signed


def _same(a: TargetFile, b: TargetFile) -> bool:
    return a.to_dict() == b.to_dict()


def review_proposal(
    proposal: Metadata[Targets], published: Targets, expected: Mapping[str, TargetFile]
) -> list[str]:
    """Refuse a proposal that is not ``published`` + ``expected``; returns the changed paths."""
    signed = proposal.signed
    if signed.version != published.version + 1:
        raise TrustError(
            f"proposal is targets version {signed.version}, but version "
            f"{published.version} is published: fetch the proposal again"
        )
    if signed.delegations != published.delegations:
        raise TrustError("proposal changes the delegations")
    replaced = []
    for path, old in published.targets.items():
        new = signed.targets.get(path)
        if new is None:
            raise TrustError(f"proposal removes the published target {path}")
        if _same(old, new):
            continue
        want = expected.get(path)
        if want is None or not _same(want, new):
            raise TrustError(f"proposal alters the published target {path}")
        replaced.append(path)  # e.g. a newer CRL replacing the published one
    added = sorted(set(signed.targets) - set(published.targets))
    for path in added:
        want = expected.get(path)
        if want is None:
            raise TrustError(f"proposal adds {path}, which is not part of this release")
        if not _same(want, signed.targets[path]):
            raise TrustError(f"proposal lists {path} with other contents than the release")
    missing = sorted(set(expected) - set(signed.targets))
    if missing:
        raise TrustError(f"proposal lacks {', '.join(missing)} of this release")
    return sorted([*added, *replaced])
