"""One station's way through a campaign: a pure state machine over events and a clock.

    s = StationRun("CP-1", stage=0)
    s = step(s, Dispatched(at=t0, request_id=7), policy)
    s = step(s, Status("Downloading", at=t1), policy)

States, and what moves a station on::

    pending ── its stage starts ──> waiting ── in window, free, not charging ──> dispatched
    waiting <──> deferred              (a transaction is active: counted apart, never a failure)
    deferred ── still charging after ``max_deferral`` ──> canceled, reason "skipped: ..."
                                       (reported; its stage goes on without it; Retry revives it)
    dispatched ── Accepted, Download* ──> downloading ── Installing ──> installing
    installing ── Installed / InstallRebooting ──> rebooting
    rebooting ── BootNotification(FirmwareUpdate) with every expected version ──> soaking
    soaking ── soak time without faults, security events or a reboot loop ──> succeeded

    any failure status, a refused request, or a timeout ──> waiting again while attempts are
    left (``max_attempts`` in all) and a retry can help, else failed / timed_out
    a request that never reached the station (``NotConnected``, ``NotDelivered``: no node
    held it, or its node was gone) ──> waiting, and it is no attempt: the infrastructure
    failed, not the station
    no answer to the request (``NoResponse``: the reply, or the node that sent it, was lost;
    or the response deadline passed) ──> still dispatched, phase *confirm*: the request may
    have reached the station, so none is sent again while the station is asked
    (TriggerMessage(FirmwareStatusNotification)); a progress status for the request adopts it,
    ``Idle``, a failure status or the end of the confirm deadline is a failed attempt
    a progress status for the run's request while it waits to be sent again ──> adopted: the
    station works on it (its acceptance was lost with the node that sent the request)
    a boot that reports the old version after the install started ──> rolled_back
    abort ──> canceled (only stations not yet installing)

A request may carry an install time (OCPP ``installDateTime``: the start of the site's next
maintenance window when the station was sent it ahead of the window).  Once the image is in,
the install deadline counts from that time, not from the download, so a station waiting for
its window is never timed out.  A station whose install has not started when it finds itself
outside its window is *rescheduled*: a new request for the same release with the next window's
start (the station answers ``AcceptedCanceled`` for the old one, OCPP L01).  A reschedule is
not an attempt; if the station refuses it, the run follows the old request again.

Phase deadlines stop while the station is charging (OCPP L01.FR.06/07: it waits for the
session to end), so a long session never times a station out.  Nothing here reads a clock
or the database; the scheduler feeds events in and persists what comes out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from chargeward.campaign.events import (
    Abort,
    Boot,
    Charging,
    Defer,
    Dispatched,
    Event,
    Fault,
    Rescheduled,
    Response,
    Resume,
    Retry,
    StageStarted,
    Status,
    Tick,
)
from chargeward.campaign.spec import CampaignSpec

__all__ = [  # the events are re-exported: machine.Dispatched, machine.Status, ...
    "ACCEPTED_RESPONSES",
    "COMMITTED",
    "DOWNLOADED_STATUSES",
    "DOWNLOAD_STATUSES",
    "ERRORS",
    "FAILED_STATUSES",
    "IDLE",
    "INSTALLED_STATUSES",
    "INSTALL_STATUSES",
    "IN_FLIGHT",
    "PROGRESS_STATUSES",
    "REBOOT_LOOP",
    "SKIPPED",
    "TERMINAL",
    "UNANSWERED_RESPONSES",
    "UNDELIVERED_RESPONSES",
    "Abort",
    "Boot",
    "Charging",
    "Defer",
    "Dispatched",
    "Event",
    "Fault",
    "Policy",
    "Rescheduled",
    "Response",
    "Resume",
    "Retry",
    "StageStarted",
    "State",
    "StationRun",
    "Status",
    "Tick",
    "counts",
    "span",
    "step",
]

State = Literal[
    "pending",
    "waiting",
    "deferred",
    "dispatched",
    "downloading",
    "installing",
    "rebooting",
    "soaking",
    "succeeded",
    "failed",
    "rolled_back",
    "timed_out",
    "canceled",
]
TERMINAL: frozenset[str] = frozenset(
    {"succeeded", "failed", "rolled_back", "timed_out", "canceled"}
)
ERRORS: frozenset[str] = frozenset({"failed", "rolled_back", "timed_out"})
# The reason of a station skipped after charging for longer than the campaign's max_deferral.
SKIPPED = "skipped: "
IN_FLIGHT: frozenset[str] = frozenset(
    {"dispatched", "downloading", "installing", "rebooting", "soaking"}
)
# Past this point the charger is writing or running the new image: abort leaves it alone.
COMMITTED: frozenset[str] = frozenset({"installing", "rebooting", "soaking"})

# OCPP 2.0.1 FirmwareStatusEnumType, mapped onto the phases.
DOWNLOAD_STATUSES = frozenset(
    {"Downloading", "Downloaded", "DownloadScheduled", "DownloadPaused", "SignatureVerified"}
)
# The image is in: a station with an install time now waits for it.
DOWNLOADED_STATUSES = frozenset({"Downloaded", "SignatureVerified"})
INSTALL_STATUSES = frozenset({"Installing", "InstallScheduled"})
INSTALLED_STATUSES = frozenset({"Installed", "InstallRebooting"})
FAILED_STATUSES = frozenset(
    {
        "DownloadFailed",
        "InvalidSignature",
        "InstallVerificationFailed",
        "InvalidCertificate",
        "RevokedCertificate",
        "InstallationFailed",
    }
)
ACCEPTED_RESPONSES = frozenset({"Accepted", "AcceptedCanceled"})
# Answers of the server itself for a request that certainly never reached the station.
UNDELIVERED_RESPONSES = frozenset({"NotConnected", "NotDelivered"})
# Answers after which the request may or may not have reached the station: it is asked.
UNANSWERED_RESPONSES = frozenset({"NoResponse"})
FINAL_RESPONSES = frozenset({"SignedUpdateUnsupported"})  # a retry cannot help (1.6, ADR 0039)
PROGRESS_STATUSES = DOWNLOAD_STATUSES | INSTALL_STATUSES | INSTALLED_STATUSES  # it works on one
IDLE = "Idle"  # FirmwareStatusNotification: no request in progress (OCPP L01.FR.26)
REBOOT_LOOP = 2  # boots during the soak beyond the update's own


@dataclass(frozen=True)
class StationRun:
    """A station's progress in one campaign (one row of ``campaign_stations``)."""

    station_id: str
    stage: int
    state: State = "pending"
    attempts: int = 0  # UpdateFirmware requests sent
    request_id: int | None = None  # of the newest request: ties statuses to this campaign
    # which deadline runs: response | confirm | download | install | reboot | deferral
    phase: str | None = None
    deadline: dt.datetime | None = None
    charging_since: dt.datetime | None = None  # deadlines stop while a session runs
    soak_until: dt.datetime | None = None
    boots_in_soak: int = 0
    last_status: str | None = None
    reason: str | None = None  # why it failed, was deferred or was canceled
    started_at: dt.datetime | None = None  # first dispatch
    finished_at: dt.datetime | None = None
    timeline: tuple[tuple[str, str, str], ...] = ()  # (time, state, note), newest last
    install_at: dt.datetime | None = None  # the request's installDateTime, if it has one
    reschedules: int = 0  # requests re-sent to move the install into a window (no attempt)
    rescheduled_from: int | None = None  # the request a pending reschedule replaces
    window_guard: bool = True  # False once a reschedule was refused: never re-sent again

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def skipped(self) -> bool:
        """Canceled because it was deferred (charging) past the campaign's ``max_deferral``."""
        return self.state == "canceled" and (self.reason or "").startswith(SKIPPED)

    @property
    def install_pending(self) -> bool:
        """The station accepted the request (or may have) and has not started installing."""
        if self.state in ("dispatched", "downloading"):
            return True
        return self.state == "installing" and self.last_status != "Installing"


