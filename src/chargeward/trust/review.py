"""What an approver checks before signing a targets proposal.

An approver signs the *whole* targets metadata, so a proposal must be exactly the published,
verified targets plus the release under review — nothing slipped in, nothing altered — with
the next version and an expiry the policy allows (the approver's own clock decides):

    published = fetch_published_targets(server + "/tuf/", trusted_root)
    review_proposal(proposal, published, expected, now=now)

Everything but ``version``, ``expires`` and ``targets`` (``spec_version``, ``delegations``,
any other field) must equal the published metadata; the only targets that may be added or
changed are the release's own (``expected``: a newer CRL replaces the published one).

``fetch_published_targets`` uses python-tuf's client with the approver's own trusted root, so
a server cannot hide extra targets in the "already published" part of a proposal.

A proposal that also carries tenant roles (customer-locked releases, ADR 0026) is reviewed
with :func:`review_files` against :func:`fetch_published`, which loads every published tenant
role with the approver's token: each role file must be the published one plus the release's
own targets under that tenant's prefix (or public customer-locked targets moved in unchanged),
and the top-level delegations the published ones plus one delegation per tenant role with the
root's approver keys and threshold.  :class:`Review` says what each role file adds, so the
approver sees the customer, release and models of everything signed.
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
from tuf.api.exceptions import DownloadError, DownloadHTTPError, RepositoryError
from tuf.api.metadata import Metadata, Root, TargetFile, Targets
from tuf.ngclient import FetcherInterface, Updater

from chargeward.errors import TransportError, TrustError
from chargeward.model.targets import (
    FIRMWARE_PREFIX,
    TENANT_PREFIX,
    TENANT_ROLE_PREFIX,
    tenant_id,
    tenant_of_path,
    tenant_path,
)
from chargeward.publish.expiry import ExpiryPolicy
from chargeward.publish.tenant_roles import is_tenant_role, tenant_delegations

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


# -- proposals that carry tenant roles (customer-locked releases, ADR 0026) ------------------


@dataclass(frozen=True)
class Published:
    """The verified published repository as an approver sees it: the (newest trusted) root,
    the top-level targets and every tenant role they delegate to."""

    root: Root
    targets: Targets
    roles: dict[str, Targets]


class _ClientFetcher(FetcherInterface):
    """python-tuf downloads through the approver's API client (its bearer token, so the
    server answers the tenant roles, and its TLS settings)."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def _fetch(self, url: str) -> Iterator[bytes]:
        r = self._client.get(url)
        if r.status_code != 200:
            raise DownloadHTTPError(f"{url}: HTTP {r.status_code}", r.status_code)
        return iter([r.content])


def fetch_published(
    tuf_url: str, trusted_root: bytes, *, client: httpx.Client | None = None
) -> Published:
    """Refresh the repository at ``tuf_url`` from ``trusted_root`` with python-tuf and load
    every tenant role the top-level targets delegate to (``client``: an HTTP client carrying
    the approver's token, which the server must allow to read every tenant role)."""
    base = tuf_url.rstrip("/") + "/"
    with tempfile.TemporaryDirectory(prefix="chargeward-review-") as tmp:
        updater = Updater(
            metadata_dir=tmp,
            metadata_base_url=base + "metadata/",
            target_base_url=base + "targets/",
            bootstrap=trusted_root,
            fetcher=_ClientFetcher(client) if client is not None else None,
        )
        try:
            updater.refresh()
        except DownloadError as e:
            raise TransportError(f"cannot fetch the repository at {base}: {e}") from e
        except RepositoryError as e:
            raise TrustError(f"the published repository does not verify: {e}") from e
        top = Metadata[Targets].from_bytes((Path(tmp) / "targets.json").read_bytes()).signed
        root = Metadata[Root].from_bytes((Path(tmp) / "root.json").read_bytes()).signed
        roles: dict[str, Targets] = {}
        for name in (top.delegations.roles or {}) if top.delegations is not None else ():
            if not is_tenant_role(name):
                continue
            tid = name.removeprefix(TENANT_ROLE_PREFIX)
            try:  # a path only this role is trusted for: python-tuf loads and verifies it
                updater.get_targetinfo(f"{TENANT_PREFIX}{tid}/{FIRMWARE_PREFIX}-/-/-")
            except DownloadError as e:
                raise TransportError(
                    f"cannot read the published tenant role {name}: your API token must hold "
                    f"releases:read of the manufacturer ({e})"
                ) from e
            except RepositoryError as e:
                raise TrustError(f"the published tenant role {name} does not verify: {e}") from e
            md = Metadata[Targets].from_bytes((Path(tmp) / f"{quote(name, '')}.json").read_bytes())
            roles[name] = md.signed
        return Published(root, top, roles)


