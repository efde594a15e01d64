"""The lockout of failed operator logins, kept in the database so every server process sees it.

- 5 consecutive failures lock an account; 20 failures from one client address within 15 min
  lock that address.  The first lock lasts 60 s and each further one twice as long (at most a
  day); a successful login clears the account's count.
- Unknown usernames are counted like known ones, in one of a fixed number of buckets, so they
  add no row each (ADR 0027).
- Audit of failures (ADR 0027): of the failures against no existing account, only the first of
  an address's 15-minute window has its entry, then one ``auth.login_failures`` summary (count,
  first usernames) when the window ends or the address locks.  Refused attempts while locked
  are only counted.

Station logins are throttled in memory instead (:mod:`chargeward.server.auth.throttle`).
"""

from __future__ import annotations

import datetime as dt
import hmac
import math
import secrets

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.server.auth.throttle import lock_length
from chargeward.server.store.tables import LoginThrottle, User

ACCOUNT_FAILURES = 5
ADDRESS_FAILURES = 20
ADDRESS_WINDOW = dt.timedelta(minutes=15)
FIRST_LOCK = dt.timedelta(seconds=60)
MAX_LOCK = dt.timedelta(days=1)
# What anonymous callers can write (ADR 0027): throttle rows per address, per existing account
# and per one of UNKNOWN_NAME_BUCKETS buckets of unknown usernames (keyed with a secret of this
# process, so an unknown name still locks like a known one); rows idle a day are forgotten.
UNKNOWN_NAME_BUCKETS = 64
WINDOW_USERNAMES = 10  # usernames named in an address's window summary
THROTTLE_IDLE = dt.timedelta(days=1)
_BUCKET_KEY = secrets.token_bytes(32)


async def throttle_row(s: AsyncSession, key: str) -> LoginThrottle:
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


def locked_for(row: LoginThrottle, now: dt.datetime) -> int | None:
    if row.locked_until is None or row.locked_until <= now:
        return None
    return max(1, math.ceil((row.locked_until - now).total_seconds()))


def count_failure(row: LoginThrottle, limit: int, now: dt.datetime, window: bool) -> bool:
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


def account_key(username: str, user: User | None) -> str:
    if user is not None:
        return f"user:{user.username}"
    digest = hmac.new(_BUCKET_KEY, username.encode("utf-8", "replace"), "sha256").digest()
    return f"user:?{int.from_bytes(digest[:4], 'big') % UNKNOWN_NAME_BUCKETS}"


async def close_window(s: AsyncSession, row: LoginThrottle, now: dt.datetime) -> None:
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
                "locked_for": locked_for(row, now),
            },
            now=now,
        )
    row.window_started_at, row.window_failures, row.window_refused = None, 0, 0
    row.window_usernames = []


async def close_windows(s: AsyncSession, now: dt.datetime) -> None:
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
        await close_window(s, row, now)
    await s.execute(
        delete(LoginThrottle).where(
            LoginThrottle.window_started_at.is_(None),
            LoginThrottle.last_failure_at < now - THROTTLE_IDLE,
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until <= now),
        )
    )


async def count_in_window(
    s: AsyncSession, row: LoginThrottle, username: str, now: dt.datetime
) -> bool:
    """Count a failure in the address's window; True for the window's first failure."""
    if row.window_started_at is not None and now - row.window_started_at > ADDRESS_WINDOW:
        await close_window(s, row, now)
    if row.window_started_at is None:
        row.window_started_at = now
    row.window_failures += 1
    names = list(row.window_usernames or [])
    if username[:64] not in names and len(names) < WINDOW_USERNAMES:
        row.window_usernames = [*names, username[:64]]
    return row.window_failures == 1
