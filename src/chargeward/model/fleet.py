"""Fleet registry rules, free of I/O: site time zones, maintenance windows, support periods.

A maintenance window is weekly and in the site's local time; it may cross midnight (the days
name the day it *starts*).  DST is handled by converting the instant to local time::

    >>> w = parse_windows([{"days": ["sat", "sun"], "start": "22:00", "end": "04:00"}])
    >>> in_window(w, "Europe/London", dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC))
    True
    >>> next_window_start(w, "Europe/London", dt.datetime(2026, 10, 30, 12, 0, tzinfo=dt.UTC))
    datetime.datetime(2026, 10, 31, 22, 0, tzinfo=datetime.timezone.utc)

An install must also end inside its window: :func:`window_close` says when the window an
instant lies in closes (DST and midnight alike), :func:`next_window_fit` the first window
start that leaves a given time::

    >>> window_close(w, "Europe/London", dt.datetime(2026, 10, 31, 23, 0, tzinfo=dt.UTC))
    datetime.datetime(2026, 11, 1, 4, 0, tzinfo=datetime.timezone.utc)

A support period ends on its end date (the last supported day): ``manufactured + years`` unless
the model names an explicit end date, which wins::

    >>> support_end(dt.date(2024, 2, 29), years=3, explicit=None)
    datetime.date(2027, 2, 28)
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from chargeward.errors import BundleError
from chargeward.limits import DEFAULT_FORMAT_LIMITS

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,48}$")
TAG_RE = re.compile(r"^[A-Za-z0-9_.:=-]{1,40}$")

SupportState = Literal["supported", "ending", "ended", "unknown"]


def check_id(field: str, value: str) -> str:
    if not ID_RE.fullmatch(value):
        raise BundleError(f"{field} must be 1-48 letters, digits, '_', '.' or '-'")
    return value


def check_tags(tags: Sequence[str]) -> list[str]:
    if len(tags) > DEFAULT_FORMAT_LIMITS.station_tags:
        raise BundleError(f"tags: at most {DEFAULT_FORMAT_LIMITS.station_tags} per station")
    for t in tags:
        if not TAG_RE.fullmatch(t):
            raise BundleError(f"tags: {t!r} must be 1-40 letters, digits or _ . : = -")
    return sorted(set(tags))


def check_timezone(name: str) -> str:
    """An IANA time zone name (``Europe/London``); anything else is refused."""
    if name not in available_timezones():
        raise BundleError(f"timezone: {name!r} is not an IANA time zone name (e.g. Europe/Berlin)")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:  # pragma: no cover - listed but unreadable
        raise BundleError(f"timezone: {name!r} cannot be loaded") from e
    return name


@dataclass(frozen=True)
class MaintenanceWindow:
    days: tuple[str, ...]
    start: dt.time
    end: dt.time

    def as_dict(self) -> dict[str, object]:
        return {
            "days": list(self.days),
            "start": self.start.strftime("%H:%M"),
            "end": self.end.strftime("%H:%M"),
        }


def _hhmm(field: str, value: object) -> dt.time:
    if not isinstance(value, str) or not _HHMM.fullmatch(value):
        raise BundleError(f"{field} must be a time HH:MM (00:00-23:59), got {value!r}")
    return dt.time(int(value[:2]), int(value[3:]))


def parse_windows(
    raw: Sequence[object], field: str = "maintenance_windows"
) -> list[MaintenanceWindow]:
    """Validate weekly windows ``{"days": [...], "start": "HH:MM", "end": "HH:MM"}``
    (``field`` names them in errors)."""
    if len(raw) > DEFAULT_FORMAT_LIMITS.maintenance_windows:
        raise BundleError(f"{field}: at most {DEFAULT_FORMAT_LIMITS.maintenance_windows} windows")
    out: list[MaintenanceWindow] = []
    for i, item in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(item, dict) or set(item) - {"days", "start", "end"}:
            raise BundleError(f"{where} must be an object with days, start and end only")
        days = item.get("days")
        if not isinstance(days, list) or not days:
            raise BundleError(f"{where}.days must be a non-empty list of {', '.join(DAYS)}")
        for d in days:
            if d not in DAYS:
                raise BundleError(f"{where}.days: {d!r} is not one of {', '.join(DAYS)}")
        start = _hhmm(f"{where}.start", item.get("start"))
        end = _hhmm(f"{where}.end", item.get("end"))
        if start == end:
            raise BundleError(f"{where}: start and end are equal; a window needs a length")
        out.append(MaintenanceWindow(tuple(d for d in DAYS if d in days), start, end))
    return out


def in_window(windows: Sequence[MaintenanceWindow], timezone: str, instant: dt.datetime) -> bool:
    """Whether ``instant`` (aware) falls in one of the weekly ``windows`` of the local zone."""
    local = instant.astimezone(ZoneInfo(timezone))
    t = local.time().replace(tzinfo=None)
    today = DAYS[local.weekday()]
    yesterday = DAYS[(local.weekday() - 1) % 7]
    for w in windows:
        if w.start < w.end:
            if today in w.days and w.start <= t < w.end:
                return True
        elif (today in w.days and t >= w.start) or (yesterday in w.days and t < w.end):
            return True  # crosses midnight: starts on a listed day, ends the next
    return False


def next_window_start(
    windows: Sequence[MaintenanceWindow], timezone: str, after: dt.datetime
) -> dt.datetime | None:
    """The first instant at or after ``after`` (aware) at which one of ``windows`` opens, in
    UTC; None without windows.

    Each start is the local wall time in ``timezone`` on a listed day.  Across the autumn
    change a repeated wall time opens at its first occurrence; a start that falls into the
    spring gap opens when the clocks go forward (the first instant :func:`in_window` holds).
    A window that lies wholly inside the gap does not open that day.  The result always
    satisfies ``in_window(windows, timezone, result)``.
    """
    if not windows:
        return None
    zone = ZoneInfo(timezone)
    after = after.astimezone(dt.UTC)
    first = after.astimezone(zone).date()
    best: dt.datetime | None = None
    for offset in range(-1, 9):  # a week and a day either side covers every weekly start
        day = first + dt.timedelta(days=offset)
        for w in windows:
            if DAYS[day.weekday()] not in w.days:
                continue
            wall = dt.datetime.combine(day, w.start)
            early = wall.replace(tzinfo=zone, fold=0).astimezone(dt.UTC)
            late = wall.replace(tzinfo=zone, fold=1).astimezone(dt.UTC)
            lo, hi = min(early, late), max(early, late)
            if in_window(windows, timezone, lo):
                start = lo
            elif lo != hi and in_window(windows, timezone, hi):
                start = _first_inside(windows, timezone, lo, hi)  # the spring gap
            else:
                continue
            if start >= after and (best is None or start < best):
                best = start
    return best


def _first_inside(
    windows: Sequence[MaintenanceWindow],
    timezone: str,
    lo: dt.datetime,
    hi: dt.datetime,
    inside: bool = True,
) -> dt.datetime:
    """The first second in ``(lo, hi]`` inside a window (``lo`` outside, ``hi`` inside); with
    ``inside=False`` the first second outside (``lo`` inside, ``hi`` outside)."""
    while hi - lo > dt.timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid <= lo:
            break
        if in_window(windows, timezone, mid) == inside:
            hi = mid
        else:
            lo = mid
    return hi


def window_close(
    windows: Sequence[MaintenanceWindow], timezone: str, instant: dt.datetime
) -> dt.datetime | None:
    """When the window ``instant`` (aware) lies in closes, in UTC: the first instant after it
    outside every window; None when ``instant`` is outside them all.

    Windows that touch or overlap count as one.  Each end is the local wall time in
    ``timezone``, so across a DST change a window lasts an hour more or less in real time; an
    end that falls into the spring gap closes the window when the clocks go forward (the
    first instant :func:`in_window` no longer holds).  Windows open all week long close a
    week and a day on, at the latest.

    >>> w = parse_windows([{"days": ["sun"], "start": "00:30", "end": "03:00"}])
    >>> window_close(w, "Europe/London", dt.datetime(2026, 3, 29, 0, 45, tzinfo=dt.UTC))
    datetime.datetime(2026, 3, 29, 2, 0, tzinfo=datetime.timezone.utc)
    """
    if not in_window(windows, timezone, instant):
        return None
    zone = ZoneInfo(timezone)
    instant = instant.astimezone(dt.UTC)
    first = instant.astimezone(zone).date()
    ends: set[dt.datetime] = set()
    for offset in range(-1, 10):
        day = first + dt.timedelta(days=offset)
        for w in windows:
            wall = dt.datetime.combine(day, w.end)
            for fold in (0, 1):
                end = wall.replace(tzinfo=zone, fold=fold).astimezone(dt.UTC)
                if end > instant:
                    ends.add(end)
    lo = instant
    for end in sorted(ends):
        if in_window(windows, timezone, end):
            lo = end  # another window goes on from here
            continue
        return _first_inside(windows, timezone, lo, end, inside=False)
    return lo


def next_window_fit(
    windows: Sequence[MaintenanceWindow],
    timezone: str,
    after: dt.datetime,
    need: dt.timedelta,
) -> dt.datetime | None:
    """The first window start at or after ``after`` whose window stays open at least
    ``need`` from its start (an install that takes ``need`` ends inside it), in UTC; None
    without windows or when none of them is long enough within a few weeks.

    >>> w = parse_windows([{"days": ["sun"], "start": "01:30", "end": "03:00"}])
    >>> saturday = dt.datetime(2026, 3, 28, tzinfo=dt.UTC)
    >>> next_window_fit(w, "Europe/London", saturday, dt.timedelta(minutes=60))
    datetime.datetime(2026, 3, 29, 1, 0, tzinfo=datetime.timezone.utc)
    >>> next_window_fit(w, "Europe/London", saturday, dt.timedelta(minutes=61))
    datetime.datetime(2026, 4, 5, 0, 30, tzinfo=datetime.timezone.utc)

    (On 29 March 01:30 does not exist: that day's window runs from 01:00 UTC, when the clocks
    go forward to 02:00, until 03:00 BST, 60 minutes; a week later it has its 90.)
    """
    start = next_window_start(windows, timezone, after)
    for _ in range(4 * 7 * max(len(windows), 1) + 1):  # every weekly start, for four weeks
        if start is None:
            return None
        close = window_close(windows, timezone, start)
        if close is None or close - start >= need:
            return start
        start = next_window_start(windows, timezone, close)
    return None


def add_years(day: dt.date, years: int) -> dt.date:
    """``day`` ``years`` later; beyond the calendar's range, its last (or first) day."""
    year = day.year + years
    if not dt.MINYEAR <= year <= dt.MAXYEAR:  # a stored year-9999 date must not break pages
        return dt.date.max if years > 0 else dt.date.min
    try:
        return day.replace(year=year)
    except ValueError:  # 29 February into a common year
        return day.replace(year=year, day=28)


def support_end(
    manufactured: dt.date | None, *, years: int, explicit: dt.date | None
) -> dt.date | None:
    """The last supported day: the model's explicit date, else manufacture + ``years``."""
    if explicit is not None:
        return explicit
    return add_years(manufactured, years) if manufactured is not None else None


def support_state(end: dt.date | None, today: dt.date, within_days: int) -> SupportState:
    """``ended`` after the end date, ``ending`` within ``within_days`` of it (the end day
    included), ``unknown`` without a date."""
    if end is None:
        return "unknown"
    left = (end - today).days
    if left < 0:
        return "ended"
    return "ending" if left <= within_days else "supported"
