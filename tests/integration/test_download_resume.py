"""A download cut mid-file resumes with Range: the image verifies, little is fetched twice."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.fleet import Pki, assert_no_crash, running_server, wait_for
from tests.support.proxy import CuttingProxy

IMAGE_PAYLOAD = 4 * 1024 * 1024
CUT_AFTER = 1024 * 1024 + 12345
HEADER_ALLOWANCE = 2048  # HTTP response headers of two responses


@pytest.mark.slow  # 31 s beside the suite's other tests on 2 cores
def test_interrupted_download_resumes(tmp_path: Path, pki: Pki, factory_bundle: Path) -> None:
    bundle = pki.bundle(tmp_path / "big-1.1.0.cwb", "1.1.0", 2, payload=os.urandom(IMAGE_PAYLOAD))
    proxy = CuttingProxy(upstream=("127.0.0.1", 1), cut_first_after=CUT_AFTER)
    proxy_port = proxy.start()
    try:
        # The server hands out download URLs that go through the proxy.
        with running_server(tmp_path, pki, public_url=f"http://127.0.0.1:{proxy_port}") as srv:
            proxy.upstream = ("127.0.0.1", urlsplit(srv.api_url).port or 0)
            agent, _ = srv.start_agent(tmp_path, pki, "CP-RESUME", factory_bundle)
            srv.wait_connected("CP-RESUME")
            release = srv.upload(bundle)
            image_len = release["images"][0]["length"]
            r = srv.api(
                "POST",
                "/api/v1/stations/CP-RESUME/firmware-updates",
                json={"release_id": release["id"], "retry_interval": 1},
            )
            detail = wait_for(
                lambda: (
                    (d := srv.station("CP-RESUME"))["updates"][-1]["outcome"] != "pending" and d
                ),
                60,
                "update to finish",
            )
            statuses = [
                e["status"]
                for e in detail["firmware_statuses"]
                if e["request_id"] == r["request_id"]
            ]
            # OCPP L01: the dropped link is a pause, not a failure.
            assert statuses == [
                "Downloading",
                "DownloadPaused",
                "Downloading",
                "Downloaded",
                "SignatureVerified",
                "Installing",
                "InstallRebooting",
                "Installed",
            ], statuses
            assert detail["firmware_version"] == "1.1.0"
            assert proxy.connections == 2
            resumed = [q for q in proxy.requests if b"Range: bytes=" in q or b"range: bytes=" in q]
            assert len(resumed) == 1
            start = int(resumed[0].lower().split(b"range: bytes=")[1].split(b"-")[0])
            assert 0 < start <= CUT_AFTER
            # Everything sent downstream: the image once, plus what was lost in the cut.
            refetched = proxy.downstream_bytes - image_len - HEADER_ALLOWANCE
            assert refetched <= CUT_AFTER - start, (proxy.downstream_bytes, image_len, start)
            log = agent.stop()
        assert_no_crash(log)
        assert_no_crash(srv.proc.output())
    finally:
        proxy.close()