@dataclass(frozen=True)
class Policy:
    """What the machine needs of a campaign."""

    expected: Mapping[str, str]  # component -> version the release brings
    spec: CampaignSpec
    timeline_cap: int = 40

    def timeout(self, phase: str) -> dt.timedelta:
        t = self.spec.timeouts
        return {
            "response": t.response,
            "confirm": t.response,  # asking whether an unanswered request reached it
            "download": t.download,
            "install": t.install,
            "reboot": t.reboot,
        }[phase]


# -- the machine ---------------------------------------------------------------------------------


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _to(
    run: StationRun,
    state: State,
    at: dt.datetime,
    policy: Policy,
    note: str = "",
    **changes: object,
) -> StationRun:
    timeline = (*run.timeline, (_iso(at), state, note))[-policy.timeline_cap :]
    return replace(
        run,
        state=state,
        timeline=timeline,
        finished_at=at if state in TERMINAL else None,
        **changes,  # type: ignore[arg-type]
    )


def _phase(phase: str, at: dt.datetime, policy: Policy) -> dict[str, object]:
    """The fields that start ``phase``'s deadline (frozen while charging)."""
    return {"phase": phase, "deadline": at + policy.timeout(phase)}


def _failure(
    run: StationRun, at: dt.datetime, policy: Policy, reason: str, timed_out: bool = False
) -> StationRun:
    """A failed attempt: wait for another while attempts are left (and may help), else the end."""
    if run.attempts < policy.spec.max_attempts and reason.split()[-1] not in FINAL_RESPONSES:
        return _to(
            run, "waiting", at, policy, f"retry: {reason}", reason=reason, phase=None, deadline=None
        )
    final: State = "timed_out" if timed_out else "failed"
    return _to(run, final, at, policy, reason, reason=reason, phase=None, deadline=None)


