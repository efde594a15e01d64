"""The fleet's OCPP mix: the operator's legacy marks and a run's counts per protocol.

Each simulated charger speaks what its plan says (:class:`~chargeward.sim.scenario.Ocpp`):
2.0.1, 1.6J with the Security Whitepaper, or 1.6J without it.  The server sends plain
UpdateFirmware only to a station an operator marked legacy (ADR 0039); the simulator plays
that operator with the REST API, as a person would::

    marked = await mark_legacy(api, sim.plans)      # PATCH {"legacy_firmware_update": true}

and counts each protocol's stations, their campaign runs and the versions on their flash:

    >>> protocol_line("1.6 legacy", {"stations": 2, "runs": {"succeeded": 2},
    ...                              "final_versions": {"1.1.0": 2}})
    'OCPP 1.6 legacy: 2 stations; runs: 2 succeeded; verified on flash: 2 on 1.1.0'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx

from chargeward.sim.plan import StationPlan
from chargeward.sim.server import call
from chargeward.sim.station import SimStation

# The order of the summary's lines (labels of chargeward.sim.scenario.Ocpp)
ORDER = ("2.0.1", "1.6 whitepaper", "1.6 legacy", "1.6 legacy (unmarked)")
NOT_TARGETED = "not targeted"


async def mark_legacy(api: httpx.AsyncClient, plans: Iterable[StationPlan]) -> list[str]:
    """Mark every legacy station whose plan says so ``legacy_firmware_update`` on the server
    (audited as ``station.registry_update`` for the API client's actor); returns their ids."""
    marked = [p.station_id for p in plans if p.ocpp.to_mark]
    for station_id in marked:
        await call(
            api,
            "PATCH",
            f"/api/v1/stations/{station_id}",
            json={"legacy_firmware_update": True},
        )
    return marked


def protocol_counts(
    stations: Sequence[SimStation], runs: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per protocol: its stations, their campaign runs' states (``not targeted``: no run) and
    the versions verified on their flash, in :data:`ORDER`."""
    state = {r["station_id"]: r["state"] for r in runs}
    stations_by: Counter[str] = Counter()
    run_states: dict[str, Counter[str]] = {}
    versions: dict[str, Counter[str]] = {}
    for st in stations:
        label = st.plan.ocpp.label
        stations_by[label] += 1
        run_states.setdefault(label, Counter())[state.get(st.plan.station_id, NOT_TARGETED)] += 1
        versions.setdefault(label, Counter())[st.flash.verified_version() or "unverified"] += 1
    return {
        label: {
            "stations": stations_by[label],
            "runs": dict(sorted(run_states[label].items())),
            "final_versions": dict(sorted(versions[label].items())),
        }
        for label in sorted(stations_by, key=_rank)
    }


def protocol_cell(row: Mapping[str, Any]) -> str:
    """One protocol's stations, their runs and the versions on their flash."""
    runs = ", ".join(f"{n} {s}" for s, n in row["runs"].items())
    final = ", ".join(f"{n} on {v}" for v, n in row["final_versions"].items())
    n = row["stations"]
    return f"{n} station{'' if n == 1 else 's'}; runs: {runs}; verified on flash: {final}"


def protocol_line(label: str, row: Mapping[str, Any]) -> str:
    """One line of :func:`protocol_counts`, for a summary."""
    return f"OCPP {label}: {protocol_cell(row)}"


def _rank(label: str) -> tuple[int, str]:
    return (ORDER.index(label) if label in ORDER else len(ORDER), label)
