"""Server benchmark: one CSMS process holding N concurrent OCPP 2.0.1 connections.

Run ``make bench``, ``python -m benchmarks.bench_connections`` or
``python benchmarks/bench_connections.py`` (``--help`` for options; ``--stations 1000`` for a
quick look).  The server under test is the real OCPP listener
(:class:`chargeward.server.stations.csms.CsmsListener`: HTTP Basic auth checked against the stored
password hash, one :class:`~chargeward.ocpp.csms.CsmsChargePoint` per connection, every
BootNotification and Heartbeat written to the SQLite database) in its own process.  The
stations are light clients in this process: real websockets on loopback, hand-written OCPP-J
frames, so the client costs little next to the server.

Each run measures the same steps twice, against the CSMS and against a **baseline** in the
same run: a bare ``websockets`` server with the same frame limit that parses each OCPP frame and
answers it with a canned result (no authentication, no OCPP library, no database).  Ratios are
CSMS / baseline.

1. **Storm**: every station connects and sends BootNotification at once (at most
   ``--in-flight`` opening handshakes at a time, like stations coming back after an outage);
   wall time until every one is Accepted, and BootNotification latency (request sent → result
   received) p50/p99.  Target: all accepted within 60 s.
2. **Idle memory**: server RSS with every connection open and idle, minus its RSS before the
   storm, per connection.  Target: at most 50 KiB.
3. **Heartbeats**: every station sends ``--heartbeats`` Heartbeats; server CPU seconds (user +
   system, from ``/proc``) per message.

Figures are merged into ``benchmarks/results/latest.json``; the exit status is 1 if a target
was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import io
import json
import pstats
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from benchmarks.report import (
    RESULTS_DIR,
    print_profile,
    summary_table,
    verdict,
    write_results,
)
from chargeward.procinfo import cpu_seconds, raise_fd_limit, rss_kib
from chargeward.progress import progress_bar

TARGET_CONNECTIONS = 10_000
TARGET_KIB_PER_CONNECTION = 50
TARGET_STORM_S = 60.0
PASSWORD = "bench-station-secret-0123456789"  # noqa: S105 (a benchmark fixture, not a secret)
SUBPROTOCOL = "ocpp2.0.1"
TLS_CERT, TLS_KEY = "csms-tls.pem", "csms-tls.key"
TLS_PASSPHRASE = "bench-fixture-passphrase"  # noqa: S105 (protects a generated fixture)
PROFILE_FILE = RESULTS_DIR / "ocpp-connections.prof"
_REPO = Path(__file__).resolve().parents[1]


# --- the server side (a child process) -------------------------------------------------------


async def _baseline_handler(connection: ServerConnection) -> None:
    async for raw in connection:
        message = json.loads(raw)
        if message[2] == "BootNotification":
            result = {"currentTime": "2026-01-01T00:00:00Z", "interval": 300, "status": "Accepted"}
        else:
            result = {"currentTime": "2026-01-01T00:00:00Z"}
        await connection.send(json.dumps([3, message[1], result]))


def _server_tls(data_dir: Path) -> ssl.SSLContext | None:
    """The CSMS's own TLS context (profile 2) when the run uses TLS, else None."""
    if not (data_dir / TLS_CERT).exists():
        return None
    from chargeward.server.stations.tls import TlsFiles, server_context

    files = TlsFiles(data_dir / TLS_CERT, f"file:{data_dir / TLS_KEY}")
    return server_context(files, lambda: TLS_PASSPHRASE.encode())


async def _serve(kind: str, data_dir: Path, port_file: Path) -> None:
    raise_fd_limit()
    tls = _server_tls(data_dir)
    closing: Callable[[], Awaitable[None]] | None = None
    if kind == "csms":
        from chargeward.server.stations.csms import CsmsListener, Registry
        from chargeward.server.store.db import Database

        db = await Database.open(data_dir=data_dir)
        listener = CsmsListener(
            db, Registry(), heartbeat_interval=300, ssl_context=tls, allow_profile_1=tls is None
        )
        server = await listener.serve("127.0.0.1", 0)
        closing = listener.sink.close
    else:
        from chargeward.limits import DEFAULT_SERVER_LIMITS

        server = await serve(
            _baseline_handler,
            "127.0.0.1",
            0,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            ssl=tls,
            max_size=DEFAULT_SERVER_LIMITS.frame_bytes,
            compression=None,
            ping_interval=60,
            ping_timeout=60,
        )
    port = next(iter(server.sockets)).getsockname()[1]
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.replace(port_file)
    try:
        await asyncio.Event().wait()
    finally:
        if closing is not None:  # commit the CSMS's queued writes
            await closing()


