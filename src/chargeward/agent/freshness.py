"""Is the repository's answer fresh by the charger's own clock?  Pure decisions, no I/O.

python-tuf judges expiry by the system clock; a charger whose clock was reset (to 1970, or
by an attacker) would accept a frozen repository.  The charger therefore keeps a *time floor*
(the newest verified repository time it has seen) and refuses to work below it
(tuf.md, "Pitfalls"):

    >>> import datetime as dt
    >>> t = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
    >>> check_clock(t, floor=t - dt.timedelta(days=1), tolerance=dt.timedelta(minutes=5))
    >>> next_time_floor(t - dt.timedelta(days=1), issued=t, now=t,
    ...                 tolerance=dt.timedelta(minutes=5)) == t
    True

``tolerance`` absorbs ordinary clock skew between the server that signs the timestamp and
the charger, so a second refresh right after a first one is not refused.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from tuf.api.metadata import Signed, Timestamp

from chargeward.errors import RepositoryRefused

ISSUED_FIELD = "x-chargeward-issued"
ISSUED_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def check_clock(now: dt.datetime, floor: dt.datetime | None, tolerance: dt.timedelta) -> None:
    """Refuse to judge freshness with a clock earlier than the floor (``clock-behind``)."""
    if floor is not None and now < floor - tolerance:
        raise RepositoryRefused(
            "clock-behind",
            f"the clock says {_show(now)}, earlier than the verified repository time "
            f"{_show(floor)}: set the clock before updating",
        )


def issued_at(timestamp: Timestamp) -> dt.datetime:
    """The signed moment the server issued ``timestamp`` (its ``x-chargeward-issued`` field)."""
    raw = timestamp.unrecognized_fields.get(ISSUED_FIELD)
    if not isinstance(raw, str):
        raise RepositoryRefused("repository", f"timestamp metadata lacks {ISSUED_FIELD}")
    try:
        return dt.datetime.strptime(raw, ISSUED_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError as e:
        raise RepositoryRefused("repository", f"{ISSUED_FIELD} {raw!r} is malformed") from e


def next_time_floor(
    floor: dt.datetime | None, issued: dt.datetime, now: dt.datetime, tolerance: dt.timedelta
) -> dt.datetime:
    """The floor after a verified refresh: ``max(floor, issued)``; it never goes down.

    A timestamp issued later than the charger's clock (beyond ``tolerance``) means the clock is
    behind: refused as ``clock-behind`` without raising the floor, so a far-future time signed
    with a stolen timestamp key cannot lock the charger out for good.
    """
    if issued > now + tolerance:
        raise RepositoryRefused(
            "clock-behind",
            f"the repository was signed at {_show(issued)}, the clock says {_show(now)}",
        )
    return issued if floor is None else max(floor, issued)


def check_unexpired(roles: Mapping[str, Signed], now: dt.datetime) -> None:
    """Verified metadata must also be unexpired by the charger's clock (``expired``)."""
    for name, signed in roles.items():
        if signed.is_expired(now):
            raise RepositoryRefused(
                "expired", f"{name} metadata expired at {_show(signed.expires)} ({_show(now)})"
            )


def _show(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime(ISSUED_FORMAT)
