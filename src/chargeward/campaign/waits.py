"""Why a campaign's station is not being updated, and when a stage has waited too long: pure.

The planner (:mod:`chargeward.campaign.planner`) gives every waiting or deferred station it
does not dispatch a :class:`WaitReason`, a code of :data:`WAIT_CODES` and a sentence::

    WaitReason("site_floor", "site depot has 1 available charger; keep_available = 1")
    WaitReason("offline", "offline since 2026-11-02 07:00 UTC", since=last_seen)

The scheduler stores them with the runs; :func:`current_reason` tells what a stored run waits
for (adding what only the run and its campaign say: its stage has not started, the campaign is
paused or awaits approval, the station is asked about an unanswered request).
:func:`stage_overdue` is the planner's check of the spec's ``stage_deadline``
(docs/adr/0032-campaign-waiting-reasons.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chargeward.campaign.machine import TERMINAL, StationRun, span
from chargeward.campaign.spec import CampaignSpec

# Why a station is not being updated: :class:`WaitReason`'s codes.  The planner finds the first
# seven; the scheduler the ones only sending can tell (the release, the site's cache); the rest
# are read off the stored run and its campaign (:func:`current_reason`).
WAIT_CODES: tuple[str, ...] = (
    "offline",  # not connected: "offline since T"
    "global_limit",  # the campaign's global limit of stations updating at once is reached
    "jitter",  # its random start delay after its stage started has not passed
    "window",  # outside its site's maintenance window, or too little of it left
    "charging",  # a charging session is active (deferred, OCPP L01.FR.06)
    "site_limit",  # per_site chargers of its site are updating already
    "site_floor",  # dispatching it would leave fewer than keep_available chargers available
    "release_unpublished",  # the release is not published in the TUF repository
    "site_cache",  # the site's Local Controller is publishing the image
    "not_sent",  # the server could not send it (e.g. an operator's own update is in progress)
    "stage",  # its stage has not started
    "confirm",  # asking the station whether it still works on its request
    "paused",  # the campaign is paused
    "approval",  # the campaign awaits a second person's approval
    "next_tick",  # waiting and not yet looked at by the scheduler
)


@dataclass(frozen=True)
class WaitReason:
    """Why a station is not being updated now: a code of :data:`WAIT_CODES`, a sentence, and
    since when (the stored form keeps the first time a code was seen)."""

    code: str
    text: str
    since: dt.datetime | None = None

    def document(self) -> dict[str, Any]:
        """The stored and API form: ``{"code", "text", "since"}``."""
        since = self.since.astimezone(dt.UTC).isoformat() if self.since is not None else None
        return {"code": self.code, "text": self.text, "since": since}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> WaitReason:
        since = doc.get("since")
        return cls(
            str(doc.get("code", "")),
            str(doc.get("text", "")),
            dt.datetime.fromisoformat(since) if isinstance(since, str) else None,
        )


@dataclass(frozen=True)
class StageOverdue:
    """The current stage ran past the campaign's ``stage_deadline`` without passing its
    success gate; ``waiting`` lists the stations held back, per wait code."""

    stage: int
    started_at: dt.datetime
    succeeded: int
    needed: int
    stations: int
    waiting: Mapping[str, tuple[str, ...]]
    paused: bool
    text: str


def current_reason(
    *,
    state: str,
    stage: int,
    phase: str | None,
    reason: str | None,
    stored: Mapping[str, Any] | None,
    status: str,
    campaign_stage: int,
    pause_reason: str | None = None,
) -> WaitReason | None:
    """What a station waits for now, from its stored run (``state``, ``stage``, ``phase``,
    ``reason``; ``stored``: the last :class:`WaitReason` the scheduler stored for it) and its
    campaign (``status``, ``campaign_stage``); None for a station in flight or finished."""
    if phase == "confirm":  # asking the station whether it still works on its request
        return WaitReason("confirm", reason or "asking the station about its request")
    ended = status in ("aborted", "completed", "rolled_back")
    if state not in ("pending", "waiting", "deferred") or ended:
        return None
    if status == "awaiting_approval":
        return WaitReason("approval", "the campaign awaits a second person's approval")
    if status == "paused":
        return WaitReason("paused", f"campaign paused: {pause_reason or 'by an operator'}")
    if stored and stored.get("code"):
        return WaitReason.from_document(stored)
    if state == "pending" and stage > campaign_stage:
        return WaitReason(
            "stage",
            f"its stage ({stage}) has not started; the campaign is at stage {campaign_stage}",
        )
    return WaitReason("next_tick", "not yet looked at: the scheduler decides on its next tick")


def stage_overdue(
    spec: CampaignSpec,
    stage: int,
    started: dt.datetime | None,
    runs: Mapping[str, StationRun],
    reasons: Mapping[str, WaitReason],
    now: dt.datetime,
) -> StageOverdue | None:
    """``stage`` (the current one, started at ``started``), if it ran past the spec's
    ``stage_deadline`` without passing its success gate; ``reasons``: why each of ``runs``
    that waits does (the planner's ``Plan.reasons``)."""
    if started is None or now < started + spec.stage_deadline:
        return None
    own = [r for r in runs.values() if r.stage == stage and r.state != "canceled"]
    succeeded = sum(r.state == "succeeded" for r in own)
    needed = spec.gates.success.of(len(own))
    held: dict[str, list[str]] = {}
    for sid in sorted(reasons):
        if runs[sid].stage <= stage:
            held.setdefault(reasons[sid].code, []).append(sid)
    text = (
        f"stage {stage} not through its success gate {span(spec.stage_deadline)} "
        f"after it started: {succeeded} of {len(own)} succeeded, {needed} needed"
    )
    if held:
        text += "; waiting: " + ", ".join(
            f"{code} {len(ids)} ({_some(ids)})" for code, ids in sorted(held.items())
        )
    busy: dict[str, int] = {}
    for r in own:
        if r.state not in TERMINAL and r.station_id not in reasons:
            busy[r.state] = busy.get(r.state, 0) + 1
    if busy:
        text += "; " + ", ".join(f"{n} {state}" for state, n in sorted(busy.items()))
    return StageOverdue(
        stage,
        started,
        succeeded,
        needed,
        len(own),
        {code: tuple(ids) for code, ids in held.items()},
        spec.on_stage_deadline == "pause",
        text,
    )


def _some(ids: list[str], most: int = 3) -> str:
    shown = ", ".join(ids[:most])
    return shown if len(ids) <= most else f"{shown} and {len(ids) - most} more"