def _prepare_tls(data_dir: Path) -> ssl.SSLContext:
    """A CSMS root and a server certificate for 127.0.0.1 (generated per run, a test fixture);
    returns the stations' client context, which trusts only that root."""
    from chargeward.crypto import certificate_pem, create_root_ca, generate_key
    from chargeward.crypto.tls import issue_server_certificate

    def passphrase() -> bytes:
        return TLS_PASSPHRASE.encode()

    root_key = generate_key(f"file:{data_dir / 'csms-root.key'}", passphrase)
    root = create_root_ca(root_key, "Bench CSMS Root", "Chargeward bench", days=2)
    server_key = generate_key(f"file:{data_dir / TLS_KEY}", passphrase)
    cert = issue_server_certificate(
        root_key, root, server_key.public_key(), "127.0.0.1", "Chargeward bench", days=1
    )
    (data_dir / TLS_CERT).write_text(certificate_pem(cert))
    client = ssl.create_default_context(cadata=certificate_pem(root))
    client.minimum_version = ssl.TLSVersion.TLSv1_2
    return client


async def register_stations(
    data_dir: Path, station_ids: Sequence[str], security_profile: int, model: str | None = None
) -> None:
    """N registered stations sharing one password (one hash computed, N rows inserted)."""
    import datetime as dt

    from sqlalchemy import insert

    from chargeward.crypto import station_passwords
    from chargeward.server.store.db import Database
    from chargeward.server.store.tables import Station

    db = await Database.open(data_dir=data_dir)
    digest = station_passwords.hash_station_secret(PASSWORD)
    now = dt.datetime.now(dt.UTC)
    rows: list[dict[str, Any]] = [
        {
            "id": sid,
            "password_hash": digest,
            "connected": False,
            "connector_status": {},
            "security_profile": security_profile,
            "created_at": now,
            "model": model,
        }
        for sid in station_ids
    ]
    async with db.session() as s:
        await s.execute(insert(Station), rows)
    await db.close()


@dataclass
class ServerProcess:
    kind: str
    process: subprocess.Popen[bytes]
    port: int

    @classmethod
    def start(cls, kind: str, data_dir: Path, profile_out: Path | None = None) -> ServerProcess:
        port_file = data_dir / f"{kind}.port"
        port_file.unlink(missing_ok=True)
        args = [sys.executable, "-m", "benchmarks.bench_connections", "--serve", kind]
        args += ["--data-dir", str(data_dir), "--port-file", str(port_file)]
        if profile_out is not None:
            args += ["--profile-out", str(profile_out)]
        process = subprocess.Popen(args, cwd=_REPO)
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the {kind} server did not start")
            time.sleep(0.05)
        return cls(kind, process, int(port_file.read_text()))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)  # a profiled server writes its stats first
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- the station side (this process) ---------------------------------------------------------


def _boot_frame(station_id: str) -> str:
    payload = {
        "chargingStation": {
            "model": "BENCH-1",
            "vendorName": "Chargeward",
            "firmwareVersion": "1.0.0",
            "serialNumber": station_id,
        },
        "reason": "PowerUp",
    }
    return json.dumps([2, f"boot-{station_id}", "BootNotification", payload])


async def _call(ws: ClientConnection, frame: str) -> tuple[float, Any]:
    started = time.perf_counter()
    await ws.send(frame)
    reply = json.loads(await ws.recv())
    return time.perf_counter() - started, reply


@dataclass
class StormResult:
    connections: list[ClientConnection]
    latencies: list[float]
    failures: list[str]
    wall_s: float


