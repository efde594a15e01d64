"""CLI commands for station security, registered on the ``station`` group::

    $ chargeward station set-profile CP-1 --profile 3
    $ chargeward station rotate-password CP-1      # SetVariables BasicAuthPassword (A01)
    $ chargeward station renew-certificate CP-1    # TriggerMessage SignChargingStationCertificate
    $ chargeward station security CP-1
    $ chargeward station register-certificate CP-1 cp-1.pem  # its only accepted certificate
    $ chargeward station revoke-certificate CP-1 --reason keyCompromise
    $ chargeward station crl --out charger-ca.crl            # the charger CA's CRL (DER)

They go through the running server's API (the station must be connected for commands).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from chargeward.cli.apiclient import ApiClient
from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, ServerUrl, console
from chargeward.errors import ChargewardError, ConfigError
from chargeward.fileio import replace_file

BASE = "/api/v1/stations/{}"


def _show(r: dict[str, object]) -> None:
    console.print(
        Text(
            f"{r['station_id']}: security profile {r['security_profile']}, certificate "
            f"{r['certificate_serial'] or '-'} (expires {r['certificate_expires_at'] or '-'})"
            + (
                f", renewal {r['pending_certificate_serial']} pending"
                if r.get("pending_certificate_serial")
                else ""
            )
            + ", "
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


REASONS = (
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "cessationOfOperation",
    "privilegeWithdrawn",
)


def register_certificate(
    station_id: str,
    certificate: Annotated[Path, typer.Argument(help="The station certificate, PEM.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Make a certificate from the charger CA the station's only accepted one (audited); the
    previous one is retired."""
    try:
        pem = certificate.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {certificate}: {getattr(e, 'strerror', None) or e}") from e
    r = ApiClient(data_dir, server).request(
        "PUT", BASE.format(station_id) + "/certificate", json={"certificate_pem": pem}
    )
    _show(r)


def revoke_certificate(
    station_id: str,
    reason: Annotated[
        str, typer.Option(help="RFC 5280 reason: " + ", ".join(REASONS) + ".")
    ] = "unspecified",
    serial: Annotated[
        str | None, typer.Option(help="Hex serial (default: the current certificate).")
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Revoke a station's certificate: it never logs in again and the CRL lists it (audited)."""
    if reason not in REASONS:
        raise typer.BadParameter(f"unknown reason {reason!r}; use one of {', '.join(REASONS)}")
    body = {"reason": reason, "serial": serial}
    r = ApiClient(data_dir, server).request(
        "POST", BASE.format(station_id) + "/certificate-revocations", json=body
    )
    closed = "; its session was ended" if r["session_closed"] else ""
    console.print(
        Text(f"{station_id}: certificate {r['serial']} revoked ({r['reason']}){closed}"),
        soft_wrap=True,
    )


def crl(
    out: Annotated[Path, typer.Option("--out", help="Where to write the CRL.")],
    pem: Annotated[bool, typer.Option("--pem", help="PEM instead of DER.")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Export the charger CA's CRL (revoked and retired station certificates), signed by the
    charger CA key, e.g. for a TLS proxy in front of the OCPP listener."""
    text = ApiClient(data_dir, server).text("GET", "/api/v1/charger-ca/crl?format=pem")
    body = "".join(line for line in text.splitlines() if line and not line.startswith("-----"))
    der = base64.b64decode(body)
    try:
        replace_file(out, text.encode() if pem else der)
    except OSError as e:
        raise ConfigError(f"cannot write {out}: {e.strerror}") from e
    console.print(f"charger CA CRL written to {out} ({'PEM' if pem else 'DER'}, {len(der)} bytes)")


def register(app: typer.Typer) -> None:
    """Add these commands to the ``station`` group."""
    app.command("security")(security)
    app.command("set-profile")(set_profile)
    app.command("rotate-password")(rotate_password)
    app.command("renew-certificate")(renew_certificate)
    app.command("register-certificate")(register_certificate)
    app.command("revoke-certificate")(revoke_certificate)
    app.command("crl")(crl)
