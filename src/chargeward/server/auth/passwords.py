"""Station passwords (OCPP ``SecurityCtrlr.BasicAuthPassword``), operator passwords, tokens.

Passwords are 16-40 characters (OCPP 2.0.1), generated from a CSPRNG, shown once and stored
only as argon2id hashes.  API tokens are 256-bit random values stored as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from time import monotonic

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from chargeward.errors import InvalidValue

MIN_PASSWORD = 16
MAX_PASSWORD = 40

_hasher = PasswordHasher()
# Verifying against this keeps the time for unknown operators equal to known ones.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(24))


def generate_password() -> str:
    """A 32-character URL-safe password (192 bits of entropy)."""
    return secrets.token_urlsafe(24)


def check_password_policy(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidValue(f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")
    if not password.isprintable() or not password.isascii():
        raise InvalidValue("password must be printable ASCII")


def hash_password(password: str) -> str:
    check_password_policy(password)
    return _hasher.hash(password)


# Station secrets (BasicAuthPasswords) are never chosen by people: the server, the factory
# and password rotation generate them from a CSPRNG with at least 128 bits of entropy.  Their
# strength is that randomness: no hash cost makes 2**128 guesses feasible or infeasible.  The
# hash only keeps a stolen database from holding usable passwords, so it is argon2id at a
# light cost (1 pass over 2 MiB, about a millisecond) that every reconnect pays: 10,000
# stations coming back after an outage cost seconds of CPU, not minutes (ADR 0006,
# benchmarks/bench_connections.py).  Operator passwords keep argon2-cffi's default cost.
STATION_SECRET_TIME_COST = 1
STATION_SECRET_MEMORY_KIB = 2 * 1024
_station_hasher = PasswordHasher(
    time_cost=STATION_SECRET_TIME_COST, memory_cost=STATION_SECRET_MEMORY_KIB, parallelism=1
)
# Verifying against this keeps the effort for unknown stations equal to known ones.
_DUMMY_STATION_HASH = _station_hasher.hash(secrets.token_urlsafe(24))


def hash_station_secret(password: str) -> str:
    """argon2id hash of a CSPRNG-generated station password (at least 128 bits of entropy)."""
    check_password_policy(password)
    return _station_hasher.hash(password)


def verify_station_secret(stored_hash: str | None, password: str) -> bool:
    """Check a station password; ``stored_hash=None`` (unknown station) always fails.

    A hash of any argon2 cost verifies (each hash names its own parameters); unknown
    stations cost what a known one does.
    """
    try:
        ok = _station_hasher.verify(stored_hash or _DUMMY_STATION_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return ok and stored_hash is not None


def station_secret_needs_rehash(stored_hash: str) -> bool:
    """True when ``stored_hash`` is not at the station-secret cost (e.g. a factory import)."""
    try:
        return _station_hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return False


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
