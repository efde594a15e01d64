"""Operator passwords, API and session tokens, and the cache of recent station logins.

Operator passwords are stored only as argon2id hashes; API tokens are 256-bit random values
stored as SHA-256 digests.  Station passwords (their policy and hash) are
:mod:`chargeward.crypto.station_passwords`, shared with the factory and the agent.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from time import monotonic

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from chargeward.crypto.station_passwords import check_password_policy
from chargeward.errors import InvalidValue

_hasher = PasswordHasher()
# Verifying against this keeps the time for unknown operators equal to known ones.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(24))


def hash_password(password: str) -> str:
    """argon2id hash, at the operator cost, of a password that meets the station policy."""
    check_password_policy(password)
    return _hasher.hash(password)


MIN_USER_PASSWORD = 12
MAX_USER_PASSWORD = 256


def check_user_password_policy(password: str, username: str) -> None:
    """Operator passwords: 12-256 characters, and not (containing) the username."""
    if not MIN_USER_PASSWORD <= len(password) <= MAX_USER_PASSWORD:
        raise InvalidValue(
            f"password must be {MIN_USER_PASSWORD}-{MAX_USER_PASSWORD} characters long"
        )
    if username.casefold() in password.casefold():
        raise InvalidValue("password must not contain the username")


def hash_user_password(password: str, username: str) -> str:
    """argon2id hash of an operator's password that meets the policy."""
    check_user_password_policy(password, username)
    return _hasher.hash(password)


def verify_user_password(stored_hash: str | None, password: str) -> bool:
    """Check an operator's password; ``stored_hash=None`` (unknown user) always fails, after
    the same effort as a known user's check."""
    try:
        ok = _hasher.verify(stored_hash or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return ok and stored_hash is not None


def generate_token() -> str:
    return "cwt_" + secrets.token_urlsafe(32)


def generate_session_token() -> str:
    return "cws_" + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


class RecentLogins:
    """Station passwords verified in the last ``ttl`` seconds, so a reconnect skips argon2.

        >>> recent = RecentLogins(ttl=900)
        >>> recent.seen("CP-1", "$argon2id$...", "pw")
        False
        >>> recent.remember("CP-1", "$argon2id$...", "pw")
        >>> recent.seen("CP-1", "$argon2id$...", "pw"), recent.seen("CP-1", "$argon2id$...", "x")
        (True, False)

    A firmware update ends with the station reconnecting minutes after its last login (and a
    network blip reconnects a whole site): at fleet scale those argon2 checks were a tenth of
    the server's CPU per update (benchmarks/bench_campaign.py).  What is kept is an HMAC of
    (station, stored hash, password) under a key that exists only in this process's memory:
    nothing usable outside it, a rotated or changed hash no longer matches, a wrong password
    still costs a full argon2 check, and an entry lapses after ``ttl`` (ADR 0009).
    """

    def __init__(
        self, ttl: float = 900.0, max_entries: int = 200_000, clock: Callable[[], float] = monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._seen: dict[str, tuple[bytes, float]] = {}  # station -> (digest, expiry)

    def _digest(self, station_id: str, stored_hash: str, password: str) -> bytes:
        message = "\0".join((station_id, stored_hash, password)).encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def seen(self, station_id: str, stored_hash: str, password: str) -> bool:
        entry = self._seen.get(station_id)
        if entry is None:
            return False
        digest, expiry = entry
        if self.clock() >= expiry:
            del self._seen[station_id]
            return False
        return hmac.compare_digest(digest, self._digest(station_id, stored_hash, password))

    def remember(self, station_id: str, stored_hash: str, password: str) -> None:
        if len(self._seen) >= self.max_entries and station_id not in self._seen:
            now = self.clock()
            self._seen = {k: v for k, v in self._seen.items() if v[1] > now}
            if len(self._seen) >= self.max_entries:
                return  # full of live entries: this login simply is not remembered
        digest = self._digest(station_id, stored_hash, password)
        self._seen[station_id] = (digest, self.clock() + self.ttl)

    def forget(self, station_id: str) -> None:
        self._seen.pop(station_id, None)
