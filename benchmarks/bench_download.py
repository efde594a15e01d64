"""Firmware download throughput: the server's signed download route, as a ratio to nginx.

Run ``make bench``, ``python -m benchmarks.bench_download`` or
``python benchmarks/bench_download.py`` (``--help``; ``--size-mib 4 --runs 1`` for a quick
look).  A signed release whose image carries ``--size-mib`` MiB of random bytes is uploaded
to a real ``chargeward server`` (its own process on loopback, started with
:func:`chargeward.demo.start_server`), which stores the image in its content-addressed blob
store.  The **baseline** in the same run is nginx, started by this benchmark on loopback with
a generated configuration (one worker process, ``sendfile on``, everything in a temporary
directory, run as the current user), serving the same blob at the same path:
``/firmware/sha256/<hex>``; nginx ignores the query string, the server checks its signature.

Both are measured by the same client in this process: raw HTTP/1.1 over asyncio with one
connection per download and a ``BufferedProtocol`` receiving into a fixed buffer, so the
client does little beyond the kernel's copy.  At each ``--concurrency`` level, every round
starts that many downloads of the whole image at once and times them until the last byte;
throughput is bytes received / wall time, in MiB/s.  Per level: one round each that checks
every download's bytes (length and SHA-256, so a fast wrong answer cannot count; not part of
the figures), then ``--runs`` timed rounds alternating server and nginx, which check status
and length (and the digest too with ``--verify-all``).  Client, server and nginx CPU seconds
(from ``/proc``) are kept per round, so a client at its ceiling shows.  Before that, a
resumed download (``Range: bytes=N-``) must answer 206 with the right bytes from both.

Figures are merged into ``benchmarks/results/latest.json`` (``download_throughput``) and
``benchmarks/results/latest.md``.  Exit status 1 if a check failed; 2 if nginx is missing
(``make system-deps`` installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from rich.console import Console
from rich.table import Table

from benchmarks.fixtures import release_bundle
from benchmarks.report import (
    RESULTS_DIR,
    markdown_table,
    verdict,
    write_markdown,
    write_results,
)
from benchmarks.timing import Stats
from chargeward.procinfo import cpu_seconds, raise_fd_limit
from chargeward.progress import progress_bar

PASSPHRASE = b"bench-fixture-passphrase"
STATION = "BENCH-DL-1"
RECEIVE_BUFFER = 256 * 1024
MAX_HEAD = 16 * 1024
MIB = 1 << 20
SIDES = ("chargeward", "nginx")


# --- the client -------------------------------------------------------------------------------


class DownloadError(Exception):
    """A download answered with the wrong status, length, range or bytes."""


@dataclass
class Received:
    status: int
    headers: dict[str, str]
    length: int
    sha256: str | None


class _Receiver(asyncio.BufferedProtocol):
    """One HTTP/1.1 GET: the head parsed, the body counted (and hashed when asked)."""

    def __init__(self, request: bytes, hash_body: bool) -> None:
        self.request = request
        self.view = memoryview(bytearray(RECEIVE_BUFFER))
        self.head = bytearray()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.expected: int | None = None
        self.received = 0
        self.hasher = hashlib.sha256() if hash_body else None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        if self.expected is None:
            self.head += self.view[:nbytes]
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HEAD:
                    self._fail(DownloadError("response head too large"))
                return
            self._parse_head(bytes(self.head[:end]))
            self._body(memoryview(bytes(self.head[end + 4 :])))
        else:
            self._body(self.view[:nbytes])

    def _parse_head(self, head: bytes) -> None:
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for line in lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.expected = int(self.headers.get("content-length", "0"))

    def _body(self, data: memoryview) -> None:
        self.received += len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        if self.expected is not None and self.received >= self.expected and not self.done.done():
            self.done.set_result(None)

    def _fail(self, error: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(DownloadError(f"connection closed after {self.received} body bytes: {exc}"))


async def fetch(port: int, target: str, *, hash_body: bool, first_byte: int = 0) -> Received:
    """GET ``target`` from 127.0.0.1:``port`` (from ``first_byte`` on, with Range, if > 0)."""
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    if first_byte:
        lines.append(f"Range: bytes={first_byte}-")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    transport, receiver = await loop.create_connection(
        lambda: _Receiver(request, hash_body), "127.0.0.1", port
    )
    try:
        await receiver.done
    finally:
        transport.close()
    digest = receiver.hasher.hexdigest() if receiver.hasher is not None else None
    return Received(receiver.status, receiver.headers, receiver.received, digest)


@dataclass(frozen=True)
class Blob:
    """The image both servers serve: where, how long, and its digest."""

    path: Path
    length: int
    sha256: str


@dataclass(frozen=True)
class Side:
    """A server under test: its port, the URL path + query to fetch, the pids to charge."""

    name: str
    port: int
    target: str
    pids: tuple[int, ...]

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)


def check_download(got: Received, blob: Blob, *, hashed: bool) -> None:
    if got.status != 200:
        raise DownloadError(f"status {got.status}, expected 200")
    if got.length != blob.length:
        raise DownloadError(f"{got.length} bytes, expected {blob.length}")
    if hashed and got.sha256 != blob.sha256:
        raise DownloadError(f"SHA-256 {got.sha256}, expected {blob.sha256}")


async def check_resume(side: Side, blob: Blob, first_byte: int) -> dict[str, Any]:
    """``Range: bytes=N-`` answers 206 with bytes N to the end and a matching Content-Range."""
    got = await fetch(side.port, side.target, hash_body=True, first_byte=first_byte)
    with blob.path.open("rb") as fh:
        fh.seek(first_byte)
        want = hashlib.file_digest(fh, "sha256").hexdigest()
    content_range = got.headers.get("content-range", "")
    ok = (
        got.status == 206
        and got.length == blob.length - first_byte
        and got.sha256 == want
        and content_range == f"bytes {first_byte}-{blob.length - 1}/{blob.length}"
    )
    return {
        "first_byte": first_byte,
        "status": got.status,
        "content_range": content_range,
        "bytes": got.length,
        "sha256_ok": got.sha256 == want,
        "pass": ok,
    }


@dataclass
class Round:
    wall_s: float
    mib_s: float
    client_cpu_s: float
    server_cpu_s: float


async def download_round(side: Side, blob: Blob, concurrency: int, *, hashed: bool) -> Round:
    """``concurrency`` downloads of the whole blob at once; every one is checked."""
    cpu_server, cpu_client = side.cpu(), time.process_time()
    started = time.perf_counter()
    got = await asyncio.gather(
        *(fetch(side.port, side.target, hash_body=hashed) for _ in range(concurrency))
    )
    wall = time.perf_counter() - started
    client_cpu, server_cpu = time.process_time() - cpu_client, side.cpu() - cpu_server
    for one in got:
        check_download(one, blob, hashed=hashed)
    return Round(wall, concurrency * blob.length / MIB / wall, client_cpu, server_cpu)


@dataclass
class Level:
    concurrency: int
    verified: dict[str, Round] = field(default_factory=dict)
    rounds: dict[str, list[Round]] = field(default_factory=lambda: {s: [] for s in SIDES})

    def throughput(self, side: str) -> Stats:
        return Stats(tuple(r.mib_s for r in self.rounds[side]))

    def ratio(self) -> float:
        return self.throughput("chargeward").median / self.throughput("nginx").median

    def to_dict(self, image_bytes: int) -> dict[str, Any]:
        out: dict[str, Any] = {"concurrency": self.concurrency, "ratio": round(self.ratio(), 3)}
        for side in SIDES:
            rounds = self.rounds[side]
            mib_s = self.throughput(side)
            gib = self.concurrency * len(rounds) * image_bytes / (1 << 30)
            out[side] = {
                "mib_s": {
                    "median": round(mib_s.median, 1),
                    "min": round(mib_s.min, 1),
                    "max": round(mib_s.max, 1),
                    "samples": [round(s, 1) for s in mib_s.samples],
                },
                "wall_s": Stats(tuple(r.wall_s for r in rounds)).to_dict(),
                "client_cpu_share": round(
                    sum(r.client_cpu_s for r in rounds) / sum(r.wall_s for r in rounds), 3
                ),
                "server_cpu_share": round(
                    sum(r.server_cpu_s for r in rounds) / sum(r.wall_s for r in rounds), 3
                ),
                "server_cpu_s_per_gib": round(sum(r.server_cpu_s for r in rounds) / gib, 3),
                "verified_round_mib_s": round(self.verified[side].mib_s, 1),
            }
        return out


async def measure(
    sides: dict[str, Side],
    blob: Blob,
    levels: Sequence[int],
    runs: int,
    *,
    verify_all: bool,
    console: Console,
) -> list[Level]:
    """Per level: one checked round per side, then ``runs`` timed rounds alternating sides."""
    done: list[Level] = []
    with progress_bar(console) as progress:
        task = progress.add_task("downloads", total=len(levels) * (runs + 1) * len(SIDES))
        for concurrency in levels:
            level = Level(concurrency)
            for name in SIDES:
                progress.update(task, description=f"{name}: {concurrency} at once, checking bytes")
                level.verified[name] = await download_round(
                    sides[name], blob, concurrency, hashed=True
                )
                progress.advance(task)
            for run in range(runs):
                for name in SIDES if run % 2 == 0 else SIDES[::-1]:
                    progress.update(
                        task, description=f"{name}: {concurrency} at once, run {run + 1}/{runs}"
                    )
                    level.rounds[name].append(
                        await download_round(sides[name], blob, concurrency, hashed=verify_all)
                    )
                    progress.advance(task)
            done.append(level)
    return done


# --- the servers ------------------------------------------------------------------------------


def find_nginx(console: Console) -> str | None:
    """nginx on PATH or in /usr/sbin (``make system-deps`` installs ``nginx-light``)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        console.print(
            "[red]nginx is not installed, so there is no baseline to compare with: run "
            "`make system-deps` (or `apt-get install nginx-light`)[/]"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


NGINX_CONF = """\
daemon off;
worker_processes 1;
{user}pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    types {{ }}
    default_type application/octet-stream;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/www;
        location /firmware/sha256/ {{ }}
    }}
}}
"""


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    prefix: Path
    port: int

    @classmethod
    def start(cls, binary: str, prefix: Path, blob: Blob) -> Nginx:
        """Serve ``blob`` at ``/firmware/sha256/<hex>`` from ``prefix``: a link to the same
        file (a copy on another file system), so both servers read the same page cache."""
        www = prefix / "www" / "firmware" / "sha256"
        www.mkdir(parents=True)
        (prefix / "tmp").mkdir()
        try:
            os.link(blob.path, www / blob.sha256)
        except OSError:
            shutil.copyfile(blob.path, www / blob.sha256)
        port = free_port()
        # As root the workers would switch to `nobody`; they run as the current user instead.
        user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(user=user, prefix=prefix, port=port))
        log = (prefix / "stderr.log").open("wb")
        args = [binary, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")]
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    errors = (prefix / "stderr.log").read_text() + (
                        prefix / "error.log"
                    ).read_text()
                    raise RuntimeError(f"nginx did not start: {errors.strip()}") from None
                time.sleep(0.05)
        return cls(process, prefix, port)

    def pids(self) -> tuple[int, ...]:
        """The master and its worker."""
        master = self.process.pid
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return (master, *map(int, children))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def upload(api_url: str, data_dir: Path, bundle: Path) -> str:
    """Upload the bundle through the API; returns the SHA-256 of its image."""
    token = (data_dir / "admin.token").read_text().strip()
    with httpx.Client(base_url=api_url, timeout=300) as api:
        r = api.post(
            "/api/v1/releases",
            content=bundle.read_bytes(),
            headers={"Authorization": f"Bearer {token}"},
        )
        r.raise_for_status()
    digest: str = r.json()["images"][0]["sha256"]
    return digest


def signed_target(data_dir: Path, sha256: str) -> str:
    """The download path a station would be handed, valid for an hour."""
    from chargeward.server.common import urls

    key = (data_dir / urls.KEY_FILE).read_bytes()
    return urls.signed_path(key, sha256, STATION, int(time.time()) + 3600)


# --- the report -------------------------------------------------------------------------------


def mib_s(figures: dict[str, Any]) -> str:
    f = figures["mib_s"]
    return f"{f['median']:,.0f} ({f['min']:,.0f}\N{EN DASH}{f['max']:,.0f})"


def table_rows(section: dict[str, Any]) -> list[list[str]]:
    rows = []
    for level in section["levels"]:
        cw, ng = level["chargeward"], level["nginx"]
        rows.append(
            [
                f"{level['concurrency']} at once",
                mib_s(cw),
                mib_s(ng),
                f"{level['ratio']:.2f}",
                f"{cw['server_cpu_share']:.0%} / {ng['server_cpu_share']:.0%}",
                f"{cw['client_cpu_share']:.0%} / {ng['client_cpu_share']:.0%}",
            ]
        )
    return rows


HEADER = [
    "concurrent downloads",
    "Chargeward MiB/s",
    "nginx MiB/s",
    "ratio",
    "server CPU (CW / nginx)",
    "client CPU (CW / nginx)",
]


def describe(section: dict[str, Any]) -> str:
    resume = section["resume"]
    return (
        f"{section['image_mib']:.1f} MiB image, {section['runs']} timed runs per level "
        f"(median, min\N{EN DASH}max); ratio = Chargeward / nginx medians; CPU = share of one core "
        f"over the timed runs; {section['host_cpus']} CPUs; nginx with 1 worker vs one server "
        f"process. Every download checked for status and length, and for SHA-256 in one round "
        f"per level and side{' and every run' if section['verify_all'] else ''}. "
        f"Resume (Range: bytes={resume['chargeward']['first_byte']}-): Chargeward "
        f"{resume['chargeward']['status']}, nginx {resume['nginx']['status']}, bytes "
        f"{'match' if section['resume_pass'] else 'DO NOT match'}."
    )


def print_table(console: Console, section: dict[str, Any]) -> None:
    table = Table(title="Firmware download throughput, Chargeward vs nginx", title_justify="left")
    for i, column in enumerate(HEADER):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in table_rows(section):
        table.add_row(*row)
    console.print(table)
    console.print(describe(section))
    console.print(f"checks: {verdict(section['pass'])}")


# --- main -------------------------------------------------------------------------------------


async def bench(
    nginx_binary: str, args: argparse.Namespace, console: Console, tmp: Path
) -> dict[str, Any]:
    from chargeward.local import start_server

    work, data, prefix = tmp / "work", tmp / "data", tmp / "nginx"
    for d in (work, data, prefix):
        d.mkdir()
    size = int(args.size_mib * MIB)
    console.print(f"building a signed release with a {args.size_mib:g} MiB image …")
    root_pem, bundle = release_bundle(work, size, PASSPHRASE)
    server, info = start_server(
        data, root_pem, tmp / "server.log", env={"CHARGEWARD_KEY_PASSPHRASE": PASSPHRASE.decode()}
    )
    nginx: Nginx | None = None
    try:
        sha256 = upload(info["api_url"], data, bundle)
        path = data / "blobs" / "sha256" / sha256
        with path.open("rb") as fh:
            if hashlib.file_digest(fh, "sha256").hexdigest() != sha256:
                raise DownloadError("the stored blob does not match its name")
        blob = Blob(path, path.stat().st_size, sha256)
        nginx = Nginx.start(nginx_binary, prefix, blob)
        port = int(info["api_url"].rsplit(":", 1)[1])
        target = signed_target(data, sha256)
        sides = {
            "chargeward": Side("chargeward", port, target, (server.popen.pid,)),
            "nginx": Side("nginx", nginx.port, target, nginx.pids()),
        }
        first_byte = blob.length // 3 + 12345
        resume = {name: await check_resume(side, blob, first_byte) for name, side in sides.items()}
        levels = await measure(
            sides, blob, args.concurrency, args.runs, verify_all=args.verify_all, console=console
        )
    finally:
        if nginx is not None:
            nginx.stop()
        server.stop()
    resume_pass = all(r["pass"] for r in resume.values())
    return {
        "image_bytes": blob.length,
        "image_mib": blob.length / MIB,
        "runs": args.runs,
        "verify_all": args.verify_all,
        "host_cpus": os.cpu_count(),
        "client": "raw HTTP/1.1 on asyncio (BufferedProtocol), one connection per download",
        "nginx": {"worker_processes": 1, "sendfile": True},
        "resume": resume,
        "resume_pass": resume_pass,
        "levels": [level.to_dict(blob.length) for level in levels],
        "pass": resume_pass,  # every download was checked, or measure() raised
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=float, default=32.0, help="payload size in MiB")
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(n) for n in s.split(",")],
        default=[1, 8, 32],
        help="comma-separated levels of concurrent downloads (default 1,8,32)",
    )
    parser.add_argument("--runs", type=int, default=3, help="timed rounds per level and side")
    parser.add_argument(
        "--verify-all", action="store_true", help="check SHA-256 in the timed rounds too"
    )
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 110))
    nginx = find_nginx(console)
    if nginx is None:
        return 2
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="cw-bench-download-") as tmp:
        try:
            section = asyncio.run(bench(nginx, args, console, Path(tmp)))
        except DownloadError as e:
            console.print(f"[red]a download was wrong: {e}[/]")
            return 1
    print_table(console, section)
    write_results(RESULTS_DIR / "latest.json", {"download_throughput": section})
    body = markdown_table(HEADER, table_rows(section)) + "\n\n" + describe(section)
    write_markdown(RESULTS_DIR / "latest.md", "download_throughput", body)
    return 0 if section["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
