"""Which releases a campaign may use: published ones, at or above the stations' rollback floors.

A charger refuses an unpublished release when it checks updates against the TUF repository, and
refuses every image whose security version is below its anti-rollback floor (the floor rises to
a release's security version when the charger commits it).  A campaign on such a release would
dispatch every station into certain failure, so creation refuses it here, before any station is
enrolled.

The server knows a lower bound of each station's floor: the highest security version among the
releases the station reported installed (an update that succeeded), and the lowest security
version among the releases that carry the firmware version the station reports running.  A
station whose known floor is above a release's security version will refuse that release.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward.errors import Conflict, NotFound
from chargeward.server.rollout.release_catalog import publication, require_published_release
from chargeward.server.store.tables import FirmwareUpdate, Release, Station

SHOWN_STATIONS = 20  # stations named in a refusal or an audit entry; the count is always whole


@dataclass(frozen=True)
class BelowFloor:
    """The target stations whose known rollback floor is above a release's security version."""

    release: Release
    floors: Mapping[str, int]  # station id -> its known floor

    @property
    def highest(self) -> int:
        return max(self.floors.values(), default=0)

    def describe(self) -> str:
        """ "3 stations (CP-1, CP-2, CP-3) have rollback floor 2", grouped by floor."""
        by_floor: dict[int, list[str]] = {}
        for sid, floor in sorted(self.floors.items()):
            by_floor.setdefault(floor, []).append(sid)
        parts = []
        for floor, ids in sorted(by_floor.items(), reverse=True):
            shown = ", ".join(ids[:SHOWN_STATIONS]) + (", …" if len(ids) > SHOWN_STATIONS else "")
            noun = "station" if len(ids) == 1 else "stations"
            parts.append(f"{len(ids)} {noun} ({shown}) at rollback floor {floor}")
        return "; ".join(parts)

    def audit_details(self) -> dict[str, object]:
        shown = dict(sorted(self.floors.items())[:SHOWN_STATIONS])
        return {"count": len(self.floors), "highest_floor": self.highest, "stations": shown}


async def known_floors(s: AsyncSession, station_ids: Iterable[str]) -> dict[str, int]:
    """The rollback floor the server knows for each station (0 when it knows nothing)."""
    ids = sorted(set(station_ids))
    floors = dict.fromkeys(ids, 0)
    if not ids:
        return floors
    installed = select(FirmwareUpdate.station_id, func.max(Release.security_version)).join(
        Release, Release.id == FirmwareUpdate.release_id
    )
    running = select(Station.id, func.min(Release.security_version)).join(
        Release, Release.version == Station.firmware_version
    )
    for start in range(0, len(ids), 500):  # bounded IN lists for a large fleet
        chunk = ids[start : start + 500]
        for q in (
            installed.where(
                FirmwareUpdate.station_id.in_(chunk), FirmwareUpdate.outcome == "succeeded"
            ).group_by(FirmwareUpdate.station_id),
            running.where(Station.id.in_(chunk)).group_by(Station.id),
        ):
            for sid, version in (await s.execute(q)).all():
                floors[sid] = max(floors[sid], int(version or 0))
    return floors


async def below_floor(s: AsyncSession, release: Release, station_ids: Iterable[str]) -> BelowFloor:
    floors = await known_floors(s, station_ids)
    return BelowFloor(
        release, {sid: f for sid, f in floors.items() if f > release.security_version}
    )


def refuse_below_floor(below: BelowFloor, targets: int) -> Conflict:
    release = below.release
    return Conflict(
        f"release {release.version} has security version {release.security_version}, below "
        f"the rollback floor of {len(below.floors)} of the {targets} target stations "
        f"({below.describe()}): they would refuse it. Choose a release with security version "
        f"{below.highest} or more (re-sign the build with `chargeward release build "
        f"--security-version {below.highest}`), or create the campaign with allow_below_floor "
        "(`--allow-below-floor`) to leave those stations out"
    )


async def check_usable(s: AsyncSession, release: Release, *, require_published: bool) -> None:
    """Refuse a release the chargers would refuse whatever their floor: with a TUF repository,
    one that is not published (the rule ``station update`` applies)."""
    if require_published:
        await require_published_release(s, release)


