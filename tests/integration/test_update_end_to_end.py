"""One signed release reaches a real agent process over real OCPP 2.0.1 websockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.agent_harness import L01_HAPPY
from tests.support.fleet import Pki, assert_no_crash, cli, running_server, wait_for


@pytest.mark.slow  # 40 s beside the suite's other tests on 2 cores
def test_release_reaches_agent_in_l01_order(tmp_path: Path, pki: Pki, factory_bundle: Path) -> None:
    update = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2)
    with running_server(tmp_path, pki) as srv:
        agent, state = srv.start_agent(tmp_path, pki, "CP-0001", factory_bundle)
        before = srv.wait_connected("CP-0001")
        assert before["firmware_version"] == "1.0.0"
        out = cli("release", "upload", str(update), "--data-dir", str(srv.data_dir)).stdout
        release = srv.api("GET", "/api/v1/releases")[0]
        assert release["version"] == "1.1.0" and release["id"] in out.replace("\n", "")

        r = srv.api(
            "POST",
            "/api/v1/stations/CP-0001/firmware-updates",
            json={"release_id": release["id"], "retry_interval": 1},
        )
        assert r["station_response"] == "Accepted"
        tid, rid = r["transaction_id"], r["request_id"]

        detail = wait_for(
            lambda: (d := srv.station("CP-0001"))["updates"][-1]["outcome"] != "pending" and d,
            60,
            "the update to finish",
        )
        statuses = [e["status"] for e in detail["firmware_statuses"] if e["request_id"] == rid]
        assert statuses == L01_HAPPY
        assert all(
            e["transaction_id"] == tid
            for e in detail["firmware_statuses"]
            if e["request_id"] == rid
        )
        assert detail["updates"][-1]["outcome"] == "succeeded"
        assert detail["firmware_version"] == "1.1.0"
        assert detail["boots"][-1] == {
            **detail["boots"][-1],
            "reason": "FirmwareUpdate",
            "firmware_version": "1.1.0",
        }
        assert [e["type"] for e in detail["security_events"]] == ["FirmwareUpdated"]

        status = cli("agent", "status", "--state-dir", str(state)).stdout
        assert "active slot b" in status and "(trial)" not in status
        assert "rollback floor 2" in status

        # The audit log follows the update from request to final status by transaction id.
        trail = srv.api("GET", "/api/v1/audit", params={"transaction_id": tid})
        actions = [e["action"] for e in trail]
        assert actions[0] == "firmware.update_requested"
        assert "station.boot" in actions
        assert trail[-1]["details"]["status"] == "Installed"

        shown = cli("station", "show", "CP-0001", "--data-dir", str(srv.data_dir)).stdout
        assert "1.1.0" in shown and "Installed" in shown and "FirmwareUpdated" in shown
        agent_log = agent.stop()
    assert_no_crash(srv.proc.output())
    assert_no_crash(agent_log)
