"""A campaign created from a TOML file with the CLI, started under the two-person rule, and
carried on by a restarted server exactly where it stopped: every station updated once, no
UpdateFirmware beyond the policy, ``requestId`` tying each status to the campaign."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest

from chargeward.local import start_server
from tests.support.campaigns import STATIONS, agents, api, campaign, runs, status_is, until
from tests.support.fleet import TEST_PASSPHRASE, Pki, Server, assert_no_crash, cli

CAMPAIGN_TOML = """
name = "ac-1-1-0"
release = "{release}"
soak = "1s"
jitter = 0
retries = 6
retry_interval = 1
max_attempts = 2
[target]
models = ["{model}"]
[stages]
canary = 1
then = ["50%", "100%"]
[gates]
error = 1
[concurrency]
global = 1
keep_available = 0
[timeouts]
response = "20s"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(root: Path, pki: Pki, ports: tuple[int, int], log: str) -> Server:
    """The server on fixed OCPP and HTTP ports: a restarted server keeps its addresses (the
    download links already handed to stations name the HTTP one), as in production."""
    ocpp_port, http_port = ports
    data = root / "server-data"
    proc, info = start_server(
        data,
        pki.root_pem,
        root / log,
        env={"CHARGEWARD_KEY_PASSPHRASE": TEST_PASSPHRASE},
        extra_args=(
            "--campaign-tick",
            "0.3",
            "--campaign-approval-threshold",
            "3",
            "--ocpp-port",
            str(ocpp_port),
            "--http-port",
            str(http_port),
        ),
    )
    token = (data / "admin.token").read_text().strip()
    return Server(data, proc, info["ocpp_url"], info["api_url"], token)


@pytest.mark.slow  # 76 s beside the suite's other tests on 2 cores
async def test_cli_campaign_two_person_rule_and_a_restart_changes_no_outcome(
    tmp_path: Path, pki: Pki, factory_bundle: Path
) -> None:
    from tests.support.fleet import MODEL

    update = pki.bundle(tmp_path / "acme-1.1.0.cwb", "1.1.0", 2)
    ports = (free_port(), free_port())
    while ports[0] == ports[1]:
        ports = (ports[0], free_port())
    srv = start(tmp_path, pki, ports, "server-1.log")
    second: Server | None = None
    try:
        release = srv.upload(update)["id"]
        doc = tmp_path / "rollout.toml"
        doc.write_text(CAMPAIGN_TOML.format(release=release, model=MODEL))
        async with agents(srv, tmp_path, pki, factory_bundle) as _fleet:
            data = ["--data-dir", str(srv.data_dir)]
            out = (await asyncio.to_thread(cli, "campaign", "create", str(doc), *data)).stdout
            assert "awaiting_approval" in out and "1 → 1 → 2" in out  # 4 stations > 3

            # The creator (the admin token) may not approve its own campaign.
            with httpx.Client(
                base_url=srv.api_url, headers={"Authorization": f"Bearer {srv.token}"}
            ) as c:
                r = await asyncio.to_thread(c.post, "/api/v1/campaigns/ac-1-1-0/approve")
            assert r.status_code == 409 and "two-person rule" in r.json()["error"]["message"]
            made = await asyncio.to_thread(
                cli, "token", "create", "bob", "--role", "approver", *data
            )
            bob = next(w for w in made.stdout.split() if len(w) > 30)
            approved = await asyncio.to_thread(
                cli, "campaign", "approve", "ac-1-1-0", *data, env={"CHARGEWARD_API_TOKEN": bob}
            )
            assert "now running" in approved.stdout

            # Stop the server as soon as the canary succeeded and the next stage started.
            cid = (await campaign(srv, "ac-1-1-0"))["id"]

            async def next_stage_started() -> bool:
                r = await runs(srv, cid)
                return sum(x["attempts"] for x in r.values()) >= 2

            await until(next_stage_started, "the second stage to start")
            # A station may be downloading now. Its own retries (6, at least 63 s of back-off
            # in all) outlast the restart, and the new process listens on the same ports, so the
            # cut download resumes from it instead of failing; the campaign must then add no
            # UpdateFirmware of its own.
            srv.proc.stop()
            second = start(tmp_path, pki, ports, "server-2.log")  # same data, same ports
            done = await until(lambda: status_is(second, cid, "completed"), "the campaign to end")
            assert done["counts"]["succeeded"] == 4

            final = await runs(second, cid)
            for sid in STATIONS:
                station = await api(second, "GET", f"/api/v1/stations/{sid}")
                ours = [u for u in station["updates"] if u["release_id"] == release]
                assert len(ours) == 1, (sid, ours)  # one UpdateFirmware each, restart or not
                assert ours[0]["request_id"] == final[sid]["request_id"]
                assert station["firmware_version"] == "1.1.0"
                assert final[sid]["attempts"] == 1
            shown = (
                await asyncio.to_thread(cli, "campaign", "watch", "ac-1-1-0", "--once", *data)
            ).stdout
            assert "succeeded" in shown and "completed" in shown
            trail = await api(second, "GET", "/api/v1/audit", params={"target": f"campaign:{cid}"})
            approvals = [e for e in trail if e["action"] == "campaign.approved"]
            assert [e["actor"] for e in approvals] == ["bob"]
    finally:
        for s in (srv, second):
            if s is not None:
                s.proc.stop()
    assert_no_crash(srv.proc.output())
    assert second is not None
    assert_no_crash(second.proc.output())
