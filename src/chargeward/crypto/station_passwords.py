"""Station passwords (OCPP ``SecurityCtrlr.BasicAuthPassword``): the policy, generation and
the argon2id hash the server keeps.

Both sides hold them: the server and the factory generate and hash them, the reference agent
checks a password it is given (provisioning, ``SetVariables``) against the same policy.  So
they live here, below the server, and nothing outside the server imports
:mod:`chargeward.server` for them (docs/adr/0029-server-sub-packages.md).  Passwords are
16-40 characters (OCPP 2.0.1), generated from a CSPRNG, shown once and stored only as
argon2id hashes.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from chargeward.errors import InvalidValue

MIN_PASSWORD = 16
MAX_PASSWORD = 40


def generate_password() -> str:
    """A 32-character URL-safe password (192 bits of entropy)."""
    return secrets.token_urlsafe(24)


def check_password_policy(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidValue(f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")
    if not password.isprintable() or not password.isascii():
        raise InvalidValue("password must be printable ASCII")


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