async def storm(
    port: int,
    station_ids: Sequence[str],
    in_flight: int,
    progress: Progress,
    label: str,
    tls: ssl.SSLContext | None,
) -> StormResult:
    task = progress.add_task(label, total=len(station_ids))
    gate = asyncio.Semaphore(in_flight)
    connections: list[ClientConnection] = []
    latencies: list[float] = []
    failures: list[str] = []

    async def one(station_id: str) -> None:
        token = base64.b64encode(f"{station_id}:{PASSWORD}".encode()).decode()
        async with gate:
            try:
                ws = await connect(
                    f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/ocpp/{station_id}",
                    ssl=tls,
                    subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                    additional_headers={"Authorization": f"Basic {token}"},
                    open_timeout=120,
                    ping_interval=None,
                    close_timeout=1,
                    compression=None,
                )
                latency, reply = await asyncio.wait_for(_call(ws, _boot_frame(station_id)), 120)
            except Exception as e:  # any failure is counted and reported, not raised
                failures.append(f"{station_id}: {type(e).__name__}: {e}"[:200])
                return
            finally:
                progress.advance(task)
        if reply[0] == 3 and reply[2].get("status") == "Accepted":
            connections.append(ws)
            latencies.append(latency)
        else:
            failures.append(f"{station_id}: BootNotification answered {reply!r}"[:200])

    started = time.perf_counter()
    await asyncio.gather(*(one(sid) for sid in station_ids))
    return StormResult(connections, latencies, failures, time.perf_counter() - started)


async def heartbeats(
    connections: Sequence[ClientConnection], rounds: int, progress: Progress, label: str
) -> tuple[int, float]:
    """Every connection sends ``rounds`` Heartbeats, one at a time; returns (answered, wall)."""
    task = progress.add_task(label, total=len(connections) * rounds)
    answered = 0

    async def one(index: int, ws: ClientConnection) -> None:
        nonlocal answered
        for r in range(rounds):
            _, reply = await _call(ws, json.dumps([2, f"hb-{index}-{r}", "Heartbeat", {}]))
            if reply[0] == 3:
                answered += 1
            progress.advance(task)

    started = time.perf_counter()
    await asyncio.gather(*(one(i, ws) for i, ws in enumerate(connections)))
    return answered, time.perf_counter() - started


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(
    kind: str,
    data_dir: Path,
    station_ids: Sequence[str],
    args: argparse.Namespace,
    client_tls: ssl.SSLContext | None,
) -> dict[str, Any]:
    profile_out = PROFILE_FILE if args.profile and kind == "csms" else None
    server = ServerProcess.start(kind, data_dir, profile_out)
    try:
        await asyncio.sleep(1.0)  # let the imports and the database settle
        rss_before = rss_kib(server.process.pid)
        with progress_bar() as progress:
            result = await storm(
                server.port,
                station_ids,
                args.in_flight,
                progress,
                f"{kind}: connect + boot",
                client_tls,
            )
            await asyncio.sleep(args.settle)
            rss_idle = rss_kib(server.process.pid)
            cpu_before = cpu_seconds(server.process.pid)
            answered, hb_wall = await heartbeats(
                result.connections, args.heartbeats, progress, f"{kind}: heartbeats"
            )
            cpu_used = cpu_seconds(server.process.pid) - cpu_before
        held = len(result.connections)
        for ws in result.connections:
            ws.transport.abort()
        return {
            "stations": len(station_ids),
            "held": held,
            "failures": len(result.failures),
            "first_failures": result.failures[:5],
            "storm_s": result.wall_s,
            "boot_latency_ms": {
                "p50": percentile(result.latencies, 0.5) * 1000 if result.latencies else None,
                "p99": percentile(result.latencies, 0.99) * 1000 if result.latencies else None,
                "max": max(result.latencies) * 1000 if result.latencies else None,
            },
            "rss_before_kib": rss_before,
            "rss_idle_kib": rss_idle,
            "kib_per_connection": (rss_idle - rss_before) / held if held else None,
            "heartbeats": answered,
            "heartbeat_wall_s": hb_wall,
            "cpu_us_per_message": cpu_used / answered * 1e6 if answered else None,
        }
    finally:
        server.stop()