@dataclass(frozen=True)
class RoleReview:
    """What one tenant role file of a proposal changes."""

    role: str
    version: int  # the proposed version
    new: bool  # a delegation the published targets do not have yet
    customers: tuple[str, ...]  # named by the role's targets (custom ``customer``)
    added: tuple[str, ...]  # paths of the release under review
    moved: tuple[str, ...]  # paths moved here from the public top-level targets
    listed: int  # targets the role lists in all


@dataclass(frozen=True)
class Review:
    """What a proposal changes: top-level paths added or replaced, public customer-locked
    paths moved into a tenant role, and each tenant role file."""

    changed: list[str]
    moved_out: list[str]
    roles: dict[str, RoleReview]


def _customer(tf: TargetFile) -> str | None:
    custom = tf.unrecognized_fields.get("custom")
    customer = custom.get("customer") if isinstance(custom, dict) else None
    return customer if isinstance(customer, str) else None


def _check_delegations(
    proposal: Targets, roles: Mapping[str, Metadata[Targets]], published: Published
) -> None:
    """The proposal's delegations must be the published ones with one delegation per tenant
    role (the root's approver keys and threshold, terminating, that tenant's prefix only),
    keep every published tenant role, and come with exactly one role file per tenant role."""
    mine = proposal.delegations
    names = [n for n in (mine.roles or {}) if is_tenant_role(n)] if mine is not None else []
    dropped = sorted(set(published.roles) - set(names))
    if dropped:
        raise TrustError(f"proposal drops the published tenant role {dropped[0]}")
    tids = sorted(n.removeprefix(TENANT_ROLE_PREFIX) for n in names)
    if any(_TENANT_ID.fullmatch(t) is None for t in tids):
        raise TrustError("proposal delegates to a tenant role with a malformed name")
    want = tenant_delegations(published.root, published.targets.delegations, tids)
    if mine != want or (
        mine is not None and want is not None and list(mine.roles or {}) != list(want.roles or {})
    ):
        raise TrustError("proposal changes the delegations")
    missing = sorted(set(names) - set(roles))
    if missing:
        raise TrustError(f"proposal lacks the role file of {missing[0]}")
    extra = sorted(set(roles) - set(names))
    if extra:
        raise TrustError(f"proposal carries a role file for {extra[0]}, which it does not delegate")


def review_files(
    proposal: Metadata[Targets],
    roles: Mapping[str, Metadata[Targets]],
    published: Published,
    expected: Mapping[str, TargetFile],
    *,
    now: dt.datetime,
    policy: ExpiryPolicy | None = None,
) -> Review:
    """Refuse a proposal (top-level targets and tenant role files) that is not ``published``
    + ``expected`` (+ the move of public customer-locked targets into their tenant roles),
    each file with the next version and a policy expiry at ``now``; returns what changes.

    Nothing may be added to a tenant role but the release's own targets (``expected``, under
    the tenant prefix) or a target moved from the public top-level targets with identical
    contents; nothing published may be removed or altered."""
    policy = policy or ExpiryPolicy()
    signed = proposal.signed
    top = published.targets
    if signed.version != top.version + 1:
        raise TrustError(
            f"proposal is targets version {signed.version}, but version "
            f"{top.version} is published: fetch the proposal again"
        )
    why = policy.check_targets_expiry(signed.expires, now)
    if why is not None:
        raise TrustError(f"proposal refused: {why}")
    _check_delegations(signed, roles, published)
    frame, base = _frame(signed), _frame(top)
    frame.pop("delegations", None)  # checked above
    base.pop("delegations", None)
    changed_fields = sorted(k for k in {*frame, *base} if frame.get(k) != base.get(k))
    if changed_fields:
        raise TrustError(
            f"proposal changes {', '.join(changed_fields)} of the published targets metadata"
        )
    by_file: dict[str | None, dict[str, TargetFile]] = {}
    for path, tf in expected.items():
        by_file.setdefault(tenant_of_path(path), {})[path] = tf
    public_expected = by_file.get(None, {})
    # Public customer-locked targets an older version listed: moved into their tenant role.
    moving: dict[str, TargetFile] = {}  # tenant path -> the published public target
    moved_out = []
    replaced = []
    for path, old in top.targets.items():
        new = signed.targets.get(path)
        if new is None:
            customer = _customer(old)
            if customer is None or tenant_of_path(path) is not None:
                raise TrustError(f"proposal removes the published target {path}")
            moving[tenant_path(customer, path)] = old
            moved_out.append(path)
            continue
        if _same(old, new):
            continue
        want = public_expected.get(path)
        if want is None or not _same(want, new):
            raise TrustError(f"proposal alters the published target {path}")
        replaced.append(path)  # e.g. a newer CRL replacing the published one
    added = sorted(set(signed.targets) - set(top.targets))
    for path in added:
        if tenant_of_path(path) is not None or path.startswith(TENANT_PREFIX):
            raise TrustError(f"proposal lists the customer-locked {path} publicly")
        want = public_expected.get(path)
        if want is None:
            raise TrustError(f"proposal adds {path}, which is not part of this release")
        if not _same(want, signed.targets[path]):
            raise TrustError(f"proposal lists {path} with other contents than the release")
    missing = sorted(set(public_expected) - set(signed.targets))
    reviews = {}
    for name, md in sorted(roles.items()):
        tid = name.removeprefix(TENANT_ROLE_PREFIX)
        reviews[name] = _review_role(
            name, md.signed, published.roles.get(name), by_file.get(tid, {}), moving, now, policy
        )
        missing += sorted(set(by_file.get(tid, {})) - set(md.signed.targets))
    stranded = sorted(
        p for p in moving if p not in (roles.get(_role_of(p)) or _EMPTY).signed.targets
    )
    if stranded:
        raise TrustError(f"proposal removes the published target behind {stranded[0]}")
    missing += sorted(
        p
        for tid, paths in by_file.items()
        if tid is not None
        for p in paths
        if _role_of(p) not in roles
    )
    if missing:
        raise TrustError(f"proposal lacks {', '.join(sorted(set(missing)))} of this release")
    return Review(sorted([*added, *replaced]), sorted(moved_out), reviews)


