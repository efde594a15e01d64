"""Simulation scenarios (TOML): the fleet, its sites and links, the campaign and the faults.

Every error names the file and the field::

    >>> parse_scenario(b'seed = 1\\n[[fleet]]\\ncount = "x"\\n', "s.toml")
    Traceback (most recent call last):
    chargeward.errors.ConfigError: s.toml: releases: missing

A scenario, in short (``examples/sim/`` has complete ones)::

    seed = 7
    duration = 120                      # seconds, unless --until-version or --duration
    [releases]
    versions = ["1.0.0", "1.1.0"]       # generated and signed for local runs, in this order
    change = 0.05                       # each release rewrites 5 % of the image (default: all)
    deltas = true                       # false: uploaded first, so the server makes no deltas
    [campaign]                          # a campaign document (chargeward campaign create)
    release = "1.1.0"
    stages = { canary = 1, then = ["100%"] }
    [[sites]]
    id = "depot"
    timezone = "Europe/London"
    windows = "always"                  # or a list of {days, start, end} in local time
    link = { bandwidth = 250_000, latency_ms = 20 }  # station_bandwidth: each line's cap
    local_controller = true             # a Local Controller caches firmware for the site
    ocpp = "1.6"                        # the site's chargers' default protocol (below)
    [[fleet]]
    count = 20
    site = "depot"
    firmware = "1.0.0"
    sessions = { per_hour = 6, mean_minutes = 0.5 }   # or busy = [[start_s, end_s], ...]
    ocpp = "1.6"                        # "2.0.1" (default: the site's) or "1.6" (OCPP 1.6J)
    legacy_firmware_update = true       # 1.6 without the Security Whitepaper (plain UpdateFirmware)
    mark_legacy = false                 # default true: the simulator, as the operator, marks
                                        # legacy chargers on the server; false shows the refusal
    [faults]
    link_drop = { probability = 0.2, at_byte = [2_000, 30_000] }
    corrupt = { probability = 0.1 }
    power_loss = { probability = 0.1, step = "random" }
    offline = { probability = 0.05, at = 10, duration = 15 }
    clock_skew = { probability = 0.1, seconds = 20 }
    bad_release = "1.2.0"               # its start-up self-test fails on every charger
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from chargeward.errors import BundleError, ConfigError, SupplyChainError
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.model.fleet import check_id, check_timezone, parse_windows
from chargeward.supply._fields import Fields, read_document

ALL_WEEK = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALWAYS: list[dict[str, Any]] = [
    {"days": ALL_WEEK, "start": "00:00", "end": "12:00"},
    {"days": ALL_WEEK, "start": "12:00", "end": "00:00"},
]


def window_from_now(
    timezone: str, now: dt.datetime, *, opens_in: dt.timedelta, length: dt.timedelta
) -> dict[str, Any]:
    """A daily maintenance window in ``timezone``'s wall time that opens ``opens_in`` after
    ``now`` (negative: it is open already) and lasts ``length`` (under a day), whole minutes.

    >>> now = dt.datetime(2026, 12, 4, 23, 40, tzinfo=dt.UTC)   # 08:40 in Tokyo
    >>> w = window_from_now("Asia/Tokyo", now, opens_in=dt.timedelta(minutes=-40),
    ...                     length=dt.timedelta(hours=3))
    >>> w["start"], w["end"]
    ('08:00', '11:00')
    """
    start = (now + opens_in).astimezone(ZoneInfo(timezone))
    end = start + length
    return {"days": ALL_WEEK, "start": f"{start:%H:%M}", "end": f"{end:%H:%M}"}


@dataclass(frozen=True)
class Link:
    bandwidth: int | None = None  # bytes per second, shared by the site; None: unlimited
    latency_ms: float = 0.0  # one way
    station_bandwidth: int | None = None  # bytes per second for each station's own line


OCPP_VERSIONS = ("2.0.1", "1.6")


@dataclass(frozen=True)
class Ocpp:
    """What a charger speaks: OCPP 2.0.1, or 1.6J with the Security Whitepaper, or 1.6J
    without it (``legacy``: plain UpdateFirmware), which the operator marks on the server
    (``marked``) or not (the server then refuses to send it plain UpdateFirmware).

    >>> Ocpp().label, Ocpp("1.6").label, Ocpp("1.6", legacy=True, marked=False).label
    ('2.0.1', '1.6 whitepaper', '1.6 legacy (unmarked)')
    """

    version: str = "2.0.1"
    legacy: bool = False
    marked: bool = True  # legacy only: the simulator marks it legacy_firmware_update

    @property
    def label(self) -> str:
        if self.version != "1.6":
            return self.version
        if not self.legacy:
            return "1.6 whitepaper"
        return "1.6 legacy" if self.marked else "1.6 legacy (unmarked)"

    @property
    def to_mark(self) -> bool:
        """The operator marks it ``legacy_firmware_update`` on the server."""
        return self.legacy and self.marked


@dataclass(frozen=True)
class Site:
    id: str
    timezone: str
    windows: list[dict[str, Any]]
    link: Link
    local_controller: bool = False  # a Local Controller caches firmware for the site
    ocpp: str = "2.0.1"  # the default protocol of the site's chargers


@dataclass(frozen=True)
class Sessions:
    per_hour: float = 0.0
    mean_minutes: float = 0.0
    busy: tuple[tuple[float, float], ...] = ()  # (start, end) seconds after the start


@dataclass(frozen=True)
class Group:
    count: int
    site: str
    firmware: str
    model: str = "AC22"
    prefix: str = "SIM"
    sessions: Sessions = Sessions()
    ocpp: Ocpp = Ocpp()


@dataclass(frozen=True)
class Chance:
    """A fault that hits each station with ``probability`` (drawn from the station's seed)."""

    probability: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Faults:
    link_drop: Chance = Chance()  # at_byte = n or [lo, hi]; once per station
    corrupt: Chance = Chance()  # one flipped byte in the first download; at_byte optional
    power_loss: Chance = Chance()  # step = n or "random" (max_step), counted from the install
    offline: Chance = Chance()  # at, duration (seconds after the start)
    clock_skew: Chance = Chance()  # seconds (negative: behind)
    bad_release: str | None = None  # the charging application fails on this version


@dataclass(frozen=True)
class Scenario:
    source: str
    seed: int
    duration: float
    versions: list[str]
    image_bytes: int
    campaign: dict[str, Any]
    sites: dict[str, Site]
    fleet: list[Group]
    faults: Faults
    server_url: str | None = None
    image_change: float | None = None  # share of the image each release changes; None: all
    deltas: bool = True  # the fleet reports its versions before the release is uploaded

    @property
    def stations(self) -> int:
        return sum(g.count for g in self.fleet)

    def scaled(self, stations: int) -> Scenario:
        """The same scenario with ``stations`` chargers, spread over the groups pro rata."""
        total = self.stations
        counts = [max(1, g.count * stations // total) for g in self.fleet]
        counts[0] += stations - sum(counts)
        if counts[0] < 1:
            raise ConfigError(f"{self.source}: cannot spread {stations} stations over the groups")
        groups = [replace(g, count=c) for c, g in zip(counts, self.fleet, strict=True)]
        return Scenario(
            self.source,
            self.seed,
            self.duration,
            self.versions,
            self.image_bytes,
            self.campaign,
            self.sites,
            groups,
            self.faults,
            self.server_url,
            self.image_change,
            self.deltas,
        )


def _number(f: Fields, key: str, default: float, *, low: float = 0.0) -> float:
    value = f.value.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise f.error(key, f"must be a number, not {type(value).__name__}")
    if value < low:
        raise f.error(key, f"must be at least {low:g}")
    return float(value)


def _count(f: Fields, key: str, default: int | None = None, *, low: int = 0) -> int:
    value = f.value.get(key, default)
    if value is None:
        raise f.error(key, "missing")
    if isinstance(value, bool) or not isinstance(value, int):
        kind = {str: "a string", float: "a fraction", bool: "true/false"}.get(
            type(value), type(value).__name__
        )
        raise f.error(key, f"must be a whole number, not {kind}")
    if value < low:
        raise f.error(key, f"must be at least {low}")
    return value


def _site(f: Fields) -> Site:
    f.only("id", "timezone", "windows", "link", "local_controller", "ocpp")
    site_id = f.text("id")
    try:
        check_id("id", site_id)
        tz = check_timezone(f.text("timezone"))
        raw = f.value.get("windows", "always")
        windows = ALWAYS if raw == "always" else raw
        if not isinstance(windows, list):
            raise f.error("windows", 'must be "always" or a list of {days, start, end}')
        parse_windows(windows)
    except BundleError as e:
        raise f.error(None, str(e)) from e
    controller = _flag(f, "local_controller", False)
    ocpp = _version(f, "2.0.1")
    link = f.table("link")
    if link is None:
        return Site(site_id, tz, windows, Link(), controller, ocpp)
    link.only("bandwidth", "latency_ms", "station_bandwidth")
    bw = _count(link, "bandwidth", 0, low=0)
    per = _count(link, "station_bandwidth", 0, low=0)
    latency = _number(link, "latency_ms", 0.0)
    return Site(site_id, tz, windows, Link(bw or None, latency, per or None), controller, ocpp)


def _version(f: Fields, default: str) -> str:
    version = f.value.get("ocpp", default)
    if version not in OCPP_VERSIONS:
        raise f.error("ocpp", f"must be one of {', '.join(map(repr, OCPP_VERSIONS))}")
    return str(version)


def _flag(f: Fields, key: str, default: bool) -> bool:
    value = f.value.get(key, default)
    if not isinstance(value, bool):
        raise f.error(key, "must be true or false")
    return value


def _ocpp(f: Fields, site: Site) -> Ocpp:
    version = _version(f, site.ocpp)
    legacy = _flag(f, "legacy_firmware_update", False)
    if legacy and version != "1.6":
        raise f.error("legacy_firmware_update", 'needs ocpp = "1.6" (on the group or its site)')
    if "mark_legacy" in f.value and not legacy:
        raise f.error("mark_legacy", "needs legacy_firmware_update = true")
    return Ocpp(version, legacy, _flag(f, "mark_legacy", True))


def _change(f: Fields) -> float | None:
    if "change" not in f.value:
        return None
    change = _number(f, "change", 0.0)
    if not 0 < change <= 1:
        raise f.error("change", "must be a share of the image, above 0 and at most 1")
    return change


def _sessions(f: Fields | None) -> Sessions:
    if f is None:
        return Sessions()
    f.only("per_hour", "mean_minutes", "busy")
    busy = []
    for i, pair in enumerate(f.value.get("busy", [])):
        ok = isinstance(pair, list) and len(pair) == 2
        ok = ok and all(isinstance(x, int | float) and not isinstance(x, bool) for x in pair)
        if not ok or not 0 <= pair[0] < pair[1]:
            raise f.error(f"busy[{i}]", "must be [start, end] seconds, start < end")
        busy.append((float(pair[0]), float(pair[1])))
    per_hour = _number(f, "per_hour", 0.0)
    mean = _number(f, "mean_minutes", 0.0)
    if per_hour and not mean:
        raise f.error("mean_minutes", "needed with per_hour")
    return Sessions(per_hour, mean, tuple(busy))


GROUP_OCPP = ("ocpp", "legacy_firmware_update", "mark_legacy")


def _group(f: Fields, sites: dict[str, Site], versions: list[str]) -> Group:
    f.only("count", "site", "firmware", "model", "prefix", "sessions", *GROUP_OCPP)
    site = f.text("site")
    if site not in sites:
        raise f.error("site", f"no site {site!r} in [[sites]]")
    firmware = f.text("firmware")
    if firmware not in versions:
        raise f.error("firmware", f"{firmware!r} is not in releases.versions")
    return Group(
        count=_count(f, "count", low=1),
        site=site,
        firmware=firmware,
        model=f.optional_text("model") or "AC22",
        prefix=f.optional_text("prefix") or "SIM",
        sessions=_sessions(f.table("sessions")),
        ocpp=_ocpp(f, sites[site]),
    )


FAULT_PARAMS = {
    "link_drop": ("at_byte",),
    "corrupt": ("at_byte",),
    "power_loss": ("step", "max_step"),
    "offline": ("at", "duration"),
    "clock_skew": ("seconds",),
}


def _chance(f: Fields | None, name: str) -> Chance:
    if f is None:
        return Chance()
    f.only("probability", *FAULT_PARAMS[name])
    p = _number(f, "probability", 0.0)
    if p > 1:
        raise f.error("probability", "must be between 0 and 1")
    params = {k: v for k, v in f.value.items() if k != "probability"}
    if name == "offline":
        _number(f, "at", 0.0)
        _number(f, "duration", 0.0)
    if name == "clock_skew":
        _number(f, "seconds", 0.0, low=-1e9)
    if name == "power_loss" and params.get("step", "random") != "random":
        _count(f, "step", low=1)
    return Chance(p, params)


def _faults(f: Fields | None, versions: list[str]) -> Faults:
    if f is None:
        return Faults()
    f.only(*FAULT_PARAMS, "bad_release")
    bad = f.optional_text("bad_release")
    if bad is not None and bad not in versions:
        raise f.error("bad_release", f"{bad!r} is not in releases.versions")
    chances = {name: _chance(f.table(name), name) for name in FAULT_PARAMS}
    return Faults(bad_release=bad, **chances)


def parse_scenario(data: bytes, source: str) -> Scenario:
    try:
        doc = read_document(data, source, as_json=False)
        doc.only("seed", "duration", "server", "releases", "campaign", "sites", "fleet", "faults")
        releases = doc.table("releases", required=True)
        assert releases is not None
        releases.only("versions", "image_kib", "change", "deltas")
        deltas = releases.value.get("deltas", True)
        if not isinstance(deltas, bool):
            raise releases.error("deltas", "must be true or false")
        versions = releases.texts("versions")
        if not versions:
            raise releases.error("versions", "name at least one version")
        sites: dict[str, Site] = {}
        for index, table in enumerate(doc.tables("sites", required=True)):
            site = _site(table)
            if site.id in sites:
                raise doc.error(f"sites[{index}].id", f"site {site.id!r} is listed twice")
            sites[site.id] = site
        groups = [_group(g, sites, versions) for g in doc.tables("fleet", required=True)]
        if not groups:
            raise doc.error("fleet", "name at least one group")
        campaign = doc.table("campaign", required=True)
        assert campaign is not None
        if campaign.text("release") not in versions:
            raise campaign.error("release", "is not in releases.versions")
        server = doc.table("server")
        scenario = Scenario(
            source=source,
            seed=_count(doc, "seed", 0),
            duration=_number(doc, "duration", 300.0, low=1.0),
            versions=versions,
            image_bytes=_count(releases, "image_kib", 32, low=1) * 1024,
            image_change=_change(releases),
            deltas=deltas,
            campaign=dict(campaign.value),
            sites=sites,
            fleet=groups,
            faults=_faults(doc.table("faults"), versions),
            server_url=server.optional_text("url") if server else None,
        )
    except SupplyChainError as e:
        raise ConfigError(str(e)) from e
    if scenario.stations > DEFAULT_FORMAT_LIMITS.scenario_stations:
        raise ConfigError(f"{source}: at most {DEFAULT_FORMAT_LIMITS.scenario_stations} stations")
    return scenario


def load_scenario(path: Path) -> Scenario:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    return parse_scenario(data, str(path))
