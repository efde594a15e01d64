"""Invariants of a rollout under faults, from what the chargers saw and the server recorded.

- no charger is sent a second UpdateFirmware unless the one before it failed (a failure
  status, or an answer other than Accepted) or the server moved its install (a reschedule,
  answered ``AcceptedCanceled``);
- at no time were more stations updating than the campaign's global or per-site limit allows
  (from the server's per-station timelines: dispatched to rebooting, what the planner counts;
  and from the chargers' side: an accepted request to InstallRebooting or a failure, which
  lies inside the server's span);
- no station of a stage was dispatched before the stage before it passed its success gate.

    >>> from chargeward.sim.station import FirmwareEvent as E
    >>> retried = [E(0, "request", "Accepted", 1), E(1, "status", "DownloadFailed", 1),
    ...            E(2, "request", "Accepted", 2)]
    >>> second_requests("CP-1", retried, reschedules=0)
    ([], 0)
    >>> doubles, _ = second_requests("CP-1", retried[:1] + retried[2:], reschedules=0)
    >>> print(*doubles)
    CP-1: request 2 (answered Accepted) while request 1 was live (statuses since: [])
    >>> most_at_once([(0.0, 2.0, "x"), (1.0, 3.0, "y"), (2.0, 4.0, "x")])
    (2, {'x': 1, 'y': 1})
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from chargeward.campaign.machine import ACCEPTED_RESPONSES, FAILED_STATUSES
from chargeward.campaign.planner import UPDATING
from chargeward.sim.station import FirmwareEvent

Span = tuple[float, float, str]  # start, end, site
ENDS = FAILED_STATUSES | {"InstallRebooting", "Installed"}  # the charger is done with it


def second_requests(
    station_id: str, events: Sequence[FirmwareEvent], *, reschedules: int
) -> tuple[list[str], int]:
    """The UpdateFirmware requests that came while an earlier one was still live (no failure
    in between), and how many of them were reschedules (``AcceptedCanceled`` while the server
    counted ``reschedules`` for the station)."""
    doubles: list[str] = []
    rescheduled = 0
    live: FirmwareEvent | None = None  # the newest accepted request, not failed since
    for e in events:
        if e.kind == "status":
            if e.value in FAILED_STATUSES:
                live = None
            continue
        if live is not None:
            if e.value == "AcceptedCanceled" and rescheduled < reschedules:
                rescheduled += 1
            else:
                doubles.append(
                    f"{station_id}: request {e.request_id} (answered {e.value}) while request "
                    f"{live.request_id} was live (statuses since: "
                    f"{[x.value for x in events if x.kind == 'status' and x.at >= live.at]})"
                )
        live = e if e.value in ACCEPTED_RESPONSES else None
    return doubles, rescheduled


def charger_spans(events: Sequence[FirmwareEvent], site: str) -> list[Span]:
    """Accepted request to InstallRebooting (or Installed, or a failure): the charger busy."""
    spans: list[Span] = []
    start: float | None = None
    for e in events:
        if e.kind == "request" and e.value in ACCEPTED_RESPONSES:
            if start is None:
                start = e.at
        elif e.kind == "status" and start is not None and e.value in ENDS:
            spans.append((start, e.at, site))
            start = None
    if start is not None:
        spans.append((start, math.inf, site))
    return spans


def server_spans(run: Mapping[str, Any], site: str) -> list[Span]:
    """The spans the server counted the run as updating (states the planner limits)."""
    spans: list[Span] = []
    start: float | None = None
    for when, state, *_ in run["timeline"]:
        t = dt.datetime.fromisoformat(when).timestamp()
        if state in UPDATING and start is None:
            start = t
        elif state not in UPDATING and start is not None:
            spans.append((start, t, site))
            start = None
    if start is not None:
        spans.append((start, math.inf, site))
    return spans


def most_at_once(spans: Iterable[Span]) -> tuple[int, dict[str, int]]:
    """The most spans open at one time, in all and per site (an end at the same time as a
    start comes first)."""
    edges = sorted(
        [(s, 1, site) for s, _, site in spans] + [(e, -1, site) for _, e, site in spans],
        key=lambda x: (x[0], x[1]),
    )
    now, most = 0, 0
    per: Counter[str] = Counter()
    per_most: dict[str, int] = {}
    for _, delta, site in edges:
        now += delta
        per[site] += delta
        most = max(most, now)
        per_most[site] = max(per_most.get(site, 0), per[site])
    return most, per_most


def _first(run: Mapping[str, Any], state: str) -> dt.datetime | None:
    for when, s, *_ in run["timeline"]:
        if s == state:
            return dt.datetime.fromisoformat(when)
    return None


def stages_out_of_order(runs: Sequence[Mapping[str, Any]], success_percent: float) -> list[str]:
    """Stations dispatched before the stage before theirs had passed its success gate."""
    out: list[str] = []
    stages = sorted({r["stage"] for r in runs})
    for k in stages:
        if k == 0:
            continue
        before = [r for r in runs if r["stage"] == k - 1 and r["state"] != "canceled"]
        need = min(len(before), math.ceil(success_percent * len(before) / 100 - 1e-9))
        done = sorted(t for r in before if (t := _first(r, "succeeded")) is not None)
        if need == 0:
            continue
        passed = done[need - 1] if len(done) >= need else None
        for r in runs:
            if r["stage"] != k or (sent := _first(r, "dispatched")) is None:
                continue
            if passed is None or sent < passed:
                out.append(
                    f"{r['station_id']} (stage {k}) dispatched at {sent}, stage {k - 1} "
                    f"passed at {passed}"
                )
    return out


_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Lost|Timeout)\w*\b")
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+ [\w.]+: .*)$")


def tracebacks(text: str) -> Counter[str]:
    """The tracebacks in a server log, as "<the log line before it> -> <its exception>",
    station ids and numbers blanked so that repeats count together."""
    found: Counter[str] = Counter()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("Traceback"):
            i += 1
            continue
        before = next((m[1] for j in range(i - 1, -1, -1) if (m := _LOG_LINE.match(lines[j]))), "?")
        last = "?"
        while i < len(lines) and not _LOG_LINE.match(lines[i]):
            if _EXCEPTION.match(lines[i]):
                last = lines[i]  # the chain's last exception: what it ended with
            elif lines[i].startswith("[SQL: "):
                last += f" [{lines[i][6:60].strip()}]"  # which statement
            i += 1
        found[re.sub(r"\d+", "N", f"{before} -> {last}")[:300]] += 1
    return found