_EMPTY = Metadata(Targets())
_TENANT_ID = re.compile(r"^[0-9a-f]{32}$")


def _role_of(path: str) -> str:
    return f"{TENANT_ROLE_PREFIX}{tenant_of_path(path)}"


def _review_role(
    name: str,
    role: Targets,
    published: Targets | None,
    expected: Mapping[str, TargetFile],
    moving: Mapping[str, TargetFile],
    now: dt.datetime,
    policy: ExpiryPolicy,
) -> RoleReview:
    tid = name.removeprefix(TENANT_ROLE_PREFIX)
    want_version = (published.version if published is not None else 0) + 1
    if role.version != want_version:
        raise TrustError(
            f"proposal's {name} is version {role.version}, but version {want_version - 1} is "
            "published: fetch the proposal again"
        )
    why = policy.check_targets_expiry(role.expires, now)
    if why is not None:
        raise TrustError(f"proposal's {name} refused: {why}")
    fresh = Targets(version=1, expires=role.expires)
    fresh.spec_version = role.spec_version
    base = _frame(published if published is not None else fresh)
    frame = _frame(role)
    changed_fields = sorted(k for k in {*frame, *base} if frame.get(k) != base.get(k))
    if changed_fields:
        raise TrustError(f"proposal changes {', '.join(changed_fields)} of {name}")
    old_targets = published.targets if published is not None else {}
    for path, old in old_targets.items():
        new = role.targets.get(path)
        if new is None:
            raise TrustError(f"proposal removes the published target {path} from {name}")
        if not _same(old, new):
            raise TrustError(f"proposal alters the published target {path} of {name}")
    added, moved = [], []
    for path in sorted(set(role.targets) - set(old_targets)):
        new = role.targets[path]
        if tenant_of_path(path) != tid:
            raise TrustError(f"proposal lists {path} in {name}, outside its prefix")
        if path in expected:
            if not _same(expected[path], new):
                raise TrustError(f"proposal lists {path} with other contents than the release")
            added.append(path)
        elif path in moving:
            if not _same(moving[path], new):
                raise TrustError(f"proposal moves {path} into {name} with other contents")
            moved.append(path)
        else:
            raise TrustError(f"proposal adds {path} to {name}, which is not part of this release")
    customers = sorted({c for tf in role.targets.values() if (c := _customer(tf)) is not None})
    for customer in customers:
        if tenant_id(customer) != tid:
            raise TrustError(f"{name} lists a release of customer {customer}, who is not its own")
    return RoleReview(
        name,
        role.version,
        published is None,
        tuple(customers),
        tuple(added),
        tuple(moved),
        len(role.targets),
    )
