"""The fleet simulator runs a mixed fleet against a real server process: OCPP 2.0.1 chargers,
OCPP 1.6J chargers with the Security Whitepaper and 1.6J chargers without it (legacy), which
the simulator, as the operator, marks ``legacy_firmware_update``.  One campaign updates all
of them; the summary counts each protocol's stations, runs and verified versions, and the
checks hold the server's record of each station's protocol against what it was made with.

Left unmarked, a legacy charger is not updated: it refuses SignedUpdateFirmware and the
server sends it nothing else (ADR 0039)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from chargeward.sim.runner import SimOptions, run_scenario
from chargeward.sim.scenario import parse_scenario

MIXED = """
seed = 30
duration = 120
[releases]
versions = ["1.0.0", "1.1.0"]
image_kib = 32
[campaign]
release = "1.1.0"
stages = { canary = 1, then = ["100%"] }
gates = GATES
[[sites]]
id = "depot"
timezone = "Europe/London"
windows = "always"
[[sites]]
id = "old-depot"
timezone = "Europe/Paris"
windows = "always"
link = { latency_ms = 10 }
ocpp = "1.6"
[[fleet]]
count = 3
site = "depot"
firmware = "1.0.0"
[[fleet]]
count = 3
site = "old-depot"
firmware = "1.0.0"
prefix = "WP"
[[fleet]]
count = 2
site = "old-depot"
firmware = "1.0.0"
prefix = "LEG"
legacy_firmware_update = true
MARK
"""


async def _run(tmp: Path, *, mark: bool) -> dict[str, Any]:
    doc = MIXED.replace("MARK", "" if mark else "mark_legacy = false")
    # Unmarked, the legacy chargers fail: a gate that lets the rest go on.
    gates = '{ success = "90%", error = 1 }' if mark else '{ success = "50%", error = "100%" }'
    doc = doc.replace("GATES", gates)
    scenario = parse_scenario(doc.encode(), "mixed.toml")
    console = Console(record=True, width=160)
    s = await run_scenario(scenario, SimOptions(workdir=tmp), console)
    s["printed"] = console.export_text()
    return s


@pytest.mark.slow  # 13-26 s: a server process and eight simulated chargers
@pytest.mark.timeout(240)
async def test_a_mixed_fleet_of_2_0_1_1_6_whitepaper_and_legacy_chargers_is_updated(
    tmp_path: Path,
) -> None:
    s = await _run(tmp_path, mark=True)
    assert s["campaign"]["status"] == "completed", s["campaign"]
    assert s["campaign"]["counts"] == {"succeeded": 8} | {
        k: 0 for k in s["campaign"]["counts"] if k != "succeeded"
    }
    assert s["final_versions"] == {"1.1.0": 8}
    assert s["legacy_marked"] == 2
    done = {"runs": {"succeeded": 3}, "final_versions": {"1.1.0": 3}}
    assert s["protocols"] == {
        "2.0.1": {"stations": 3, **done},
        "1.6 whitepaper": {"stations": 3, **done},
        "1.6 legacy": {"stations": 2, "runs": {"succeeded": 2}, "final_versions": {"1.1.0": 2}},
    }
    checks = s["checks"]
    assert checks["ok"], checks
    # The server's record: who spoke 1.6, who got SignedUpdateFirmware (and answered it),
    # who was marked legacy (plain UpdateFirmware, never a SignedUpdateFirmware).
    assert checks["protocols"] == {
        "2.0.1": 3,
        "1.6, signed update shown": 3,
        "1.6, marked legacy": 2,
    }
    assert checks["protocol_mismatch"] == []
    printed = s["printed"]
    assert "OCPP 1.6 legacy" in printed and "2 stations; runs: 2 succeeded" in printed


@pytest.mark.slow  # the second run of the same fleet
@pytest.mark.timeout(240)
async def test_legacy_chargers_left_unmarked_refuse_the_signed_update_and_stay_put(
    tmp_path: Path,
) -> None:
    s = await _run(tmp_path, mark=False)
    assert s["campaign"]["status"] == "completed", s["campaign"]
    assert s["legacy_marked"] == 0
    assert s["protocols"]["1.6 legacy (unmarked)"] == {
        "stations": 2,
        "runs": {"failed": 2},
        "final_versions": {"1.0.0": 2},
    }
    assert s["final_versions"] == {"1.0.0": 2, "1.1.0": 6}
    checks = s["checks"]
    assert checks["ok"], checks
    assert checks["protocols"]["1.6, signed update refused"] == 2
