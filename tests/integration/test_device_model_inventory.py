"""An operator inventories a Chargeward charger like any other OCPP 2.0.1 charger: the real
server process asks the real agent for its device model (GetBaseReport, B07), the agent's
NotifyReport parts are assembled and kept, and the station's reports show what it runs on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.support.campaigns import agents, api, until
from tests.support.fleet import Pki, assert_no_crash, running_server


def variables(model: dict[str, Any] | None) -> dict[tuple[str, str], dict[str, Any]]:
    return {(v["component"], v["variable"]): v for v in (model or {}).get("variables", [])}


async def test_the_server_reads_the_agents_device_model(
    tmp_path: Path, pki: Pki, factory_bundle: Path
) -> None:
    with running_server(tmp_path, pki) as srv:
        async with agents(srv, tmp_path, pki, factory_bundle, ["CP-A"]):
            answer = await api(srv, "POST", "/api/v1/stations/CP-A/reports/device-model")
            assert answer["station_response"] == "Accepted"

            async def reported() -> dict[str, Any] | None:
                found = await api(srv, "GET", "/api/v1/stations/CP-A/reports")
                model = found["device_model"]
                return model if model and model["request_id"] == answer["request_id"] else None

            model = await until(reported, "the device model", 20)
            found = variables(model)
            firmware = found[("ChargewardFirmwareCtrlr", "FirmwareVersion")]
            assert firmware["attributes"] == {"Actual": "1.0.0"}
            assert found[("SecurityCtrlr", "Identity")]["attributes"] == {"Actual": "CP-A"}
            # The password is write-only: reported as a variable, never with a value.
            assert found[("SecurityCtrlr", "BasicAuthPassword")]["attributes"] == {"Actual": None}

            trail = await api(srv, "GET", "/api/v1/audit", params={"target": "CP-A"})
            asked = [e for e in trail if e["action"] == "station.device_model_requested"]
            assert asked and asked[-1]["details"]["request_id"] == answer["request_id"]

            # Bad input is refused with a reason; a station not connected is a conflict.
            with srv.http as c:
                bad = c.post(
                    "/api/v1/stations/CP-A/reports/device-model", json={"report_base": "All"}
                )
                absent = await asyncio.to_thread(
                    c.post, "/api/v1/stations/CP-NONE/reports/device-model"
                )
            assert bad.status_code == 422
            assert absent.status_code in (404, 409)
    assert_no_crash(srv.proc.output())
