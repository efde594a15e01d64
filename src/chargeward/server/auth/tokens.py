"""Scoped API tokens, for scripts and CI: minted by a logged-in user, limited to scopes.

    minted = await mint(s, alice, "ci-upload", ["releases:read", "releases:upload"],
                        expires_in=30 * 86400, now=now)
    minted.token   # cwt_..., shown once; the server keeps only its SHA-256

A token acts as its creator (the audit log names the user), with the scopes it was given and
never more than the creator's role allows *now*; a role change, password change, TOTP reset
or disable of the user revokes every token they made (ADR 0028).  Scopes beyond the
creator's permissions are refused, and a token cannot mint tokens (that would let it outlive
its own expiry).  Tokens made on the server host (``chargeward token create NAME --role
ROLE``, the ``admin`` token written at first start) act under their own name with a role;
the audit log marks their entries ``"principal": "token"``, and they own only the tokens
they minted (a user of the same name never does).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.errors import Conflict, NotFound
from chargeward.server.auth import passwords
from chargeward.server.auth.accounts import (
    Refusal,
    check_role,
    enrolment_required,
    invalid,
    user_named,
)
from chargeward.server.auth.roles import PERMISSIONS, Principal
from chargeward.server.store.tables import ApiToken

MAX_LIFETIME = dt.timedelta(days=365)
MIN_LIFETIME = dt.timedelta(minutes=1)
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


@dataclass(frozen=True)
class TokenView:
    id: int
    name: str
    owner: str | None
    role: str | None
    scopes: list[str] | None  # None: everything the role allows
    created_by: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


@dataclass(frozen=True)
class MintedToken:
    token: str
    view: TokenView


def _view(row: ApiToken) -> TokenView:
    scopes = sorted(row.scopes["scopes"]) if row.scopes else None
    return TokenView(
        row.id,
        row.name,
        row.owner,
        row.role,
        scopes,
        row.created_by,
        row.created_at,
        row.expires_at,
        row.revoked_at,
    )


def _check_name(name: str) -> None:
    if not TOKEN_NAME.fullmatch(name):
        raise invalid("name", "token name must be 1-100 characters: letters, digits, . _ @ -")


async def _unique(s: AsyncSession, name: str) -> None:
    """Refuse a name taken by a token, or by a user account in any case: a token without an
    owner acts under its own name, so one named ``bob`` would upload and approve as bob."""
    if (await s.scalars(select(ApiToken.id).where(ApiToken.name == name))).first() is not None:
        raise Conflict(f"an API token named {name!r} exists")
    if await user_named(s, name):
        raise Conflict(
            f"{name!r} is the name of a user account: a token acts under its own name, so it "
            "cannot take a user's; choose another name"
        )


async def create_service_token(
    s: AsyncSession, name: str, role: str, *, actor: str, now: dt.datetime
) -> str:
    """A token acting as ``name`` with ``role`` (made on the server host; shown once)."""
    _check_name(name)
    check_role(role)
    await _unique(s, name)
    token = passwords.generate_token()
    s.add(
        ApiToken(
            name=name,
            token_sha256=passwords.token_digest(token),
            created_at=now,
            role=role,
            created_by=actor,
        )
    )
    await audit.record(
        s, actor=actor, action="token.create", target=name, details={"role": role}, now=now
    )
    return token


async def mint(
    s: AsyncSession,
    creator: Principal,
    name: str,
    scopes: Iterable[str],
    *,
    expires_in: int,
    now: dt.datetime,
) -> MintedToken:
    """A token for ``creator`` limited to ``scopes``, expiring in ``expires_in`` seconds."""
    if creator.kind == "token":
        raise Refusal(403, "forbidden", "an API token cannot create tokens: log in to do so")
    if creator.totp_enrolment_required:
        raise enrolment_required()
    _check_name(name)
    wanted = frozenset(scopes)
    if not wanted:
        raise invalid("scopes", "a token needs at least one scope")
    if unknown := sorted(wanted - PERMISSIONS):
        raise invalid("scopes", f"unknown scope(s): {', '.join(unknown)}")
    if beyond := sorted(wanted - creator.permissions):
        raise Refusal(
            403,
            "forbidden",
            f"scope(s) beyond your own permissions: {', '.join(beyond)}",
            field="scopes",
        )
    lifetime = dt.timedelta(seconds=expires_in)
    if not MIN_LIFETIME <= lifetime <= MAX_LIFETIME:
        raise invalid("expires_in", f"expires_in must be 60-{int(MAX_LIFETIME.total_seconds())} s")
    await _unique(s, name)
    token = passwords.generate_token()
    expires = now + lifetime
    row = ApiToken(
        name=name,
        token_sha256=passwords.token_digest(token),
        created_at=now,
        # A user's token acts as the user; a host token's as its name, with its role.
        owner=creator.name if creator.kind == "session" else None,
        role=None if creator.kind == "session" else creator.role,
        scopes={"scopes": sorted(wanted)},
        expires_at=expires,
        created_by=creator.name,
    )
    s.add(row)
    await s.flush()
    await audit.record(
        s,
        actor=creator.name,
        action="token.create",
        target=name,
        details={"scopes": sorted(wanted), "expires_at": expires.isoformat()},
        now=now,
    )
    return MintedToken(token, _view(row))


def _owned_by(principal: Principal) -> ColumnElement[bool]:
    """The caller's own tokens: a user's act as the user (``owner``); a host token's are the
    ones it minted (no owner, ``created_by`` its name).  A user never owns a host token's
    tokens, even one of the same name left from before names were kept apart."""
    if principal.host:
        return and_(ApiToken.owner.is_(None), ApiToken.created_by == principal.name)
    return ApiToken.owner == principal.name


def _owns(principal: Principal, row: ApiToken) -> bool:
    if principal.host:
        return row.owner is None and row.created_by == principal.name
    return row.owner == principal.name


async def list_tokens(s: AsyncSession, principal: Principal) -> list[TokenView]:
    """The caller's tokens; every token for ``users:manage``."""
    q = select(ApiToken).order_by(ApiToken.id)
    if not principal.can("users:manage"):
        q = q.where(_owned_by(principal))
    return [_view(r) for r in (await s.scalars(q)).all()]


async def revoke(
    s: AsyncSession, principal: Principal, token_id: int, *, now: dt.datetime
) -> TokenView:
    row = await s.get(ApiToken, token_id)
    own = row is not None and _owns(principal, row)
    if row is None or not (own or principal.can("users:manage")):
        raise NotFound(f"no API token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = now
        await audit.record(s, actor=principal.name, action="token.revoke", target=row.name, now=now)
    return _view(row)


async def create_token(
    s: AsyncSession, name: str, *, actor: str, now: dt.datetime, role: str = "admin"
) -> str:
    """A token acting as ``name`` with ``role`` (see :func:`create_service_token`)."""
    return await create_service_token(s, name, role, actor=actor, now=now)
