"""OCPP 1.6J end to end: a real ``chargeward server`` process serving OCPP over wss:// (the
TLS lab PKI of :mod:`tests.support.tls`: server certificate for 127.0.0.1, charger CA) and
the real agent, in this process, as a 1.6J station (whitepaper or legacy) with security
profile 2 (TLS + Basic auth) or 3 (mutual TLS).

    with server16(tmp_path, pki, tls_pki) as srv:
        async with station16(srv, tmp_path, pki, factory, tls_pki, "CP-16") as agent:
            await api(srv, "POST", "/api/v1/stations/CP-16/firmware-updates", json=...)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from chargeward.agent.agent import Agent
from chargeward.agent.config import AgentConfig
from chargeward.agent.location import LAB_LOOPBACK
from chargeward.agent.state import StateDir
from chargeward.crypto import certificate_pem, load_certificate
from tests.support.campaigns import api, until
from tests.support.fleet import MODEL, Pki, Server, assert_no_crash, cli, running_server
from tests.support.tls import TlsPki, provision_charger


@contextlib.contextmanager
def server16(
    root: Path, pki: Pki, tls_pki: TlsPki, *, root_pem: Path | None = None
) -> Iterator[Server]:
    """``chargeward server`` with OCPP and HTTP over TLS (one certificate), the charger CA
    (profile 3 certificates, A02 renewals) and a campaign tick of 0.3 s; ``root_pem``: the
    manufacturer roots it accepts releases under (default ``pki``'s).  Its output is checked
    for crashes once it stopped."""
    args = (
        *("--tls-cert", str(tls_pki.server_cert), "--tls-key", tls_pki.server_key),
        *("--charger-ca", str(tls_pki.ca_pem)),
        *("--charger-ca-key", f"file:{tls_pki.dir / 'charger-ca.key'}"),
        *("--campaign-tick", "0.3"),
    )
    server_pki = (
        pki
        if root_pem is None
        else Pki(pki.dir, None, root_pem, pki.signing_signer, pki.signing_cert)
    )
    with running_server(root, server_pki, extra_args=args) as srv:
        assert srv.ocpp_url.startswith("wss://") and srv.api_url.startswith("https://")
        srv.ca = tls_pki.csms_ca_pem  # the API client trusts the CSMS root
        yield srv
    assert_no_crash(srv.proc.output())


def register(srv: Server, station_id: str) -> str:
    """Register ``station_id`` with security profile 2 (the default); its password."""
    out = cli(
        *("station", "add", station_id, "--model", MODEL, "--data-dir", str(srv.data_dir))
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("BasicAuthPassword:"))
    return line.split()[1]


@contextlib.asynccontextmanager
async def station16(
    srv: Server,
    root: Path,
    pki: Pki,
    factory: Path,
    tls_pki: TlsPki,
    station_id: str,
    *,
    legacy: bool = False,
    profile: int = 2,
) -> AsyncIterator[tuple[Agent, StateDir]]:
    """Register, provision and run the real agent as a 1.6J station (``legacy``: without the
    Security Whitepaper) until the block ends; connected and booted when it starts.  With
    ``profile`` 3 it has a station certificate of the charger CA, registered at the server."""
    password = await asyncio.to_thread(register, srv, station_id)
    state = provision_charger(
        root, pki, factory, tls_pki, station_id, password, certificate=profile == 3
    )
    if profile == 3:
        cert = load_certificate(state.device_certificate_path.read_bytes())
        path = f"/api/v1/stations/{station_id}"
        await api(
            srv, "PUT", f"{path}/certificate", json={"certificate_pem": certificate_pem(cert)}
        )
        await api(srv, "PUT", f"{path}/security-profile", json={"security_profile": 3})
    agent = Agent(
        AgentConfig(
            state_dir=state.root,
            csms_url=srv.ocpp_url,
            reconnect_delay=0.2,
            reboot_delay=0.1,
            response_timeout=10,
            trial_health_timeout=20,
            location_policy=LAB_LOOPBACK,  # the test server is on 127.0.0.1: a lab setting
            ocpp_version="1.6",
            legacy_firmware_update=legacy,
        )
    )
    task = asyncio.create_task(agent.run())
    try:
        await until(lambda: connected(srv, station_id), f"{station_id} to boot", timeout=20)
        yield agent, state
    finally:
        agent.stop()
        await asyncio.wait_for(task, 20)


async def station(srv: Server, station_id: str) -> dict[str, Any]:
    return dict(await api(srv, "GET", f"/api/v1/stations/{station_id}"))


async def connected(srv: Server, station_id: str) -> dict[str, Any] | None:
    s = await station(srv, station_id)
    return s if s["connected"] and s["firmware_version"] else None


async def update_done(srv: Server, station_id: str, request_id: int) -> dict[str, Any] | None:
    """The station's detail once the update ``request_id`` is no longer pending."""
    s = await station(srv, station_id)
    found = [u for u in s["updates"] if u["request_id"] == request_id]
    return s if found and found[0]["outcome"] != "pending" else None


def statuses(detail: dict[str, Any], request_id: int) -> list[str]:
    """The firmware statuses the server recorded for ``request_id``, in order."""
    return [e["status"] for e in detail["firmware_statuses"] if e["request_id"] == request_id]


def update_of(detail: dict[str, Any], request_id: int) -> dict[str, Any]:
    return dict(next(u for u in detail["updates"] if u["request_id"] == request_id))
