"""Chargers provisioned at the factory log in to a real server with their own credentials,
before and after a factory reset; the server learns password hashes only."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from chargeward.agent.state import StateDir
from chargeward.crypto import certificate_pem, create_root_ca, generate_key
from chargeward.local import Process, spawn
from tests.support.fleet import (
    MODEL,
    TEST_PASSPHRASE,
    Pki,
    Server,
    assert_no_crash,
    cli,
    running_server,
    wait_for,
)
from tests.support.tufrepo import TufRepo


def _line(d: Path, pki: Pki, factory_bundle: Path) -> list[str]:
    d.mkdir()
    ca_key = generate_key(f"file:{d}/ca.key", TEST_PASSPHRASE.encode)
    (d / "ca.pem").write_text(certificate_pem(create_root_ca(ca_key, "Charger CA", "ACME")))
    csms_key = generate_key(f"file:{d}/csms.key", TEST_PASSPHRASE.encode)
    (d / "csms.pem").write_text(certificate_pem(create_root_ca(csms_key, "CSMS", "ACME")))
    (d / "root.json").write_bytes(TufRepo().root_json())
    (d / "product.secret").write_bytes(os.urandom(32))
    return [
        *("--model", MODEL, "--vendor", "ACME", "--customer", "acme"),
        *("--ca-cert", str(d / "ca.pem"), "--ca-key", f"file:{d}/ca.key"),
        *("--manufacturer-root", str(pki.root_pem), "--tuf-root", str(d / "root.json")),
        *("--csms-root", str(d / "csms.pem"), "--factory-bundle", str(factory_bundle)),
        *("--product-secret-file", str(d / "product.secret")),
    ]


def _run(srv: Server, state: Path, log: Path) -> Process:
    # The TUF root is provisioned, but these chargers only need to log in: the update check
    # interval keeps the repository out of this test.
    proc = spawn(
        [
            *("agent", "run", "--state-dir", str(state), "--csms", srv.ocpp_url),
            *("--reconnect-delay", "0.5", "--reboot-delay", "0.5"),
            *("--repository", f"{srv.api_url}/tuf/"),
            *("--update-check-interval", "86400"),
        ],
        log,
    )
    srv.agents.append(proc)
    return proc


@pytest.mark.slow  # 51 s beside the suite's other tests on 2 cores
@pytest.mark.timeout(300)  # three CLI runs with argon2 and three agent processes
def test_factory_chargers_connect_with_unique_credentials_and_after_reset(
    tmp_path: Path, pki: Pki, factory_bundle: Path
) -> None:
    line = _line(tmp_path / "line", pki, factory_bundle)
    out, late = tmp_path / "batch", tmp_path / "late"
    (tmp_path / "late.txt").write_text("SN-LATE-1\n")
    with running_server(tmp_path, pki) as srv:
        # Where a hash belongs, a plaintext password is refused.
        with srv.http as c:
            r = c.post(
                "/api/v1/stations/import",
                json={
                    "stations": [
                        {
                            "station_id": "CP-X",
                            "serial_number": "CP-X",
                            "model": MODEL,
                            "vendor": "ACME",
                            "password_hash": "a-plaintext-password-123",
                            "device_certificate_pem": "-",
                        }
                    ]
                },
            )
        assert r.status_code == 422 and "argon2id" in r.json()["error"]["message"]
        with httpx.Client(base_url=srv.api_url) as anonymous:
            assert (
                anonymous.post("/api/v1/stations/import", json={"stations": []}).status_code == 401
            )

        # Registered at once (--server), or later from the registration file.
        cli(
            *("factory", "provision", "--count", "2", *line, "--out", str(out)),
            *("--server", srv.api_url, "--token", srv.token),
        )
        cli(
            "factory",
            "provision",
            "--serials",
            str(tmp_path / "late.txt"),
            *line,
            "--out",
            str(late),
        )
        cli("station", "import", str(late / "registration.json"), "--data-dir", str(srv.data_dir))

        chargers = {"CP-000001": out, "CP-000002": out, "SN-LATE-1": late}
        for sid in chargers:  # the test server runs plain ws (lab security profile 1)
            body = {"security_profile": 1}
            srv.api("PUT", f"/api/v1/stations/{sid}/security-profile", json=body)
        agents = {sid: _run(srv, d / sid, tmp_path / f"{sid}.log") for sid, d in chargers.items()}
        for sid in chargers:
            assert srv.wait_connected(sid)["firmware_version"] == "1.0.0"
        passwords = {StateDir(d / sid).password() for sid, d in chargers.items()}
        assert len(passwords) == len(chargers)
        trail = srv.api("GET", "/api/v1/audit", params={"target": "SN-LATE-1"})
        assert "station.import" in [e["action"] for e in trail]

        # Factory reset: an operator-changed password is replaced by this charger's own.
        sid, state = "CP-000001", StateDir(out / "CP-000001")
        boots = len(srv.station(sid)["boots"])
        assert_no_crash(agents[sid].stop())
        wait_for(lambda: not srv.station(sid)["connected"], 30, f"{sid} to disconnect")
        state.set_password("chosen-by-the-operator-7")
        cli("agent", "factory-reset", "--state-dir", str(state.root), "--yes")
        agents[sid] = _run(srv, state.root, tmp_path / f"{sid}-after-reset.log")
        wait_for(
            lambda: (s := srv.station(sid))["connected"] and len(s["boots"]) > boots,
            30,
            f"{sid} to log in again after the factory reset",
        )
        for proc in agents.values():
            assert_no_crash(proc.stop())
    assert_no_crash(srv.proc.output())
