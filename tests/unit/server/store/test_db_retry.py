"""Which database errors :meth:`Database.write` runs again and which answer 503 (ADR 0031);
the conflicts themselves are made for real in tests/storage/test_write_conflicts.py."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from chargeward.server.store.db import lost_to_concurrent, unavailable


def test_a_deadlock_is_retryable_and_another_error_is_not() -> None:
    """What :meth:`Database.write` runs again: 40001, 40P01, 55P03 (a lock wait past
    ``lock_timeout``) and "database is locked" only; a statement past ``statement_timeout``
    (57014) answers 503 without running again."""

    class Orig(Exception):
        def __init__(self, message: str, pgcode: str | None) -> None:
            super().__init__(message)
            self.pgcode = pgcode

    def error(message: str, pgcode: str | None = None) -> OperationalError:
        return OperationalError("UPDATE x", {}, Orig(message, pgcode))

    assert lost_to_concurrent(error("deadlock detected", "40P01")) == "deadlock"
    assert lost_to_concurrent(error("could not serialize", "40001")) == "serialization failure"
    assert lost_to_concurrent(error("database is locked")) == "database is locked"
    assert lost_to_concurrent(error("lock timeout", "55P03")) == "lock wait timed out"
    assert lost_to_concurrent(error("statement timeout", "57014")) is None
    assert unavailable(error("statement timeout", "57014")) is not None
    assert lost_to_concurrent(error("syntax error", "42601")) is None
    assert unavailable(error("too many clients", "53300")) is not None
    assert unavailable(ValueError("x")) is None
