"""Building root and targets metadata for key ceremonies (pure: keys and times in, metadata out).

    root = new_root(RootPlan(root_keys=[k1, k2, k3], root_threshold=2,
                             targets_keys=[a, b, c], targets_threshold=2,
                             snapshot_key=s, timestamp_key=t), now=now)
    for signer in root_signers: root.sign(signer, append=True)

Root changes (rotation, a compromised key replaced, thresholds changed) produce version N+1,
which must then be signed by a threshold of the old root keys **and** of the new ones.

Keys must equal people (:func:`~chargeward.trust.tuf_keys.check_people`): a root or targets
role in which one owner holds two keys is refused, since python-tuf on the chargers would count
that person twice; every targets key names its owner.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from securesystemslib.signer import Key
from securesystemslib.signer import Signer as SslibSigner
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from chargeward.errors import ConfigError
from chargeward.publish.expiry import ExpiryPolicy, expiry_after
from chargeward.publish.repository import ImageRepository, OnlineSigners
from chargeward.trust.tuf_keys import check_root_people, key_owner


@dataclass(frozen=True)
class RootPlan:
    root_keys: Sequence[Key]
    root_threshold: int
    targets_keys: Sequence[Key]
    targets_threshold: int
    snapshot_key: Key
    timestamp_key: Key


@dataclass(frozen=True)
class RootChange:
    """What changes from one root version to the next; empty fields keep the old value."""

    add_root_keys: Sequence[Key] = ()
    remove_root_keys: Sequence[str] = ()  # keyids or owners
    root_threshold: int | None = None
    add_targets_keys: Sequence[Key] = ()
    remove_targets_keys: Sequence[str] = ()
    targets_threshold: int | None = None
    snapshot_key: Key | None = None
    timestamp_key: Key | None = None


def _check_role(name: str, keyids: Sequence[str], threshold: int) -> None:
    if len(set(keyids)) != len(keyids):
        raise ConfigError(f"a {name} key is listed twice")
    if threshold < 1:
        raise ConfigError(f"the {name} threshold must be at least 1")
    if threshold > len(keyids):
        raise ConfigError(f"the {name} threshold {threshold} is more than its {len(keyids)} key(s)")


def new_root(
    plan: RootPlan, *, now: dt.datetime, policy: ExpiryPolicy | None = None
) -> Metadata[Root]:
    """Root version 1 (unsigned), consistent snapshots on."""
    policy = policy or ExpiryPolicy()
    root = Root(expires=expiry_after(now, policy.root), consistent_snapshot=True)
    for role, keys, threshold in (
        (Root.type, plan.root_keys, plan.root_threshold),
        (Targets.type, plan.targets_keys, plan.targets_threshold),
        (Snapshot.type, [plan.snapshot_key], 1),
        (Timestamp.type, [plan.timestamp_key], 1),
    ):
        _check_role(role, [k.keyid for k in keys], threshold)
        for key in keys:
            root.add_key(key, role)
        root.roles[role].threshold = threshold
    check_root_people(root)
    return Metadata(root)


def _matches(key: Key, wanted: str) -> bool:
    return wanted in (key.keyid, key_owner(key)) or (
        len(wanted) >= 8 and key.keyid.startswith(wanted)
    )


def _replace_keys(
    root: Root, role: str, add: Sequence[Key], remove: Sequence[str], threshold: int | None
) -> None:
    current = [root.keys[k] for k in root.roles[role].keyids]
    for wanted in remove:
        hits = [k for k in current if _matches(k, wanted)]
        if not hits:
            raise ConfigError(f"no {role} key {wanted!r} to remove")
        for k in hits:
            root.revoke_key(k.keyid, role)
    for key in add:
        if key.keyid in root.roles[role].keyids:
            raise ConfigError(f"key {key.keyid[:12]} is already a {role} key")
        root.add_key(key, role)
    if threshold is not None:
        root.roles[role].threshold = threshold
    _check_role(role, root.roles[role].keyids, root.roles[role].threshold)


def _swap_online(root: Root, role: str, key: Key | None) -> None:
    if key is None:
        return
    for old in list(root.roles[role].keyids):
        root.revoke_key(old, role)
    root.add_key(key, role)


def next_root(
    current: Root, change: RootChange, *, now: dt.datetime, policy: ExpiryPolicy | None = None
) -> Metadata[Root]:
    """Root version N+1 with ``change`` applied and a renewed expiry (unsigned)."""
    policy = policy or ExpiryPolicy()
    root = Root.from_dict(copy.deepcopy(current.to_dict()))  # to_dict shares lists
    root.version = current.version + 1
    root.expires = expiry_after(now, policy.root)
    _replace_keys(
        root, Root.type, change.add_root_keys, change.remove_root_keys, change.root_threshold
    )
    _replace_keys(
        root,
        Targets.type,
        change.add_targets_keys,
        change.remove_targets_keys,
        change.targets_threshold,
    )
    _swap_online(root, Snapshot.type, change.snapshot_key)
    _swap_online(root, Timestamp.type, change.timestamp_key)
    check_root_people(root)
    return Metadata(root)


def empty_targets(*, now: dt.datetime, policy: ExpiryPolicy | None = None) -> Metadata[Targets]:
    policy = policy or ExpiryPolicy()
    return Metadata(Targets(expires=expiry_after(now, policy.targets)))


def role_keys(root: Root, role: str) -> list[Key]:
    return [root.keys[k] for k in root.roles[role].keyids]


def create_repository(
    repo: ImageRepository,
    *,
    root_signers: Sequence[SslibSigner],
    root_threshold: int,
    approver_signers: Sequence[SslibSigner],
    targets_threshold: int,
    online: OnlineSigners,
    now: dt.datetime,
    policy: ExpiryPolicy | None = None,
) -> Metadata[Root]:
    """The key ceremony: root v1 signed by every root signer, empty targets v1 signed by every
    approver signer, then the first snapshot and timestamp.  Returns root v1.

    The signers' keys define the roles, so a role's keys are exactly the signers given.
    """
    root = new_root(
        RootPlan(
            root_keys=[s.public_key for s in root_signers],
            root_threshold=root_threshold,
            targets_keys=[s.public_key for s in approver_signers],
            targets_threshold=targets_threshold,
            snapshot_key=online.snapshot.public_key,
            timestamp_key=online.timestamp.public_key,
        ),
        now=now,
        policy=policy,
    )
    for signer in root_signers:
        root.sign(signer, append=True)
    targets = empty_targets(now=now, policy=policy)
    for signer in approver_signers:
        targets.sign(signer, append=True)
    repo.initialize(root, targets, online, now=now)
    return root