@dataclass(frozen=True)
class Candidate:
    """A release as the campaign forms offer it."""

    id: str
    version: str
    security_version: int
    hardware_models: Sequence[str]
    state: str  # published | pending
    usable: bool  # a campaign may use it (published, or no TUF repository)
    below_floor: int  # stations of the fleet (or of the given ones) that would refuse it
    highest_floor: int


async def candidates(
    s: AsyncSession, *, require_published: bool, station_ids: Iterable[str] | None = None
) -> list[Candidate]:
    """Every release with whether a campaign may use it and how many stations (of
    ``station_ids``, default the whole fleet) have a known floor above it, highest first."""
    ids = (
        list(station_ids)
        if station_ids is not None
        else (await s.scalars(select(Station.id))).all()
    )
    floors = await known_floors(s, ids)
    found = []
    for release in await s.scalars(select(Release)):
        state, _ = await publication(s, release.id)
        above = [f for f in floors.values() if f > release.security_version]
        found.append(
            Candidate(
                id=release.id,
                version=release.version,
                security_version=release.security_version,
                hardware_models=list(release.hardware_models["models"]),
                state=state,
                usable=state == "published" or not require_published,
                below_floor=len(above),
                highest_floor=max(above, default=0),
            )
        )
    return sorted(found, key=lambda c: (-c.security_version, c.version))


def _resign(previous: Release, floor: int, count: int) -> str:
    noun = "station" if count == 1 else "stations"
    return (
        f"release {previous.version} has security version {previous.security_version}, below "
        f"the rollback floor {floor} of {count} {noun} to roll back: every one would refuse it. "
        f"Re-sign that build with a new security version (`chargeward release build --version "
        f"{previous.version} --security-version {floor} …`), upload and publish it, then roll "
        "back to it"
    )


async def rollback_release(
    s: AsyncSession,
    current_id: str,
    chosen_id: str | None,
    floors: Mapping[str, int],
    *,
    require_published: bool,
) -> Release:
    """The release a fleet rollback installs: ``chosen_id`` if the stations (their known
    ``floors``) accept it, else the newest upload of an earlier version they accept, for the same
    models; refused, naming the re-signing to do, when the previous build is below a floor."""
    floor = max(floors.values(), default=0)
    if chosen_id is not None:
        chosen = await s.get(Release, chosen_id)
        if chosen is None:
            raise NotFound(f"no release {chosen_id!r}")
        await check_usable(s, chosen, require_published=require_published)
        below = sum(f > chosen.security_version for f in floors.values())
        if below:
            raise Conflict(_resign(chosen, floor, below))
        return chosen
    current = await s.get(Release, current_id)
    if current is None:
        raise NotFound(f"no release {current_id!r}")
    models = set(current.hardware_models["models"])
    others = [
        r
        for r in await s.scalars(select(Release).order_by(Release.uploaded_at.desc()))
        if _earlier(r, current) and models & set(r.hardware_models["models"])
    ]
    for release in others:
        if release.security_version < floor:
            continue
        if require_published and (await publication(s, release.id))[0] != "published":
            continue
        return release
    previous = next(iter(others), None)  # the newest earlier version, re-signed or not
    if previous is None:
        raise Conflict(
            f"no earlier release for {', '.join(sorted(models))} to roll back to; "
            "name one with --release"
        )
    if previous.security_version >= floor:  # the stations accept it, but it is not published
        await require_published_release(s, previous)
    raise Conflict(
        _resign(previous, floor, sum(f > previous.security_version for f in floors.values()))
    )


def _earlier(release: Release, current: Release) -> bool:
    """Whether ``release`` is an earlier version than ``current`` (PEP 440 order; for versions
    that do not parse, uploaded before it).  A re-signed earlier build is uploaded later but
    keeps an earlier version, so it counts; a newer version is no roll back."""
    try:
        return Version(release.version) < Version(current.version)
    except InvalidVersion:
        return release.version != current.version and release.uploaded_at < current.uploaded_at
