"""Reconnects skip argon2 (passwords.RecentLogins): only the same station, password and stored
hash within the time to live; a wrong password, a rotated hash or a lapsed entry costs a full
argon2 check again."""

from __future__ import annotations

from pathlib import Path

import pytest

from chargeward.crypto import station_passwords
from chargeward.server.auth import passwords
from chargeward.server.stations import station_security
from chargeward.server.stations.station_security import StationAuth
from chargeward.server.store.db import Database

PASSWORD = "correct-horse-battery-staple-42"  # a test fixture, not a secret


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_only_the_same_station_password_and_hash_within_the_ttl_are_recognised() -> None:
    clock = Clock()
    recent = passwords.RecentLogins(ttl=60, clock=clock)
    recent.remember("CP-1", "hash-a", PASSWORD)
    assert recent.seen("CP-1", "hash-a", PASSWORD)
    assert not recent.seen("CP-1", "hash-a", PASSWORD + "x")  # wrong password
    assert not recent.seen("CP-1", "hash-b", PASSWORD)  # the stored hash changed (rotation)
    assert not recent.seen("CP-2", "hash-a", PASSWORD)  # another station
    clock.t += 60
    assert not recent.seen("CP-1", "hash-a", PASSWORD)  # lapsed
    assert not recent.seen("CP-1", "hash-a", PASSWORD)  # and gone


def test_nothing_usable_is_kept_and_the_size_is_capped() -> None:
    clock = Clock()
    recent = passwords.RecentLogins(ttl=60, max_entries=3, clock=clock)
    for i in range(5):
        recent.remember(f"CP-{i}", "h", PASSWORD)
    assert [recent.seen(f"CP-{i}", "h", PASSWORD) for i in range(5)] == [True] * 3 + [False] * 2
    # only (32-byte HMAC digest, expiry) per station: neither the password nor the stored hash
    assert all(
        isinstance(digest, bytes) and len(digest) == 32 and isinstance(expiry, float)
        for digest, expiry in recent._seen.values()
    )
    kept = [value for value in vars(recent).values() if isinstance(value, (str, bytes))]
    kept += [digest for digest, _ in recent._seen.values()]
    assert not any(PASSWORD.encode() in v or v == b"h" for v in map(_as_bytes, kept))
    clock.t += 61  # all lapsed: room again
    recent.remember("CP-9", "h", PASSWORD)
    assert recent.seen("CP-9", "h", PASSWORD)


async def test_a_reconnect_skips_argon2_but_a_wrong_password_or_new_hash_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = station_passwords.hash_station_secret(PASSWORD)
    calls: list[str] = []
    real = station_passwords.verify_station_secret

    def counting(stored_hash: str | None, password: str) -> bool:
        calls.append(password)
        return real(stored_hash, password)

    monkeypatch.setattr(station_passwords, "verify_station_secret", counting)
    db = await Database.open(data_dir=tmp_path)  # the paths below read nothing from it
    recent = passwords.RecentLogins()
    auth = StationAuth(2, stored, None)

    async def login(password: str, auth: StationAuth = auth) -> bool:
        return await station_security.check_password(db, "CP-1", password, auth, recent)

    assert await login(PASSWORD) and len(calls) == 1
    assert await login(PASSWORD) and len(calls) == 1  # reconnect: no argon2
    assert not await login("wrong-password-wrong-password") and len(calls) == 2
    rotated = StationAuth(
        2, station_passwords.hash_station_secret("a-new-password-0123456789"), None
    )
    assert not await login(PASSWORD, rotated) and len(calls) == 3  # old password, new hash
    await db.close()
