"""What a campaign is: a release, the stations it targets, stages, gates, limits and timeouts.

Free of I/O.  A campaign file (TOML or JSON) or an API body is parsed into a
:class:`CampaignSpec` by :func:`parse_spec`; every error names the field::

    spec = parse_spec({
        "name": "ac22-1.2.0", "release": "ab12...",
        "target": {"models": ["AC22"], "version": ">=1.0,<1.2", "tags": ["pilot"]},
        "stages": {"canary": 5, "then": ["25%", "100%"]},
        "gates": {"success": "95%", "error": "10%", "min_finished": 5},
        "soak": "30m", "concurrency": {"global": 200, "per_site": 2, "keep_available": 1},
        "timeouts": {"download": "2h", "install": "30m", "reboot": "15m"},
    })

Stage sizes are cumulative: ``canary`` stations (a count or a percentage of the targeted
fleet), then each ``then`` entry is the share of the fleet done once that stage is through.
``{"canary": "1%", "exponential": 2}`` doubles the cumulative size at each stage until the whole
fleet is in (AWS IoT Jobs' exponential rate, per stage instead of per minute).

``download_ahead`` (default ``"2h"``, ``0`` turns it off): a station whose site has maintenance
windows may be sent its UpdateFirmware this long before its next window opens, with OCPP
``installDateTime`` set to the window's start, so it downloads outside the window and installs
only inside it.

``install_duration`` (default ``"15m"``, from 1 minute to 1 day): how long an install takes from
its start to the station's boot on the new image.  Where windows apply, a station is sent its
update inside a window only while that much of the window is left, and is sent ahead only to a
window that long; once the campaign has measured installs of its own, the planner uses the
larger of this and the measured time.

``max_deferral`` (default ``"12h"``, from 1 minute to 30 days): how long a station held back
by a charging session is waited on.  A station still deferred after that is skipped (state
``canceled``, reason ``skipped: ...``) and reported: its stage goes on without it, it is no
failure for the error gate, and an operator can retry it later.  A session whose end was
never reported (a lost TransactionEvent) therefore cannot hold a campaign for ever.

``stage_deadline`` (default ``"3d"``, from 1 hour to 90 days) and ``on_stage_deadline``
(``"alert"``, the default, or ``"pause"``): a stage that has not passed its success gate this
long after it started raises one ``campaign_stage_overdue`` alert naming why its stations wait
(offline, outside their window, the site's availability floor, ...), and with ``"pause"`` also
pauses the campaign until an operator resumes it.  Once per stage: a resumed campaign is not
paused again for the same stage (docs/adr/0032-campaign-waiting-reasons.md).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from chargeward.errors import BundleError
from chargeward.limits import DEFAULT_FORMAT_LIMITS

ReleaseClass = Literal["feature", "security"]
_DURATION = re.compile(r"^(\d{1,6})(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
INSTALL_DURATION_RANGE = (dt.timedelta(minutes=1), dt.timedelta(days=1))
MAX_DEFERRAL_RANGE = (dt.timedelta(minutes=1), dt.timedelta(days=30))
STAGE_DEADLINE_RANGE = (dt.timedelta(hours=1), dt.timedelta(days=90))
StageDeadlineAction = Literal["alert", "pause"]
STAGE_DEADLINE_ACTIONS: tuple[StageDeadlineAction, ...] = ("alert", "pause")


class CampaignSpecError(BundleError):
    """A campaign definition is invalid; ``field`` names the part (dotted)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Amount:
    """A count (``5``) or a share of a whole (``"10%"``)."""

    value: float
    percent: bool

    def of(self, whole: int) -> int:
        """The amount as a count of ``whole`` (a percentage rounds up: 1% of 5 is 1)."""
        if not self.percent:
            return min(int(self.value), whole)
        return min(whole, math.ceil(self.value * whole / 100 - 1e-9))

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{int(self.value)}"


