"""The download benchmark's client refuses wrong answers, and the whole run works on 1 MiB.

The end-to-end case starts the real server and nginx (a few seconds); `make system-deps`
installs nginx, and the test fails, never skips, without it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from benchmarks.bench_download import Blob, DownloadError, Side, bench, download_round
from benchmarks.report import write_markdown
from rich.console import Console

BODY = bytes(range(256)) * 4096  # 1 MiB


@asynccontextmanager
async def origin(body: bytes, length: int) -> AsyncIterator[int]:
    """An HTTP server that answers every request with ``body`` under ``Content-Length: length``."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def blob(tmp_path: Path) -> Blob:
    path = tmp_path / "blob"
    path.write_bytes(BODY)
    return Blob(path, len(BODY), hashlib.sha256(BODY).hexdigest())


async def test_the_right_bytes_count(tmp_path: Path) -> None:
    async with origin(BODY, len(BODY)) as port:
        side = Side("origin", port, "/firmware/sha256/x", ())
        result = await download_round(side, blob(tmp_path), 2, hashed=True)
    assert result.mib_s > 0


async def test_a_fast_wrong_answer_does_not_count(tmp_path: Path) -> None:
    wrong = BODY[:-1] + b"\x00"
    async with origin(wrong, len(wrong)) as port:
        side = Side("origin", port, "/firmware/sha256/x", ())
        with pytest.raises(DownloadError, match="SHA-256"):
            await download_round(side, blob(tmp_path), 2, hashed=True)


async def test_a_short_answer_does_not_count(tmp_path: Path) -> None:
    async with origin(BODY[:1000], len(BODY)) as port:
        side = Side("origin", port, "/firmware/sha256/x", ())
        with pytest.raises(DownloadError, match="closed after 1000"):
            await download_round(side, blob(tmp_path), 1, hashed=False)


def test_a_markdown_section_is_replaced_and_the_others_kept(tmp_path: Path) -> None:
    path = tmp_path / "latest.md"
    write_markdown(path, "one", "first")
    write_markdown(path, "two", "second")
    write_markdown(path, "one", "again")
    text = path.read_text()
    assert "first" not in text
    assert text.index("## one") < text.index("again") < text.index("## two") < text.index("second")


def test_the_server_and_nginx_serve_the_same_bytes(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:  # like PostgreSQL and SoftHSM2: never skipped, `make system-deps` has it
        pytest.fail("nginx is not installed: run `make system-deps`", pytrace=False)
    args = argparse.Namespace(size_mib=1.0, concurrency=[1, 2], runs=1, verify_all=True)
    section = asyncio.run(bench(nginx, args, Console(file=io.StringIO()), tmp_path))
    assert section["pass"]
    assert {r["status"] for r in section["resume"].values()} == {206}
    assert [level["concurrency"] for level in section["levels"]] == [1, 2]
    assert all(level["ratio"] > 0 for level in section["levels"])
