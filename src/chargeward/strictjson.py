"""JSON for data that is signed or trusted: one parser, refusing what two parsers could read
differently.

:func:`loads` refuses invalid UTF-8, a key repeated in one object (two parsers could keep
different values), the non-JSON numbers NaN and Infinity, and nesting deep enough to exhaust
the stack.  It raises :class:`~chargeward.errors.InvalidValue` (a :class:`ValueError`) with a
short reason; callers say which file or field it was and raise their own error class.

    >>> loads(b'{"a": 1}')
    {'a': 1}
    >>> loads(b'{"a": 1, "a": 2}')
    Traceback (most recent call last):
    ...
    chargeward.errors.InvalidValue: repeats the key 'a'
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from chargeward.errors import InvalidValue


def _refuse_constant(name: str) -> NoReturn:
    raise InvalidValue(f"holds the non-JSON number {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidValue(f"repeats the key {key!r}")
        out[key] = value
    return out


def loads(raw: bytes) -> Any:
    """Parse UTF-8 JSON strictly (see the module notes)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidValue("is not valid UTF-8") from e
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except RecursionError as e:
        raise InvalidValue("is JSON nested too deeply") from e
    except ValueError as e:
        if str(e).startswith(("repeats the key", "holds the non-JSON")):
            raise
        raise InvalidValue(f"is not valid JSON: {e}") from e
