"""Per-station budgets of what a station may write to the audit log (ADR 0027): pure
counting in this process, one window per station and kind (security events, boots, refused
CSRs); :func:`chargeward.server.stations.station_reports.record_suppressed_events` writes a
window's summary.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# What a station writes to the audit log is budgeted per station and window (ADR 0027): the
# first ``budget`` reports of a kind in a window are stored and audited; the rest are only
# counted, and one summary entry per window says how many of which type were suppressed.
# SecurityEventNotification: ``station.security_events_suppressed`` (per event type).
SECURITY_EVENT_BUDGET = 20
SECURITY_EVENT_WINDOW = dt.timedelta(minutes=10)
# BootNotification: ``station.boots_suppressed`` (per boot reason).  A charger boots a few
# times a day; even a boot loop takes a minute or so per boot.
BOOT_BUDGET = 10
# Refused SignCertificate requests: ``station.certificates_refused_suppressed`` (per reason).
# Only refusals use it: a CSR the CSMS asked for is signed whatever the budget says.
CSR_REFUSAL_BUDGET = 5
_SUMMARY_TYPES = 20  # distinct types named in a summary; more are counted as "(other)"
_TYPE_CHARS = 60  # a type as named in a summary (OCPP event types are at most 50)


@dataclass
class _EventWindow:
    started_at: dt.datetime
    used: int = 0
    suppressed: dict[str, int] | None = None


@dataclass(frozen=True)
class SuppressedEvents:
    station_id: str
    window_started_at: dt.datetime
    types: dict[str, int]
    action: str = "station.security_events_suppressed"
    budget: int = SECURITY_EVENT_BUDGET


class StationWriteBudget:
    """Per-station windows of this process (a station's connection lives in one) for one
    kind of report: security events, boots, refused CSRs (ADR 0027)."""

    def __init__(
        self,
        budget: int = SECURITY_EVENT_BUDGET,
        window: dt.timedelta = SECURITY_EVENT_WINDOW,
        *,
        action: str = "station.security_events_suppressed",
    ) -> None:
        self.budget = budget
        self.window = window
        self.action = action  # the summary's audit action
        self._windows: dict[str, _EventWindow] = {}

    def admit(
        self, station_id: str, type: str, now: dt.datetime
    ) -> tuple[bool, SuppressedEvents | None]:
        """Whether this event is stored, and the summary of a window it closed (if any)."""
        closed: SuppressedEvents | None = None
        w = self._windows.get(station_id)
        if w is None or now - w.started_at >= self.window:
            closed = self.close(station_id)
            w = self._windows[station_id] = _EventWindow(now)
        if w.used < self.budget:
            w.used += 1
            return True, closed
        counts = w.suppressed if w.suppressed is not None else {}
        w.suppressed = counts
        key = type[:_TYPE_CHARS]
        key = key if key in counts or len(counts) < _SUMMARY_TYPES else "(other)"
        counts[key] = counts.get(key, 0) + 1
        return False, closed

    def close(self, station_id: str) -> SuppressedEvents | None:
        """The summary of what the station's window suppressed so far (then reset), if any.

        Called when a window ends and when the station disconnects; a reconnect keeps the
        window and what it used, so reconnecting does not buy a fresh budget.
        """
        w = self._windows.get(station_id)
        if w is None or not w.suppressed:
            return None
        summary = SuppressedEvents(
            station_id, w.started_at, dict(w.suppressed), self.action, self.budget
        )
        w.suppressed = None
        return summary
