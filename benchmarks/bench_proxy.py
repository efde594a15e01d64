"""Proxy-mode benchmark: N stations relayed to an upstream CSMS by one server process, against
the same N stations connected to it directly (ADR 0040).

Run ``make bench``, ``python -m benchmarks.bench_proxy`` or ``python benchmarks/bench_proxy.py``
(``--help`` for options; ``--stations 200`` for a quick look).  The server under test is the
real OCPP listener (:class:`chargeward.server.stations.csms.CsmsListener`, profile 1, SQLite) in
its own process, **direct** (no ``--upstream``) or **proxied** (``Proxy`` with a
``ProxyConfig`` towards an upstream double: a bare ``websockets`` server in a third process
that answers every CALL with a canned result).  The stations are light clients in this
process, as in :mod:`benchmarks.bench_connections` (whose storm and registration it reuses).

Each round starts a fresh server of each kind (direct, then proxied) and measures:

1. **Memory**: server RSS with every station connected, booted and idle, minus its RSS before
   they came, per station.  Proxied also holds each station's upstream connection and relay.
2. **Latency**: every station sends ``--messages`` Heartbeats one at a time; the median
   request-to-answer time.  Proxied: the upstream's answer, through the relay.

Figures are the median over ``--runs`` rounds with their min-max; ratios are proxied / direct
from the same run.  Merged into ``benchmarks/results/latest.json`` (section ``ocpp_proxy``).
No target: the exit status is 1 only if a station was not served.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from benchmarks.bench_connections import register_stations, storm
from benchmarks.report import RESULTS_DIR, write_results
from chargeward.procinfo import raise_fd_limit, rss_kib
from chargeward.progress import progress_bar

DEFAULT_STATIONS = 1_000
SUBPROTOCOL = "ocpp2.0.1"
KINDS = ("direct", "proxied")
_REPO = Path(__file__).resolve().parents[1]


# --- the server side (child processes) -------------------------------------------------------


async def _upstream_handler(connection: ServerConnection) -> None:
    """The operator's CSMS, reduced to canned answers."""
    with contextlib.suppress(ConnectionClosed):  # the proxied server stopped
        async for raw in connection:
            message = json.loads(raw)
            if message[0] != 2:
                continue
            result: dict[str, Any] = {"currentTime": "2026-01-01T00:00:00Z"}
            if message[2] == "BootNotification":
                result.update(interval=300, status="Accepted")
            await connection.send(json.dumps([3, message[1], result]))


async def _serve(kind: str, data_dir: Path, port_file: Path, upstream_port: int) -> None:
    raise_fd_limit()
    closing = None
    if kind == "upstream":
        server = await serve(
            _upstream_handler,
            "127.0.0.1",
            0,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            compression=None,
            ping_interval=None,
        )
    else:
        import datetime as dt

        from chargeward.server.proxy import CredentialMode, Proxy, ProxyConfig
        from chargeward.server.proxy.records import DbProxyHooks
        from chargeward.server.stations.csms import CsmsListener, Registry
        from chargeward.server.store.db import Database

        db = await Database.open(data_dir=data_dir)
        proxy = None
        if kind == "proxied":
            config = ProxyConfig(
                url_template=f"ws://127.0.0.1:{upstream_port}/ocpp/{{stationId}}",
                credential_mode=CredentialMode.none,
            )
            proxy = Proxy(config, DbProxyHooks(db, lambda: dt.datetime.now(dt.UTC)))
        listener = CsmsListener(
            db, Registry(), heartbeat_interval=300, allow_profile_1=True, proxy=proxy
        )
        server = await listener.serve("127.0.0.1", 0)
        closing = listener.sink.close
    port = next(iter(server.sockets)).getsockname()[1]
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.replace(port_file)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)  # a quiet stop
    try:
        await stop.wait()
    finally:
        server.close()
        if closing is not None:
            await closing()


class Child:
    """One server process (``--serve KIND``) and the port it listens on."""

    def __init__(self, kind: str, data_dir: Path, upstream_port: int = 0) -> None:
        port_file = data_dir / f"{kind}.port"
        port_file.unlink(missing_ok=True)
        args = [sys.executable, "-m", "benchmarks.bench_proxy", "--serve", kind]
        args += ["--data-dir", str(data_dir), "--port-file", str(port_file)]
        args += ["--upstream-port", str(upstream_port)]
        self.process = subprocess.Popen(args, cwd=_REPO)
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"the {kind} server did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text())

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- the station side (this process) ---------------------------------------------------------


async def latencies(connections: Sequence[ClientConnection], messages: int) -> list[float]:
    """Every connection sends ``messages`` Heartbeats, one at a time."""
    found: list[float] = []

    async def one(index: int, ws: ClientConnection) -> None:
        for r in range(messages):
            started = time.perf_counter()
            await ws.send(json.dumps([2, f"hb-{index}-{r}", "Heartbeat", {}]))
            reply = json.loads(await ws.recv())
            if reply[0] == 3:
                found.append(time.perf_counter() - started)

    await asyncio.gather(*(one(i, ws) for i, ws in enumerate(connections)))
    return found


