"""The reference agent's device model through OCPP (2.0.1 B05-B08): a CSMS reads, sets and
inventories a Chargeward charger like any other.

The real agent runs against an in-process OCPP CSMS on 127.0.0.1 (tests.support.agent_harness)
built on the ``ocpp`` library, which checks every message the agent sends against the OCPP
2.0.1 JSON schemas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ocpp.exceptions import OccurrenceConstraintViolationError
from ocpp.v201 import call

from chargeward.agent.agent import Agent
from chargeward.agent.config import AgentConfig
from chargeward.agent.state import StateDir
from tests.support.agent_harness import Csms, provisioned_charger, running_agent, running_csms
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import Clock

pytestmark = pytest.mark.timeout(60)
STATION = "CP-DM"


@pytest.fixture
def charger(tmp_path: Path, charger_factory: tuple[Pki, Path]) -> StateDir:
    return provisioned_charger(tmp_path, charger_factory, STATION)


def entry(component: str, variable: str, **more: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"component": {"name": component}, "variable": {"name": variable}}
    if "evse" in more:
        item["component"]["evse"] = {"id": more.pop("evse")}
    if "instance" in more:
        item["variable"]["instance"] = more.pop("instance")
    return {**item, **more}


async def get(csms: Csms, *items: dict[str, Any]) -> list[dict[str, Any]]:
    assert csms.station is not None
    result = await csms.station.call(call.GetVariables(get_variable_data=list(items)))
    return list(result.get_variable_result)


async def set_(csms: Csms, *items: dict[str, Any]) -> list[str]:
    assert csms.station is not None
    result = await csms.station.call(call.SetVariables(set_variable_data=list(items)))
    return [r["attribute_status"] for r in result.set_variable_result]


async def test_get_variables_answers_what_the_agent_runs_on(charger: StateDir) -> None:
    async with running_csms() as csms, running_agent(charger, csms, Clock(), None) as agent:
        await csms.wait(lambda: csms.connector(1) == "Available", "connector 1 available")
        results = await get(
            csms,
            entry("ChargingStation", "Model"),
            entry("SecurityCtrlr", "Identity"),
            entry("SecurityCtrlr", "SecurityProfile"),
            entry("ChargewardFirmwareCtrlr", "FirmwareVersion"),
            entry("OCPPCommCtrlr", "WebSocketPingInterval"),
            entry("OCPPCommCtrlr", "MessageTimeout", instance="Default"),
            entry("EVSE", "AvailabilityState", evse=1),
            entry("SecurityCtrlr", "BasicAuthPassword"),
            entry("SmartChargingCtrlr", "Enabled"),
            entry("ChargingStation", "SupplyPhases"),
            entry("ChargingStation", "Model", attribute_type="Target"),
            entry("EVSE", "AvailabilityState", evse=9),
        )
        got = [(r["attribute_status"], r.get("attribute_value")) for r in results]
        assert got == [
            ("Accepted", MODEL),
            ("Accepted", STATION),
            ("Accepted", "1"),  # ws:// with Basic auth
            ("Accepted", "1.0.0"),
            ("Accepted", str(round(agent.config.ping_interval))),
            ("Accepted", "5"),  # the harness's response timeout
            ("Accepted", "Available"),
            ("Rejected", None),  # write-only: never read back (OCPP A01)
            ("UnknownComponent", None),  # no smart charging here
            ("UnknownVariable", None),  # a component it has, a variable it does not know
            ("NotSupportedAttributeType", None),
            ("UnknownComponent", None),  # no EVSE 9
        ]
        # Each result names what was asked, so a CSMS can match answers to questions.
        assert results[6]["component"] == {"name": "EVSE", "evse": {"id": 1}}
        assert results[5]["variable"] == {"name": "MessageTimeout", "instance": "Default"}


async def test_set_variables_are_checked_kept_on_flash_and_used(
    charger: StateDir, tmp_path: Path
) -> None:
    async with running_csms() as csms, running_agent(charger, csms, Clock(), None) as agent:
        # After the boot's answer (its interval would replace the HeartbeatInterval set here).
        await csms.wait(lambda: csms.connector(1) == "Available", "connector 1 available")
        statuses = await set_(
            csms,
            entry("OCPPCommCtrlr", "WebSocketPingInterval", attribute_value="45"),
            entry("OCPPCommCtrlr", "RetryBackOffWaitMinimum", attribute_value="7"),
            entry("OCPPCommCtrlr", "RetryBackOffRepeatTimes", attribute_value="99"),  # > 16
            entry("OCPPCommCtrlr", "WebSocketPingInterval", attribute_value="-1"),
            entry(
                "OCPPCommCtrlr", "WebSocketPingInterval", attribute_value="\uff14\uff15"
            ),  # fullwidth 45
            entry("ChargingStation", "Model", attribute_value="Other"),  # read-only
            entry("ChargingStation", "AllowNewSessionsPendingFirmwareUpdate", attribute_value="x"),
            entry("Nope", "Nope", attribute_value="1"),
            entry("OCPPCommCtrlr", "HeartbeatInterval", attribute_value="1"),
        )
        assert statuses == [
            "Accepted",
            "Accepted",
            "Rejected",
            "Rejected",
            "Rejected",
            "Rejected",
            "Rejected",
            "UnknownComponent",
            "Accepted",
        ]
        results = await get(csms, entry("OCPPCommCtrlr", "WebSocketPingInterval"))
        assert results[0]["attribute_value"] == "45"
        assert agent.reconnect_backoff(0) == pytest.approx(7, abs=agent.config.reconnect_delay)
        # HeartbeatInterval is used at once, not after the 300 s wait under way.
        before = csms.heartbeats
        await csms.wait(lambda: csms.heartbeats >= before + 2, "heartbeats each second")
    # Kept on flash: the next boot (a new process) reads the values the CSMS set.
    again = Agent(AgentConfig(state_dir=charger.root, csms_url="ws://127.0.0.1:9/ocpp/"))
    values = {v.name: v.read(again) for v in again.device.variables() if v.read is not None}
    assert values["WebSocketPingInterval"] == "45"
    assert values["RetryBackOffWaitMinimum"] == "7"


async def test_more_entries_than_items_per_message_is_refused_whole(charger: StateDir) -> None:
    async with running_csms() as csms, running_agent(charger, csms, Clock(), None):
        items = [entry("ChargingStation", "Model")] * 51
        (limit,) = await get(
            csms, entry("DeviceDataCtrlr", "ItemsPerMessage", instance="GetVariables")
        )
        assert limit["attribute_value"] == "50"
        assert csms.station is not None
        with pytest.raises(OccurrenceConstraintViolationError):
            await csms.station.call(call.GetVariables(get_variable_data=items), suppress=False)


def reported(csms: Csms, request_id: int) -> list[dict[str, Any]]:
    return [b for b in csms.of("NotifyReport") if b["request_id"] == request_id]


def variables_of(parts: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for part in parts:
        for d in part.get("report_data", []):
            out[(d["component"]["name"], d["variable"]["name"])] = d
    return out


async def test_a_full_inventory_is_reported_in_parts_every_part_schema_valid(
    charger: StateDir,
) -> None:
    async with running_csms() as csms, running_agent(charger, csms, Clock(), None) as agent:
        assert csms.station is not None
        answer = await csms.station.call(
            call.GetBaseReport(request_id=11, report_base="FullInventory")
        )
        assert answer.status == "Accepted"
        parts = await csms.wait(
            lambda: [p for p in reported(csms, 11) if not p.get("tbc")] and reported(csms, 11),
            "the last NotifyReport part",
        )
        assert [p["seq_no"] for p in parts] == list(range(len(parts)))
        assert [p.get("tbc", False) for p in parts] == [True] * (len(parts) - 1) + [False]
        found = variables_of(parts)
        entries = sum(len(p.get("report_data", [])) for p in parts)
        assert entries == len(list(agent.device.variables())) > 25  # every one, once
        password = found[("SecurityCtrlr", "BasicAuthPassword")]["variable_attribute"][0]
        assert password == {"type": "Actual", "mutability": "WriteOnly"}  # no value, ever
        version = found[("ChargewardFirmwareCtrlr", "FirmwareVersion")]
        assert version["variable_attribute"][0]["value"] == "1.0.0"
        assert version["variable_attribute"][0]["mutability"] == "ReadOnly"

        # ConfigurationInventory: only what a CSMS can set.
        await csms.station.call(
            call.GetBaseReport(request_id=12, report_base="ConfigurationInventory")
        )
        config = await csms.wait(lambda: reported(csms, 12), "the configuration report")
        mutability = {
            d["variable_attribute"][0]["mutability"]
            for p in config
            for d in p.get("report_data", [])
        }
        assert mutability == {"ReadWrite", "WriteOnly"}


async def test_a_custom_report_selects_and_an_empty_one_says_so(charger: StateDir) -> None:
    async with running_csms() as csms, running_agent(charger, csms, Clock(), None):
        assert csms.station is not None
        answer = await csms.station.call(
            call.GetReport(
                request_id=21,
                component_variable=[
                    {"component": {"name": "OCPPCommCtrlr"}},
                    {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "Identity"}},
                ],
            )
        )
        assert answer.status == "Accepted"
        parts = await csms.wait(lambda: reported(csms, 21), "the custom report")
        names = set(variables_of(parts))
        assert ("SecurityCtrlr", "Identity") in names
        assert ("OCPPCommCtrlr", "WebSocketPingInterval") in names
        assert {c for c, _ in names} == {"OCPPCommCtrlr", "SecurityCtrlr"}
        # Nothing of the agent reports a problem: EmptyResultSet and no NotifyReport.
        empty = await csms.station.call(
            call.GetReport(request_id=22, component_criteria=["Problem"])
        )
        assert empty.status == "EmptyResultSet"
        await get(csms, entry("ChargingStation", "Model"))  # a round trip after it
        assert reported(csms, 22) == []
