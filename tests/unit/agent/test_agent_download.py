"""Downloads over a poor link: back-off with jitter, pause/resume, caps on size and bandwidth.

Every test talks HTTP to a real server on 127.0.0.1 (:class:`Origin`, a few lines of asyncio
that can drop the link mid-body, answer with an error or lie about lengths).  Time is
injected: :class:`FakeTime` records what would have been slept and never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chargeward.agent.download import (
    DownloadRefused,
    DownloadStats,
    backoff_delay,
)
from chargeward.agent.download import (
    fetch as _fetch,
)
from chargeward.agent.location import LAB_LOOPBACK
from chargeward.errors import TransportError

pytestmark = pytest.mark.timeout(20)

DATA = os.urandom(1 << 20)
CAP = 4 << 20
# The test origins listen on 127.0.0.1: allowed here deliberately (a lab setting).
fetch = functools.partial(_fetch, policy=LAB_LOOPBACK)


@dataclass
class Origin:
    """An HTTP/1.1 file server with ``Range`` support and scripted failures.

    ``drops[n]`` (bytes of body) cuts connection ``n`` after that many body bytes; ``status``
    answers every request with that code; ``mode`` ``"chunked"`` hides the length,
    ``"overlong"`` answers a range with a small ``Content-Range`` total and sends the whole file.
    """

    data: bytes = DATA
    drops: dict[int, int] = field(default_factory=dict)
    status: int | None = None
    mode: str = "normal"
    ranges: list[str | None] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/firmware.cwfw"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = len(self.ranges)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            fields = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
            rng = {k.lower(): v for k, v in fields.items()}.get("range")
            self.ranges.append(rng)
            await self._answer(writer, n, rng)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, writer: asyncio.StreamWriter, n: int, rng: str | None) -> None:
        if self.status is not None:
            writer.write(f"HTTP/1.1 {self.status} Nope\r\nContent-Length: 0\r\n\r\n".encode())
            return
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        body = self.data[start:]
        if self.mode == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(body), 64 << 10):
                piece = body[i : i + (64 << 10)]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            return
        if self.mode == "overlong":
            claimed = f"bytes {start}-{start + 99}/{start + 100}"
            writer.write(
                f"HTTP/1.1 206 Partial Content\r\nContent-Range: {claimed}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            writer.write(body)
            return
        if rng:
            status = "206 Partial Content"
            extra = f"Content-Range: bytes {start}-{len(self.data) - 1}/{len(self.data)}\r\n"
        else:
            status, extra = "200 OK", ""
        writer.write(
            f"HTTP/1.1 {status}\r\n{extra}Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        cut = self.drops.get(n)
        writer.write(body if cut is None else body[:cut])  # then the link drops mid-body


@contextlib.asynccontextmanager
async def serving(origin: Origin) -> AsyncIterator[Origin]:
    server = await asyncio.start_server(origin._serve, "127.0.0.1", 0)
    origin.port = server.sockets[0].getsockname()[1]
    try:
        yield origin
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class FakeTime:
    """A monotonic clock that only moves when something sleeps; records every sleep."""

    now: float = 1000.0
    slept: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def test_backoff_delay_doubles_within_jitter_bounds_and_caps() -> None:
    low, high = random.Random(), random.Random()
    low.random = lambda: 0.0  # type: ignore[method-assign]
    high.random = lambda: 0.999999  # type: ignore[method-assign]
    for n in range(1, 6):
        assert backoff_delay(n, 10, max_backoff=3600, rng=low) == 10 * 2 ** (n - 1)
        assert backoff_delay(n, 10, max_backoff=3600, rng=high) == pytest.approx(10 * 2**n)
    assert backoff_delay(40, 10, max_backoff=3600, rng=high) == pytest.approx(3600)
    assert backoff_delay(40, 10, max_backoff=3600, rng=low) == 1800
    assert backoff_delay(10_000, 10, max_backoff=3600, rng=high) <= 3600
    # OCPP retryInterval is a floor, even above the cap.
    assert backoff_delay(1, 7200, max_backoff=3600, rng=low) == 7200


async def test_backoff_schedule_grows_exponentially_with_jitter(tmp_path: Path) -> None:
    time = FakeTime()
    stats = DownloadStats()
    drops = {n: 1000 for n in range(6)}
    async with serving(Origin(drops=drops)) as origin:
        with pytest.raises(TransportError, match="after 6 attempts"):
            await fetch(
                origin.url,
                tmp_path / "fw.part",
                max_bytes=CAP,
                retries=5,
                retry_interval=2,
                max_backoff=40,
                stats=stats,
                sleep=time.sleep,
                clock=time.clock,
                rng=random.Random(7),
            )
    assert time.slept == stats.retry_delays
    assert len(time.slept) == 5
    for n, delay in enumerate(time.slept, start=1):
        window = min(2 * 2**n, 40)
        assert window / 2 <= delay < window, (n, delay)
    assert time.slept[0] < time.slept[1] < time.slept[2] < time.slept[3]
    # Jittered: not the bare lower bounds, and another seed gives another schedule.
    assert time.slept != [2, 4, 8, 16, 20]
    assert [round(d, 6) for d in time.slept] != [
        round(backoff_delay(n, 2, max_backoff=40, rng=random.Random(8)), 6) for n in range(1, 6)
    ]


async def test_link_dropping_twice_pauses_resumes_and_completes(tmp_path: Path) -> None:
    time = FakeTime()
    stats = DownloadStats()
    events: list[tuple[str | int, ...]] = []
    part = tmp_path / "fw.part"

    async def on_pause(retry: int, delay: float, error: Exception) -> None:
        assert delay == stats.pauses[-1].delay
        events.append(("paused", retry, part.stat().st_size, len(time.slept)))

    async def on_resume() -> None:
        events.append(("downloading", len(time.slept)))

    async with serving(Origin(drops={0: 300_000, 1: 200_000})) as origin:
        got = await fetch(
            origin.url,
            part,
            max_bytes=CAP,
            retries=3,
            retry_interval=1,
            stats=stats,
            sleep=time.sleep,
            clock=time.clock,
            on_pause=on_pause,
            on_resume=on_resume,
        )
        ranges = origin.ranges
    assert got == part and part.read_bytes() == DATA
    # Paused before each back-off sleep, downloading again right after it.
    assert events == [
        ("paused", 1, 300_000, 0),
        ("downloading", 1),
        ("paused", 2, 500_000, 1),
        ("downloading", 2),
    ]
    assert ranges == [None, "bytes=300000-", "bytes=500000-"]
    assert stats.attempts == 3 and stats.resumed_from == [300_000, 500_000]
    assert stats.bytes_received == len(DATA)
    assert [p.offset for p in stats.pauses] == [300_000, 500_000]
    assert 1 <= stats.retry_delays[0] < 2 and 2 <= stats.retry_delays[1] < 4


async def test_retries_exhausted_is_a_transport_error(tmp_path: Path) -> None:
    time = FakeTime()
    stats = DownloadStats()
    pauses: list[int] = []
    resumes: list[int] = []

    async def on_pause(retry: int, delay: float, error: Exception) -> None:
        pauses.append(retry)

    async def on_resume() -> None:
        resumes.append(len(pauses))

    async with serving(Origin(status=503)) as origin:
        with pytest.raises(TransportError, match="after 3 attempts") as e:
            await fetch(
                origin.url,
                tmp_path / "fw.part",
                max_bytes=CAP,
                retries=2,
                retry_interval=1,
                stats=stats,
                sleep=time.sleep,
                on_pause=on_pause,
                on_resume=on_resume,
            )
        served = len(origin.ranges)
    assert not isinstance(e.value, DownloadRefused)
    assert served == 3 and stats.attempts == 3
    assert pauses == [1, 2] and resumes == [1, 2]  # no pause after the last attempt
    assert len(time.slept) == 2


async def test_not_found_is_refused_without_retry(tmp_path: Path) -> None:
    time = FakeTime()
    paused: list[int] = []

    async def on_pause(retry: int, delay: float, error: Exception) -> None:
        paused.append(retry)

    async with serving(Origin(status=404)) as origin:
        with pytest.raises(DownloadRefused, match="HTTP 404"):
            await fetch(
                origin.url,
                tmp_path / "fw.part",
                max_bytes=CAP,
                retries=5,
                retry_interval=1,
                sleep=time.sleep,
                on_pause=on_pause,
            )
        assert len(origin.ranges) == 1
    assert time.slept == [] and paused == []


@pytest.mark.parametrize("status", [408, 429])
async def test_busy_server_is_retried_not_refused(tmp_path: Path, status: int) -> None:
    """408/429: a CDN shedding load in a fleet rollout must not fail every charger."""
    time = FakeTime()
    async with serving(Origin(status=status)) as origin:
        with pytest.raises(TransportError, match="after 3 attempts") as e:
            await fetch(
                origin.url,
                tmp_path / "fw.part",
                max_bytes=CAP,
                retries=2,
                retry_interval=1,
                sleep=time.sleep,
            )
        assert not isinstance(e.value, DownloadRefused)
        assert len(origin.ranges) == 3
    assert len(time.slept) == 2


async def test_size_cap_refused_from_content_length(tmp_path: Path) -> None:
    part = tmp_path / "fw.part"
    async with serving(Origin()) as origin:
        with pytest.raises(DownloadRefused, match=f"{len(DATA)} bytes exceeds"):
            await fetch(origin.url, part, max_bytes=len(DATA) - 1, retries=3, retry_interval=1)
        assert len(origin.ranges) == 1
    assert not part.exists()  # refused before a byte of the body was written


async def test_size_cap_refused_from_content_range_on_resume(tmp_path: Path) -> None:
    part = tmp_path / "fw.part"
    part.write_bytes(DATA[:1000])
    async with serving(Origin()) as origin:
        with pytest.raises(DownloadRefused, match="exceeds the limit"):
            await fetch(origin.url, part, max_bytes=len(DATA) - 1, retries=3, retry_interval=1)
        assert origin.ranges == ["bytes=1000-"]
    assert part.stat().st_size == 1000


async def test_size_cap_enforced_while_streaming_without_a_length(tmp_path: Path) -> None:
    part = tmp_path / "fw.part"
    cap = len(DATA) // 4
    async with serving(Origin(mode="chunked")) as origin:
        with pytest.raises(DownloadRefused, match=f"limit of {cap} bytes"):
            await fetch(origin.url, part, max_bytes=cap, retries=3, retry_interval=1)
        assert len(origin.ranges) == 1
    assert part.stat().st_size <= cap


async def test_server_lying_about_the_length_is_refused(tmp_path: Path) -> None:
    part = tmp_path / "fw.part"
    part.write_bytes(DATA[:1000])
    async with serving(Origin(mode="overlong")) as origin:
        with pytest.raises(DownloadRefused, match="more than the 1100 bytes it declared"):
            await fetch(origin.url, part, max_bytes=CAP, retries=3, retry_interval=1)
        assert len(origin.ranges) == 1
    assert part.stat().st_size <= 1100


async def test_rate_limit_paces_the_download(tmp_path: Path) -> None:
    time = FakeTime()
    stats = DownloadStats()
    rate = 256 << 10
    async with serving(Origin()) as origin:
        await fetch(
            origin.url,
            tmp_path / "fw.part",
            max_bytes=CAP,
            retries=0,
            retry_interval=1,
            rate_limit=rate,
            stats=stats,
            sleep=time.sleep,
            clock=time.clock,
        )
    expected = len(DATA) / rate  # 4 s
    assert sum(time.slept) == pytest.approx(expected, rel=0.1)
    assert stats.throttled_s == pytest.approx(sum(time.slept))
    assert max(time.slept) < 1  # paced chunk by chunk, not in one wait


async def test_rate_limit_survives_a_resume(tmp_path: Path) -> None:
    time = FakeTime()
    stats = DownloadStats()
    rate = 256 << 10
    part = tmp_path / "fw.part"
    async with serving(Origin(drops={0: 400_000})) as origin:
        await fetch(
            origin.url,
            part,
            max_bytes=CAP,
            retries=1,
            retry_interval=1,
            rate_limit=rate,
            stats=stats,
            sleep=time.sleep,
            clock=time.clock,
        )
    assert part.read_bytes() == DATA
    assert stats.resumed_from == [400_000]
    assert stats.throttled_s == pytest.approx(stats.bytes_received / rate, rel=0.1)
    assert sum(time.slept) == pytest.approx(stats.throttled_s + stats.retry_delays[0])