def print_tables(console: Console, section: dict[str, Any]) -> None:
    how = "plain ws, profile 1" if section["security_profile"] == 1 else "TLS + Basic, profile 2"
    table = Table(title=f"{section['stations']:,} OCPP connections ({how}), one server process")
    table.add_column("measurement")
    table.add_column("CSMS", justify="right")
    table.add_column("baseline (bare websockets)", justify="right")
    table.add_column("ratio", justify="right")
    csms, base = section["csms"], section["baseline"]

    def row(name: str, key: str, fmt: str, sub: str | None = None) -> None:
        a = csms[key][sub] if sub else csms[key]
        b = base[key][sub] if sub else base[key]
        ratio = f"{a / b:.2f}" if a is not None and b else ""
        table.add_row(name, format(a, fmt) if a is not None else "-", format(b, fmt), ratio)

    row("connections held", "held", ",d")
    row("storm: all booted (s)", "storm_s", ".1f")
    row("BootNotification p50 (ms)", "boot_latency_ms", ".1f", "p50")
    row("BootNotification p99 (ms)", "boot_latency_ms", ".1f", "p99")
    row("RSS per idle connection (KiB)", "kib_per_connection", ".1f")
    row("CPU per Heartbeat (µs)", "cpu_us_per_message", ".0f")
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=TARGET_CONNECTIONS)
    parser.add_argument("--in-flight", type=int, default=256, help="concurrent opening handshakes")
    parser.add_argument("--heartbeats", type=int, default=2, help="Heartbeats per station")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds before RSS")
    parser.add_argument(
        "--profile-1",
        action="store_true",
        help="plain ws (security profile 1) instead of TLS with Basic auth (profile 2)",
    )
    parser.add_argument("--serve", choices=["csms", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--profile", action="store_true", help="run the CSMS under cProfile and print the top"
    )
    args = parser.parse_args(argv)
    if args.serve:
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop = KeyboardInterrupt
        profiler = cProfile.Profile() if args.profile_out else None
        with contextlib.suppress(KeyboardInterrupt):
            if profiler is not None:
                profiler.enable()
            asyncio.run(_serve(args.serve, args.data_dir, args.port_file))
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile_out)
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    console = Console()
    limit = raise_fd_limit()
    if limit < args.stations + 100:
        console.print(
            f"[red]open-file limit {limit} is below {args.stations} connections;"
            " raise it (ulimit -n) or use --stations[/]"
        )
        return 2
    station_ids = [f"BENCH-{i:05d}" for i in range(args.stations)]
    with tempfile.TemporaryDirectory(prefix="cw-bench-conn-") as tmp:
        data_dir = Path(tmp)
        console.print(f"registering {args.stations:,} stations …")
        client_tls = None if args.profile_1 else _prepare_tls(data_dir)
        asyncio.run(register_stations(data_dir, station_ids, 1 if args.profile_1 else 2))
        results = {
            kind: asyncio.run(measure(kind, data_dir, station_ids, args, client_tls))
            for kind in ("baseline", "csms")
        }
    csms = results["csms"]
    checks = {
        "connections": csms["held"] >= TARGET_CONNECTIONS,
        "memory": csms["kib_per_connection"] is not None
        and csms["kib_per_connection"] <= TARGET_KIB_PER_CONNECTION,
        "storm": csms["held"] == args.stations and csms["storm_s"] <= TARGET_STORM_S,
    }
    section = {
        **results,
        "stations": args.stations,
        "security_profile": 1 if args.profile_1 else 2,
        "targets": {
            "connections": TARGET_CONNECTIONS,
            "kib_per_connection": TARGET_KIB_PER_CONNECTION,
            "storm_s": TARGET_STORM_S,
        },
        "checks": checks,
        "pass": all(checks.values()),
        "memory_ratio": (csms["kib_per_connection"] or 0)
        / max(results["baseline"]["kib_per_connection"] or 1e-9, 1e-9),
        "cpu_ratio": (csms["cpu_us_per_message"] or 0)
        / max(results["baseline"]["cpu_us_per_message"] or 1e-9, 1e-9),
    }
    print_tables(console, section)
    if args.profile:
        text = io.StringIO()
        stats = pstats.Stats(str(PROFILE_FILE), stream=text).strip_dirs()
        stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(30)
        stats.sort_stats(pstats.SortKey.TIME).print_stats(30)
        print_profile(console, "CSMS process (storm + heartbeats)", text.getvalue(), PROFILE_FILE)
    for name, ok in checks.items():
        console.print(f"{name}: {verdict(ok)}")
    if csms["first_failures"]:
        console.print("first failures:", *csms["first_failures"], sep="\n  ")
    write_results(RESULTS_DIR / "latest.json", {"ocpp_connections": section})
    console.print(summary_table({"ocpp_connections": section}))
    return 0 if section["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
