"""The stored form of campaign state: plain JSON values, read back exactly.

The scheduler keeps nothing in memory between ticks: what :func:`run_to_row` writes is all a
restarted server (or a new leader) has, so ``run_from_row(run_to_row(r)) == r`` must hold for
every state the machine can reach (tests/unit/campaign/test_campaign_properties.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from chargeward.campaign.machine import State, StationRun

Timeline = tuple[tuple[str, str, str], ...]


def _time(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value is not None else None


def _parse(value: object) -> dt.datetime | None:
    if value is None:
        return None
    return dt.datetime.fromisoformat(str(value)).astimezone(dt.UTC)


def run_to_row(run: StationRun) -> dict[str, Any]:
    return {
        "station_id": run.station_id,
        "stage": run.stage,
        "state": run.state,
        "attempts": run.attempts,
        "request_id": run.request_id,
        "phase": run.phase,
        "deadline": _time(run.deadline),
        "charging_since": _time(run.charging_since),
        "soak_until": _time(run.soak_until),
        "boots_in_soak": run.boots_in_soak,
        "last_status": run.last_status,
        "reason": run.reason,
        "started_at": _time(run.started_at),
        "finished_at": _time(run.finished_at),
        "timeline": [list(t) for t in run.timeline],
        "install_at": _time(run.install_at),
        "reschedules": run.reschedules,
        "rescheduled_from": run.rescheduled_from,
        "window_guard": run.window_guard,
    }


def run_from_row(row: dict[str, Any]) -> StationRun:
    return StationRun(
        station_id=str(row["station_id"]),
        stage=int(row["stage"]),
        state=cast(State, row["state"]),
        attempts=int(row["attempts"]),
        request_id=row.get("request_id"),
        phase=row.get("phase"),
        deadline=_parse(row.get("deadline")),
        charging_since=_parse(row.get("charging_since")),
        soak_until=_parse(row.get("soak_until")),
        boots_in_soak=int(row.get("boots_in_soak", 0)),
        last_status=row.get("last_status"),
        reason=row.get("reason"),
        started_at=_parse(row.get("started_at")),
        finished_at=_parse(row.get("finished_at")),
        # Up to timeline_cap entries per run, decoded on every report and tick: map(tuple)
        # keeps that a C loop (the entries are the strings run_to_row stored).
        timeline=cast(Timeline, tuple(map(tuple, row.get("timeline", ())))),
        install_at=_parse(row.get("install_at")),
        reschedules=int(row.get("reschedules", 0)),
        rescheduled_from=row.get("rescheduled_from"),
        window_guard=bool(row.get("window_guard", True)),
    )