@dataclass(frozen=True)
class Selector:
    """Which stations a campaign targets; every given criterion must hold (an AND)."""

    models: tuple[str, ...] = ()
    hardware_revisions: tuple[str, ...] = ()
    version: str | None = None  # a PEP 440 range of the running version, e.g. ">=1.0,<1.2"
    customers: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # all of them
    stations: tuple[str, ...] = ()  # an explicit list

    def matches(self, station: StationFacts) -> bool:
        if self.stations and station.id not in self.stations:
            return False
        if self.models and station.model not in self.models:
            return False
        if self.hardware_revisions and station.hardware_revision not in self.hardware_revisions:
            return False
        if self.customers and station.customer not in self.customers:
            return False
        if self.sites and station.site_id not in self.sites:
            return False
        if self.tags and not set(self.tags) <= set(station.tags):
            return False
        return self.version is None or version_in(station.firmware_version, self.version)


@dataclass(frozen=True)
class StationFacts:
    """What the selector looks at: a station as the fleet registry knows it."""

    id: str
    model: str | None = None
    hardware_revision: str | None = None
    firmware_version: str | None = None
    customer: str | None = None
    site_id: str | None = None
    tags: tuple[str, ...] = ()


def version_in(version: str | None, spec: str) -> bool:
    """Whether ``version`` lies in the PEP 440 range ``spec``; unparsable versions never do."""
    if version is None:
        return False
    try:
        return Version(version) in SpecifierSet(spec)
    except InvalidVersion:
        return False


@dataclass(frozen=True)
class Gates:
    success: Amount = Amount(100, True)  # of a stage's stations succeeded: the next starts
    error: Amount = Amount(10, True)  # of finished stations failed: pause
    min_finished: int = 1  # a percentage error gate waits for this many finished stations


@dataclass(frozen=True)
class Concurrency:
    global_limit: int = 100  # stations updating at once, campaign-wide
    per_site: int = 1  # stations updating at once per site
    keep_available: int = 1  # chargers per site that must stay out of any update


@dataclass(frozen=True)
class Timeouts:
    """How long each phase may take; charging time never counts (it defers, OCPP L01.FR.06)."""

    response: dt.timedelta = dt.timedelta(minutes=5)  # UpdateFirmware answered, first status
    download: dt.timedelta = dt.timedelta(hours=2)
    install: dt.timedelta = dt.timedelta(minutes=30)
    reboot: dt.timedelta = dt.timedelta(minutes=15)  # Installed -> BootNotification


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    release_id: str
    selector: Selector
    stages: tuple[Amount, ...]  # cumulative sizes; the last one is the whole fleet
    gates: Gates = Gates()
    soak: dt.timedelta = dt.timedelta(minutes=30)
    concurrency: Concurrency = Concurrency()
    timeouts: Timeouts = Timeouts()
    jitter: dt.timedelta = dt.timedelta(minutes=5)  # random start delay per station
    # Dispatch this long before a site's window opens, installDateTime = the window's start.
    download_ahead: dt.timedelta = dt.timedelta(hours=2)
    # Install to boot on the new image: an install starts only with this much window left.
    install_duration: dt.timedelta = dt.timedelta(minutes=15)
    # A station deferred (charging) this long is skipped and reported, no longer waited on.
    max_deferral: dt.timedelta = dt.timedelta(hours=12)
    # A stage not through its success gate this long after it started is reported (and paused).
    stage_deadline: dt.timedelta = dt.timedelta(days=3)
    on_stage_deadline: StageDeadlineAction = "alert"
    retries: int = 3  # OCPP UpdateFirmware.retries (download attempts on the station)
    retry_interval: int = 120  # OCPP UpdateFirmware.retryInterval, seconds
    max_attempts: int = 2  # UpdateFirmware requests per station, ever
    bypass_windows: bool = False  # security releases only
    dynamic: bool = True  # stations that match later join
    notes: str = ""

    def stage_sizes(self, fleet: int) -> list[int]:
        """Cumulative station counts per stage for a fleet of ``fleet`` stations."""
        sizes: list[int] = []
        for amount in self.stages:
            n = max(amount.of(fleet), sizes[-1] if sizes else 0)
            if not sizes or n > sizes[-1] or n == fleet == 0:
                sizes.append(n)
        if not sizes or sizes[-1] < fleet:
            sizes.append(fleet)
        return sizes


# -- parsing ----------------------------------------------------------------------------------


