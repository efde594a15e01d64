"""CLI commands for station security, registered on the ``station`` group::

    $ chargeward station set-profile CP-1 --profile 3
    $ chargeward station rotate-password CP-1      # SetVariables BasicAuthPassword (A01)
    $ chargeward station renew-certificate CP-1    # TriggerMessage SignChargingStationCertificate
    $ chargeward station security CP-1

They go through the running server's API (the station must be connected for commands).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from chargeward.cli.apiclient import ApiClient
from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, ServerUrl, console
from chargeward.errors import ChargewardError

BASE = "/api/v1/stations/{}"


def _show(r: dict[str, object]) -> None:
    console.print(
        Text(
            f"{r['station_id']}: security profile {r['security_profile']}, certificate "
            f"{r['certificate_serial'] or '-'} (expires {r['certificate_expires_at'] or '-'}), "
            f"password rotation {'pending' if r['password_rotation_pending'] else 'none'}"
        ),
        soft_wrap=True,
    )


def security(
    station_id: str, data_dir: DataDir = DEFAULT_DATA_DIR, server: ServerUrl = None
) -> None:
    """Show a station's security profile, certificate and password rotation state."""
    _show(ApiClient(data_dir, server).request("GET", BASE.format(station_id) + "/security"))


def set_profile(
    station_id: str,
    profile: Annotated[int, typer.Option("--profile", min=1, max=3, help="1 (lab), 2 or 3.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Set the OCPP security profile a station must connect with (audited)."""
    r = ApiClient(data_dir, server).request(
        "PUT", BASE.format(station_id) + "/security-profile", json={"security_profile": profile}
    )
    _show(r)


def rotate_password(
    station_id: str, data_dir: DataDir = DEFAULT_DATA_DIR, server: ServerUrl = None
) -> None:
    """Give a connected station a new BasicAuthPassword (never shown; audited)."""
    r = ApiClient(data_dir, server).request("POST", BASE.format(station_id) + "/password-rotation")
    if r["station_response"] != "Accepted":
        raise ChargewardError(
            f"station {station_id} answered {r['station_response']}: it keeps its password"
        )
    console.print(f"{station_id}: BasicAuthPassword rotated (transaction {r['transaction_id']})")


def renew_certificate(
    station_id: str, data_dir: DataDir = DEFAULT_DATA_DIR, server: ServerUrl = None
) -> None:
    """Ask a connected station to renew its certificate (OCPP A02)."""
    r = ApiClient(data_dir, server).request(
        "POST", BASE.format(station_id) + "/certificate-renewal"
    )
    if r["station_response"] != "Accepted":
        raise ChargewardError(f"station {station_id} answered {r['station_response']}")
    console.print(f"{station_id}: certificate renewal started (SignCertificate follows)")


def register(app: typer.Typer) -> None:
    """Add these commands to the ``station`` group."""
    app.command("security")(security)
    app.command("set-profile")(set_profile)
    app.command("rotate-password")(rotate_password)
    app.command("renew-certificate")(renew_certificate)
