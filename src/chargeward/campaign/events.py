"""What happens to a station in a campaign, as events for :func:`chargeward.campaign.machine.step`:
the scheduler's own acts (Dispatched, Rescheduled, Tick, StageStarted, Defer, Resume, Abort,
Retry) and the station's reports (Response, Status, Boot, Fault, Charging).  Plain frozen
values, with the instant they happened.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class At:
    """An event at an instant; the plain ones carry nothing else."""

    at: dt.datetime


@dataclass(frozen=True)
class Dispatched(At):
    """The scheduler sent UpdateFirmware with ``request_id`` (``installDateTime`` =
    ``install_at`` when given)."""

    request_id: int
    install_at: dt.datetime | None = None


@dataclass(frozen=True)
class Rescheduled(At):
    """The scheduler re-sent UpdateFirmware for the same release as ``request_id``, to
    install at ``install_at``; ``reason`` says why.  Not an attempt."""

    request_id: int
    install_at: dt.datetime
    reason: str


@dataclass(frozen=True)
class Response(At):
    """The station's UpdateFirmwareResponse (or ``NoResponse``/``Error:...``)."""

    status: str


@dataclass(frozen=True)
class Status(At):
    """A FirmwareStatusNotification for the station's current request."""

    status: str


@dataclass(frozen=True)
class Boot(At):
    """A BootNotification; ``versions`` per component (``main`` = firmwareVersion)."""

    reason: str
    versions: Mapping[str, str]


@dataclass(frozen=True)
class Fault(At):
    """Something unhealthy: a Faulted connector, a critical security event, a rollback event."""

    kind: str  # connector_faulted | security_event | rolled_back
    detail: str = ""


@dataclass(frozen=True)
class Charging(At):
    """A transaction started (``active``) or the last one ended."""

    active: bool


class Tick(At):
    """Time passed: deadlines and soaks are checked."""


class StageStarted(At):
    """The station's stage started."""


class Defer(At):
    """The planner found the station charging when it could have been dispatched."""


class Resume(At):
    """No longer charging: back to waiting for a slot."""


class Abort(At):
    """The campaign was aborted."""


class Retry(At):
    """An operator retries a failed or skipped station: its attempts start again."""


Event = (
    Dispatched
    | Rescheduled
    | Response
    | Status
    | Boot
    | Fault
    | Charging
    | Tick
    | StageStarted
    | Defer
    | Resume
    | Abort
    | Retry
)
