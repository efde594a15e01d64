"""CLI group: the management server."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, console
from chargeward.errors import ConfigError
from chargeward.server.runtime import ServerConfig, add_manufacturer_root, run_server

app = typer.Typer(no_args_is_help=False, invoke_without_command=True)


@app.callback()
def server(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    ocpp_port: Annotated[int, typer.Option(help="OCPP websocket port (0: any free).")] = 9000,
    http_port: Annotated[int, typer.Option(help="REST API and download port (0: any).")] = 8080,
    public_url: Annotated[
        str | None,
        typer.Option(help="Base URL stations use for downloads (default: http://HOST:HTTP_PORT)."),
    ] = None,
    manufacturer_root: Annotated[
        list[Path] | None,
        typer.Option(
            help="Trust this Manufacturer Root CA for uploaded releases (repeatable).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    heartbeat_interval: Annotated[int, typer.Option(min=10, max=86400)] = 300,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the CSMS: OCPP 2.0.1 at ws://HOST:OCPP_PORT/ocpp/{stationId}, REST at /api/v1."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for root in manufacturer_root or []:
        fingerprints = add_manufacturer_root(data_dir, root.read_bytes())
        console.print(f"trusting {len(fingerprints)} Manufacturer Root CA certificate(s)")
    if ":" not in host and host not in ("127.0.0.1", "localhost"):
        console.print(
            "[yellow]warning:[/] OCPP without TLS (security profile 1) exposes "
            "station passwords; use it only on a trusted lab network"
        )

    def ready(info: dict[str, object]) -> None:
        console.print(f"OCPP   {info['ocpp_url']}{{stationId}}")
        console.print(f"API    {info['api_url']}/api/v1   (token in {data_dir}/admin.token)")

    try:
        asyncio.run(
            run_server(
                ServerConfig(
                    data_dir=data_dir,
                    host=host,
                    ocpp_port=ocpp_port,
                    http_port=http_port,
                    public_url=public_url,
                    heartbeat_interval=heartbeat_interval,
                ),
                ready,
            )
        )
    except KeyboardInterrupt:
        console.print("server stopped")
    except OSError as e:
        raise ConfigError(str(e)) from e
