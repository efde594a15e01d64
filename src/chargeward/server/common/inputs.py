"""Strict readings of what a caller types: numbers in ASCII digits only, secrets compared as bytes.

Python's ``str.isdigit`` and ``int`` accept more than ``0-9``: ``"²".isdigit()`` is true and
``int("²")`` fails; ``int`` reads a full-width or an Arabic-Indic one as 1; and a 20-digit
number overflows every integer column.  ``hmac.compare_digest`` raises ``TypeError``
on a non-ASCII ``str``.  Every id, code and token read from a path, query or form goes through
these instead (issue 26, point 6; ``tests/attack/test_http_input_attacks.py``).
"""

from __future__ import annotations

import datetime as dt
import hmac
import re

from fastapi.exceptions import RequestValidationError

MAX_ROW_DIGITS = 9  # below 2**31 - 1: every row id column (PostgreSQL integer)
_DIGITS = re.compile(r"[0-9]{1,18}")


def row_id(text: str | int, digits: int = MAX_ROW_DIGITS) -> int | None:
    """``text`` as a row id if it is 1..``digits`` ASCII digits, else None (a name, not an id)."""
    if isinstance(text, int):
        return text if 0 <= text < 10**digits else None
    if len(text) > digits or _DIGITS.fullmatch(text) is None:
        return None
    return int(text)


def ascii_digits(text: str, length: int) -> bool:
    """Exactly ``length`` ASCII digits (a TOTP code)."""
    return len(text) == length and _DIGITS.fullmatch(text) is not None


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of a caller's token with the expected one, any characters."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def in_utc_range(value: dt.datetime) -> bool:
    """``value`` (with an offset) can be converted to UTC (``0001-01-01T00:00+01:00`` cannot)."""
    try:
        value.astimezone(dt.UTC)
    except OverflowError:
        return False
    return True


def invalid(where: str, name: str, message: str) -> RequestValidationError:
    """A 422 ``validation_error`` naming the field, as FastAPI's own validation reports it."""
    return RequestValidationError([{"loc": (where, name), "msg": message, "type": "value_error"}])
