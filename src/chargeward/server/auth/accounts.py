"""Operator accounts: users, login with a TOTP second factor, sessions, lockout.

    >>> enrolment = await create_user(s, "alice", "a long passphrase", "approver",
    ...                               actor="admin", now=now)              # doctest: +SKIP
    >>> enrolment.totp_uri    # shown once: the authenticator app is set up from it
    >>> outcome = await login(s, "alice", "a long passphrase", "492039",
    ...                       address="10.0.0.5", now=now)                 # doctest: +SKIP
    >>> principal = await authenticate(s, outcome.token, now=now)           # doctest: +SKIP

Roles and permissions are in :mod:`chargeward.server.auth.roles`; scoped API tokens in
:mod:`chargeward.server.api_tokens`.

- Passwords: argon2id, at least 12 characters and not containing the username; never logged.
- TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, one step either side accepted) is required for
  every privileged role.  The newest accepted time-step is stored per user, and a code of that
  step or an older one is refused: a code seen over someone's shoulder cannot be replayed.
- Sessions: bearer tokens (``cws_...``, stored as SHA-256) valid 8 h, ended after 30 min idle
  or by logout.  A role change, a password change, a TOTP reset or disabling the account ends
  every session and API token of the user (``user.credentials_revoked`` in the audit log).
- Enrolment: a privileged account without TOTP (promoted, or its TOTP reset) logs in with the
  password to a session that may only enrol a TOTP secret of its own; everything privileged
  is 403 ``totp_enrolment_required`` until then (ADR 0028).
- Names: ``admin`` and ``system`` are reserved, and a user never takes a token's name.
- Lockout: 5 consecutive failures lock an account; 20 failures from one client address within
  15 min lock that address.  The first lock lasts 60 s and each further one twice as long (at
  most a day); a successful login clears the account's count.  Both are kept in the database,
  so every server process sees them.  Unknown usernames are counted like known ones, in one
  of a fixed number of buckets, so they add no row each (ADR 0027).
- Audit of failures (ADR 0027): each failure against an existing account has its entry; of
  the others only the first of an address's 15-minute window, then one ``auth.login_failures``
  summary (count, first usernames) when the window ends or the address locks.  A lock is
  audited once (``auth.locked``); refused attempts while locked are only counted.
- Customer accounts: a user created with a ``customer`` (a charge point operator's staff) may
  only be an operator or an auditor and sees and acts on that customer's stations alone
  (:mod:`chargeward.server.auth.tenancy`); the customer cannot be changed afterwards.

Refusals are :class:`Refusal` errors carrying the HTTP status and stable error code; the audit
log gets the detailed reason (``auth.login_failed``), the caller a uniform message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import math
import re
import secrets
from dataclasses import dataclass

import pyotp
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.errors import BundleError, ChargewardError, Conflict, NotFound
from chargeward.model.targets import check_customer
from chargeward.server.auth import passwords
from chargeward.server.auth.roles import (
    PRIVILEGED_ROLES,
    ROLES,
    Principal,
    permissions_of,
)
from chargeward.server.auth.throttle import lock_length
from chargeward.server.common.inputs import ascii_digits
from chargeward.server.store.tables import ApiToken, LoginThrottle, User, UserSession

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
# Names no user may take: the first-start host token's and the audit log's own actor.
RESERVED_NAMES = frozenset({audit.SYSTEM, "admin"})
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


@dataclass(frozen=True)
class LoginSession:
    token: str
    username: str
    role: str
    expires_at: dt.datetime
    idle_timeout: int  # seconds
    # a privileged account without TOTP: this session may only enrol (ADR 0028)
    totp_enrolment_required: bool = False


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


# -- login ----------------------------------------------------------------------------------


async def _throttle(s: AsyncSession, key: str) -> LoginThrottle:
    row = await s.get(LoginThrottle, key, with_for_update=True)
    if row is None:
        row = LoginThrottle(
            key=key,
            failures=0,
            lock_count=0,
            window_failures=0,
            window_refused=0,
            window_usernames=[],
        )
        s.add(row)
    return row


def _locked_for(row: LoginThrottle, now: dt.datetime) -> int | None:
    if row.locked_until is None or row.locked_until <= now:
        return None
    return max(1, math.ceil((row.locked_until - now).total_seconds()))


def _count_failure(row: LoginThrottle, limit: int, now: dt.datetime, window: bool) -> bool:
    """Count a failure; True when it starts a lock."""
    if window and row.last_failure_at and now - row.last_failure_at > ADDRESS_WINDOW:
        row.failures = 0
    row.failures += 1
    row.last_failure_at = now
    if row.failures >= limit:
        row.lock_count += 1
        row.failures = 0
        lock = lock_length(row.lock_count, FIRST_LOCK.total_seconds(), MAX_LOCK.total_seconds())
        row.locked_until = now + dt.timedelta(seconds=lock)
        return True
    return False


# What anonymous callers can write (ADR 0027): throttle rows per address, per existing account
# and per one of UNKNOWN_NAME_BUCKETS buckets of unknown usernames (keyed with a secret of this
# process, so an unknown name still locks like a known one); rows idle a day are forgotten.
UNKNOWN_NAME_BUCKETS = 64
WINDOW_USERNAMES = 10  # usernames named in an address's window summary
THROTTLE_IDLE = dt.timedelta(days=1)
_BUCKET_KEY = secrets.token_bytes(32)


def _account_key(username: str, user: User | None) -> str:
    if user is not None:
        return f"user:{user.username}"
    digest = hmac.new(_BUCKET_KEY, username.encode("utf-8", "replace"), "sha256").digest()
    return f"user:?{int.from_bytes(digest[:4], 'big') % UNKNOWN_NAME_BUCKETS}"


async def _close_window(s: AsyncSession, row: LoginThrottle, now: dt.datetime) -> None:
    """One ``auth.login_failures`` entry for an address's window, unless its one failure
    already has its own entry; the window is then reset."""
    if row.window_failures > 1 or row.window_refused:
        address = row.key.removeprefix("addr:")
        await audit.record(
            s,
            actor=audit.SYSTEM,
            action="auth.login_failures",
            target=address,
            details={
                "address": address,
                "failures": row.window_failures,
                "refused_while_locked": row.window_refused,
                "usernames": list(row.window_usernames or []),
                "window_started_at": (row.window_started_at or now).isoformat(),
                "locked_for": _locked_for(row, now),
            },
            now=now,
        )
    row.window_started_at, row.window_failures, row.window_refused = None, 0, 0
    row.window_usernames = []


async def _close_windows(s: AsyncSession, now: dt.datetime) -> None:
    """Summaries of address windows that ended; forget rows idle for THROTTLE_IDLE."""
    ended = await s.scalars(
        select(LoginThrottle)
        .where(
            LoginThrottle.window_started_at.is_not(None),
            LoginThrottle.window_started_at < now - ADDRESS_WINDOW,
        )
        .limit(100)
    )
    for row in ended.all():
        await _close_window(s, row, now)
    await s.execute(
        delete(LoginThrottle).where(
            LoginThrottle.window_started_at.is_(None),
            LoginThrottle.last_failure_at < now - THROTTLE_IDLE,
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until <= now),
        )
    )


async def _count_in_window(
    s: AsyncSession, row: LoginThrottle, username: str, now: dt.datetime
) -> bool:
    """Count a failure in the address's window; True for the window's first failure."""
    if row.window_started_at is not None and now - row.window_started_at > ADDRESS_WINDOW:
        await _close_window(s, row, now)
    if row.window_started_at is None:
        row.window_started_at = now
    row.window_failures += 1
    names = list(row.window_usernames or [])
    if username[:64] not in names and len(names) < WINDOW_USERNAMES:
        row.window_usernames = [*names, username[:64]]
    return row.window_failures == 1


def _totp_check(
    secret: str, code: str | None, last_step: int | None, now: dt.datetime
) -> int | str:
    """The accepted time-step, or why the code is refused."""
    if not code:
        return "totp missing"
    if not ascii_digits(code, 6):  # not full-width or Arabic-Indic digits (issue 26)
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
    await _close_windows(s, now)
    # A locked caller adds nothing to the audit log: it is counted on its address's window
    # (ADR 0027).  Throttle rows are only made by a failure.
    client = await s.get(LoginThrottle, f"addr:{address[:150]}", with_for_update=True)
    user = (await s.scalars(select(User).where(User.username == username))).first()
    account = await s.get(LoginThrottle, _account_key(username, user), with_for_update=True)
    for row in (account, client):
        wait = None if row is None else _locked_for(row, now)
        if wait is not None:
            message = (
                f"account locked, retry after {wait} s"
                if row is account
                else f"too many failed logins from this address, retry after {wait} s"
            )
            if client is not None:
                client.window_refused += 1
                client.window_started_at = client.window_started_at or now
            return Refusal(429, "rate_limited", message, retry_after=wait)
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
    if reason is not None or user is None:
        account = account or await _throttle(s, _account_key(username, user))
        client = client or await _throttle(s, f"addr:{address[:150]}")
        first = await _count_in_window(s, client, username, now)
        # Each failure against an existing account has its entry (its lock bounds them);
        # of the rest, the first of the address's window, then only its count (ADR 0027).
        if user is not None or first:
            await audit.record(
                s,
                actor=username[:100],
                action="auth.login_failed",
                target=username,
                details={"reason": reason, "address": address},
                now=now,
            )
        if _count_failure(account, ACCOUNT_FAILURES, now, window=False) and user is not None:
            await audit.record(
                s,
                actor=audit.SYSTEM,
                action="auth.locked",
                target=user.username,
                details={"address": address, "lock_seconds": _locked_for(account, now)},
                now=now,
            )
        if _count_failure(client, ADDRESS_FAILURES, now, window=True):
            await _close_window(s, client, now)  # the lock ends the window: its summary
        return unauthenticated(_OUTSIDE[reason or "unknown user"])
    if account is not None:
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
    enrol = needs_enrolment(user)
    details: dict[str, object] = {"address": address, "role": user.role}
    if enrol:
        details["totp_enrolment_required"] = True
    await audit.record(
        s, actor=user.username, action="auth.login", target=user.username, details=details, now=now
    )
    idle = int(SESSION_IDLE.total_seconds())
    return LoginSession(token, user.username, user.role, expires, idle, enrol)


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


def enrolment_required() -> Refusal:
    return Refusal(
        403,
        "totp_enrolment_required",
        "this account's role needs TOTP: enrol an authenticator (POST /api/v1/auth/totp/"
        "enrolment, `chargeward user totp-enrol` or the dashboard), then log in again",
    )


async def begin_enrolment(s: AsyncSession, principal: Principal, *, now: dt.datetime) -> Enrolment:
    """A new TOTP secret for the logged-in user without one, shown once; it counts only once
    :func:`confirm_enrolment` has seen a code of it.  Each call replaces the pending secret."""
    if principal.kind != "session":
        raise Refusal(400, "bad_request", "TOTP enrolment needs a login session")
    user = await _enabled_user(s, principal.name)
    if user.totp_secret is not None:
        raise Conflict("TOTP is enrolled already: an administrator can reset it")
    secret = pyotp.random_base32()
    user.totp_pending_secret = secret
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=ISSUER)
    await audit.record(
        s, actor=user.username, action="user.totp_enrol_start", target=user.username, now=now
    )
    return Enrolment(user.username, user.role, secret, uri, True)


async def confirm_enrolment(
    s: AsyncSession, principal: Principal, code: str, *, address: str, now: dt.datetime
) -> Refusal | None:
    """Enrol the pending secret if ``code`` is a current code of it, then end every session and
    token of the user (this password-only one too): the next login asks for a code.  A wrong
    code counts towards the account's lockout; a refusal is *returned* so the caller commits."""
    if principal.kind != "session":
        return Refusal(400, "bad_request", "TOTP enrolment needs a login session")
    account = await _throttle(s, f"user:{principal.name[:150]}")
    wait = _locked_for(account, now)
    if wait is not None:
        return Refusal(
            429, "rate_limited", f"account locked, retry after {wait} s", retry_after=wait
        )
    user = await _enabled_user(s, principal.name)
    if user.totp_secret is not None:
        return Refusal(409, "conflict", "TOTP is enrolled already: an administrator can reset it")
    if user.totp_pending_secret is None:
        return Refusal(
            409, "conflict", "no TOTP enrolment started: POST /api/v1/auth/totp/enrolment"
        )
    checked = _totp_check(user.totp_pending_secret, code, None, now)
    if isinstance(checked, str):
        _count_failure(account, ACCOUNT_FAILURES, now, window=False)
        await audit.record(
            s,
            actor=user.username,
            action="auth.confirm_failed",
            target=user.username,
            details={"reason": checked, "address": address, "enrolment": True},
            now=now,
        )
        return Refusal(403, "forbidden", f"enrolment refused: {_OUTSIDE[checked]}")
    user.totp_secret, user.totp_pending_secret = user.totp_pending_secret, None
    user.totp_last_step = checked
    user.updated_at = now
    await audit.record(
        s,
        actor=user.username,
        action="user.totp_enrol",
        target=user.username,
        details={"address": address},
        now=now,
    )
    await end_credentials(s, user.username, "user.totp_enrol", actor=user.username, now=now)
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
        enrol = needs_enrolment(user)
        return Principal(
            user.username,
            user.role,
            "session",
            frozenset() if enrol else permissions_of(user.role),
            session.id,
            user.customer,
            totp_enrolment_required=enrol,
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
        enrol = needs_enrolment(user)
        allowed = frozenset() if enrol else permissions_of(user.role)
        return Principal(
            user.username,
            user.role,
            "token",
            allowed & (scopes or frozenset()),
            token.id,
            user.customer,
            totp_enrolment_required=enrol,
        )
    allowed = permissions_of(token.role)
    return Principal(
        token.name,
        token.role,
        "service" if scopes is None else "token",
        allowed if scopes is None else allowed & scopes,
        token.id,
        host=True,
    )


async def _enabled_user(s: AsyncSession, username: str) -> User:
    user = (await s.scalars(select(User).where(User.username == username))).first()
    if user is None or user.disabled:
        raise unauthenticated("account disabled")
    return user
