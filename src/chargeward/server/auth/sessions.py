"""Operator logins and sessions, and the authentication of every API request.

    outcome = await login(s, "alice", "a long passphrase", "492039",
                          address="10.0.0.5", now=now)
    principal = await authenticate(s, outcome.token, now=now)

- Sessions: bearer tokens (``cws_...``, stored as SHA-256) valid 8 h, ended after 30 min idle
  or by logout, or when the user's role, password or TOTP changes
  (:func:`chargeward.server.auth.accounts.end_credentials`).
- A login checks the lockout first (:mod:`chargeward.server.auth.lockout`): a locked caller is
  refused before its password is looked at.  Each failure against an existing account has its
  ``auth.login_failed`` entry; a lock is audited once (``auth.locked``).
- A privileged account without TOTP gets a session that may only enrol one
  (:mod:`chargeward.server.auth.totp`, ADR 0028).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.server.auth import passwords
from chargeward.server.auth.accounts import (
    TOLD,
    Refusal,
    enabled_user,
    needs_enrolment,
    unauthenticated,
)
from chargeward.server.auth.lockout import (
    ACCOUNT_FAILURES,
    ADDRESS_FAILURES,
    account_key,
    close_window,
    close_windows,
    count_failure,
    count_in_window,
    locked_for,
    throttle_row,
)
from chargeward.server.auth.roles import Principal, permissions_of
from chargeward.server.auth.totp import check_code
from chargeward.server.store.tables import ApiToken, LoginThrottle, User, UserSession

SESSION_LIFETIME = dt.timedelta(hours=8)
SESSION_IDLE = dt.timedelta(minutes=30)
SESSION_TOUCH = dt.timedelta(seconds=60)  # last use is written at most this often


@dataclass(frozen=True)
class LoginSession:
    token: str
    username: str
    role: str
    expires_at: dt.datetime
    idle_timeout: int  # seconds
    # a privileged account without TOTP: this session may only enrol (ADR 0028)
    totp_enrolment_required: bool = False


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
    await close_windows(s, now)
    # A locked caller adds nothing to the audit log: it is counted on its address's window
    # (ADR 0027).  Throttle rows are only made by a failure.
    client = await s.get(LoginThrottle, f"addr:{address[:150]}", with_for_update=True)
    user = (await s.scalars(select(User).where(User.username == username))).first()
    account = await s.get(LoginThrottle, account_key(username, user), with_for_update=True)
    for row in (account, client):
        wait = None if row is None else locked_for(row, now)
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
        checked = check_code(user.totp_secret, totp, user.totp_last_step, now)
        reason, step = (checked, None) if isinstance(checked, str) else (None, checked)
    if reason is not None or user is None:
        account = account or await throttle_row(s, account_key(username, user))
        client = client or await throttle_row(s, f"addr:{address[:150]}")
        first = await count_in_window(s, client, username, now)
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
        if count_failure(account, ACCOUNT_FAILURES, now, window=False) and user is not None:
            await audit.record(
                s,
                actor=audit.SYSTEM,
                action="auth.locked",
                target=user.username,
                details={"address": address, "lock_seconds": locked_for(account, now)},
                now=now,
            )
        if count_failure(client, ADDRESS_FAILURES, now, window=True):
            await close_window(s, client, now)  # the lock ends the window: its summary
        return unauthenticated(TOLD[reason or "unknown user"])
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


async def logout(s: AsyncSession, principal: Principal, *, now: dt.datetime) -> None:
    if principal.kind != "session":
        raise Refusal(400, "bad_request", "only a login session can log out; revoke tokens")
    row = await s.get(UserSession, principal.credential_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = now
        await audit.record(
            s, actor=principal.name, action="auth.logout", target=principal.name, now=now
        )


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
        user = await enabled_user(s, session.username)
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
        user = await enabled_user(s, token.owner)
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
