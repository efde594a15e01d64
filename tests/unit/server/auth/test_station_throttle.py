"""The station login throttle on its own (the lock schedule and its cap, the counting
window, what a good login clears, its bounded memory), and how a charger reads the
Retry-After it answers with."""

from __future__ import annotations

import doctest

from chargeward.agent.connection import retry_after
from chargeward.server.auth import throttle
from chargeward.server.auth.throttle import MAX_LOCK, StationThrottle


def test_docstring_example() -> None:
    assert doctest.testmod(throttle).failed == 0


def test_locks_double_up_to_an_hour() -> None:
    clock = [0.0]
    t = StationThrottle(clock=lambda: clock[0])
    locks = []
    for _ in range(10):
        for _ in range(5):
            t.failed("CP-1", "192.0.2.1")
        wait = t.wait("CP-1", "192.0.2.1")
        assert wait is not None
        locks.append(wait)
        clock[0] += wait
    assert locks == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600]
    assert max(locks) == MAX_LOCK


def test_failures_further_apart_than_the_window_do_not_add_up() -> None:
    clock = [0.0]
    t = StationThrottle(clock=lambda: clock[0])
    for _ in range(10):  # one failure every 16 minutes never locks
        t.failed("CP-1", "192.0.2.1")
        clock[0] += 16 * 60
    assert t.wait("CP-1", "192.0.2.1") is None
    for _ in range(5):  # five within the window do
        clock[0] += 60
        t.failed("CP-1", "192.0.2.1")
    assert t.wait("CP-1", "192.0.2.1") is not None


def test_a_good_login_clears_its_pair_but_not_its_address() -> None:
    t = StationThrottle(clock=lambda: 0.0, address_failures=6)
    for _ in range(4):
        t.failed("CP-1", "192.0.2.1")
    t.succeeded("CP-1", "192.0.2.1")
    t.failed("CP-1", "192.0.2.1")  # the pair starts again at one: no lock
    assert t.wait("CP-1", "192.0.2.1") is None
    t.failed("CP-2", "192.0.2.1")  # the address's sixth failure
    assert t.wait("CP-3", "192.0.2.1") == 60
    assert t.wait("CP-3", "192.0.2.2") is None


def test_memory_is_bounded_least_recently_failed_first() -> None:
    t = StationThrottle(clock=lambda: 0.0, max_entries=100)
    for _ in range(5):
        t.failed("CP-1", "192.0.2.1")  # locked, and then ...
    assert t.wait("CP-1", "192.0.2.1") == 60
    for i in range(10_000):  # ... a flood of other identities and addresses
        t.failed(f"CP-{i}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(t.pairs.counts) == 100 and len(t.addresses.counts) == 100
    assert "10.0.39.15" in t.addresses.counts  # the newest kept, the oldest forgotten:
    assert t.wait("CP-1", "192.0.2.1") is None  # (it took 10,000 addresses to forget it)


def test_the_charger_honours_retry_after_within_an_hour() -> None:
    assert [retry_after(v) for v in ("60", " 5 ", None, "", "soon", "-3", "1.5")] == [
        60.0,
        5.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ]
    assert retry_after("86400") == 3600.0  # a wrong header cannot park a charger for a day
