"""Operator accounts: users, their roles and customers, and the refusals of auth.

    enrolment = await create_user(s, "alice", "a long passphrase", "approver",
                                  actor="admin", now=now)
    enrolment.totp_uri    # shown once: the authenticator app is set up from it

Logins and sessions are in :mod:`chargeward.server.auth.sessions`, the lockout of failed
logins in :mod:`chargeward.server.auth.lockout`, TOTP codes and enrolment in
:mod:`chargeward.server.auth.totp`; roles and permissions in :mod:`chargeward.server.auth.roles`;
scoped API tokens in :mod:`chargeward.server.auth.tokens`.

- Passwords: argon2id, at least 12 characters and not containing the username; never logged.
- A role change, a password change, a TOTP reset or disabling the account ends every session
  and API token of the user (``user.credentials_revoked`` in the audit log).
- Names: ``admin`` and ``system`` are reserved, and a user never takes a token's name.
- Customer accounts: a user created with a ``customer`` (a charge point operator's staff) may
  only be an operator or an auditor and sees and acts on that customer's stations alone
  (:mod:`chargeward.server.auth.tenancy`); the customer cannot be changed afterwards.

Refusals are :class:`Refusal` errors carrying the HTTP status and stable error code; the audit
log gets the detailed reason (``auth.login_failed``), the caller a uniform message (:data:`TOLD`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from dataclasses import dataclass

import pyotp
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.errors import BundleError, ChargewardError, Conflict, NotFound
from chargeward.model.targets import check_customer
from chargeward.server.auth import passwords
from chargeward.server.auth.roles import PRIVILEGED_ROLES, ROLES
from chargeward.server.store.tables import ApiToken, User, UserSession

ISSUER = "Chargeward"
USERNAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
# Names no user may take: the first-start host token's and the audit log's own actor.
RESERVED_NAMES = frozenset({audit.SYSTEM, "admin"})
# The roles a customer account may have: releases, approvals and users are the manufacturer's.
CUSTOMER_ROLES = ("operator", "auditor")

# What the caller is told for each reason a login or a TOTP code is refused.
TOLD = {
    "unknown user": "invalid username or password",
    "wrong password": "invalid username or password",
    "disabled": "account disabled",
    "totp missing": "TOTP code required for this account",
    "totp wrong": "invalid TOTP code",
    "totp replayed": "invalid TOTP code",
    "totp not enrolled": "account has no TOTP enrolled: ask an administrator",
}


class Refusal(ChargewardError):
    """An authentication or authorization refusal: HTTP ``status`` and stable ``code``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field
        self.retry_after = retry_after


def unauthenticated(message: str) -> Refusal:
    return Refusal(401, "unauthenticated", message)


def invalid(field: str, message: str) -> Refusal:
    return Refusal(422, "validation_error", message, field=field)


def enrolment_required() -> Refusal:
    return Refusal(
        403,
        "totp_enrolment_required",
        "this account's role needs TOTP: enrol an authenticator (POST /api/v1/auth/totp/"
        "enrolment, `chargeward user totp-enrol` or the dashboard), then log in again",
    )


@dataclass(frozen=True)
class Enrolment:
    """A new or changed account; the TOTP secret is shown to the user once, then never."""

    username: str
    role: str
    totp_secret: str | None
    totp_uri: str | None
    # privileged without TOTP: the user enrols at the next login (ADR 0028)
    totp_enrolment_required: bool = False


@dataclass(frozen=True)
class UserView:
    username: str
    role: str
    disabled: bool
    totp_enrolled: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    customer: str | None = None


# -- users ----------------------------------------------------------------------------------


def check_role(role: str, customer: str | None = None) -> None:
    if role not in ROLES:
        raise invalid("role", f"unknown role {role!r}; roles are: {', '.join(ROLES)}")
    if customer is not None and role not in CUSTOMER_ROLES:
        raise invalid(
            "role",
            f"an account of customer {customer} can be {' or '.join(CUSTOMER_ROLES)}, not {role}",
        )


def new_secret(username: str) -> tuple[str, str]:
    """A new TOTP secret and its ``otpauth://`` URI for an authenticator app."""
    secret = pyotp.random_base32()
    return secret, pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def _enrol_totp(row: User) -> Enrolment:
    secret, uri = new_secret(row.username)
    row.totp_secret = secret
    row.totp_last_step = None
    return Enrolment(row.username, row.role, secret, uri)


async def user_named(s: AsyncSession, name: str) -> bool:
    """Is ``name`` a user's account name, in any case (usernames are lower case)?"""
    found = await s.scalars(select(User.id).where(User.username == name.lower()))
    return found.first() is not None


async def _token_named(s: AsyncSession, username: str) -> bool:
    """Is ``username`` the name of an API token, in any case (revoked ones too)?"""
    found = await s.scalars(select(ApiToken.id).where(func.lower(ApiToken.name) == username))
    return found.first() is not None


async def _user(s: AsyncSession, username: str) -> User:
    row = (await s.scalars(select(User).where(User.username == username))).first()
    if row is None:
        raise NotFound(f"no user {username!r}")
    return row


def _view(row: User) -> UserView:
    return UserView(
        row.username,
        row.role,
        row.disabled,
        row.totp_secret is not None,
        row.created_at,
        row.updated_at,
        row.customer,
    )


