"""Bad credentials and bad frames are refused clearly; the server keeps serving others."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.fleet import Pki, Server, assert_no_crash, basic, running_server, wait_for


async def _status_of(url: str, **kw: object) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, open_timeout=5, **kw):  # type: ignore[arg-type]
            pass
    return info.value.response.status_code


async def _abuse(srv: Server, password: str) -> dict[str, object]:
    url = srv.ocpp_url + "CP-GOOD"
    sub = {"subprotocols": ["ocpp2.0.1"]}
    seen: dict[str, object] = {
        "wrong password": await _status_of(
            url, additional_headers={"Authorization": basic("CP-GOOD", "x" * 20)}, **sub
        ),
        "no credentials": await _status_of(url, **sub),
        "unknown station": await _status_of(
            srv.ocpp_url + "CP-NOBODY",
            additional_headers={"Authorization": basic("CP-NOBODY", password)},
            **sub,
        ),
        "username differs from path": await _status_of(
            srv.ocpp_url + "CP-NOBODY",
            additional_headers={"Authorization": basic("CP-GOOD", password)},
            **sub,
        ),
        "missing subprotocol": await _status_of(
            url, additional_headers={"Authorization": basic("CP-GOOD", password)}
        ),
        "bad path": await _status_of(srv.ocpp_url.replace("/ocpp/", "/other/") + "CP-GOOD", **sub),
    }
    # Malformed frames on an authenticated connection (the real station is connected too:
    # this connection replaces it for a moment, exactly like a reconnect).
    auth = {"Authorization": basic("CP-GOOD", password)}
    async with connect(url, additional_headers=auth, open_timeout=5, **sub) as ws:  # type: ignore[arg-type]
        replies = []
        for frame in [
            '{"not": "an array"',
            "[]",
            '[2, "m1", "BootNotification"]',
            '[7, "m2", "Heartbeat", {}]',
            '[2, "m3", {"x": 1}, {}]',
            '[2, "m4", "NoSuchAction", {}]',
            '[2, "m5", "BootNotification", {"reason": 5}]',
        ]:
            await ws.send(frame)
            replies.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        seen["frames"] = replies
        # Still a working OCPP session after all that.
        await ws.send(
            json.dumps(
                [
                    2,
                    "ok",
                    "BootNotification",
                    {"reason": "PowerUp", "chargingStation": {"model": "AC22", "vendorName": "T"}},
                ]
            )
        )
        seen["after"] = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return seen


@pytest.mark.slow  # 35 s beside the suite's other tests on 2 cores
def test_refusals_are_clear_and_harmless(tmp_path: Path, pki: Pki, factory_bundle: Path) -> None:
    update = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2)
    with running_server(tmp_path, pki) as srv:
        password = srv.add_station("CP-GOOD")
        srv.start_agent(tmp_path, pki, "CP-OTHER", factory_bundle)
        srv.wait_connected("CP-OTHER")
        seen = asyncio.run(_abuse(srv, password))
        assert seen["wrong password"] == 401
        assert seen["no credentials"] == 401
        assert seen["unknown station"] == 401
        assert seen["username differs from path"] == 401
        assert seen["missing subprotocol"] == 400
        assert seen["bad path"] == 404
        frames = seen["frames"]
        assert isinstance(frames, list)
        assert [f[0] for f in frames] == [4] * 7  # every bad frame answered with CALLERROR
        codes = [f[2] for f in frames]
        assert codes[:4] == [
            "RpcFrameworkError",
            "RpcFrameworkError",
            "FormatViolation",
            "MessageTypeNotSupported",
        ]
        assert codes[4] == "FormatViolation"
        assert codes[5] in ("NotImplemented", "NotSupported")
        assert codes[6] in ("FormatViolation", "TypeConstraintViolation", "FormationViolation")
        after = seen["after"]
        assert isinstance(after, list) and after[0] == 3 and after[2]["status"] == "Accepted"

        # The other station is still served: a full update goes through.
        release = srv.upload(update)
        # Firmware downloads need the signed, unexpired link the station was given.
        blob = f"/firmware/sha256/{release['images'][0]['sha256']}"
        with httpx.Client(base_url=srv.api_url, timeout=10) as web:
            assert web.get(blob).status_code == 422  # no link parameters at all
            forged = web.get(
                blob, params={"station": "CP-OTHER", "expires": 4102444800, "sig": "0" * 32}
            )
            assert forged.status_code == 403
        srv.api(
            "POST", "/api/v1/stations/CP-OTHER/firmware-updates", json={"release_id": release["id"]}
        )
        wait_for(
            lambda: srv.station("CP-OTHER")["firmware_version"] == "1.1.0", 30, "CP-OTHER to update"
        )
        log = srv.proc.output()
        for agent in srv.agents:
            assert_no_crash(agent.stop())
    assert_no_crash(srv.proc.output())
    assert "authentication refused (unknown station or wrong password)" in log
    assert "ERROR" not in log
    assert password not in log
