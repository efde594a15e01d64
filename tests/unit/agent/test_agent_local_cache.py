"""The Local Controller's firmware cache on loopback: a publication survives a reboot in the
middle of its download (it resumes from the partial file), a wrong MD5 is reported and
nothing is served, bad requests are refused, and unpublishing answers as OCPP L04 says."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from chargeward.agent.local_cache import FirmwareCache, PublishJob
from chargeward.agent.location import LAB_LOOPBACK
from chargeward.sim.runner import free_port

IMAGE = os.urandom(300_000)
MD5 = hashlib.md5(IMAGE, usedforsecurity=False).hexdigest()


class Reports:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int, list[str] | None]] = []
        self.done = asyncio.Event()

    async def __call__(self, status: str, request_id: int, where: list[str] | None) -> None:
        self.seen.append((status, request_id, where))
        if status in ("Published", "InvalidChecksum", "DownloadFailed", "PublishFailed"):
            self.done.set()

    @property
    def statuses(self) -> list[str]:
        return [s for s, _, _ in self.seen]


@contextlib.asynccontextmanager
async def serving(cache: FirmwareCache) -> AsyncIterator[None]:
    port = int(cache.base_url.rsplit(":", 1)[1])
    task = asyncio.create_task(cache.run("127.0.0.1", port))
    async with httpx.AsyncClient() as http:
        for _ in range(200):  # until it listens
            with contextlib.suppress(httpx.TransportError):
                await http.get(f"{cache.base_url}/firmware/none")
                break
            await asyncio.sleep(0.02)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _cache(root: Path, name: str, notify: Reports) -> FirmwareCache:
    return FirmwareCache(
        root / name, f"http://127.0.0.1:{free_port()}", notify=notify, policy=LAB_LOOPBACK
    )


async def _origin(tmp_path: Path) -> tuple[FirmwareCache, str]:
    """Another cache holding the image: an HTTP server with Range, like the CSMS's."""
    origin = _cache(tmp_path, "origin", Reports())
    (origin.directory / f"{MD5}.cwfw").write_bytes(IMAGE)
    return origin, origin.location(MD5)


async def test_a_publication_cut_by_a_reboot_resumes_from_its_partial_file(tmp_path: Path) -> None:
    origin, url = await _origin(tmp_path)
    reports = Reports()
    lc = _cache(tmp_path, "lc", reports)
    assert lc.publish(url, MD5.upper(), 7, retries=2, retry_interval=1) == "Accepted"
    # The controller lost power mid-download: the job is on flash, with half the file.
    half = len(IMAGE) // 2
    (lc.directory / f"{MD5}.part").write_bytes(IMAGE[:half])
    rebooted = FirmwareCache(lc.directory, lc.base_url, notify=reports, policy=LAB_LOOPBACK)
    async with serving(origin), serving(rebooted):
        await asyncio.wait_for(reports.done.wait(), 20)
        assert rebooted.downloaded_bytes == len(IMAGE) - half  # only the rest came over
        assert reports.statuses == ["Downloading", "Downloaded", "ChecksumVerified", "Published"]
        assert reports.seen[-1] == ("Published", 7, [f"{lc.base_url}/firmware/{MD5}.cwfw"])
        async with httpx.AsyncClient() as http:
            got = await http.get(rebooted.location(MD5), headers={"Range": "bytes=100-"})
            missing = await http.get(f"{rebooted.base_url}/firmware/{'0' * 32}.cwfw")
            sneaky = await http.get(f"{rebooted.base_url}/firmware/..%2F..%2Fetc%2Fpasswd")
    assert got.status_code == 206 and got.content == IMAGE[100:]
    assert missing.status_code == 404 and sneaky.status_code == 404
    assert rebooted.served_bytes == len(IMAGE) - 100
    assert not list(lc.directory.glob("*.job")) and not list(lc.directory.glob("*.part"))


async def test_a_wrong_checksum_is_reported_and_nothing_is_published(tmp_path: Path) -> None:
    origin, url = await _origin(tmp_path)
    reports = Reports()
    lc = _cache(tmp_path, "lc", reports)
    wrong = "f" * 32
    assert lc.publish(url, wrong, 8, retries=0, retry_interval=1) == "Accepted"
    async with serving(origin), serving(lc):
        lc.start(wrong)
        await asyncio.wait_for(reports.done.wait(), 20)
    assert reports.statuses == ["Downloading", "Downloaded", "InvalidChecksum"]
    assert lc.published() == [] and not list(lc.directory.iterdir())
    assert lc.unpublish(wrong) == "NoFirmware"


def test_bad_publish_requests_are_refused_and_unpublish_answers(tmp_path: Path) -> None:
    lc = _cache(tmp_path, "lc", Reports())
    assert lc.publish("ftp://example/x", MD5, 1, 0, 1) == "Rejected"
    assert lc.publish("http://127.0.0.1:1/x", "not-an-md5", 1, 0, 1) == "Rejected"
    assert not list(lc.directory.glob("*.job"))
    (lc.directory / f"{MD5}.cwfw").write_bytes(IMAGE)
    assert lc.published() == [MD5]
    assert lc.unpublish(MD5.upper()) == "Unpublished"
    assert lc.unpublish(MD5) == "NoFirmware" and lc.published() == []
    # A job file that does not parse is dropped, not fatal.
    (lc.directory / f"{MD5}.job").write_text("{not json")
    assert list(lc._pending()) == []
    assert PublishJob(1, "http://x/", MD5, 0, 1).checksum == MD5
