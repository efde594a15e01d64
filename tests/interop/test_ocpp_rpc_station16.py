"""Chargeward's CSMS as an OCPP 1.6J CSMS, against a station it did not write (issue 30).

A real ``chargeward server`` process on 127.0.0.1 (security profile 1 over ws://) and the
ocpp-rpc station of tests/interop/node/station16.js with ``protocols: ['ocpp1.6']`` in strict
mode: every CALL and CALLRESULT is validated against ocpp-rpc's own copy of the OCPP 1.6
schemas, which include the Security Whitepaper's (SignedUpdateFirmware,
SignedFirmwareStatusNotification, SecurityEventNotification, ...).  A frame of Chargeward's that
broke a schema would show up as a ``strictValidationFailure`` event, never as a pass.

The station is of the whitepaper kind (SignedUpdateFirmware) or the legacy kind (plain
UpdateFirmware only; SignedUpdateFirmware gets NotImplemented), ADR 0039.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.interop.csms_under_test import (
    error_replies,
    exchanges,
    no_schema_violation,
    poll,
    registered,
    still_serving,
    update,
    update_to,
)
from tests.interop.node_peer import NodePeer, node_peer
from tests.support.agent_harness import L01_HAPPY
from tests.support.fleet import Server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

# OCPP-J 1.6 section 4.2.3's error codes, spelt as 1.6 spells them ("FormationViolation",
# "OccurenceConstraintViolation"); 2.0.1 renamed two and added three.
OCPP16_ERROR_CODES = {
    "NotImplemented",
    "NotSupported",
    "InternalError",
    "ProtocolError",
    "SecurityError",
    "FormationViolation",
    "PropertyConstraintViolation",
    "OccurenceConstraintViolation",
    "TypeConstraintViolation",
    "GenericError",
}
# What a plain 1.6 station reports for an update (OCPP 1.6 section 6.21: no SignatureVerified,
# no InstallRebooting; Installed after the reboot).
LEGACY_STATUSES = ["Downloading", "Downloaded", "Installing", "Installed"]


async def booted(station: NodePeer) -> None:
    await station.wait(lambda e: e["event"] == "ready", "the station's boot")
    [connected] = station.of("connected")
    assert connected["protocol"] == "ocpp1.6"


def audit_of(srv: Server, **params: str) -> list[dict[str, Any]]:
    return list(srv.api("GET", "/api/v1/audit", params=params))


async def test_boot_status_heartbeat_and_security_event(server: Server) -> None:
    args = await registered(server, "RPC16-BOOT")
    async with node_peer("station16.js", *args) as station:
        await booted(station)
        [boot] = exchanges(station, "BootNotification")
        assert boot["result"] == "CALLRESULT"
        assert boot["reply"]["status"] == "Accepted" and boot["reply"]["interval"] > 0
        [status] = exchanges(station, "StatusNotification")
        assert (status["result"], status["reply"]) == ("CALLRESULT", {})
        [beat] = exchanges(station, "Heartbeat")
        assert beat["result"] == "CALLRESULT" and "currentTime" in beat["reply"]
        detail = await poll(
            lambda: server.station("RPC16-BOOT"), lambda d: d["connected"], "the station"
        )
        assert (detail["ocpp_version"], detail["firmware_version"]) == ("1.6", "1.0.0")
        assert detail["signed_update_support"] is None

        # A whitepaper message from the station: it shows the station has the whitepaper.
        event = {"type": "StartupOfTheDevice", "timestamp": "2026-01-01T00:00:00Z"}
        station.send({"cmd": "call", "action": "SecurityEventNotification", "params": event})
        sent = await station.wait(
            lambda e: e.get("action") == "SecurityEventNotification", "the security event"
        )
        assert (sent["result"], sent["reply"]) == ("CALLRESULT", {})
        detail = await asyncio.to_thread(server.station, "RPC16-BOOT")
        assert detail["signed_update_support"] is True
        no_schema_violation(station)


async def test_signed_update_of_a_whitepaper_station(server: Server, update_bundle: Path) -> None:
    args = await registered(server, "RPC16-L01", "--new-firmware", "1.1.0")
    async with node_peer("station16.js", *args) as station:
        await booted(station)
        answer = await update(server, "RPC16-L01", update_bundle)
        assert answer["station_response"] == "Accepted"
        await station.wait(lambda e: e["event"] == "update-done", "the update", timeout=60)
        [request] = exchanges(station, "SignedUpdateFirmware", "csms->station")
        assert request["request"]["requestId"] == answer["request_id"]
        firmware = request["request"]["firmware"]
        assert firmware["location"].startswith("http://127.0.0.1:")
        assert firmware["signature"] != "" and firmware["signingCertificate"] != ""
        assert exchanges(station, "UpdateFirmware", "csms->station") == []
        notes = exchanges(station, "SignedFirmwareStatusNotification")
        assert [e["request"]["status"] for e in notes] == L01_HAPPY
        assert all(e["request"]["requestId"] == answer["request_id"] for e in notes)
        assert all((e["result"], e["reply"]) == ("CALLRESULT", {}) for e in notes)
        boots = exchanges(station, "BootNotification")
        assert [b["request"]["firmwareVersion"] for b in boots] == ["1.0.0", "1.1.0"]
        assert all(b["reply"]["status"] == "Accepted" for b in boots)

        detail = await poll(
            lambda: server.station("RPC16-L01"),
            lambda d: d["updates"][-1]["outcome"] != "pending",
            "the CSMS to close the update",
        )
        assert detail["updates"][-1]["outcome"] == "succeeded"
        assert (detail["firmware_version"], detail["ocpp_version"]) == ("1.1.0", "1.6")
        assert detail["signed_update_support"] is True
        rid = answer["request_id"]
        assert [
            e["status"] for e in detail["firmware_statuses"] if e["request_id"] == rid
        ] == L01_HAPPY
        no_schema_violation(station)


async def test_a_legacy_station_is_refused_until_marked(
    server: Server, update_bundle: Path
) -> None:
    """No whitepaper: SignedUpdateFirmware gets NotImplemented and the update fails with a
    reason; plain UpdateFirmware only once an operator marks the station legacy."""
    args = await registered(server, "RPC16-OLD", "--kind", "legacy", "--new-firmware", "1.1.0")
    async with node_peer("station16.js", *args) as station:
        await booted(station)
        refused = await update(server, "RPC16-OLD", update_bundle)
        assert refused["station_response"] == "SignedUpdateUnsupported"
        [signed] = exchanges(station, "SignedUpdateFirmware", "csms->station")
        assert (signed["result"], signed["reply"]["code"]) == ("CALLERROR", "NotImplemented")
        assert exchanges(station, "UpdateFirmware", "csms->station") == []
        detail = await asyncio.to_thread(server.station, "RPC16-OLD")
        assert detail["signed_update_support"] is False
        assert detail["legacy_firmware_update"] is False
        [row] = detail["updates"]
        assert (row["response_status"], row["outcome"]) == ("SignedUpdateUnsupported", "failed")
        [why] = [
            e
            for e in await asyncio.to_thread(audit_of, server, target="RPC16-OLD")
            if e["action"] == "station.signed_update_support"
        ]
        assert why["details"]["supported"] is False
        assert "legacy_firmware_update" in why["details"]["evidence"]

        await asyncio.to_thread(
            server.api,
            "PATCH",
            "/api/v1/stations/RPC16-OLD",
            json={"legacy_firmware_update": True},
        )
        answer = await update_to(server, "RPC16-OLD", row["release_id"])
        assert answer["station_response"] == "Accepted"
        await station.wait(lambda e: e["event"] == "update-done", "the update", timeout=60)
        [plain] = exchanges(station, "UpdateFirmware", "csms->station")
        assert plain["request"]["location"].startswith("http://127.0.0.1:")
        assert "retrieveDate" in plain["request"]
        assert len(exchanges(station, "SignedUpdateFirmware", "csms->station")) == 1
        notes = exchanges(station, "FirmwareStatusNotification")
        assert [e["request"]["status"] for e in notes] == LEGACY_STATUSES
        assert all((e["result"], e["reply"]) == ("CALLRESULT", {}) for e in notes)
        boots = exchanges(station, "BootNotification")
        assert [b["request"]["firmwareVersion"] for b in boots] == ["1.0.0", "1.1.0"]

        detail = await poll(
            lambda: server.station("RPC16-OLD"),
            lambda d: d["updates"][-1]["outcome"] != "pending",
            "the CSMS to close the update",
        )
        assert detail["updates"][-1]["outcome"] == "succeeded"
        assert detail["firmware_version"] == "1.1.0"
        rid = answer["request_id"]
        assert [
            e["status"] for e in detail["firmware_statuses"] if e["request_id"] == rid
        ] == LEGACY_STATUSES
        no_schema_violation(station)


STATUS_16 = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
ERROR_FRAMES_16 = [
    # (what is wrong, the frame, the codes OCPP-J 1.6 section 4.2.3 allows for it)
    (
        "payload missing a required field",
        [2, "x-missing", "StatusNotification", {"connectorId": 1, "status": "Available"}],
        {"FormationViolation", "OccurenceConstraintViolation", "ProtocolError"},
    ),
    (
        "payload with a property the schema forbids",
        [2, "x-extra", "Heartbeat", {"unexpected": []}],
        {"FormationViolation", "PropertyConstraintViolation"},
    ),
    (
        "enum value outside the schema",
        [2, "x-enum", "StatusNotification", {**STATUS_16, "status": "Exploded"}],
        {"FormationViolation", "PropertyConstraintViolation"},
    ),
    (
        "field of the wrong type",
        [2, "x-type", "StatusNotification", {**STATUS_16, "connectorId": "one"}],
        {"FormationViolation", "TypeConstraintViolation"},
    ),
    (
        "whitepaper message with a status outside its enum",
        [2, "x-signed", "SignedFirmwareStatusNotification", {"status": "Exploded"}],
        {"FormationViolation", "PropertyConstraintViolation"},
    ),
    (
        "date-time without a UTC offset",
        [2, "x-time", "StatusNotification", {**STATUS_16, "timestamp": "2026-01-01T00:00:00"}],
        {"FormationViolation", "PropertyConstraintViolation", "TypeConstraintViolation"},
    ),
    (
        "payload not an object",
        [2, "x-array", "Heartbeat", []],
        {"FormationViolation", "TypeConstraintViolation", "ProtocolError"},
    ),
]
# OCPP-J 1.6 section 4.2.3: NotImplemented "Requested Action is not known by receiver",
# NotSupported "Requested Action is recognized but not supported by the receiver".
UNKNOWN_ACTIONS_16 = [
    (
        "an action OCPP 1.6 does not have",
        [2, "x-unknown", "ChargewardNoSuchAction", {}],
        "NotImplemented",
    ),
    (
        "an OCPP 2.0.1 action, not a 1.6 one",
        [2, "x-201", "NotifyEvent", {}],
        "NotImplemented",
    ),
    (
        "a 1.6 action only a central system sends",
        [2, "x-reset", "Reset", {"type": "Soft"}],
        "NotSupported",
    ),
]


async def malformed_replies(server: Server, station_id: str) -> list[tuple[str, str, set[str]]]:
    """Each frame of ERROR_FRAMES_16 and UNKNOWN_ACTIONS_16 sent raw by a booted 1.6 station:
    (what is wrong, the code answered, the codes OCPP-J 1.6 allows).  Each answer is a
    CALLERROR ocpp-rpc parses, for the message id sent; the connection stays up."""
    args = await registered(server, station_id)
    async with node_peer("station16.js", *args) as station:
        await booted(station)
        frames = [(n, f) for n, f, _ in ERROR_FRAMES_16 + UNKNOWN_ACTIONS_16]
        replies = await error_replies(station, frames)
        await still_serving(station)
    wants = [c for _, _, c in ERROR_FRAMES_16] + [{c} for _, _, c in UNKNOWN_ACTIONS_16]
    return [
        (name, reply["frame"][2], want)
        for (name, _), want, reply in zip(frames, wants, replies, strict=True)
    ]


async def test_malformed_16_payloads_get_callerrors_and_the_connection_stays_up(
    server: Server,
) -> None:
    """Well-formed CALLERRORs with codes ocpp-rpc knows, NotImplemented for actions 1.6 does
    not have and NotSupported for one it has, the connection up afterwards (whether the codes
    are in OCPP-J 1.6's list: the test below)."""
    answered = await malformed_replies(server, "RPC16-ERR")
    unknown = {n for n, _, _ in UNKNOWN_ACTIONS_16}
    assert [(n, c) for n, c, _ in answered if n in unknown] == [
        (n, c) for n, _, c in UNKNOWN_ACTIONS_16
    ]


async def test_malformed_16_payloads_get_ocpp_j_16_error_codes(server: Server) -> None:
    answered = await malformed_replies(server, "RPC16-CODES")
    wrong = {n: code for n, code, want in answered if code not in want & OCPP16_ERROR_CODES}
    assert wrong == {}, "CALLERROR codes that are not OCPP-J 1.6's for what is wrong"
