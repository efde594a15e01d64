"""Two server processes on one PostgreSQL database behave as one CSMS.

A station connects to node A; a command issued through node B's REST API travels through
PostgreSQL to A, over A's websocket to the station, and the answer comes back through B.
Then the leader is killed (SIGKILL, no goodbye) and the other node takes over the leader-only
jobs within seconds.  Metrics and JSON logs are checked on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from sqlalchemy import update

from chargeward.local import Process, spawn, wait_for_file
from chargeward.server.fleet import station_registry
from chargeward.server.store.db import Database
from chargeward.server.store.tables import Station
from tests.support.databases import PostgresTemplates, postgres_database
from tests.support.fleet import TEST_PASSPHRASE, Pki, assert_no_crash, basic

STATION = "CP-CLUSTER-1"
PASSWORD = "cluster-test-password-0123456789"
HASH = {
    "hash_algorithm": "SHA256",
    "issuer_name_hash": "aa" * 32,
    "issuer_key_hash": "bb" * 32,
    "serial_number": "1f",
}


class LightStation(ChargePoint):  # type: ignore[misc]
    """Just enough of a charger: boots, answers GetInstalledCertificateIds."""

    @on(Action.get_installed_certificate_ids)
    def installed(self, **_: Any) -> call_result.GetInstalledCertificateIds:
        return call_result.GetInstalledCertificateIds(
            status="Accepted",
            certificate_hash_data_chain=[
                {"certificate_type": "V2GRootCertificate", "certificate_hash_data": HASH}
            ],
        )


@contextlib.asynccontextmanager
async def light_station(ocpp_url: str) -> AsyncIterator[LightStation]:
    ws = await websockets.connect(
        ocpp_url + STATION,
        subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
        additional_headers={"Authorization": basic(STATION, PASSWORD)},
        open_timeout=10,
    )
    cp = LightStation(STATION, ws, response_timeout=10)
    task = asyncio.create_task(cp.start())
    try:
        await cp.call(
            call.BootNotification(
                charging_station={"model": "AC22", "vendor_name": "ACME"}, reason="PowerUp"
            )
        )
        yield cp
    finally:
        task.cancel()
        await ws.close()


@pytest.fixture
def cluster_db(postgres_templates: PostgresTemplates) -> Iterator[str]:
    with postgres_database(postgres_templates.template()) as url:
        yield url


def start_node(root: Path, name: str, pki: Pki, url: str) -> tuple[Process, dict[str, Any]]:
    data = root / name
    proc = spawn(
        [
            "server",
            "--data-dir",
            str(data),
            "--ocpp-port",
            "0",
            "--http-port",
            "0",
            "--manufacturer-root",
            str(pki.root_pem),
            "--allow-insecure-profile-1",
            "--log-format",
            "json",
        ],
        root / f"{name}.log",
        {"CHARGEWARD_DATABASE_URL": url, "CHARGEWARD_KEY_PASSPHRASE": TEST_PASSPHRASE},
    )
    try:
        return proc, wait_for_file(data / "server.json", proc)
    except Exception:
        proc.stop()
        raise


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text output (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:]+)(?:\{(.*)\})? (\S+)", line)
        if m and m[1] == name and ",".join(sorted((m[2] or "").split(","))) == want:
            return float(m[3])
    return 0.0


async def wait_until(pred: Any, what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await pred():
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def test_command_through_another_node_and_leader_failover(
    tmp_path: Path, pki: Pki, cluster_db: str
) -> None:
    db = await Database.open(data_dir=tmp_path, url=cluster_db)
    try:
        async with db.session() as s:
            await station_registry.register_station(
                s, STATION, actor="test", password=PASSWORD, now=dt.datetime.now(dt.UTC)
            )
            await s.execute(update(Station).where(Station.id == STATION).values(security_profile=1))
    finally:
        await db.close()

    a, info_a = start_node(tmp_path, "node-a", pki, cluster_db)
    b, info_b = start_node(tmp_path, "node-b", pki, cluster_db)
    try:
        token = (tmp_path / "node-a" / "admin.token").read_text().strip()  # one DB, one token
        auth = {"Authorization": f"Bearer {token}"}
        async with (
            httpx.AsyncClient(base_url=str(info_a["api_url"]), headers=auth, timeout=30) as api_a,
            httpx.AsyncClient(base_url=str(info_b["api_url"]), headers=auth, timeout=30) as api_b,
        ):
            assert info_a["node_id"] != info_b["node_id"]
            assert (await api_a.get("/metrics")).status_code == 200
            assert (await api_a.get("/metrics", headers={"Authorization": ""})).status_code == 401

            # Exactly one leader.
            async def leaders() -> list[bool] | None:
                got = [(await c.get("/healthz")).json()["leader"] for c in (api_a, api_b)]
                return got if sum(got) == 1 else None

            first = await wait_until(leaders, "one leader")
            leader, leader_proc, other, other_api = (
                (info_a, a, info_b, api_b) if first[0] else (info_b, b, info_a, api_a)
            )

            # A command through B reaches the station on A and its answer comes back.
            path = f"/api/v1/stations/{STATION}/certificates"
            assert (await api_b.get(path)).status_code == 409  # connected nowhere yet
            async with light_station(str(info_a["ocpp_url"])):
                r = await api_b.get(path)
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["station_response"] == "Accepted"
                assert [c["serial_number"] for c in body["certificates"]] == ["1f"]

                text_a = (await api_a.get("/metrics")).text
                text_b = (await api_b.get("/metrics")).text
                assert metric(text_a, "chargeward_stations_connected") == 1
                assert metric(text_b, "chargeward_stations_connected") == 0
                sent = metric(
                    text_a, "chargeward_ocpp_messages_total",
                    direction="sent", action="GetInstalledCertificateIds",
                )  # fmt: skip
                assert sent == 1
                assert metric(
                    text_a, "chargeward_ocpp_messages_total",
                    direction="received", action="BootNotification",
                ) == 1  # fmt: skip
                assert metric(
                    text_b, "chargeward_remote_commands_total",
                    method="get_installed_certificate_ids", outcome="ok",
                ) == 1  # fmt: skip
            await wait_until(
                lambda: _status(api_b, path, 409), "the disconnect to be seen on B", timeout=10
            )

            # Kill the leader: the other node takes over and runs the jobs.
            killed_at = time.monotonic()
            leader_proc.popen.send_signal(signal.SIGKILL)
            leader_proc.popen.wait(10)

            async def took_over() -> bool:
                health = (await other_api.get("/healthz")).json()
                text = (await other_api.get("/metrics")).text
                return bool(
                    health["leader"]
                    and metric(text, "chargeward_leader") == 1
                    and metric(
                        text, "chargeward_leader_job_runs_total", job="renew_online_metadata"
                    )
                    >= 1
                )

            await wait_until(took_over, "the other node to lead", timeout=10)
            assert time.monotonic() - killed_at < 10
            assert leader["node_id"] != other["node_id"]
    finally:
        outputs = [a.stop(), b.stop()]
    for out in outputs:
        assert_no_crash(out)
    records = [json.loads(line) for line in outputs[0].splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r.get("station_id") == STATION for r in records)


async def _status(client: httpx.AsyncClient, path: str, code: int) -> bool:
    return (await client.get(path)).status_code == code
