"""A CALL no handler takes gets the OCPP-J code for why (2.0.1 Part 4, 1.6 section 4.2.3):
``NotImplemented`` when the action is not known, ``NotSupported`` when it is a known action
the receiver does not support.  The ``ocpp`` library answers the two the other way round; a
strict peer (ocpp-rpc, tests/interop) checks them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chargeward.ocpp.base import HardenedChargePoint16, error_codes_16, unhandled_action
from chargeward.ocpp.station import StationChargePoint


class Wire:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, message: str) -> None:
        self.sent.append(json.loads(message))

    async def recv(self) -> str:  # never called: frames are routed directly
        raise AssertionError


@pytest.mark.parametrize(
    ("action", "payload", "code"),
    [
        ("NoSuchAction", {}, "NotImplemented"),
        (
            "BootNotification",
            {"reason": "PowerUp", "chargingStation": {"model": "m", "vendorName": "v"}},
            "NotSupported",
        ),
        (
            "RequestStartTransaction",
            {"idToken": {"idToken": "1", "type": "Central"}, "remoteStartId": 1},
            "NotSupported",
        ),
    ],
)
async def test_the_code_says_whether_the_action_is_known(
    action: str, payload: dict[str, Any], code: str
) -> None:
    wire = Wire()
    station = StationChargePoint("CP-1", wire, controller=None)  # type: ignore[arg-type]
    await station.route_message(json.dumps([2, "m-1", action, payload]))
    assert [frame[:3] for frame in wire.sent] == [[4, "m-1", code]]


def test_versions_have_their_own_action_lists() -> None:
    # Get15118EVCertificate is an OCPP 2.0.1 action only, DiagnosticsStatusNotification 1.6.
    assert unhandled_action("Get15118EVCertificate", "2.0.1").code == "NotSupported"
    assert unhandled_action("Get15118EVCertificate", "1.6").code == "NotImplemented"
    assert unhandled_action("DiagnosticsStatusNotification", "1.6").code == "NotSupported"


async def test_a_16_connection_answers_with_ocpp_j_16_error_codes() -> None:
    """OCPP-J 1.6 says FormationViolation where 2.0 says FormatViolation (section 4.2.3)."""
    wire = Wire()
    station = HardenedChargePoint16("CP-1", wire)
    await station.route_message('[2, "m-1", "Heartbeat", []]')  # not the OCPP-J shape
    await station.route_message('[2, "m-2", "Heartbeat", {"unexpected": 1}]')  # no handler
    assert [frame[:3] for frame in wire.sent] == [
        [4, "m-1", "FormationViolation"],
        [4, "m-2", "NotSupported"],  # a 1.6 action this charge point has no handler for
    ]
    assert error_codes_16('[3, "m-3", {}]') == '[3, "m-3", {}]'  # only CALLERRORs change