async def one_round(
    kind: str, data_dir: Path, station_ids: Sequence[str], upstream_port: int, args: Any
) -> dict[str, Any]:
    server = Child(kind, data_dir, upstream_port)
    try:
        await asyncio.sleep(1.0)  # imports and the database settle
        rss_before = rss_kib(server.process.pid)
        with progress_bar() as progress:
            result = await storm(
                server.port, station_ids, args.in_flight, progress, f"{kind}: connect", None
            )
        await asyncio.sleep(args.settle)
        rss_idle = rss_kib(server.process.pid)
        found = await latencies(result.connections, args.messages)
        for ws in result.connections:
            ws.transport.abort()
        held = len(result.connections)
        return {
            "held": held,
            "failures": result.failures[:3],
            "kib_per_station": (rss_idle - rss_before) / held if held else None,
            "latency_ms": statistics.median(found) * 1000 if found else None,
            "answered": len(found),
        }
    finally:
        server.stop()


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def run(station_ids: Sequence[str], data_dir: Path, args: Any) -> dict[str, Any]:
    upstream = Child("upstream", data_dir)
    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    try:
        for _ in range(args.runs):
            for kind in KINDS:
                rounds[kind].append(
                    await one_round(kind, data_dir, station_ids, upstream.port, args)
                )
    finally:
        upstream.stop()
    section: dict[str, Any] = {"stations": len(station_ids), "runs": args.runs}
    for kind in KINDS:
        done = rounds[kind]
        section[kind] = {
            "held_min": min(r["held"] for r in done),
            "first_failures": [f for r in done for f in r["failures"]][:5],
            "kib_per_station": spread([r["kib_per_station"] or 0.0 for r in done]),
            "latency_ms": spread([r["latency_ms"] or 0.0 for r in done]),
        }
    direct, proxied = section["direct"], section["proxied"]
    for key in ("kib_per_station", "latency_ms"):
        section[f"{key}_ratio"] = proxied[key]["median"] / max(direct[key]["median"], 1e-9)
    section["added_kib_per_station"] = (
        proxied["kib_per_station"]["median"] - direct["kib_per_station"]["median"]
    )
    section["pass"] = all(section[k]["held_min"] == len(station_ids) for k in KINDS)
    return section


def print_table(console: Console, section: dict[str, Any]) -> None:
    table = Table(
        title=f"{section['stations']:,} stations, one server process, "
        f"{section['runs']} runs: median (min-max)"
    )
    for column in ("measurement", "direct", "proxied", "ratio"):
        table.add_column(column, justify="left" if column == "measurement" else "right")

    def cell(s: dict[str, float], fmt: str) -> str:
        return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"

    for name, key, fmt in (
        ("RSS per station (KiB)", "kib_per_station", ".1f"),
        ("Heartbeat latency (ms)", "latency_ms", ".2f"),
    ):
        table.add_row(
            name,
            cell(section["direct"][key], fmt),
            cell(section["proxied"][key], fmt),
            f"{section[f'{key}_ratio']:.2f}",
        )
    console.print(table)
    console.print(f"added by proxy mode: {section['added_kib_per_station']:.1f} KiB per station")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=DEFAULT_STATIONS)
    parser.add_argument("--runs", type=int, default=3, help="rounds of each kind")
    parser.add_argument("--messages", type=int, default=5, help="Heartbeats per station")
    parser.add_argument("--in-flight", type=int, default=128, help="concurrent handshakes")
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds before RSS")
    parser.add_argument("--serve", choices=[*KINDS, "upstream"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--upstream-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args.serve, args.data_dir, args.port_file, args.upstream_port))
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop = KeyboardInterrupt
    console = Console()
    limit = raise_fd_limit()
    if limit < 2 * args.stations + 100:
        console.print(f"[red]open-file limit {limit} is too low for {args.stations} stations[/]")
        return 2
    station_ids = [f"PROXY-{i:05d}" for i in range(args.stations)]
    with tempfile.TemporaryDirectory(prefix="cw-bench-proxy-") as tmp:
        data_dir = Path(tmp)
        console.print(f"registering {args.stations:,} stations …")
        asyncio.run(register_stations(data_dir, station_ids, 1))
        section = asyncio.run(run(station_ids, data_dir, args))
    print_table(console, section)
    for kind in KINDS:
        if section[kind]["first_failures"]:
            console.print(f"{kind} failures:", *section[kind]["first_failures"], sep="\n  ")
    write_results(RESULTS_DIR / "latest.json", {"ocpp_proxy": section})
    return 0 if section["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
