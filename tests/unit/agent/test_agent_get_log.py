"""The agent's side of OCPP GetLog (N01): answers, uploads, statuses, and the log hooks.

The agent's outgoing CALLs are recorded instead of sent; uploads go over real HTTP to a
small server on 127.0.0.1 that can hold a request open, refuse it or accept it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from chargeward.agent.agent import Agent
from chargeward.agent.config import AgentConfig
from chargeward.agent.location import LAB_LOOPBACK
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity
from tests.support.fleet import MODEL, Pki

T0 = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Path]:
    d = tmp_path_factory.mktemp("get-log")
    pki = Pki.create(d / "pki")
    return pki, pki.bundle(d / "factory.cwb", "1.0.0", 1)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def __call__(self, payload: Any) -> Any:
        self.calls.append(payload)

    def log_statuses(self) -> list[tuple[str, int | None]]:
        return [
            (c.status, c.request_id)
            for c in self.calls
            if type(c).__name__ == "LogStatusNotification"
        ]

    async def wait(self, pred: Callable[[], bool]) -> None:
        for _ in range(500):
            if pred():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out; calls: {self.calls}")


@pytest.fixture
def agent(tmp_path: Path, firmware: tuple[Pki, Path]) -> tuple[Agent, Recorder]:
    pki, factory = firmware
    provision(
        tmp_path / "charger",
        identity=Identity("CP-7", MODEL, "T", "CP-7"),
        password="fixture-password-0123456789",
        roots_pem=pki.root_pem.read_bytes(),
        factory_bundle=factory,
    )
    a = Agent(
        AgentConfig(
            state_dir=tmp_path / "charger",
            csms_url="ws://127.0.0.1:9/ocpp/",
            location_policy=LAB_LOOPBACK,  # the upload server is on 127.0.0.1
        ),
        clock=lambda: T0,
    )
    recorder = Recorder()
    a._call = recorder  # type: ignore[method-assign]
    return a, recorder


class UploadServer:
    """``/hold`` never answers (the client gives up), ``/deny`` answers 403, others 201."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.url = ""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split()[1]
        headers = {k.lower(): v for k, _, v in (x.partition(": ") for x in lines[1:])}
        length = int(headers["content-length"])
        self.bodies[path] = await reader.readexactly(length)
        if path == "/hold":
            await reader.read()  # until the charger gives up the upload
            return
        status = "403 Forbidden" if path == "/deny" else "201 Created"
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()


@pytest.fixture
async def uploads() -> AsyncIterator[UploadServer]:
    srv = UploadServer()
    server = await asyncio.start_server(srv._handle, "127.0.0.1", 0)
    srv.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield srv
        server.close()


async def test_security_events_are_on_flash_before_they_are_sent(
    agent: tuple[Agent, Recorder],
) -> None:
    a, recorder = agent

    async def call(payload: Any) -> None:
        assert [e.type for e in a.security_log.entries()] == ["InvalidFirmwareSignature"]
        recorder.calls.append(payload)

    a._call = call  # type: ignore[method-assign]
    await a._security_event("InvalidFirmwareSignature", "image 1a2b")
    a.record_security_event("FailedToAuthenticateAtCsms", "HTTP 401")
    (sent,) = recorder.calls
    logged = a.security_log.entries()
    assert [(e.type, e.notify) for e in logged] == [
        ("InvalidFirmwareSignature", True),
        ("FailedToAuthenticateAtCsms", False),
    ]
    assert sent.timestamp == "2026-11-22T10:00:00.000Z" and logged[0].time == T0


async def test_security_log_uploaded_as_json_lines_with_statuses(
    agent: tuple[Agent, Recorder], uploads: UploadServer
) -> None:
    a, recorder = agent
    a.record_security_event("TamperDetectionActivated", "case opened")
    status, filename = a.callbacks.get_log(
        "SecurityLog", 3, {"remote_location": uploads.url + "/up"}, 0, 0
    )
    assert (status, filename) == ("Accepted", "security-CP-7-20261122T100000Z-3.jsonl")
    await a.callbacks.after_get_log(3, status)
    await recorder.wait(lambda: ("Uploaded", 3) in recorder.log_statuses())
    assert recorder.log_statuses() == [("Uploading", 3), ("Uploaded", 3)]
    body = uploads.bodies["/up"]
    assert b'name="file"; filename="security-CP-7-20261122T100000Z-3.jsonl"' in body
    line = next(x for x in body.split(b"\r\n") if x.startswith(b"{"))
    assert json.loads(line)["type"] == "TamperDetectionActivated"


async def test_a_new_get_log_cancels_the_upload_in_progress(
    agent: tuple[Agent, Recorder], uploads: UploadServer
) -> None:
    a, recorder = agent
    first = a.callbacks.get_log("SecurityLog", 1, {"remote_location": uploads.url + "/hold"}, 0, 0)
    assert first[0] == "Accepted"
    await a.callbacks.after_get_log(1, first[0])
    await recorder.wait(lambda: "/hold" in uploads.bodies)
    second = a.callbacks.get_log(
        "DiagnosticsLog", 2, {"remote_location": uploads.url + "/new"}, 0, 0
    )
    assert second == ("AcceptedCanceled", "diagnostics-CP-7-20261122T100000Z-2.json")  # N01.FR.12
    await a.callbacks.after_get_log(2, second[0])
    await recorder.wait(lambda: ("Uploaded", 2) in recorder.log_statuses())
    assert recorder.log_statuses() == [
        ("Uploading", 1),
        ("AcceptedCanceled", 1),
        ("Uploading", 2),
        ("Uploaded", 2),
    ]
    assert b'"boot_control"' in uploads.bodies["/new"]


async def test_refused_upload_reports_permission_denied(
    agent: tuple[Agent, Recorder], uploads: UploadServer
) -> None:
    a, recorder = agent
    status, _ = a.callbacks.get_log(
        "SecurityLog", 4, {"remote_location": uploads.url + "/deny"}, 3, 0
    )
    await a.callbacks.after_get_log(4, status)
    await recorder.wait(lambda: len(recorder.log_statuses()) == 2)
    assert recorder.log_statuses() == [("Uploading", 4), ("PermissionDenied", 4)]


@pytest.mark.parametrize(
    ("log_type", "log"),
    [
        ("SecurityLog", {"remote_location": "ftp://csms.example/logs"}),
        ("SecurityLog", {"remote_location": "file:///etc/shadow"}),
        ("KernelLog", {"remote_location": "https://csms.example/logs"}),
        (
            "SecurityLog",
            {"remote_location": "https://csms.example/logs", "oldest_timestamp": "yesterday"},
        ),
    ],
)
async def test_requests_it_cannot_serve_are_rejected(
    agent: tuple[Agent, Recorder], log_type: str, log: dict[str, Any]
) -> None:
    a, recorder = agent
    assert a.callbacks.get_log(log_type, 5, log, None, None) == ("Rejected", None)
    await a.callbacks.after_get_log(5, "Rejected")
    assert recorder.calls == []
