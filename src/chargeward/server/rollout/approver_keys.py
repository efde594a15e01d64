"""The approver-key registry: which operator account holds each TUF targets (approver) key.

Keys must equal people.  The root metadata names each targets key's owner (a free-text label
the root key holders sign); the registry binds the key to one **account** (the name a user or
server-host token acts under), and every approval rule compares accounts
(:mod:`chargeward.trust.approval`).  Bindings are made where a root is made and signed, on the
server host, and audited:

    $ chargeward repo init ... --targets-key alice=file:alice.pem      # label alice -> alice
    $ chargeward repo rotate-root ... --add-targets-key dan=...        # the new root's keys
    $ chargeward repo register-keys --account "Carol S=carol"          # an older root's labels

    found = root_bindings(root, {"Carol S": "carol"})         # pure: refuses before writing
    await register(s, root.version, found, actor="ana", now=now)

A label names its account unless ``--account LABEL=ACCOUNT`` says otherwise.  Two keys bound to
one account are refused; a key no longer in the root's targets role is retired (its approvals
stop counting).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from securesystemslib.signer import Key
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from tuf.api.metadata import Root, Targets

from chargeward import audit
from chargeward.errors import ConfigError
from chargeward.limits import DEFAULT_SERVER_LIMITS
from chargeward.server.auth.tokens import TOKEN_NAME
from chargeward.server.store.tables import ApproverKey
from chargeward.trust.tuf_keys import check_people, key_owner


@dataclass(frozen=True)
class Binding:
    keyid: str
    label: str  # the owner named in the root metadata
    account: str


def root_bindings(root: Root, accounts: Mapping[str, str] | None = None) -> list[Binding]:
    """The binding of every targets key of ``root`` (see :func:`bindings`)."""
    return bindings([root.keys[k] for k in root.roles[Targets.type].keyids], accounts)


def bindings(keys: Sequence[Key], accounts: Mapping[str, str] | None = None) -> list[Binding]:
    """The binding of each targets key in ``keys``; ``accounts`` maps labels to accounts.

    :class:`~chargeward.errors.ConfigError` for a key without owner, an account name that no
    user or token could have, or two keys of one account (nothing is written).
    """
    accounts = accounts or {}
    check_people(Targets.type, keys, named=True)
    unused = set(accounts) - {key_owner(k) for k in keys}
    if unused:
        raise ConfigError(
            f"--account names no targets key of the root: {', '.join(sorted(unused))}"
        )
    out: list[Binding] = []
    held: dict[str, str] = {}
    for key in keys:
        label = key_owner(key)
        account = accounts.get(label, label)
        if (
            not TOKEN_NAME.fullmatch(account)
            or len(label) > DEFAULT_SERVER_LIMITS.approver_label_chars
            or len(key.keyid) > DEFAULT_SERVER_LIMITS.approver_keyid_chars
        ):
            raise ConfigError(
                f"targets key {key.keyid[:12]} is labelled {label!r}, which is not an account "
                f'name: map it with --account "{label}=ACCOUNT"'
            )
        if account in held:
            raise ConfigError(
                f"account {account} would hold two targets keys ({held[account][:12]} and "
                f"{key.keyid[:12]}): keys must equal people"
            )
        held[account] = key.keyid
        out.append(Binding(key.keyid, label, account))
    return out


async def bound_accounts(s: AsyncSession) -> dict[str, str]:
    """keyid -> account for every key in service (the ``accounts`` approval rules take)."""
    rows = await s.execute(
        select(ApproverKey.keyid, ApproverKey.account).where(ApproverKey.retired_at.is_(None))
    )
    return {keyid: account for keyid, account in rows.all()}


async def list_keys(s: AsyncSession) -> list[ApproverKey]:
    rows = await s.scalars(
        select(ApproverKey).order_by(ApproverKey.registered_at, ApproverKey.keyid)
    )
    return list(rows.all())


async def register(
    s: AsyncSession,
    root_version: int,
    found: list[Binding],
    *,
    actor: str,
    now: dt.datetime,
) -> None:
    """Bind ``found`` (every targets key of root ``root_version``), retire every other key, and
    audit ``repo.approver_keys_registered`` with the bindings and what changed."""
    rows = {r.keyid: r for r in (await s.scalars(select(ApproverKey))).all()}
    wanted = {b.keyid: b for b in found}
    changed: dict[str, str] = {}
    for b in found:
        row = rows.get(b.keyid)
        if row is None:
            s.add(
                ApproverKey(
                    keyid=b.keyid,
                    account=b.account,
                    label=b.label,
                    root_version=root_version,
                    registered_by=actor,
                    registered_at=now,
                )
            )
            changed[b.keyid] = f"bound to {b.account}"
            continue
        if (row.account, row.label, row.retired_at) != (b.account, b.label, None):
            was = "retired" if row.retired_at is not None else f"bound to {row.account}"
            changed[b.keyid] = f"bound to {b.account} (was {was})"
            row.account, row.label, row.retired_at = b.account, b.label, None
            row.registered_by, row.registered_at = actor, now
        row.root_version = root_version
    for keyid, row in rows.items():
        if keyid not in wanted and row.retired_at is None:
            row.retired_at = now
            changed[keyid] = f"retired (was bound to {row.account})"
    await s.flush()
    await audit.record(
        s,
        actor=actor,
        action="repo.approver_keys_registered",
        target=f"root v{root_version}",
        details={
            "keys": {b.keyid: {"account": b.account, "label": b.label} for b in found},
            "changed": changed,
        },
        now=now,
    )