def _versions_ok(versions: Mapping[str, str], expected: Mapping[str, str]) -> bool:
    return all(versions.get(c) == v for c, v in expected.items())


def step(run: StationRun, event: Event, policy: Policy) -> StationRun:
    """The station's state after ``event``.  Events that do not apply change nothing."""
    at = event.at
    s = run.state
    if isinstance(event, Charging):
        return _charging(run, event, policy)
    if s in TERMINAL:
        if isinstance(event, Retry) and (s in ERRORS or run.skipped):
            return _to(run, "waiting", at, policy, "retry by operator", attempts=0, reason=None)
        return run
    if isinstance(event, Abort):
        if s in COMMITTED:
            return run  # the image is being written or runs: let it finish, then gate it
        return _to(
            run,
            "canceled",
            at,
            policy,
            "campaign aborted",
            reason="aborted",
            phase=None,
            deadline=None,
        )
    if isinstance(event, StageStarted):
        return _to(run, "waiting", at, policy, "stage started") if s == "pending" else run
    if isinstance(event, Defer):  # the deferral's own deadline: max_deferral, never frozen
        if s != "waiting":
            return run
        until = at + policy.spec.max_deferral
        return _to(
            run,
            "deferred",
            at,
            policy,
            "charging",
            reason="charging",
            phase="deferral",
            deadline=until,
        )
    if isinstance(event, Resume):
        if s != "deferred":
            return run
        return _to(
            run, "waiting", at, policy, "session ended", reason=None, phase=None, deadline=None
        )
    if isinstance(event, Dispatched):
        if s not in ("waiting", "deferred") or run.attempts >= policy.spec.max_attempts:
            return run  # the scheduler may not send more than the policy allows
        return _to(
            run,
            "dispatched",
            at,
            policy,
            f"UpdateFirmware requestId {event.request_id}",
            attempts=run.attempts + 1,
            request_id=event.request_id,
            started_at=run.started_at or at,
            reason=None,
            install_at=event.install_at,
            rescheduled_from=None,
            window_guard=True,
            **_phase("response", at, policy),
        )
    if isinstance(event, Rescheduled):
        if s == "dispatched" or not run.install_pending or not run.window_guard:
            return run  # no answer yet, or installing already: nothing to move
        return _to(
            run,
            "dispatched",
            at,
            policy,
            f"rescheduled ({event.reason}): UpdateFirmware requestId {event.request_id}, "
            f"install at {_iso(event.install_at)}",
            request_id=event.request_id,
            rescheduled_from=run.request_id,
            install_at=event.install_at,
            reschedules=run.reschedules + 1,
            reason=f"rescheduled: {event.reason}",
            **_phase("response", at, policy),
        )
    if isinstance(event, Response):
        if s != "dispatched":
            return run
        if run.rescheduled_from is not None and event.status not in ACCEPTED_RESPONSES:
            return _reschedule_refused(run, at, policy, event.status)
        if event.status in UNDELIVERED_RESPONSES:
            reason = f"UpdateFirmware {event.status}"
            return _to(
                run,
                "waiting",
                at,
                policy,
                f"{reason}: not sent to the station, no attempt used",
                attempts=max(run.attempts - 1, 0),
                reason=reason,
                phase=None,
                deadline=None,
            )
        if event.status in UNANSWERED_RESPONSES:
            return _unanswered(run, at, policy, f"UpdateFirmware {event.status}")
        if event.status in ACCEPTED_RESPONSES:
            return _to(
                run,
                "downloading",
                at,
                policy,
                f"station: {event.status}",
                rescheduled_from=None,
                **_phase("download", at, policy),
            )
        return _failure(run, at, policy, f"UpdateFirmware {event.status}")
    if isinstance(event, Status):
        return _status(run, event, policy)
    if isinstance(event, Boot):
        return _boot(run, event, policy)
    if isinstance(event, Fault):
        if event.kind == "rolled_back" and s in COMMITTED:
            return _to(
                run,
                "rolled_back",
                at,
                policy,
                event.detail or "fell back to the old slot",
                reason="rolled back",
                phase=None,
                deadline=None,
            )
        if s == "soaking":
            return _failure_final(
                run, at, policy, f"unhealthy in soak: {event.kind} {event.detail}".strip()
            )
        return run
    if isinstance(event, Tick):
        return _tick(run, event, policy)
    return run


