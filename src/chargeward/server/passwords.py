"""Station passwords (OCPP ``SecurityCtrlr.BasicAuthPassword``) and API tokens.

Passwords are 16-40 characters (OCPP 2.0.1), generated from a CSPRNG, shown once and stored
only as argon2id hashes.  API tokens are 256-bit random values stored as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD = 16
MAX_PASSWORD = 40

_hasher = PasswordHasher()
# Verifying against this keeps the time for unknown stations equal to known ones.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(24))


def generate_password() -> str:
    """A 32-character URL-safe password (192 bits of entropy)."""
    return secrets.token_urlsafe(24)


def check_password_policy(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")
    if not password.isprintable() or not password.isascii():
        raise ValueError("password must be printable ASCII")


def hash_password(password: str) -> str:
    check_password_policy(password)
    return _hasher.hash(password)


# For machine-generated secrets of >= 128 bits (factory-issued BasicAuthPasswords): their
# strength is the randomness, not the hash cost, so the hash uses OWASP's argon2id minimum
# (19 MiB, 2 passes, 1 lane), which the server accepts (server/station_import.py).
_random_secret_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_random_secret(password: str) -> str:
    """argon2id hash of a CSPRNG-generated password of at least 128 bits of entropy."""
    check_password_policy(password)
    return _random_secret_hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Constant-effort check; ``stored_hash=None`` (unknown station) always fails."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def generate_token() -> str:
    return "cwt_" + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)
