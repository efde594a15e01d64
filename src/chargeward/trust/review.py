"""What an approver checks before signing a targets proposal.

An approver signs the *whole* targets metadata, so a proposal must be exactly the published,
verified targets plus the release under review — nothing slipped in, nothing altered — with
the next version and an expiry the policy allows (the approver's own clock decides):

    >>> published = fetch_published_targets(server + "/tuf/", trusted_root)   # doctest: +SKIP
    >>> review_proposal(proposal, published, expected, now=now)             # doctest: +SKIP

Everything but ``version``, ``expires`` and ``targets`` (``spec_version``, ``delegations``,
any other field) must equal the published metadata; the only targets that may be added or
changed are the release's own (``expected``: a newer CRL replaces the published one).

``fetch_published_targets`` uses python-tuf's client with the approver's own trusted root, so
a server cannot hide extra targets in the "already published" part of a proposal.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tuf.api.exceptions import DownloadError, RepositoryError
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.ngclient import Updater

from chargeward.errors import TransportError, TrustError
from chargeward.publish.repository import ExpiryPolicy

_OWN_FIELDS = ("version", "expires", "targets")  # what a proposal may change


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


def _frame(targets: Targets) -> dict[str, object]:
    return {k: v for k, v in targets.to_dict().items() if k not in _OWN_FIELDS}


def review_proposal(
    proposal: Metadata[Targets],
    published: Targets,
    expected: Mapping[str, TargetFile],
    *,
    now: dt.datetime,
    policy: ExpiryPolicy | None = None,
) -> list[str]:
    """Refuse a proposal that is not ``published`` + ``expected`` with a policy expiry at
    ``now`` (:class:`~chargeward.errors.TrustError` says why); returns the changed paths."""
    signed = proposal.signed
    if signed.version != published.version + 1:
        raise TrustError(
            f"proposal is targets version {signed.version}, but version "
            f"{published.version} is published: fetch the proposal again"
        )
    why = (policy or ExpiryPolicy()).check_targets_expiry(signed.expires, now)
    if why is not None:
        raise TrustError(f"proposal refused: {why}")
    if signed.delegations != published.delegations:
        raise TrustError("proposal changes the delegations")
    frame, base = _frame(signed), _frame(published)
    changed = sorted(k for k in {*frame, *base} if frame.get(k) != base.get(k))
    if changed:
        raise TrustError(f"proposal changes {', '.join(changed)} of the published targets metadata")
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
