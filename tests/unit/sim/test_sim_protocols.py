"""A run's counts per OCPP protocol, and the check that the server recorded each station's
protocol and legacy mark as the station was made and marked."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from chargeward.sim.checks import protocol_mismatch
from chargeward.sim.plan import StationFaults, StationPlan
from chargeward.sim.protocols import protocol_counts, protocol_line
from chargeward.sim.scenario import Ocpp

LEGACY = Ocpp("1.6", legacy=True)


def station(station_id: str, ocpp: Ocpp, version: str | None = "1.1.0") -> Any:
    plan = StationPlan(station_id, "AC22", "d", "1.0.0", (), StationFaults(), ocpp)
    flash = SimpleNamespace(verified_version=lambda: version)
    return SimpleNamespace(plan=plan, flash=flash)


def test_counts_per_protocol_in_a_fixed_order_with_untargeted_stations_named() -> None:
    fleet = [
        station("L1", LEGACY),
        station("W1", Ocpp("1.6"), "1.0.0"),
        station("N1", Ocpp()),
        station("N2", Ocpp()),
    ]
    runs = [
        {"station_id": "L1", "state": "succeeded"},
        {"station_id": "N1", "state": "succeeded"},
        {"station_id": "N2", "state": "failed"},
    ]
    counts = protocol_counts(fleet, runs)
    assert list(counts) == ["2.0.1", "1.6 whitepaper", "1.6 legacy"]
    assert counts["2.0.1"] == {
        "stations": 2,
        "runs": {"failed": 1, "succeeded": 1},
        "final_versions": {"1.1.0": 2},
    }
    assert protocol_line("1.6 whitepaper", counts["1.6 whitepaper"]) == (
        "OCPP 1.6 whitepaper: 1 station; runs: 1 not targeted; verified on flash: 1 on 1.0.0"
    )


def test_a_station_the_server_saw_speak_another_protocol_or_unmarked_is_flagged() -> None:
    assert protocol_mismatch(station("N1", Ocpp()), {"ocpp_version": "2.0.1"}) is None
    marked = {"ocpp_version": "1.6", "legacy_firmware_update": True}
    assert protocol_mismatch(station("L1", LEGACY), marked) is None
    assert protocol_mismatch(station("L1", LEGACY), {"ocpp_version": "1.6"}) == (
        "L1: speaks 1.6 legacy, server saw OCPP 1.6"
    )
    assert protocol_mismatch(station("W1", Ocpp("1.6")), {"ocpp_version": "2.0.1"}) == (
        "W1: speaks 1.6 whitepaper, server saw OCPP 2.0.1"
    )
    unmarked = Ocpp("1.6", legacy=True, marked=False)
    assert protocol_mismatch(station("U1", unmarked), {"ocpp_version": "1.6"}) is None
