"""Attack: a hostile CSMS uses the charger to reach places it must not (SSRF).

UpdateFirmware and GetLog carry a URL the CSMS chooses.  A compromised CSMS names the cloud
metadata service (169.254.169.254), the charger's own loopback services (by address or by a
name that resolves there), the site's private network, or a URL with credentials in it.  The
charger refuses each one under its location policy before any connection is made: the update
ends ``DownloadFailed`` (OCPP L01), the log request ``UploadFailure`` (OCPP N01), each with a
``RemoteLocationRefused`` security event naming the rule; the inactive slot is untouched.
A listener on the targeted loopback ports records every connection: it must see none.

The CSMS itself runs on 127.0.0.1 (real websockets): the policy is about the URLs it names,
not about the CSMS connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from ocpp.v201 import call

from chargeward.agent.agent import Agent
from chargeward.agent.location import LocationPolicy
from chargeward.agent.provision import provision
from chargeward.agent.state import Identity, StateDir
from chargeward.release.bundle import VerifiedBundle, verify_bundle
from tests.support.agent_harness import PASSWORD, Csms, running_agent, running_csms, statuses
from tests.support.fleet import MODEL, Pki
from tests.support.tufrepo import Clock

pytestmark = pytest.mark.timeout(60)


@dataclass
class Trap:
    """Listeners on 127.0.0.1 and ::1 that record every connection made to them."""

    port4: int = 0
    port6: int = 0
    connections: list[Any] = field(default_factory=list)


@contextlib.asynccontextmanager
async def trap() -> AsyncIterator[Trap]:
    t = Trap()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t.connections.append(writer.get_extra_info("peername"))
        writer.close()

    v4 = await asyncio.start_server(record, "127.0.0.1", 0)
    v6 = await asyncio.start_server(record, "::1", 0)
    t.port4 = v4.sockets[0].getsockname()[1]
    t.port6 = v6.sockets[0].getsockname()[1]
    async with v4, v6:
        yield t


@contextlib.contextmanager
def firmware_server(data: bytes, host: str = "127.0.0.2") -> Iterator[str]:
    """The genuine firmware, served over HTTP from ``host`` (a place the allowlist names)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/fw/u.cwfw"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Lab:
    pki: Pki
    factory: Path
    update: VerifiedBundle


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    d = tmp_path_factory.mktemp("locations")
    pki = Pki.create(d / "pki")
    update = verify_bundle(pki.bundle(d / "u.cwb", "1.1.0", 2), [pki.root_cert], workdir=d / "u")
    return Lab(pki, pki.bundle(d / "factory.cwb", "1.0.0", 1), update)


@pytest.fixture
def charger(tmp_path: Path, lab: Lab) -> StateDir:
    provision(
        tmp_path / "charger",
        identity=Identity("CP-SSRF", MODEL, "T", "CP-SSRF"),
        password=PASSWORD,
        roots_pem=lab.pki.root_pem.read_bytes(),
        factory_bundle=lab.factory,
    )
    return StateDir(tmp_path / "charger")


def refusals(csms: Csms) -> list[str]:
    return [e["tech_info"] for e in csms.security_events() if e["type"] == "RemoteLocationRefused"]


def slot_b(state: StateDir) -> bytes | None:
    path = state.slot_image("b")
    return path.read_bytes() if path.exists() else None


async def _refused_update(
    csms: Csms, agent: Agent, lab: Lab, clock: Clock, url: str, request_id: int, rule: str
) -> None:
    assert await csms.update_firmware(url, lab.update, clock(), request_id=request_id) == (
        "Accepted"
    )
    await csms.wait(lambda: "DownloadFailed" in statuses(csms, request_id), "DownloadFailed")
    assert statuses(csms, request_id) == ["Downloading", "DownloadFailed"]  # OCPP L01
    await csms.wait(lambda: len(refusals(csms)) >= request_id, f"the event for {url}")
    event = refusals(csms)[request_id - 1]
    assert event.startswith(f"UpdateFirmware {request_id}: location refused ({rule})"), event
    await csms.wait(lambda: not agent.updating, "the update task to end")