def _failure_final(run: StationRun, at: dt.datetime, policy: Policy, reason: str) -> StationRun:
    """A failure of the new image itself: retrying the same image cannot help."""
    return _to(
        run, "failed", at, policy, reason, reason=reason, phase=None, deadline=None, soak_until=None
    )


def _unanswered(run: StationRun, at: dt.datetime, policy: Policy, why: str) -> StationRun:
    """No answer to the request: it may have reached the station (the reply was lost, or the
    node that sent it died), so sending another now could update it twice.  The run stays
    dispatched, with the confirm deadline, while the scheduler asks the station."""
    if run.phase == "confirm":
        return _failure(run, at, policy, f"requestId {run.request_id}: {why}", timed_out=True)
    reason = f"{why}; asking the station about requestId {run.request_id}"
    return _to(
        run, "dispatched", at, policy, reason, reason=reason, **_phase("confirm", at, policy)
    )


def _status(run: StationRun, event: Status, policy: Policy) -> StationRun:
    s, at, status = run.state, event.at, event.status
    if status == IDLE:  # working on no request: an unanswered one never took
        if s == "dispatched" and run.phase == "confirm":
            return _failure(run, at, policy, f"requestId {run.request_id}: the station is idle")
        return run
    if s == "waiting" and run.request_id is not None and status in PROGRESS_STATUSES:
        # The station works on the run's request after all: its acceptance was lost (the
        # node that sent it died) or came after the campaign gave up on it.
        run = _to(
            run,
            "dispatched",
            at,
            policy,
            f"{status} for requestId {run.request_id}: the station works on it",
            reason=None,
            **_phase("response", at, policy),
        )
        s = "dispatched"
    if s not in ("dispatched", "downloading", "installing", "rebooting"):
        return run
    run = replace(run, last_status=status, rescheduled_from=None)
    if status in FAILED_STATUSES:
        if status == "InstallationFailed" and s in ("installing", "rebooting"):
            return _failure_final(run, at, policy, status)
        return _failure(run, at, policy, status)
    if status in DOWNLOAD_STATUSES and s in ("dispatched", "downloading"):
        if s == "dispatched":
            run = _to(run, "downloading", at, policy, status, **_phase("download", at, policy))
        if status in DOWNLOADED_STATUSES and _waits_to_install(run, at):
            return replace(run, **_install_phase(run, at, policy))  # type: ignore[arg-type]
        return run
    if status in INSTALL_STATUSES and s in ("dispatched", "downloading", "installing"):
        if s != "installing":
            return _to(run, "installing", at, policy, status, **_install_phase(run, at, policy))
        return run
    if status in INSTALLED_STATUSES and s in ("dispatched", "downloading", "installing"):
        return _to(run, "rebooting", at, policy, status, **_phase("reboot", at, policy))
    return run


def _reschedule_refused(run: StationRun, at: dt.datetime, policy: Policy, why: str) -> StationRun:
    """The station did not take the reschedule, so it keeps the old request (an agent refuses
    while it installs): follow that one again, and never try to move it a second time."""
    assert run.rescheduled_from is not None
    state: State = "installing" if why == "Rejected" else "downloading"
    return _to(
        run,
        state,
        at,
        policy,
        f"reschedule refused ({why}); following requestId {run.rescheduled_from} again",
        request_id=run.rescheduled_from,
        rescheduled_from=None,
        install_at=None,
        window_guard=False,
        **_phase("install", at, policy),
    )


