"""The charger's security log, fetched with OCPP GetLog: a real server and a real agent.

A refused firmware update puts an event in the charger's security log; ``chargeward station
get-log`` asks for the log (GetLog), the charger uploads it to its one-time URL
(LogStatusNotification Uploading, then Uploaded) and the file holds the event with its type
and timestamp.  Upload URLs work once; the diagnostics snapshot holds no password.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from chargeward.agent.security_log import SecurityLog
from chargeward.limits import DEFAULT_SERVER_LIMITS
from chargeward.server.stations import logs
from chargeward.server.store.db import Database
from tests.support.fleet import Pki, Server, assert_no_crash, cli, running_server, wait_for

STATION = "CP-LOG-1"
LOGS = f"/api/v1/stations/{STATION}/logs"
EVENT = "InvalidFirmwareSigningCertificate"


def _log_request(srv: Server, request_id: int) -> dict[str, Any]:
    return dict(next(v for v in srv.api("GET", LOGS) if v["request_id"] == request_id))


def _upload_url(srv: Server, *, ttl: dt.timedelta = logs.UPLOAD_TTL) -> str:
    """A fresh upload URL for STATION, made as the server makes one for a GetLog."""

    async def go() -> str:
        db = await Database.open(data_dir=srv.data_dir)
        try:
            async with db.session() as s:
                order = await logs.begin_request(
                    s,
                    STATION,
                    "SecurityLog",
                    oldest=None,
                    latest=None,
                    actor="test",
                    now=dt.datetime.now(dt.UTC),
                    ttl=ttl,
                )
        finally:
            await db.close()
        return srv.api_url + logs.UPLOAD_PATH + order.token

    return asyncio.run(go())


@pytest.mark.slow  # 41 s beside the suite's other tests on 2 cores
def test_security_event_reaches_the_uploaded_security_log(
    tmp_path: Path, pki: Pki, other_pki: Pki, factory_bundle: Path
) -> None:
    both = tmp_path / "both-roots.pem"  # the server accepts releases the charger must refuse
    both.write_bytes(pki.root_pem.read_bytes() + other_pki.root_pem.read_bytes())
    server_pki = Pki(tmp_path, None, both, pki.signing_signer, pki.signing_cert)
    with running_server(tmp_path, server_pki) as srv:
        agent, state = srv.start_agent(tmp_path, pki, STATION, factory_bundle)
        srv.wait_connected(STATION)

        # A security event: an update signed under a root the charger does not trust.
        foreign = srv.upload(other_pki.bundle(tmp_path / "mallory-9.9.9.cwb", "9.9.9", 99))
        answer = srv.api(
            "POST",
            f"/api/v1/stations/{STATION}/firmware-updates",
            json={"release_id": foreign["id"], "retry_interval": 1},
        )
        assert answer["station_response"] == "InvalidCertificate"
        reported = wait_for(
            lambda: [e for e in srv.station(STATION)["security_events"] if e["type"] == EVENT],
            15,
            f"security event {EVENT}",
        )[0]

        out = tmp_path / "security.jsonl"
        run = cli(
            "station", "get-log", STATION, "--type", "SecurityLog", "--out", str(out),
            "--timeout", "30", "--data-dir", str(srv.data_dir),
        )  # fmt: skip
        assert f"wrote {out}" in run.stderr
        entries = [json.loads(line) for line in out.read_text().splitlines()]
        logged = [e for e in entries if e["type"] == EVENT]
        assert len(logged) == 1
        assert "not issued by an installed root" in logged[0]["tech_info"]
        assert logged[0]["notify"] is True
        # The same event, at the same instant, as the charger notified it.
        assert dt.datetime.fromisoformat(logged[0]["time"]) == dt.datetime.fromisoformat(
            reported["timestamp"]
        )

        (request,) = wait_for(
            lambda: (r := srv.api("GET", LOGS))[0]["last_status"] == "Uploaded" and r,
            15,
            "LogStatusNotification Uploaded",
        )
        assert request["log_type"] == "SecurityLog"
        assert request["response_status"] == "Accepted"
        assert request["statuses"] == ["Uploading", "Uploaded"]
        assert request["filename"].startswith(f"security-{STATION}-")
        assert request["length"] == out.stat().st_size
        with srv.http as c:
            content = c.get(f"{LOGS}/{request['request_id']}")
        assert content.status_code == 200 and content.content == out.read_bytes()
        assert content.headers["content-type"] == "application/octet-stream"

        tid = request["transaction_id"]
        trail = srv.api("GET", "/api/v1/audit", params={"transaction_id": tid})
        assert [e["action"] for e in trail if e["action"] != "station.log_status"] == [
            "log.requested",
            "log.response",
            "log.uploaded",
        ]
        uploaded = next(e for e in trail if e["action"] == "log.uploaded")
        assert uploaded["actor"] == f"station:{STATION}"
        assert uploaded["details"]["sha256"] == request["sha256"]

        # Only the part of the log asked for: nothing newer than an hour ago.
        old = srv.api(
            "POST",
            LOGS,
            json={
                "log_type": "SecurityLog",
                "latest": (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat(),
            },
        )
        assert old["station_response"] == "Accepted"
        done = wait_for(
            lambda: (r := _log_request(srv, old["request_id"]))["sha256"] and r,
            15,
            "the windowed upload",
        )
        assert done["length"] == 0 or EVENT not in _content(srv, old["request_id"])
        agent_log = agent.stop()
    assert_no_crash(srv.proc.output())
    assert_no_crash(agent_log)
    assert EVENT in [e.type for e in SecurityLog(state / "log").entries()]  # still on flash


def _content(srv: Server, request_id: int) -> str:
    with srv.http as c:
        return c.get(f"{LOGS}/{request_id}").text


@pytest.mark.slow  # 38 s beside the suite's other tests on 2 cores
def test_upload_urls_work_once_and_diagnostics_hold_no_password(
    tmp_path: Path, pki: Pki, factory_bundle: Path
) -> None:
    with running_server(tmp_path, pki) as srv:
        # A charger the server does not know: refused, so the event can only be logged.
        stranger, stranger_state = srv.start_agent(
            tmp_path, pki, "CP-UNKNOWN", factory_bundle, password="not-registered-0123456789"
        )
        password = srv.add_station(STATION)
        agent, _ = srv.start_agent(tmp_path, pki, STATION, factory_bundle, password=password)
        wait_for(
            lambda: stranger.output().count("CSMS refused the connection: HTTP 401") >= 2,
            20,
            "two refused connection attempts",
        )
        refused = [
            e
            for e in SecurityLog(stranger_state / "log").entries()
            if e.type == "FailedToAuthenticateAtCsms"
        ]
        assert len(refused) == 1  # one entry for a run of refusals, not one per attempt
        assert "HTTP 401" in refused[0].tech_info and refused[0].notify is False
        assert_no_crash(stranger.stop())

        # Upload URLs: one use each, refused when unknown or expired.
        url = _upload_url(srv)
        with httpx.Client(timeout=10) as c:
            first = c.post(url, files={"file": ("s.jsonl", b'{"seq":1}\n', "application/json")})
            assert first.status_code == 201, first.text
            assert first.json()["length"] == len(b'{"seq":1}\n')
            assert c.post(url, files={"file": ("s.jsonl", b"replayed\n")}).status_code == 410
            assert c.put(url, content=b"replayed\n").status_code == 410
            unknown = url.rsplit("/", 1)[0] + "/" + "A" * 43
            assert c.post(unknown, content=b"x").status_code == 404
            expired = _upload_url(srv, ttl=dt.timedelta(seconds=-1))
            assert c.post(expired, content=b"x").status_code == 410
            big = _upload_url(srv)
            too_big = c.post(big, content=b"x" * (DEFAULT_SERVER_LIMITS.log_upload_bytes + 1))
            assert too_big.status_code == 413
            assert c.post(big, content=b"fits\n").status_code == 201  # 413 did not use it up
        stored = srv.api("GET", LOGS)
        assert [r["length"] for r in stored if r["sha256"]] == [5, len(b'{"seq":1}\n')]
        trail = srv.api("GET", "/api/v1/audit", params={"target": STATION})
        refusals = [e["details"]["reason"] for e in trail if e["action"] == "log.upload_refused"]
        assert refusals == ["used", "used", "expired"]
        with httpx.Client(base_url=srv.api_url, timeout=10) as anonymous:
            assert anonymous.get(LOGS).status_code == 401
            assert anonymous.post(LOGS, json={"log_type": "SecurityLog"}).status_code == 401

        # Diagnostics from the connected charger: its state, never its password.
        srv.wait_connected(STATION)
        r = srv.api("POST", LOGS, json={"log_type": "DiagnosticsLog"})
        assert r["station_response"] == "Accepted" and r["filename"].endswith(".json")
        done = wait_for(
            lambda: (
                (v := srv.api("GET", LOGS)[0])["sha256"] and v["last_status"] == "Uploaded" and v
            ),
            15,
            "the diagnostics upload",
        )
        with srv.http as c:
            raw = c.get(f"{LOGS}/{done['request_id']}").text
        assert password not in raw and "password" not in raw.lower()
        report = json.loads(raw)
        assert report["station"]["station_id"] == STATION
        assert report["boot_control"]["active"] == "a"
        assert report["slots"]["a"]["version"] == "1.0.0"
        assert report["running"]["version"] == "1.0.0"
        assert report["settings"]["connected"] is True
        assert_no_crash(agent.stop())
        with srv.http as c:
            assert c.post(LOGS, json={"log_type": "Kernel"}).status_code == 422
            assert c.post(LOGS, json={"log_type": "SecurityLog"}).status_code == 409  # offline
    assert_no_crash(srv.proc.output())
