"""Operator accounts: users, login with a TOTP second factor, sessions, lockout.

    >>> enrolment = await create_user(s, "alice", "a long passphrase", "approver",
    ...                               actor="admin", now=now)              # doctest: +SKIP
    >>> enrolment.totp_uri    # shown once: the authenticator app is set up from it
    >>> outcome = await login(s, "alice", "a long passphrase", "492039",
    ...                       address="10.0.0.5", now=now)                 # doctest: +SKIP
    >>> principal = await authenticate(s, outcome.token, now=now)           # doctest: +SKIP

Roles and permissions are in :mod:`chargeward.server.roles`; scoped API tokens in
:mod:`chargeward.server.api_tokens`.

- Passwords: argon2id, at least 12 characters and not containing the username; never logged.
- TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, one step either side accepted) is required for
  every privileged role.  The newest accepted time-step is stored per user, and a code of that
  step or an older one is refused: a code seen over someone's shoulder cannot be replayed.
- Sessions: bearer tokens (``cws_...``, stored as SHA-256) valid 8 h, ended after 30 min idle
  or by logout.  The user's role is read on every request, so a role change or a disabled
  account takes effect at once.
- Lockout: 5 consecutive failures lock an account; 20 failures from one client address within
  15 min lock that address.  The first lock lasts 60 s and each further one twice as long (at
  most a day); a successful login clears the account's count.  Both are kept in the database,
  so every server process sees them.  Unknown usernames are counted like known ones.
- Customer accounts: a user created with a ``customer`` (a charge point operator's staff) may
  only be an operator or an auditor and sees and acts on that customer's stations alone
  (:mod:`chargeward.server.tenancy`); the customer cannot be changed afterwards.

Refusals are :class:`Refusal` errors carrying the HTTP status and stable error code; the audit
log gets the detailed reason (``auth.login_failed``), the caller a uniform message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import math
import re
from dataclasses import dataclass

import pyotp
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.errors import BundleError, ChargewardError, Conflict, NotFound
from chargeward.model.targets import check_customer
from chargeward.server import passwords
from chargeward.server.roles import (
    PRIVILEGED_ROLES,
    ROLES,
    Principal,
    permissions_of,
)
from chargeward.server.tables import ApiToken, LoginThrottle, User, UserSession
from chargeward.server.throttle import lock_length

SESSION_LIFETIME = dt.timedelta(hours=8)
SESSION_IDLE = dt.timedelta(minutes=30)
SESSION_TOUCH = dt.timedelta(seconds=60)  # last use is written at most this often
ACCOUNT_FAILURES = 5
ADDRESS_FAILURES = 20
ADDRESS_WINDOW = dt.timedelta(minutes=15)
FIRST_LOCK = dt.timedelta(seconds=60)
MAX_LOCK = dt.timedelta(days=1)
TOTP_STEP = 30
ISSUER = "Chargeward"
USERNAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
RESERVED_NAMES = frozenset({audit.SYSTEM})
# The roles a customer account may have: releases, approvals and users are the manufacturer's.
CUSTOMER_ROLES = ("operator", "auditor")


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


@dataclass(frozen=True)
class Enrolment:
    """A new or changed account; the TOTP secret is shown to the user once, then never."""

    username: str
    role: str
    totp_secret: str | None
    totp_uri: str | None


@dataclass(frozen=True)
class UserView:
    username: str
    role: str
    disabled: bool
    totp_enrolled: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    customer: str | None = None


@dataclass(frozen=True)
class LoginSession:
    token: str
    username: str
    role: str
    expires_at: dt.datetime
    idle_timeout: int  # seconds


# -- users ----------------------------------------------------------------------------------


def check_role(role: str, customer: str | None = None) -> None:
    if role not in ROLES:
        raise invalid("role", f"unknown role {role!r}; roles are: {', '.join(ROLES)}")
    if customer is not None and role not in CUSTOMER_ROLES:
        raise invalid(
            "role",
            f"an account of customer {customer} can be {' or '.join(CUSTOMER_ROLES)}, not {role}",
        )


def _enrol_totp(row: User) -> Enrolment:
    secret = pyotp.random_base32()
    row.totp_secret = secret
    row.totp_last_step = None
    uri = pyotp.TOTP(secret).provisioning_uri(name=row.username, issuer_name=ISSUER)
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
    if not USERNAME.match(username) or username in RESERVED_NAMES:
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
    """Change a role; a user becoming privileged without TOTP gets a secret (returned once)."""
    row = await _user(s, username)
    check_role(role, row.customer)
    before = row.role
    row.role = role
    row.updated_at = now
    enrolment = Enrolment(username, role, None, None)
    if role in PRIVILEGED_ROLES and row.totp_secret is None:
        enrolment = _enrol_totp(row)
    await audit.record(
        s,
        actor=actor,
        action="user.role",
        target=username,
        details={"from": before, "to": role, "totp_enrolled": enrolment.totp_secret is not None},
        now=now,
    )
    return enrolment


async def set_disabled(
    s: AsyncSession, username: str, disabled: bool, *, actor: str, now: dt.datetime
) -> UserView:
    """Disable (ending every session at once) or re-enable an account."""
    row = await _user(s, username)
    row.disabled = disabled
    row.updated_at = now
    if disabled:
        await s.execute(
            update(UserSession)
            .where(UserSession.username == username, UserSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    await audit.record(
        s,
        actor=actor,
        action="user.disable" if disabled else "user.enable",
        target=username,
        now=now,
    )
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


# -- login ----------------------------------------------------------------------------------


async def _throttle(s: AsyncSession, key: str) -> LoginThrottle:
    row = await s.get(LoginThrottle, key, with_for_update=True)
    if row is None:
        row = LoginThrottle(key=key, failures=0, lock_count=0)
        s.add(row)
    return row


def _locked_for(row: LoginThrottle, now: dt.datetime) -> int | None:
    if row.locked_until is None or row.locked_until <= now:
        return None
    return max(1, math.ceil((row.locked_until - now).total_seconds()))


def _count_failure(row: LoginThrottle, limit: int, now: dt.datetime, window: bool) -> None:
    if window and row.last_failure_at and now - row.last_failure_at > ADDRESS_WINDOW:
        row.failures = 0
    row.failures += 1
    row.last_failure_at = now
    if row.failures >= limit:
        row.lock_count += 1
        row.failures = 0
        lock = lock_length(row.lock_count, FIRST_LOCK.total_seconds(), MAX_LOCK.total_seconds())
        row.locked_until = now + dt.timedelta(seconds=lock)


def _totp_check(
    secret: str, code: str | None, last_step: int | None, now: dt.datetime
) -> int | str:
    """The accepted time-step, or why the code is refused."""
    if not code:
        return "totp missing"
    if not (len(code) == 6 and code.isdigit()):
        return "totp wrong"
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // TOTP_STEP
    for step in (current - 1, current, current + 1):  # RFC 6238 section 5.2: one step of drift
        if hmac.compare_digest(totp.at(step * TOTP_STEP), code):
            if last_step is not None and step <= last_step:
                return "totp replayed"
            return step
    return "totp wrong"


_OUTSIDE = {
    "unknown user": "invalid username or password",
    "wrong password": "invalid username or password",
    "disabled": "account disabled",
    "totp missing": "TOTP code required for this account",
    "totp wrong": "invalid TOTP code",
    "totp replayed": "invalid TOTP code",
    "totp not enrolled": "account has no TOTP enrolled: ask an administrator",
}


async def login(
    s: AsyncSession,
    username: str,
    password: str,
    totp: str | None,
    *,
    address: str,
    now: dt.datetime,
) -> LoginSession | Refusal:
    """Check a login; a refusal is *returned* so the caller commits the failure count."""
    account = await _throttle(s, f"user:{username[:150]}")
    client = await _throttle(s, f"addr:{address[:150]}")
    for row, what in ((account, "account locked"), (client, "too many failed logins from")):
        wait = _locked_for(row, now)
        if wait is not None:
            message = (
                f"account locked, retry after {wait} s"
                if row is account
                else f"too many failed logins from this address, retry after {wait} s"
            )
            await audit.record(
                s,
                actor=username[:100],
                action="auth.login_refused",
                target=username,
                details={"reason": what, "address": address, "retry_after": wait},
                now=now,
            )
            return Refusal(429, "rate_limited", message, retry_after=wait)
    user = (await s.scalars(select(User).where(User.username == username))).first()
    good = await asyncio.to_thread(
        passwords.verify_user_password, user.password_hash if user else None, password
    )
    reason: str | None = None
    step: int | None = None
    if user is None:
        reason = "unknown user"
    elif not good:
        reason = "wrong password"
    elif user.disabled:
        reason = "disabled"
    elif user.totp_secret is not None:
        checked = _totp_check(user.totp_secret, totp, user.totp_last_step, now)
        reason, step = (checked, None) if isinstance(checked, str) else (None, checked)
    elif user.role in PRIVILEGED_ROLES:
        reason = "totp not enrolled"
    if reason is not None or user is None:
        _count_failure(account, ACCOUNT_FAILURES, now, window=False)
        _count_failure(client, ADDRESS_FAILURES, now, window=True)
        await audit.record(
            s,
            actor=username[:100],
            action="auth.login_failed",
            target=username,
            details={"reason": reason, "address": address},
            now=now,
        )
        return unauthenticated(_OUTSIDE[reason or "unknown user"])
    account.failures, account.lock_count, account.locked_until = 0, 0, None
    if step is not None:
        user.totp_last_step = step
    token = passwords.generate_session_token()
    expires = now + SESSION_LIFETIME
    s.add(
        UserSession(
            token_sha256=passwords.token_digest(token),
            username=user.username,
            created_at=now,
            expires_at=expires,
            last_used_at=now,
        )
    )
    await audit.record(
        s,
        actor=user.username,
        action="auth.login",
        target=user.username,
        details={"address": address, "role": user.role},
        now=now,
    )
    return LoginSession(token, user.username, user.role, expires, int(SESSION_IDLE.total_seconds()))


async def confirm_totp(
    s: AsyncSession, principal: Principal, code: str, *, address: str, now: dt.datetime
) -> Refusal | None:
    """Step-up confirmation: ``code`` must be a fresh TOTP code of the logged-in user.

    Used where an action in the dashboard must be confirmed by the person at the keyboard
    (a release approval).  A wrong code counts towards the account's lockout like a failed
    login; each time-step is accepted once.  A refusal is *returned* so the caller commits
    the failure count.
    """
    if principal.kind != "session":
        return Refusal(400, "bad_request", "a TOTP confirmation needs a login session")
    account = await _throttle(s, f"user:{principal.name[:150]}")
    wait = _locked_for(account, now)
    if wait is not None:
        message = f"account locked, retry after {wait} s"
        return Refusal(429, "rate_limited", message, retry_after=wait)
    user = await _enabled_user(s, principal.name)
    if user.totp_secret is None:
        return Refusal(403, "forbidden", _OUTSIDE["totp not enrolled"])
    checked = _totp_check(user.totp_secret, code, user.totp_last_step, now)
    if isinstance(checked, str):
        _count_failure(account, ACCOUNT_FAILURES, now, window=False)
        await audit.record(
            s,
            actor=principal.name,
            action="auth.confirm_failed",
            target=principal.name,
            details={"reason": checked, "address": address},
            now=now,
        )
        return Refusal(403, "forbidden", f"confirmation refused: {_OUTSIDE[checked]}")
    user.totp_last_step = checked
    return None


async def logout(s: AsyncSession, principal: Principal, *, now: dt.datetime) -> None:
    if principal.kind != "session":
        raise Refusal(400, "bad_request", "only a login session can log out; revoke tokens")
    row = await s.get(UserSession, principal.credential_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = now
        await audit.record(
            s, actor=principal.name, action="auth.logout", target=principal.name, now=now
        )


# -- authentication of every API request ----------------------------------------------------


async def authenticate(s: AsyncSession, bearer: str, *, now: dt.datetime) -> Principal:
    """The principal behind a bearer token; :class:`Refusal` (401) with the reason otherwise."""
    digest = passwords.token_digest(bearer)
    if bearer.startswith("cws_"):
        session = (
            await s.scalars(select(UserSession).where(UserSession.token_sha256 == digest))
        ).first()
        if session is None:
            raise unauthenticated("invalid token")
        if session.revoked_at is not None:
            raise unauthenticated("session ended: log in again")
        if now >= session.expires_at or now - session.last_used_at >= SESSION_IDLE:
            raise unauthenticated("session expired: log in again")
        user = await _enabled_user(s, session.username)
        if now - session.last_used_at >= SESSION_TOUCH:
            session.last_used_at = now
        return Principal(
            user.username,
            user.role,
            "session",
            permissions_of(user.role),
            session.id,
            user.customer,
        )
    token = (await s.scalars(select(ApiToken).where(ApiToken.token_sha256 == digest))).first()
    if token is None:
        raise unauthenticated("invalid token")
    if token.revoked_at is not None:
        raise unauthenticated("token revoked")
    if token.expires_at is not None and now >= token.expires_at:
        raise unauthenticated("token expired")
    scopes = frozenset((token.scopes or {}).get("scopes", ())) if token.scopes else None
    if token.owner is not None:
        user = await _enabled_user(s, token.owner)
        allowed = permissions_of(user.role)
        return Principal(
            user.username,
            user.role,
            "token",
            allowed & (scopes or frozenset()),
            token.id,
            user.customer,
        )
    allowed = permissions_of(token.role)
    return Principal(
        token.name,
        token.role,
        "service" if scopes is None else "token",
        allowed if scopes is None else allowed & scopes,
        token.id,
    )


async def _enabled_user(s: AsyncSession, username: str) -> User:
    user = (await s.scalars(select(User).where(User.username == username))).first()
    if user is None or user.disabled:
        raise unauthenticated("account disabled")
    return user
