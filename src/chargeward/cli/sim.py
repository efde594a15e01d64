"""``chargeward sim run``: a simulated fleet of real agents against a real server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from chargeward.cli.common import console
from chargeward.sim.runner import SimOptions, run_scenario
from chargeward.sim.scenario import load_scenario

app = typer.Typer(no_args_is_help=True)


@app.command("run")
def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (TOML).")],
    server: Annotated[
        str | None, typer.Option(help="API URL of a running server (with --data-dir).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="That server's data directory.")] = None,
    start_server: Annotated[
        bool, typer.Option("--start-server", help="Start a server for this run.")
    ] = False,
    stations: Annotated[int | None, typer.Option(min=1, help="Scale the fleet to N.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the scenario's seed.")] = None,
    until_version: Annotated[
        str | None, typer.Option(help="Stop when every station runs this version.")
    ] = None,
    duration: Annotated[float | None, typer.Option(min=1, help="Stop after S seconds.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the summary here.")] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep keys, bundles, server log here.")
    ] = None,
    https: Annotated[
        bool,
        typer.Option("--https", help="The started server's HTTP listener on https with a lab CA."),
    ] = False,
) -> None:
    """Run SCENARIO: register the fleet, start the campaign, inject the faults, check."""
    opts = SimOptions(
        start_server=start_server or server is None,
        server_url=server,
        data_dir=data_dir,
        stations=stations,
        seed=seed,
        until_version=until_version,
        duration=duration,
        workdir=workdir,
        https=https,
    )
    summary = asyncio.run(run_scenario(load_scenario(scenario), opts, console))
    if json_out is not None:
        json_out.write_text(json.dumps(summary, indent=1, sort_keys=True))
    checks = summary.get("checks")
    if checks is not None and not checks["ok"]:
        raise typer.Exit(1)
