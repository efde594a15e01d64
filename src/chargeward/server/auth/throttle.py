"""Failed-login throttling for station HTTP Basic logins, in this process's memory.

Operator logins are throttled in the database (:mod:`chargeward.server.auth.lockout`), because
an operator may log in through any server process and a lock must hold everywhere.  Station
logins come in thousands a minute after a firmware update or a network blip; a database row
per failure would put an attacker's guesses on the database.  Each OCPP listener keeps its
own counts instead (ADR 0015), at two levels:

- a station identity from one address: 5 failures lock that pair, so guessing one charger's
  password costs an attacker a lock that doubles each time (60 s, 120 s, ... at most an
  hour), while the real charger, connecting from its own address, is not locked out;
- an address: 50 failures within 15 minutes lock the address (a site's chargers behind one
  NAT address stay far below that; a scanner trying many identities does not).

A locked caller is refused with ``429`` and ``Retry-After`` before its password is looked at:
no database read and no argon2 check, so guessing costs the server nothing while locked.
Memory is bounded: at most ``max_entries`` keys per level, the least recently failed
forgotten first.

    >>> clock = [0.0]
    >>> t = StationThrottle(clock=lambda: clock[0])
    >>> for _ in range(5):
    ...     t.failed("CP-1", "192.0.2.7")
    >>> t.wait("CP-1", "192.0.2.7"), t.wait("CP-1", "192.0.2.8")
    (60, None)
    >>> clock[0] = 60.0
    >>> t.wait("CP-1", "192.0.2.7") is None
    True
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic

PAIR_FAILURES = 5
ADDRESS_FAILURES = 50
WINDOW = 15 * 60.0  # failures further apart than this start the count again
FIRST_LOCK = 60.0
MAX_LOCK = 3600.0


def lock_length(locks: int, first: float, most: float) -> float:
    """The ``locks``-th lock in a row lasts ``first`` doubled ``locks - 1`` times, capped."""
    return min(most, first * float(2 ** min(locks - 1, 30)))


@dataclass
class _Count:
    failures: int = 0
    locks: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


class _Level:
    """Failure counts for one kind of key, least recently failed first."""

    def __init__(self, limit: int, max_entries: int) -> None:
        self.limit = limit
        self.max_entries = max_entries
        self.counts: OrderedDict[str, _Count] = OrderedDict()

    def wait(self, key: str, now: float) -> int | None:
        count = self.counts.get(key)
        if count is None or count.locked_until <= now:
            return None
        return max(1, math.ceil(count.locked_until - now))

    def failed(self, key: str, now: float) -> None:
        count = self.counts.pop(key, None) or _Count()
        self.counts[key] = count  # the most recent failure last
        if now - count.last_failure > WINDOW:
            count.failures = 0
        count.failures += 1
        count.last_failure = now
        if count.failures >= self.limit:
            count.failures = 0
            count.locks += 1
            count.locked_until = now + lock_length(count.locks, FIRST_LOCK, MAX_LOCK)
        while len(self.counts) > self.max_entries:
            self.counts.popitem(last=False)

    def forget(self, key: str) -> None:
        self.counts.pop(key, None)


class StationThrottle:
    """Per (station identity, address) and per address failure counts with growing locks."""

    def __init__(
        self,
        *,
        pair_failures: int = PAIR_FAILURES,
        address_failures: int = ADDRESS_FAILURES,
        max_entries: int = 100_000,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self.clock = clock
        self.pairs = _Level(pair_failures, max_entries)
        self.addresses = _Level(address_failures, max_entries)

    @staticmethod
    def _pair(station_id: str, address: str) -> str:
        return f"{address}\0{station_id}"

    def wait(self, station_id: str, address: str) -> int | None:
        """Seconds until a login of ``station_id`` from ``address`` is looked at, or None."""
        now = self.clock()
        waits = [
            w
            for w in (
                self.pairs.wait(self._pair(station_id, address), now),
                self.addresses.wait(address, now),
            )
            if w is not None
        ]
        return max(waits) if waits else None

    def failed(self, station_id: str, address: str) -> None:
        now = self.clock()
        self.pairs.failed(self._pair(station_id, address), now)
        self.addresses.failed(address, now)

    def succeeded(self, station_id: str, address: str) -> None:
        """A good login clears its pair's count (the address keeps its own)."""
        self.pairs.forget(self._pair(station_id, address))
