"""Each simulated station's plan: identity, site, sessions and faults, from the scenario's seed.

A station's random choices come from ``random.Random(f"{seed}:{station_id}")`` only, so a run
is the same whatever the number of stations, their order or the scheduling of the event loop.

    >>> from chargeward.sim.scenario import parse_scenario
    >>> s = parse_scenario(b'''seed = 3
    ... [releases]
    ... versions = ["1.0.0"]
    ... [campaign]
    ... release = "1.0.0"
    ... [[sites]]
    ... id = "d"
    ... timezone = "UTC"
    ... [[fleet]]
    ... count = 2
    ... site = "d"
    ... firmware = "1.0.0"
    ... ''', "s.toml")
    >>> [p.station_id for p in plan_fleet(s)]
    ['SIM-0-00000', 'SIM-0-00001']
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from chargeward.sim.scenario import Chance, Group, Ocpp, Scenario, Sessions

DEFAULT_MAX_STEP = 24  # flash steps from the start of an install to the commit after it


@dataclass(frozen=True)
class StationFaults:
    drop_at: int | None = None  # the first download connection drops after this many bytes
    corrupt_at: int | None = None  # a byte of the first download's body is flipped here
    power_cut_step: int | None = None  # the n-th flash step from the start of the install
    offline: tuple[float, float] | None = None  # (start, duration) seconds after the start
    clock_skew: float = 0.0  # seconds added to the agent's clock

    @property
    def uses_link(self) -> bool:
        """Faults the site's link injects (the rest happen on the station itself)."""
        return self.drop_at is not None or self.corrupt_at is not None or self.offline is not None


@dataclass(frozen=True)
class StationPlan:
    station_id: str
    model: str
    site: str
    firmware: str
    sessions: tuple[tuple[float, float], ...]  # (start, end) seconds after the start
    faults: StationFaults
    ocpp: Ocpp = field(default_factory=Ocpp)  # Local Controllers: 2.0.1 (they publish)


def _hit(rng: random.Random, chance: Chance) -> bool:
    return chance.probability > 0 and rng.random() < chance.probability


def _offset(rng: random.Random, raw: object, default: tuple[int, int]) -> int:
    if isinstance(raw, int):
        return raw
    lo, hi = raw if isinstance(raw, list) and len(raw) == 2 else default
    return rng.randint(int(lo), int(hi))


def _sessions(rng: random.Random, pattern: Sessions, horizon: float) -> list[tuple[float, float]]:
    out = list(pattern.busy)
    if pattern.per_hour > 0:
        t = 0.0
        while True:
            t += rng.expovariate(pattern.per_hour / 3600)
            if t >= horizon:
                break
            length = max(1.0, rng.expovariate(1 / (pattern.mean_minutes * 60)))
            if all(t >= e or t + length <= s for s, e in out):  # one EVSE: no overlaps
                out.append((t, t + length))
    return sorted(out)


def station_faults(rng: random.Random, scenario: Scenario) -> StationFaults:
    f = scenario.faults
    drop = _offset(rng, f.link_drop.params.get("at_byte"), (1_000, 20_000))
    corrupt = _offset(rng, f.corrupt.params.get("at_byte"), (0, 1_000))
    step_raw = f.power_loss.params.get("step", "random")
    max_step = int(f.power_loss.params.get("max_step", DEFAULT_MAX_STEP))
    step = rng.randint(1, max_step) if step_raw == "random" else int(step_raw)
    at = float(f.offline.params.get("at", 0.0))
    duration = float(f.offline.params.get("duration", 30.0))
    skew = float(f.clock_skew.params.get("seconds", 0.0))
    # Always draw every value, hit or not: one station's faults never shift another's.
    return StationFaults(
        drop_at=drop if _hit(rng, f.link_drop) else None,
        corrupt_at=corrupt if _hit(rng, f.corrupt) else None,
        power_cut_step=step if _hit(rng, f.power_loss) else None,
        offline=(at, duration) if _hit(rng, f.offline) else None,
        clock_skew=skew if _hit(rng, f.clock_skew) else 0.0,
    )


def _station(scenario: Scenario, group: Group, station_id: str) -> StationPlan:
    rng = random.Random(f"{scenario.seed}:{station_id}")  # noqa: S311 - simulation, not secrets
    faults = station_faults(rng, scenario)
    return StationPlan(
        station_id=station_id,
        model=group.model,
        site=group.site,
        firmware=group.firmware,
        sessions=tuple(_sessions(rng, group.sessions, scenario.duration)),
        faults=faults,
        ocpp=group.ocpp,
    )


def plan_fleet(scenario: Scenario) -> list[StationPlan]:
    return [
        _station(scenario, group, f"{group.prefix}-{g}-{n:05d}")
        for g, group in enumerate(scenario.fleet)
        for n in range(group.count)
    ]


def controller_plans(scenario: Scenario) -> list[StationPlan]:
    """A Local Controller for each site that has one: ``LC-<site>``, the fleet's first model
    and version, no sessions, no faults."""
    model = scenario.fleet[0].model
    return [
        StationPlan(f"LC-{site.id}", model, site.id, scenario.versions[0], (), StationFaults())
        for site in scenario.sites.values()
        if site.local_controller
    ]
