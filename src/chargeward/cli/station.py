"""CLI group: charging stations."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated

import typer
from rich.table import Table

from chargeward.cli.apiclient import ApiClient
from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, actor, console
from chargeward.server import services
from chargeward.server.db import Database
from chargeward.server.schemas import StationDetail, StationSummary

app = typer.Typer(no_args_is_help=True)


@app.command("add")
def add(
    station_id: str,
    model: Annotated[
        str | None, typer.Option(help="Hardware model (as in BootNotification).")
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Register a station and print its generated BasicAuthPassword (shown only once)."""

    async def go() -> str:
        db = await Database.open(data_dir=data_dir)
        try:
            async with db.session() as s:
                return await services.register_station(
                    s, station_id, model=model, actor=actor(), now=dt.datetime.now(dt.UTC)
                )
        finally:
            await db.close()

    try:
        password = asyncio.run(go())
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    console.print(f"registered [bold]{station_id}[/]")
    console.print(f"BasicAuthPassword: [bold]{password}[/]  (shown once; stored hashed)")


def _table(rows: list[StationSummary]) -> Table:
    t = Table("station", "model", "firmware", "connected", "last seen", "last boot")
    for r in rows:
        t.add_row(
            r.id,
            r.model or "-",
            r.firmware_version or "-",
            "yes" if r.connected else "no",
            r.last_seen.isoformat(timespec="seconds") if r.last_seen else "-",
            r.last_boot_reason or "-",
        )
    return t


@app.command("list")
def list_(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """List stations with their reported firmware."""

    async def go() -> list[StationSummary]:
        db = await Database.open(data_dir=data_dir)
        try:
            async with db.session() as s:
                return await services.list_stations(s)
        finally:
            await db.close()

    console.print(_table(asyncio.run(go())))


@app.command("show")
def show(
    station_id: str,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a station: firmware, boots, firmware statuses, security events, updates."""

    async def go() -> StationDetail:
        db = await Database.open(data_dir=data_dir)
        try:
            async with db.session() as s:
                return await services.station_detail(s, station_id)
        finally:
            await db.close()

    d = asyncio.run(go())
    if json_out:
        console.print_json(d.model_dump_json())
        return
    console.print(_table([d]))
    console.print(f"connectors: {d.connector_status or '-'}")
    t = Table("received", "firmware status", "request", "transaction", title="Firmware statuses")
    for e in d.firmware_statuses:
        t.add_row(
            e.received_at.isoformat(timespec="seconds"),
            e.status,
            str(e.request_id),
            (e.transaction_id or "-")[:8],
        )
    console.print(t)
    t = Table("time", "security event", "details", title="Security events")
    for se in d.security_events:
        t.add_row(se.timestamp.isoformat(timespec="seconds"), se.type, se.tech_info or "")
    console.print(t)
    t = Table("request", "version", "response", "last status", "outcome", title="Updates")
    for u in d.updates:
        t.add_row(
            str(u.request_id), u.version, u.response_status or "-", u.last_status or "-", u.outcome
        )
    console.print(t)


@app.command("update")
def update(
    station_id: str,
    release: Annotated[str, typer.Option(help="Release id (or a unique prefix).")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: Annotated[str | None, typer.Option(help="Server URL (default: from data dir).")] = None,
    retries: Annotated[int, typer.Option(min=0, max=100)] = 3,
    retry_interval: Annotated[int, typer.Option(min=0, max=86400)] = 30,
) -> None:
    """Send UpdateFirmware for a release to one connected station."""
    body = {"release_id": release, "retries": retries, "retry_interval": retry_interval}
    r = ApiClient(data_dir, server).request(
        "POST", f"/api/v1/stations/{station_id}/firmware-updates", json=body
    )
    console.print(
        f"station answered [bold]{r['station_response']}[/]; request {r['request_id']}, "
        f"transaction {r['transaction_id']}"
    )
