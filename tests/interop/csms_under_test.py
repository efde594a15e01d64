"""Chargeward's CSMS as the ocpp-rpc stations (station.js, station16.js) meet it: a real
``chargeward server`` process and what the tests ask of it and of the station's log::

    args = await registered(server, "RPC-1")            # station add, profile 1
    async with node_peer("station16.js", *args) as station:
        await station.wait(lambda e: e["event"] == "ready", "the station's boot")
        answer = await update(server, "RPC-1", bundle)   # POST .../firmware-updates
        no_schema_violation(station)

The fixtures ``server`` and ``update_bundle`` are in this directory's conftest.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.interop.node_peer import Event, NodePeer
from tests.support.fleet import Server


def exchanges(station: NodePeer, action: str, direction: str = "station->csms") -> list[Event]:
    return [e for e in station.of("exchange", dir=direction) if e["action"] == action]


def no_schema_violation(station: NodePeer) -> None:
    assert station.of("strictValidationFailure") == [], station.of("strictValidationFailure")
    assert station.of("badMessage") == [], station.of("badMessage")


async def poll(fetch: Callable[[], Any], pred: Callable[[Any], bool], what: str) -> Any:
    """``fetch`` (a blocking API call, run in a thread) until ``pred`` holds, for up to 60 s."""
    deadline = time.monotonic() + 60
    while True:
        value = await asyncio.to_thread(fetch)
        if pred(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {value}")
        await asyncio.sleep(0.2)  # the server's API offers no change feed: poll it


def station_args(srv: Server, station_id: str, password: str, *extra: str) -> list[str]:
    return ["--url", srv.ocpp_url, "--id", station_id, "--password", password, *extra]


async def registered(srv: Server, station_id: str, *extra: str) -> list[str]:
    """Register ``station_id`` (profile 1, a new password); the station script's arguments."""
    password = await asyncio.to_thread(srv.add_station, station_id)
    return station_args(srv, station_id, password, *extra)


async def update(srv: Server, station_id: str, bundle: Path) -> dict[str, Any]:
    """Upload ``bundle`` and send it to the station; the API's answer."""
    release = await asyncio.to_thread(srv.upload, bundle)
    return await update_to(srv, station_id, release["id"])


async def update_to(srv: Server, station_id: str, release_id: str) -> dict[str, Any]:
    return dict(
        await asyncio.to_thread(
            srv.api,
            "POST",
            f"/api/v1/stations/{station_id}/firmware-updates",
            json={"release_id": release_id, "retry_interval": 1},
        )
    )


async def error_replies(station: NodePeer, frames: list[tuple[str, list[Any]]]) -> list[Event]:
    """Send each frame raw (strict mode would refuse to send it); the answers, as the station
    parsed them, each a well-formed CALLERROR for the message id sent with a code ocpp-rpc
    knows (the caller checks the code)."""
    replies = []
    for name, frame in frames:
        station.send({"cmd": "raw", "ref": name, "frame": frame})
        reply = await station.wait(
            lambda e, n=name: e["event"] == "raw-reply" and e["ref"] == n,  # type: ignore[misc]
            f"the answer to {name}",
        )
        assert reply["wellFormed"] and reply["known"], reply
        assert reply["frame"][1] == frame[1], reply  # for the message id sent
        replies.append(reply)
    return replies


async def still_serving(station: NodePeer) -> None:
    """Still connected and serving: a Heartbeat through strict mode is answered."""
    start = len(station.events)
    station.send({"cmd": "heartbeat"})
    beat = await station.wait(
        lambda e: e["event"] == "exchange" and e["action"] == "Heartbeat",
        "the Heartbeat after the errors",
        start=start,
    )
    assert beat["result"] == "CALLRESULT"
    assert station.of("closed") == []
    no_schema_violation(station)
