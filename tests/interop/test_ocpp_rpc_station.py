"""Chargeward's CSMS against a station it did not write: ocpp-rpc in strict mode (issue 29).

A real ``chargeward server`` process on 127.0.0.1 (security profile 1 over ws://) and the
ocpp-rpc station of tests/interop/node/station.js, which validates every CALL and CALLRESULT
against ocpp-rpc's own copy of the OCPP 2.0.1 schemas: a reply of Chargeward's that broke a
schema would show up as a ``strictValidationFailure`` event, never as a pass.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.interop.csms_under_test import (
    error_replies,
    exchanges,
    no_schema_violation,
    poll,
    registered,
    still_serving,
    update,
)
from tests.interop.node_peer import node_peer
from tests.support.agent_harness import L01_HAPPY
from tests.support.fleet import Server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

L01_THIRD_PARTY = L01_HAPPY  # what a station that installs an image reports (OCPP L01)
# OCPP-J 4.2.3's error codes (OCPP 2.0.1 Part 4, table 7).
OCPP_ERROR_CODES = {
    "FormatViolation",
    "GenericError",
    "InternalError",
    "MessageTypeNotSupported",
    "NotImplemented",
    "NotSupported",
    "OccurrenceConstraintViolation",
    "PropertyConstraintViolation",
    "ProtocolError",
    "RpcFrameworkError",
    "SecurityError",
    "TypeConstraintViolation",
}


async def test_boot_status_and_heartbeat_are_accepted(server: Server) -> None:
    args = await registered(server, "RPC-BOOT")
    async with node_peer("station.js", *args) as station:
        await station.wait(lambda e: e["event"] == "ready", "the station's boot")
        [boot] = exchanges(station, "BootNotification")
        assert boot["result"] == "CALLRESULT"
        assert boot["reply"]["status"] == "Accepted"
        assert boot["reply"]["interval"] > 0
        [status] = exchanges(station, "StatusNotification")
        assert (status["result"], status["reply"]) == ("CALLRESULT", {})
        [beat] = exchanges(station, "Heartbeat")
        assert beat["result"] == "CALLRESULT" and "currentTime" in beat["reply"]
        detail = await poll(
            lambda: server.station("RPC-BOOT"), lambda d: d["connected"], "the station"
        )
        assert detail["firmware_version"] == "1.0.0"
        no_schema_violation(station)


async def test_l01_update_of_a_third_party_station(server: Server, update_bundle: Path) -> None:
    args = await registered(server, "RPC-L01", "--new-firmware", "1.1.0")
    async with node_peer("station.js", *args) as station:
        await station.wait(lambda e: e["event"] == "ready", "the station's boot")
        answer = await update(server, "RPC-L01", update_bundle)
        assert answer["station_response"] == "Accepted"
        await station.wait(lambda e: e["event"] == "update-done", "the update", timeout=60)
        [request] = exchanges(station, "UpdateFirmware", "csms->station")
        firmware = request["request"]["firmware"]
        assert firmware["location"].startswith("http://127.0.0.1:")
        assert request["request"]["requestId"] == answer["request_id"]
        reported = [
            e["request"]["status"] for e in exchanges(station, "FirmwareStatusNotification")
        ]
        assert reported == L01_THIRD_PARTY
        assert all(
            e["result"] == "CALLRESULT" for e in exchanges(station, "FirmwareStatusNotification")
        )
        boots = exchanges(station, "BootNotification")
        assert [b["request"]["reason"] for b in boots] == ["PowerUp", "FirmwareUpdate"]
        assert all(b["reply"]["status"] == "Accepted" for b in boots)

        detail = await poll(
            lambda: server.station("RPC-L01"),
            lambda d: d["updates"][-1]["outcome"] != "pending",
            "the CSMS to close the update",
        )
        assert detail["updates"][-1]["outcome"] == "succeeded"
        assert detail["firmware_version"] == "1.1.0"
        rid = answer["request_id"]
        assert [
            e["status"] for e in detail["firmware_statuses"] if e["request_id"] == rid
        ] == L01_THIRD_PARTY
        no_schema_violation(station)


async def test_a_refused_update_is_recorded(server: Server, update_bundle: Path) -> None:
    args = await registered(server, "RPC-NO", "--update-answer", "Rejected")
    async with node_peer("station.js", *args) as station:
        await station.wait(lambda e: e["event"] == "ready", "the station's boot")
        answer = await update(server, "RPC-NO", update_bundle)
        assert answer["station_response"] == "Rejected"
        [request] = exchanges(station, "UpdateFirmware", "csms->station")
        assert request["reply"] == {"status": "Rejected"}
        detail = await asyncio.to_thread(server.station, "RPC-NO")
        [row] = detail["updates"]
        assert (row["response_status"], row["outcome"]) == ("Rejected", "failed")
        trail = await asyncio.to_thread(
            server.api, "GET", "/api/v1/audit", params={"transaction_id": answer["transaction_id"]}
        )
        assert ("firmware.update_response", "Rejected") in [
            (e["action"], e["details"].get("status")) for e in trail
        ]
        assert detail["firmware_version"] == "1.0.0"
        assert exchanges(station, "FirmwareStatusNotification") == []
        no_schema_violation(station)


ERROR_FRAMES = [
    # (what is wrong, the frame, the codes OCPP-J 4.3 allows for it)
    (
        "payload missing a required field",
        [2, "x-missing", "StatusNotification", {"evseId": 1, "connectorId": 1}],
        {"FormatViolation", "OccurrenceConstraintViolation", "ProtocolError"},
    ),
    (
        "payload with a property the schema forbids",
        [2, "x-extra", "Heartbeat", {"unexpected": []}],
        {"FormatViolation", "PropertyConstraintViolation"},
    ),
    (
        "enum value outside the schema",
        [
            2,
            "x-enum",
            "StatusNotification",
            {
                "timestamp": "2026-01-01T00:00:00Z",
                "connectorStatus": "Exploded",
                "evseId": 1,
                "connectorId": 1,
            },
        ],
        {"FormatViolation", "PropertyConstraintViolation"},
    ),
    (
        "field of the wrong type",
        [
            2,
            "x-type",
            "StatusNotification",
            {
                "timestamp": "2026-01-01T00:00:00Z",
                "connectorStatus": "Available",
                "evseId": "one",
                "connectorId": 1,
            },
        ],
        {"FormatViolation", "TypeConstraintViolation"},
    ),
    (
        "payload not an object",
        [2, "x-array", "Heartbeat", []],
        {"FormatViolation", "TypeConstraintViolation", "ProtocolError"},
    ),
]
# OCPP-J 4.3: NotImplemented "Requested Action is not known by receiver", NotSupported
# "Requested Action is recognized but not supported by the receiver".
UNKNOWN_ACTIONS = [
    (
        "an action OCPP 2.0.1 does not have",
        [2, "x-unknown", "ChargewardNoSuchAction", {}],
        "NotImplemented",
    ),
    (
        "an OCPP 2.0.1 action a CSMS receives but Chargeward does not handle",
        [
            2,
            "x-unhandled",
            "Get15118EVCertificate",
            {
                "iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef",
                "action": "Install",
                "exiRequest": "AAAA",
            },
        ],
        "NotSupported",
    ),
]


async def test_malformed_payloads_get_valid_callerrors(server: Server) -> None:
    """Each malformed CALL gets a CALLERROR that ocpp-rpc parses, for its message id, with
    an OCPP-J code that fits what is wrong; the connection stays up."""
    args = await registered(server, "RPC-ERR")
    async with node_peer("station.js", *args) as station:
        await station.wait(lambda e: e["event"] == "ready", "the station's boot")
        replies = await error_replies(station, [(n, f) for n, f, _ in ERROR_FRAMES])
        for (name, _, codes), reply in zip(ERROR_FRAMES, replies, strict=True):
            assert reply["frame"][2] in codes & OCPP_ERROR_CODES, (name, reply["frame"])
        await still_serving(station)


async def test_unknown_actions_get_the_codes_ocpp_j_names(server: Server) -> None:
    args = await registered(server, "RPC-ACT")
    async with node_peer("station.js", *args) as station:
        await station.wait(lambda e: e["event"] == "ready", "the station's boot")
        replies = await error_replies(station, [(n, f) for n, f, _ in UNKNOWN_ACTIONS])
        await still_serving(station)
        assert [r["frame"][2] for r in replies] == [code for _, _, code in UNKNOWN_ACTIONS]
