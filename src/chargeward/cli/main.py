"""Entry point: ``chargeward`` and its command groups.

Errors raised on purpose (:class:`~chargeward.errors.ChargewardError`) are printed as one
line and mapped to an exit code; nothing else in the project exits the process.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from chargeward import __version__
from chargeward.cli import (
    agent,
    audit,
    campaign,
    evidence,
    factory,
    fleet,
    keys,
    pki,
    provenance,
    release,
    repo,
    revocation,
    server,
    sim,
    station,
    station_security,
    supply,
    token,
    users,
    vendor,
)
from chargeward.cli.common import err_console
from chargeward.errors import (
    BundleError,
    ChargewardError,
    ConfigError,
    Conflict,
    InvalidValue,
    KeyAccessError,
    MisuseError,
    NotFound,
    SupplyChainError,
    TransportError,
    TrustError,
)

app = typer.Typer(
    name="chargeward",
    help="Chargeward: signed firmware releases delivered to EV chargers over OCPP 2.0.1.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(keys.app, name="keys", help="Generate and inspect private keys (by URI).")
app.add_typer(pki.app, name="pki", help="Manufacturer Root CA and firmware-signing certificates.")
revocation.register(pki.app)  # revoke, crl, show-crl
app.add_typer(release.app, name="release", help="Build, verify and upload release bundles.")
app.add_typer(vendor.app, name="vendor-root", help="Vendor roots for vendors' own firmware.")
app.add_typer(repo.app, name="repo", help="The TUF image repository: ceremonies and health.")
app.add_typer(server.app, name="server", help="Run the management server (CSMS).")
app.add_typer(station.app, name="station", help="Register and inspect charging stations.")
station_security.register(station.app)
app.add_typer(token.app, name="token", help="API tokens for operators and approvers.")
app.add_typer(agent.app, name="agent", help="Run the reference charger agent.")
users.register(app)  # user, login, logout
app.add_typer(factory.app, name="factory", help="Provision chargers at the factory.")
fleet.register(app)
campaign.register(app)
app.add_typer(audit.app, name="audit", help="Export the audit log and verify it offline.")
app.add_typer(
    provenance.app,
    name="provenance",
    help="Create and verify signed build provenance (SLSA v1 in a DSSE envelope).",
)
app.add_typer(
    supply.app,
    name="supply",
    help="Component lists, CycloneDX SBOMs and the offline vulnerability gate.",
)
app.add_typer(sim.app, name="sim", help="Simulate a fleet of real agents with faults.")
app.add_typer(evidence.app, name="evidence", help="Evidence packs for regulators and auditors.")


@app.command("version")
def version() -> None:
    """Print the Chargeward version."""
    typer.echo(__version__)


# Exit codes: 1 other error, 2 usage (click), 3 refused on trust grounds, 4 not found,
# 5 transport, 6 bad input, 7 conflict.
EXIT_CODES: list[tuple[type[ChargewardError], int]] = [
    (TrustError, 3),
    (NotFound, 4),
    (TransportError, 5),
    (BundleError, 6),
    (ConfigError, 6),
    (SupplyChainError, 6),
    (KeyAccessError, 6),
    (InvalidValue, 6),
    (Conflict, 7),
]


def exit_code_for(error: ChargewardError) -> int:
    for kind, code in EXIT_CODES:
        if isinstance(error, kind):
            return code
    return 1


def run() -> None:
    try:
        app()
    except MisuseError:  # a bug: the traceback is what a report needs
        raise
    except ChargewardError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(exit_code_for(e))
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


@app.command("demo")
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo keeps its files.")] = Path(
        "demo-data"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="A smaller fleet and smaller images (for CI).")
    ] = False,
    stations: Annotated[
        int | None, typer.Option(min=6, max=2000, help="Chargers in the fleet.")
    ] = None,
    keep_running: Annotated[
        bool,
        typer.Option("--keep-running", help="Keep the server and chargers up for a look around."),
    ] = False,
) -> None:
    """Run the end-to-end demo: releases signed, gated and approved, a staged campaign over
    simulated chargers on four sites (one of OCPP 1.6J chargers), a bad release stopped at
    its canary."""
    from chargeward.demo import run_demo

    if not run_demo(workdir, quick=quick, stations=stations, keep_running=keep_running):
        raise typer.Exit(1)
