"""Guessing a station's Basic-auth password over real TLS on loopback, from several source
addresses (127.0.0.1, .2, .3 are all loopback): the guesses are throttled at the rate the
listener promises, counted in argon2 checks, and the real charger connecting from its own
address is never locked out by someone else's guesses."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from chargeward.agent import connection as charger_connection
from chargeward.crypto import station_passwords
from chargeward.server.auth.throttle import ADDRESS_FAILURES, PAIR_FAILURES, StationThrottle
from tests.support.fleet import Pki
from tests.support.tls import (
    Csms,
    TlsPki,
    provision_charger,
    running_agent,
    running_csms,
    station_connection,
)

PASSWORD = "brute-force-test-password-0123"
ATTACKER, CHARGER, SCANNER = "127.0.0.1", "127.0.0.2", "127.0.0.3"


@dataclass
class Lab:
    """A listener with an injected throttle clock, one station CP-1, and clients that log in
    from any loopback address."""

    csms: Csms
    ctx: ssl.SSLContext
    clock: list[float]

    async def attempt(self, station_id: str, password: str, source: str) -> tuple[int, str | None]:
        """(HTTP status, Retry-After) of one login of ``station_id`` from ``source``."""
        try:
            async with station_connection(
                self.csms.url, station_id, password, ssl_context=self.ctx, source=source
            ):
                return 101, None
        except InvalidStatus as e:
            return e.response.status_code, e.response.headers.get("Retry-After")


@pytest.fixture
async def lab(tmp_path: Path, tls_pki: TlsPki) -> AsyncIterator[Lab]:
    clock = [1_000.0]
    throttle = StationThrottle(clock=lambda: clock[0])
    async with running_csms(tmp_path / "srv", tls_pki, throttle=throttle) as csms:
        await csms.add_station("CP-1", PASSWORD, 2)
        yield Lab(csms, tls_pki.client_context(), clock)


@pytest.fixture
def argon2_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the listener's argon2 password checks (each still runs for real)."""
    calls: list[int] = []
    real = station_passwords.verify_station_secret

    def counted(stored: Any, password: str) -> bool:
        calls.append(1)
        return real(stored, password)

    monkeypatch.setattr(station_passwords, "verify_station_secret", counted)
    return calls


async def test_guessing_one_station_costs_five_argon2_checks_per_doubling_lock(
    lab: Lab, argon2_checks: list[int]
) -> None:
    # Twelve guesses in a burst: five are checked, the rest refused unchecked.
    burst = [await lab.attempt("CP-1", f"guess-{i:02d}", ATTACKER) for i in range(12)]
    assert burst == [(401, None)] * PAIR_FAILURES + [(429, "60")] * 7
    assert len(argon2_checks) == PAIR_FAILURES
    assert lab.csms.listener.refusals[-1] == ("CP-1", "too many failed logins")
    # The right password from the locked address waits too (it is not even checked) ...
    assert await lab.attempt("CP-1", PASSWORD, ATTACKER) == (429, "60")
    assert len(argon2_checks) == PAIR_FAILURES
    # ... while the real charger, from its own address, connects at once.
    assert await lab.attempt("CP-1", PASSWORD, CHARGER) == (101, None)

    # An attacker who waits out every lock: each lock is twice the last, five checks each.
    lock, schedule = 60, []
    for _ in range(5):
        lab.clock[0] += lock
        answers = [
            await lab.attempt("CP-1", "wrong-guess", ATTACKER) for _ in range(PAIR_FAILURES + 1)
        ]
        assert answers[:PAIR_FAILURES] == [(401, None)] * PAIR_FAILURES
        status, retry_after = answers[-1]
        assert status == 429 and retry_after is not None
        lock = int(retry_after)
        schedule.append(lock)
    assert schedule == [120, 240, 480, 960, 1920]
    # Six locks: 30 argon2 checks in 1,860 s of waiting plus a 1,920 s lock (3,780 s,
    # one check per 126 s), where the burst alone ran as fast as TLS handshakes go.
    assert lab.clock[0] - 1_000.0 == 1_860
    assert len(argon2_checks) == 6 * PAIR_FAILURES + 1  # + the charger's good login


async def test_a_scanner_trying_many_stations_locks_only_its_own_address(
    lab: Lab, argon2_checks: list[int]
) -> None:
    # One guess per identity (known or not: the same answer) from one address.
    names = [f"CP-SCAN-{i:03d}" for i in range(ADDRESS_FAILURES - 1)] + ["CP-1"]
    answers = [await lab.attempt(n, "guess", SCANNER) for n in names]
    assert answers == [(401, None)] * ADDRESS_FAILURES
    assert len(argon2_checks) == ADDRESS_FAILURES  # an unknown station costs the same
    # Now every identity from that address waits, the real password unchecked.
    assert await lab.attempt("CP-SCAN-999", "guess", SCANNER) == (429, "60")
    assert await lab.attempt("CP-1", PASSWORD, SCANNER) == (429, "60")
    assert len(argon2_checks) == ADDRESS_FAILURES
    # The charger behind another address is unaffected; a good login resets nothing
    # for the scanner.
    assert await lab.attempt("CP-1", PASSWORD, CHARGER) == (101, None)
    assert await lab.attempt("CP-1", "guess", SCANNER) == (429, "60")
    # When the lock ends, the right password gets in from there too.
    lab.clock[0] += 60
    assert await lab.attempt("CP-1", PASSWORD, SCANNER) == (101, None)


async def test_a_charger_told_to_retry_later_waits_instead_of_hammering(
    lab: Lab,
    tmp_path: Path,
    pki: Pki,
    factory_bundle: Path,
    tls_pki: TlsPki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    charger = provision_charger(
        tmp_path / "chargers", pki, factory_bundle, tls_pki, "CP-1", PASSWORD, certificate=False
    )
    for _ in range(PAIR_FAILURES):  # someone guessed CP-1's password from its own address
        lab.csms.listener.throttle.failed("CP-1", ATTACKER)
    waits: list[float] = []  # what the charger read from each refusal's Retry-After
    real = charger_connection.retry_after

    def read(value: str | None, *most: float) -> float:
        waits.append(real(value, *most))
        return waits[-1]

    monkeypatch.setattr(charger_connection, "retry_after", read)
    async with running_agent(charger, lab.csms.url) as agent:  # reconnects every 0.1 s
        await lab.csms.wait(lambda: waits, "the charger to read the first refusal")
        assert waits == [60]  # so its next attempt is in 60 s, not 0.1 s
        assert lab.csms.listener.refusals == [("CP-1", "too many failed logins")]
        assert not agent.online