def _waits_to_install(run: StationRun, at: dt.datetime) -> bool:
    return run.install_at is not None and at < run.install_at and run.phase != "install"


def _install_phase(run: StationRun, at: dt.datetime, policy: Policy) -> dict[str, object]:
    """The install deadline counts from the request's install time when that is later: a
    station waiting for its window is not late."""
    start = max(at, run.install_at) if run.install_at is not None else at
    return {"phase": "install", "deadline": start + policy.timeout("install")}


def _boot(run: StationRun, event: Boot, policy: Policy) -> StationRun:
    s, at = run.state, event.at
    if s == "soaking":
        boots = run.boots_in_soak + 1
        if boots >= REBOOT_LOOP:
            return _failure_final(run, at, policy, f"reboot loop: {boots} boots during the soak")
        if not _versions_ok(event.versions, policy.expected):
            return _to(
                run,
                "rolled_back",
                at,
                policy,
                "booted the old version during the soak",
                reason="rolled back",
                soak_until=None,
            )
        return replace(run, boots_in_soak=boots)
    if s not in ("dispatched", "downloading", "installing", "rebooting"):
        return run
    new = _versions_ok(event.versions, policy.expected)
    if new and event.reason == "FirmwareUpdate":
        return _to(
            run,
            "soaking",
            at,
            policy,
            "booted the new version",
            phase=None,
            deadline=None,
            soak_until=at + policy.spec.soak,
            boots_in_soak=0,
        )
    if s in COMMITTED and not new:
        return _to(
            run,
            "rolled_back",
            at,
            policy,
            f"booted {dict(event.versions)} after the install",
            reason="rolled back",
            phase=None,
            deadline=None,
        )
    if new:  # the new version without reason FirmwareUpdate: not proof of our install
        return _failure_final(run, at, policy, f"booted the new version with reason {event.reason}")
    return run  # a reboot before installing (e.g. a power cut while downloading)


def _tick(run: StationRun, event: Tick, policy: Policy) -> StationRun:
    at = event.at
    if run.state == "soaking" and run.soak_until is not None and at >= run.soak_until:
        return _to(run, "succeeded", at, policy, "healthy through the soak", soak_until=None)
    if run.state == "deferred":
        if run.deadline is not None and at >= run.deadline:
            return _skip(run, at, policy)
        return run
    if run.deadline is not None and run.charging_since is None and at >= run.deadline:
        if run.state == "dispatched" and run.rescheduled_from is not None:
            return _reschedule_refused(run, at, policy, "no answer")  # maybe never sent
        if run.state == "dispatched":
            return _unanswered(run, at, policy, f"no answer in {span(policy.timeout('response'))}")
        return _failure(run, at, policy, f"{run.phase} timed out", timed_out=True)
    return run


def _skip(run: StationRun, at: dt.datetime, policy: Policy) -> StationRun:
    """Deferred for longer than ``max_deferral``: no longer waited on.  The session may have
    ended without the station saying so (a lost TransactionEvent), or may really last this
    long; either way the campaign goes on and the operator is told."""
    reason = f"{SKIPPED}charging for over {span(policy.spec.max_deferral)}"
    return _to(run, "canceled", at, policy, reason, reason=reason, phase=None, deadline=None)


def span(d: dt.timedelta) -> str:
    """``12h``, ``90m``, ``2d``: the largest unit that divides ``d`` (in reasons)."""
    seconds = int(d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _charging(run: StationRun, event: Charging, policy: Policy) -> StationRun:
    at = event.at
    if event.active:
        return run if run.charging_since is not None else replace(run, charging_since=at)
    if run.charging_since is None:
        return run
    if run.state == "deferred":  # max_deferral counts charging time: nothing to move on
        return replace(run, charging_since=None)
    paused = max(at - run.charging_since, dt.timedelta(0))
    deadline = run.deadline + paused if run.deadline is not None else None
    return replace(run, charging_since=None, deadline=deadline)


def counts(runs: list[StationRun] | tuple[StationRun, ...]) -> dict[str, int]:
    """Stations per state (every state listed, zeros included)."""
    out = {s: 0 for s in State.__args__}  # type: ignore[attr-defined]
    for r in runs:
        out[r.state] += 1
    return out