def parse_duration(field: str, value: object) -> dt.timedelta:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"1d"``, ``"0"`` or a number of seconds."""
    if isinstance(value, bool):
        raise CampaignSpecError(field, f"must be a duration like 30m, got {value!r}")
    if isinstance(value, int | float) and 0 <= value <= 10**8:
        return dt.timedelta(seconds=float(value))
    if isinstance(value, str):
        if value.strip() == "0":
            return dt.timedelta(0)
        m = _DURATION.fullmatch(value.strip())
        if m:
            return dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    raise CampaignSpecError(field, f"must be a duration like 90s, 30m, 2h or 1d, got {value!r}")


def parse_amount(field: str, value: object, *, allow_zero: bool = False) -> Amount:
    if isinstance(value, bool):
        raise CampaignSpecError(field, f"must be a count or a percentage, got {value!r}")
    if isinstance(value, int) and (value > 0 or (allow_zero and value == 0)):
        return Amount(value, False)
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            p = float(value.strip()[:-1])
        except ValueError:
            p = -1
        if (0 < p <= 100) or (allow_zero and p == 0):
            return Amount(p, True)
    low = "0" if allow_zero else "1"
    raise CampaignSpecError(
        field, f"must be a count ({low} or more) or a percentage like 10%, got {value!r}"
    )


def _int(field: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CampaignSpecError(field, f"must be an integer from {low} to {high}, got {value!r}")
    return value


def _strings(field: str, value: object, limit: int = 1000) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or len(value) > limit:
        raise CampaignSpecError(field, f"must be a list of at most {limit} names")
    for i, v in enumerate(value):
        if not isinstance(v, str) or not 0 < len(v) <= 64:
            raise CampaignSpecError(f"{field}.{i}", f"must be a name of 1-64 characters, got {v!r}")
    return tuple(dict.fromkeys(value))


def _table(field: str, value: object, keys: set[str]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CampaignSpecError(field, "must be a table (an object)")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise CampaignSpecError(
            f"{field}.{unknown[0]}", f"unknown setting; known: {', '.join(sorted(keys))}"
        )
    return value


def _selector(raw: object) -> Selector:
    t = _table(
        "target",
        raw,
        {"models", "hardware_revisions", "version", "customers", "sites", "tags", "stations"},
    )
    version = t.get("version")
    if version is not None:
        try:
            if not isinstance(version, str):
                raise InvalidSpecifier(str(version))
            SpecifierSet(version)
        except InvalidSpecifier:
            raise CampaignSpecError(
                "target.version", f"must be a version range like >=1.0,<1.2, got {version!r}"
            ) from None
    return Selector(
        models=_strings("target.models", t.get("models")),
        hardware_revisions=_strings("target.hardware_revisions", t.get("hardware_revisions")),
        version=version,
        customers=_strings("target.customers", t.get("customers")),
        sites=_strings("target.sites", t.get("sites")),
        tags=_strings("target.tags", t.get("tags")),
        stations=_strings(
            "target.stations", t.get("stations"), DEFAULT_FORMAT_LIMITS.campaign_stations_listed
        ),
    )


def _stages(raw: object) -> tuple[Amount, ...]:
    t = _table("stages", raw, {"canary", "then", "exponential"})
    canary = parse_amount("stages.canary", t.get("canary", 1))
    out = [canary]
    if "then" in t and "exponential" in t:
        raise CampaignSpecError("stages", "give either then (a list) or exponential, not both")
    if "exponential" in t:
        factor = t["exponential"]
        if (
            isinstance(factor, bool)
            or not isinstance(factor, int | float)
            or not 1.1 <= factor <= 10
        ):
            raise CampaignSpecError("stages.exponential", "must be a factor from 1.1 to 10")
        return _expand_exponential(canary, float(factor))
    # The whole fleet is always the last stage (CampaignSpec.stage_sizes), so ``then`` may be
    # empty: a campaign of one stage.
    then = t.get("then", [])
    if not isinstance(then, list) or len(then) >= DEFAULT_FORMAT_LIMITS.campaign_stages:
        raise CampaignSpecError(
            "stages.then",
            f"must be a list of at most {DEFAULT_FORMAT_LIMITS.campaign_stages - 1} sizes",
        )
    previous = canary
    for i, item in enumerate(then):
        amount = parse_amount(f"stages.then.{i}", item)
        if previous.percent == amount.percent and amount.value <= previous.value:
            raise CampaignSpecError(
                f"stages.then.{i}", f"{amount} must be larger than the stage before ({previous})"
            )
        out.append(amount)
        previous = amount
    return tuple(out)


def _expand_exponential(canary: Amount, factor: float) -> tuple[Amount, ...]:
    """Cumulative shares canary x factor^k, as percentages when the canary is one."""
    out = [canary]
    value = canary.value
    for _ in range(DEFAULT_FORMAT_LIMITS.campaign_stages - 1):
        value *= factor
        if canary.percent and value >= 100:
            break
        out.append(Amount(round(value, 3) if canary.percent else math.ceil(value), canary.percent))
    out.append(Amount(100, True))
    return tuple(out)


def parse_spec(raw: object) -> CampaignSpec:
    """A :class:`CampaignSpec` from a parsed TOML/JSON document; errors name the field."""
    t = _table(
        "campaign",
        raw,
        {
            "name", "release", "target", "stages", "gates", "soak", "concurrency", "timeouts",
            "jitter", "download_ahead", "install_duration", "max_deferral", "stage_deadline",
            "on_stage_deadline", "retries", "retry_interval", "max_attempts", "bypass_windows",
            "dynamic", "notes",
        },
    )  # fmt: skip
    name = t.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise CampaignSpecError("name", "must be 1-64 letters, digits, '_', '.' or '-'")
    release = t.get("release")
    if not isinstance(release, str) or not 1 <= len(release) <= 64:
        raise CampaignSpecError("release", "must be a release id (its manifest SHA-256)")
    g = _table("gates", t.get("gates"), {"success", "error", "min_finished"})
    gates = Gates(
        success=parse_amount("gates.success", g.get("success", "100%")),
        error=parse_amount("gates.error", g.get("error", "10%"), allow_zero=True),
        min_finished=_int("gates.min_finished", g.get("min_finished", 1), 1, 100_000),
    )
    c = _table("concurrency", t.get("concurrency"), {"global", "per_site", "keep_available"})
    concurrency = Concurrency(
        global_limit=_int("concurrency.global", c.get("global", 100), 1, 100_000),
        per_site=_int("concurrency.per_site", c.get("per_site", 1), 1, 10_000),
        keep_available=_int("concurrency.keep_available", c.get("keep_available", 1), 0, 10_000),
    )
    o = _table("timeouts", t.get("timeouts"), {"response", "download", "install", "reboot"})
    defaults = Timeouts()
    timeouts = Timeouts(
        **{
            k: parse_duration(f"timeouts.{k}", o[k]) if k in o else getattr(defaults, k)
            for k in ("response", "download", "install", "reboot")
        }
    )
    for k in ("response", "download", "install", "reboot"):
        if getattr(timeouts, k) <= dt.timedelta(0):
            raise CampaignSpecError(f"timeouts.{k}", "must be longer than 0")
    bypass = t.get("bypass_windows", False)
    dynamic = t.get("dynamic", True)
    for key, flag in (("bypass_windows", bypass), ("dynamic", dynamic)):
        if not isinstance(flag, bool):
            raise CampaignSpecError(key, "must be true or false")
    download_ahead = parse_duration("download_ahead", t.get("download_ahead", "2h"))
    if download_ahead > DEFAULT_FORMAT_LIMITS.campaign_download_ahead:
        raise CampaignSpecError("download_ahead", "must be at most 7d (a week of windows)")
    install_duration = parse_duration("install_duration", t.get("install_duration", "15m"))
    low, high = INSTALL_DURATION_RANGE
    if not low <= install_duration <= high:
        raise CampaignSpecError(
            "install_duration", f"must be from 1m to 1d, got {t.get('install_duration')!r}"
        )
    max_deferral = parse_duration("max_deferral", t.get("max_deferral", "12h"))
    low, high = MAX_DEFERRAL_RANGE
    if not low <= max_deferral <= high:
        raise CampaignSpecError(
            "max_deferral", f"must be from 1m to 30d, got {t.get('max_deferral')!r}"
        )
    stage_deadline = parse_duration("stage_deadline", t.get("stage_deadline", "3d"))
    low, high = STAGE_DEADLINE_RANGE
    if not low <= stage_deadline <= high:
        raise CampaignSpecError(
            "stage_deadline", f"must be from 1h to 90d, got {t.get('stage_deadline')!r}"
        )
    on_deadline = t.get("on_stage_deadline", "alert")
    if on_deadline not in STAGE_DEADLINE_ACTIONS:
        raise CampaignSpecError("on_stage_deadline", f"must be alert or pause, got {on_deadline!r}")
    notes = t.get("notes", "")
    if not isinstance(notes, str) or len(notes) > 2000:
        raise CampaignSpecError("notes", "must be text of at most 2000 characters")
    return CampaignSpec(
        name=name,
        release_id=release,
        selector=_selector(t.get("target")),
        stages=_stages(t.get("stages")),
        gates=gates,
        soak=parse_duration("soak", t.get("soak", "30m")),
        concurrency=concurrency,
        timeouts=timeouts,
        jitter=parse_duration("jitter", t.get("jitter", "5m")),
        download_ahead=download_ahead,
        install_duration=install_duration,
        max_deferral=max_deferral,
        stage_deadline=stage_deadline,
        on_stage_deadline=on_deadline,
        retries=_int("retries", t.get("retries", 3), 0, 10),
        retry_interval=_int("retry_interval", t.get("retry_interval", 120), 0, 86400),
        max_attempts=_int("max_attempts", t.get("max_attempts", 2), 1, 10),
        bypass_windows=bypass,
        dynamic=dynamic,
        notes=notes,
    )


def spec_document(spec: CampaignSpec) -> dict[str, Any]:
    """The JSON form of ``spec`` (what is stored and what ``parse_spec`` reads back)."""

    def seconds(d: dt.timedelta) -> int:
        return int(d.total_seconds())

    sel = spec.selector
    target: dict[str, Any] = {
        k: list(getattr(sel, k))
        for k in ("models", "hardware_revisions", "customers", "sites", "tags", "stations")
        if getattr(sel, k)
    }
    if sel.version is not None:
        target["version"] = sel.version
    return {
        "name": spec.name,
        "release": spec.release_id,
        "target": target,
        "stages": {
            "canary": _amount_doc(spec.stages[0]),
            "then": [_amount_doc(a) for a in spec.stages[1:]],  # empty: one stage
        },
        "gates": {
            "success": _amount_doc(spec.gates.success),
            "error": _amount_doc(spec.gates.error),
            "min_finished": spec.gates.min_finished,
        },
        "soak": seconds(spec.soak),
        "concurrency": {
            "global": spec.concurrency.global_limit,
            "per_site": spec.concurrency.per_site,
            "keep_available": spec.concurrency.keep_available,
        },
        "timeouts": {
            k: seconds(getattr(spec.timeouts, k))
            for k in ("response", "download", "install", "reboot")
        },
        "jitter": seconds(spec.jitter),
        "download_ahead": seconds(spec.download_ahead),
        "install_duration": seconds(spec.install_duration),
        "max_deferral": seconds(spec.max_deferral),
        "stage_deadline": seconds(spec.stage_deadline),
        "on_stage_deadline": spec.on_stage_deadline,
        "retries": spec.retries,
        "retry_interval": spec.retry_interval,
        "max_attempts": spec.max_attempts,
        "bypass_windows": spec.bypass_windows,
        "dynamic": spec.dynamic,
        "notes": spec.notes,
    }


def _amount_doc(a: Amount) -> int | str:
    return f"{a.value:g}%" if a.percent else int(a.value)


def check_class(spec: CampaignSpec, release_class: str) -> None:
    """Feature releases may not bypass maintenance windows; security releases may."""
    if spec.bypass_windows and release_class != "security":
        raise CampaignSpecError(
            "bypass_windows",
            f"only security releases may bypass maintenance windows; this one is {release_class}",
        )
