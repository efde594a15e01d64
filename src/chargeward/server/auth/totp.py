"""TOTP second factor (RFC 6238): checking codes, step-up confirmation and self-enrolment.

- SHA-1, 6 digits, 30 s steps, one step either side accepted, required for every privileged
  role.  The newest accepted time-step is stored per user, and a code of that step or an older
  one is refused: a code seen over someone's shoulder cannot be replayed.
- Enrolment: a privileged account without TOTP (promoted, or its TOTP reset) logs in with the
  password to a session that may only enrol a TOTP secret of its own; everything privileged
  is 403 ``totp_enrolment_required`` until then (ADR 0028).
- A wrong code counts towards the account's lockout (:mod:`chargeward.server.auth.lockout`).
"""

from __future__ import annotations

import datetime as dt
import hmac

import pyotp
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.errors import Conflict
from chargeward.server.auth.accounts import (
    TOLD,
    Enrolment,
    Refusal,
    enabled_user,
    end_credentials,
    new_secret,
)
from chargeward.server.auth.lockout import ACCOUNT_FAILURES, count_failure, locked_for, throttle_row
from chargeward.server.auth.roles import Principal
from chargeward.server.common.inputs import ascii_digits
from chargeward.server.store.tables import LoginThrottle, User

TOTP_STEP = 30


def check_code(secret: str, code: str | None, last_step: int | None, now: dt.datetime) -> int | str:
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


async def _unlocked_user(
    s: AsyncSession, principal: Principal, needs: str, now: dt.datetime
) -> tuple[LoginThrottle, User] | Refusal:
    """The session's account lockout row and user, or why not: not a login session (``needs``
    one), or the account locked."""
    if principal.kind != "session":
        return Refusal(400, "bad_request", f"{needs} needs a login session")
    account = await throttle_row(s, f"user:{principal.name[:150]}")
    wait = locked_for(account, now)
    if wait is not None:
        message = f"account locked, retry after {wait} s"
        return Refusal(429, "rate_limited", message, retry_after=wait)
    return account, await enabled_user(s, principal.name)


async def _wrong_code(
    s: AsyncSession,
    account: LoginThrottle,
    username: str,
    details: dict[str, object],
    now: dt.datetime,
) -> None:
    """A wrong code counts towards the account's lockout, audited as ``auth.confirm_failed``."""
    count_failure(account, ACCOUNT_FAILURES, now, window=False)
    await audit.record(
        s, actor=username, action="auth.confirm_failed", target=username, details=details, now=now
    )


async def confirm_totp(
    s: AsyncSession, principal: Principal, code: str, *, address: str, now: dt.datetime
) -> Refusal | None:
    """Step-up confirmation: ``code`` must be a fresh TOTP code of the logged-in user.

    Used where an action in the dashboard must be confirmed by the person at the keyboard
    (a release approval).  A wrong code counts towards the account's lockout like a failed
    login; each time-step is accepted once.  A refusal is *returned* so the caller commits
    the failure count.
    """
    found = await _unlocked_user(s, principal, "a TOTP confirmation", now)
    if isinstance(found, Refusal):
        return found
    account, user = found
    if user.totp_secret is None:
        return Refusal(403, "forbidden", TOLD["totp not enrolled"])
    checked = check_code(user.totp_secret, code, user.totp_last_step, now)
    if isinstance(checked, str):
        await _wrong_code(s, account, user.username, {"reason": checked, "address": address}, now)
        return Refusal(403, "forbidden", f"confirmation refused: {TOLD[checked]}")
    user.totp_last_step = checked
    return None


async def begin_enrolment(s: AsyncSession, principal: Principal, *, now: dt.datetime) -> Enrolment:
    """A new TOTP secret for the logged-in user without one, shown once; it counts only once
    :func:`confirm_enrolment` has seen a code of it.  Each call replaces the pending secret."""
    if principal.kind != "session":
        raise Refusal(400, "bad_request", "TOTP enrolment needs a login session")
    user = await enabled_user(s, principal.name)
    if user.totp_secret is not None:
        raise Conflict("TOTP is enrolled already: an administrator can reset it")
    secret, uri = new_secret(user.username)
    user.totp_pending_secret = secret
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
    found = await _unlocked_user(s, principal, "TOTP enrolment", now)
    if isinstance(found, Refusal):
        return found
    account, user = found
    if user.totp_secret is not None:
        return Refusal(409, "conflict", "TOTP is enrolled already: an administrator can reset it")
    if user.totp_pending_secret is None:
        return Refusal(
            409, "conflict", "no TOTP enrolment started: POST /api/v1/auth/totp/enrolment"
        )
    checked = check_code(user.totp_pending_secret, code, None, now)
    if isinstance(checked, str):
        details = {"reason": checked, "address": address, "enrolment": True}
        await _wrong_code(s, account, user.username, details, now)
        return Refusal(403, "forbidden", f"enrolment refused: {TOLD[checked]}")
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