async def create_user(
    s: AsyncSession,
    username: str,
    password: str,
    role: str,
    *,
    actor: str,
    now: dt.datetime,
    customer: str | None = None,
) -> Enrolment:
    """A new account; privileged roles get a TOTP secret (in the returned enrolment only).
    With ``customer`` the account sees and acts on that customer's stations only."""
    if not USERNAME.fullmatch(username):
        raise invalid(
            "username",
            "username must be 2-64 characters: a lowercase letter, then a-z 0-9 . _ -",
        )
    try:
        check_customer(customer)
    except BundleError as e:
        raise invalid("customer", str(e)) from e
    check_role(role, customer)
    try:
        password_hash = await asyncio.to_thread(passwords.hash_user_password, password, username)
    except ValueError as e:
        raise invalid("password", str(e)) from e
    if (await s.scalars(select(User.id).where(User.username == username))).first() is not None:
        raise Conflict(f"user {username!r} exists")
    if await _token_named(s, username):
        raise Conflict(
            f"{username!r} is the name of an API token: a token acts under its own name, so a "
            "user cannot take it; choose another username"
        )
    if username in RESERVED_NAMES:
        raise invalid("username", f"{username!r} is a reserved name; choose another username")
    row = User(
        username=username,
        password_hash=password_hash,
        role=role,
        customer=customer,
        disabled=False,
        created_at=now,
        updated_at=now,
    )
    enrolment = (
        _enrol_totp(row) if role in PRIVILEGED_ROLES else Enrolment(username, role, None, None)
    )
    s.add(row)
    await audit.record(
        s,
        actor=actor,
        action="user.create",
        target=username,
        details={"role": role, "customer": customer, "totp": enrolment.totp_secret is not None},
        now=now,
    )
    return enrolment


async def list_users(s: AsyncSession) -> list[UserView]:
    return [_view(r) for r in (await s.scalars(select(User).order_by(User.username))).all()]


async def get_user(s: AsyncSession, username: str) -> UserView:
    return _view(await _user(s, username))


async def set_role(
    s: AsyncSession, username: str, role: str, *, actor: str, now: dt.datetime
) -> Enrolment:
    """Change a role, ending the user's sessions and API tokens (a session must never gain
    rights it did not log in for).  A user made privileged without TOTP enrols it at the next
    login, before any privileged request (ADR 0028); the administrator never sees the secret."""
    row = await _user(s, username)
    check_role(role, row.customer)
    before = row.role
    row.role = role
    row.updated_at = now
    needs_totp = role in PRIVILEGED_ROLES and row.totp_secret is None
    await audit.record(
        s,
        actor=actor,
        action="user.role",
        target=username,
        details={"from": before, "to": role, "totp_enrolment_required": needs_totp},
        now=now,
    )
    if before != role:
        await end_credentials(s, username, "user.role", actor=actor, now=now)
    return Enrolment(username, role, None, None, needs_totp)


async def set_disabled(
    s: AsyncSession, username: str, disabled: bool, *, actor: str, now: dt.datetime
) -> UserView:
    """Disable (ending every session and API token for good) or re-enable an account."""
    row = await _user(s, username)
    row.disabled = disabled
    row.updated_at = now
    await audit.record(
        s,
        actor=actor,
        action="user.disable" if disabled else "user.enable",
        target=username,
        now=now,
    )
    if disabled:
        await end_credentials(s, username, "user.disable", actor=actor, now=now)
    return _view(row)


async def set_password(
    s: AsyncSession, username: str, password: str, *, actor: str, now: dt.datetime
) -> None:
    row = await _user(s, username)
    try:
        row.password_hash = await asyncio.to_thread(
            passwords.hash_user_password, password, username
        )
    except ValueError as e:
        raise invalid("password", str(e)) from e
    row.updated_at = now
    await audit.record(s, actor=actor, action="user.password", target=username, now=now)
    await end_credentials(s, username, "user.password", actor=actor, now=now)


async def reset_totp(s: AsyncSession, username: str, *, actor: str, now: dt.datetime) -> UserView:
    """Forget the user's TOTP (a lost or exposed authenticator), ending their sessions and API
    tokens; a privileged user enrols a new one at the next login (ADR 0028)."""
    row = await _user(s, username)
    row.totp_secret = None
    row.totp_last_step = None
    row.totp_pending_secret = None
    row.updated_at = now
    await audit.record(s, actor=actor, action="user.totp_reset", target=username, now=now)
    await end_credentials(s, username, "user.totp_reset", actor=actor, now=now)
    return _view(row)


async def end_credentials(
    s: AsyncSession, username: str, reason: str, *, actor: str, now: dt.datetime
) -> None:
    """Revoke every open session of ``username`` and every API token acting as them (those
    they minted), audited as ``user.credentials_revoked`` with the counts."""
    sessions = await s.execute(
        update(UserSession)
        .where(UserSession.username == username, UserSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    tokens = await s.execute(
        update(ApiToken)
        .where(ApiToken.owner == username, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await audit.record(
        s,
        actor=actor,
        action="user.credentials_revoked",
        target=username,
        details={"reason": reason, "sessions": _count(sessions), "tokens": _count(tokens)},
        now=now,
    )


def _count(result: object) -> int:
    rowcount = getattr(result, "rowcount", None)
    return rowcount if isinstance(rowcount, int) and rowcount >= 0 else 0


def needs_enrolment(user: User) -> bool:
    """A privileged account without TOTP: it may do nothing privileged until it enrols."""
    return user.role in PRIVILEGED_ROLES and user.totp_secret is None


async def enabled_user(s: AsyncSession, username: str) -> User:
    user = (await s.scalars(select(User).where(User.username == username))).first()
    if user is None or user.disabled:
        raise unauthenticated("account disabled")
    return user