async def test_hostile_update_locations_are_refused_without_a_connection(
    charger: StateDir, lab: Lab
) -> None:
    clock = Clock()
    before = slot_b(charger)
    async with (
        trap() as t,
        running_csms() as csms,
        running_agent(charger, csms, clock, None, location_policy=LocationPolicy()) as agent,
    ):
        hostile = [
            (f"http://localhost:{t.port4}/fw.cwfw", "loopback"),  # a name resolving there
            (f"http://[::1]:{t.port6}/fw.cwfw", "loopback"),
            (f"http://127.0.0.1:{t.port4}/fw.cwfw", "loopback"),
            (f"https://user:pw@127.0.0.1:{t.port4}/fw.cwfw", "credentials"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("http://10.0.0.1/fw.cwfw", "private"),
            ("http://[fe80::1]/fw.cwfw", "link-local"),
        ]
        for request_id, (url, rule) in enumerate(hostile, start=1):
            await _refused_update(csms, agent, lab, clock, url, request_id, rule)
        assert t.connections == []  # the charger never connected to the targets
        # Refused on the URL, or (a name) when resolved, before a socket was opened.
        assert [s.bytes_received for s in agent.download_stats] == [0] * len(hostile)
    assert slot_b(charger) == before  # the inactive slot is untouched
    assert charger.rollback_floor() == 1
    logged = [e.type for e in agent.security_log.entries()]
    assert logged.count("RemoteLocationRefused") == len(hostile)


async def test_allowlist_refuses_what_it_does_not_name_and_allows_what_it_does(
    charger: StateDir, lab: Lab
) -> None:
    clock = Clock()
    policy = LocationPolicy(allow_networks=("127.0.0.2/32",))  # production: an allowlist
    with firmware_server(lab.update.images[0].file.read_bytes()) as genuine:
        async with (
            trap() as t,
            running_csms() as csms,
            running_agent(charger, csms, clock, None, location_policy=policy) as agent,
        ):
            await _refused_update(
                csms, agent, lab, clock, f"http://localhost:{t.port4}/fw.cwfw", 1, "not-allowlisted"
            )
            assert t.connections == []
            # Control: the allowlisted location works end to end.
            assert await csms.update_firmware(genuine, lab.update, clock(), request_id=2) == (
                "Accepted"
            )
            await csms.wait(lambda: "Installed" in statuses(csms, 2), "Installed", timeout=30)
    assert charger.rollback_floor() == 2


async def test_get_log_to_the_metadata_service_is_an_upload_failure(charger: StateDir) -> None:
    clock = Clock()
    async with (
        trap() as t,
        running_csms() as csms,
        running_agent(charger, csms, clock, None, location_policy=LocationPolicy()) as agent,
    ):
        assert csms.station is not None
        for request_id, url in (
            (21, "http://169.254.169.254/latest/meta-data/iam/security-credentials/"),
            (22, f"http://localhost:{t.port4}/logs"),
        ):
            result = await csms.station.call(
                call.GetLog(
                    log={
                        "remote_location": url,
                        "oldest_timestamp": (clock() - dt.timedelta(days=1)).isoformat(),
                    },
                    log_type="SecurityLog",
                    request_id=request_id,
                )
            )
            assert result.status == "Accepted"
            await csms.wait(
                lambda rid=request_id: [
                    s["status"]
                    for s in csms.of("LogStatusNotification")
                    if s["request_id"] == rid and s["status"] != "Uploading"
                ],
                f"the status of GetLog {request_id}",
            )
            await csms.wait(
                lambda: agent.logs.task is None or agent.logs.task.done(), "the upload to end"
            )
        final = [
            (s["request_id"], s["status"])
            for s in csms.of("LogStatusNotification")
            if s["status"] != "Uploading"
        ]
        assert final == [(21, "UploadFailure"), (22, "UploadFailure")]  # OCPP N01
        await csms.wait(lambda: len(refusals(csms)) == 2, "two refusal events")
        assert refusals(csms)[0].startswith("GetLog 21: location refused (link-local)")
        assert refusals(csms)[1].startswith("GetLog 22: location refused (loopback)")
        assert t.connections == []


async def test_names_only_the_proxy_can_resolve_are_refused_before_the_proxy_is_asked(
    charger: StateDir, lab: Lab
) -> None:
    """Through the site's download proxy the proxy resolves the name, so a name the charger
    cannot resolve itself (an internal name only the gateway knows, ``localhost.``) could lead
    anywhere.  The charger refuses it without sending the proxy a request; the proxy here is
    a trap on loopback that records every connection."""
    clock = Clock()
    before = slot_b(charger)
    async with trap() as t, running_csms() as csms:
        async with running_agent(
            charger,
            csms,
            clock,
            None,
            location_policy=LocationPolicy(),
            download_proxy=f"http://127.0.0.1:{t.port4}",
        ) as agent:
            hostile = [
                ("http://metadata.invalid/computeMetadata/v1/", "unresolved"),  # RFC 6761 §6.4
                ("http://localhost./admin", "loopback"),
                ("http://169.254.169.254./latest/meta-data/", "link-local"),
            ]
            for request_id, (url, rule) in enumerate(hostile, start=1):
                await _refused_update(csms, agent, lab, clock, url, request_id, rule)
            assert t.connections == []  # the proxy was never asked
        assert [s.bytes_received for s in agent.download_stats] == [0] * len(hostile)
    assert slot_b(charger) == before
    assert charger.rollback_floor() == 1
