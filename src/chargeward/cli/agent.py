"""CLI group: the reference charger agent."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from chargeward.agent.agent import Agent
from chargeward.agent.config import AgentConfig
from chargeward.agent.location import LocationPolicy
from chargeward.agent.provision import factory_reset, provision
from chargeward.agent.state import Identity, StateDir
from chargeward.cli.common import console

app = typer.Typer(no_args_is_help=True)

StateDirOpt = Annotated[
    Path, typer.Option("--state-dir", help="The charger's flash.", file_okay=False)
]
PASSWORD_ENV = "CHARGEWARD_STATION_PASSWORD"  # noqa: S105 (a variable name)
REPOSITORY_ENV = "CHARGEWARD_REPOSITORY_URL"


@app.command("init")
def init(
    state_dir: StateDirOpt,
    station_id: Annotated[str, typer.Option(help="Station identity (= OCPP username).")],
    model: Annotated[str, typer.Option(help="Hardware model.")],
    root: Annotated[
        Path,
        typer.Option(help="Manufacturer Root CA certificate(s), PEM.", exists=True, dir_okay=False),
    ],
    factory_bundle: Annotated[
        Path,
        typer.Option(help="Release bundle for the factory image.", exists=True, dir_okay=False),
    ],
    vendor: Annotated[str, typer.Option()] = "Chargeward",
    serial_number: Annotated[str | None, typer.Option(help="Default: the station id.")] = None,
    tuf_root: Annotated[
        Path | None,
        typer.Option(
            help="The TUF repository's root.json: every update must then be listed by it.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    customer: Annotated[
        str | None, typer.Option(help="Customer id: installs only images for this customer.")
    ] = None,
) -> None:
    """Provision a charger state directory (factory step).

    The BasicAuthPassword comes from $CHARGEWARD_STATION_PASSWORD or a prompt.
    """
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        password = typer.prompt("BasicAuthPassword", hide_input=True)
    try:
        info = provision(
            state_dir,
            identity=Identity(
                station_id, model, vendor, serial_number or station_id[:25], customer=customer
            ),
            password=password,
            roots_pem=root.read_bytes(),
            factory_bundle=factory_bundle,
            tuf_root=tuf_root.read_bytes() if tuf_root else None,
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    console.print(
        f"provisioned {station_id}: firmware {info.version} in slot a, "
        f"rollback floor {info.security_version}"
        + (", TUF repository checks on" if tuf_root else "")
    )


@app.command("factory-reset")
def factory_reset_(
    state_dir: StateDirOpt,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Restore the charger's own factory credentials and erase operator data.

    Firmware slots, the rollback and time floors and the trust anchors stay: a reset never
    re-opens a rollback, and never sets a shared default password.
    """
    if not yes:
        typer.confirm(f"Factory-reset the charger in {state_dir}?", abort=True)
    ident = factory_reset(state_dir)
    console.print(
        f"factory reset of {ident.station_id}: factory credentials restored; "
        "firmware, rollback floor and trust anchors kept"
    )


def location_policy(allowed: list[str], *, allow_private: bool, https_only: bool) -> LocationPolicy:
    """The agent's location policy from ``--allow-location`` values (CIDR or host names)."""
    networks, hosts = [], []
    for entry in allowed:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            hosts.append(entry)
        else:
            networks.append(entry)
    return LocationPolicy(
        allow_hosts=tuple(hosts),
        allow_networks=tuple(networks),
        allow_private=allow_private,
        https_only=https_only,
    )


@app.command("run")
def run(
    state_dir: StateDirOpt,
    csms: Annotated[str, typer.Option(help="CSMS URL, e.g. ws://127.0.0.1:9000/ocpp/")],
    connectors: Annotated[int, typer.Option(min=1, max=16)] = 1,
    reconnect_delay: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds before connecting again (doubled per failed attempt; the CSMS may "
            "change it: OCPPCommCtrlr.RetryBackOffWaitMinimum).",
        ),
    ] = 5.0,
    reboot_delay: Annotated[
        float,
        typer.Option(min=0.0, help="Seconds a (simulated) reboot takes before reconnecting."),
    ] = 20.0,
    repository: Annotated[
        str | None,
        typer.Option(
            envvar=REPOSITORY_ENV,
            help="TUF repository base URL, e.g. http://127.0.0.1:8080/tuf/ (required when "
            "the charger was provisioned with --tuf-root).",
        ),
    ] = None,
    update_check_interval: Annotated[
        float, typer.Option(min=1.0, help="Seconds between checks for security releases.")
    ] = 86400.0,
    download_rate_limit: Annotated[
        int | None,
        typer.Option(min=1024, help="Cap firmware downloads at this many bytes per second."),
    ] = None,
    local_cache_listen: Annotated[
        str | None,
        typer.Option(
            help="Act as the site's Local Controller: serve published firmware (OCPP "
            "PublishFirmware) on host:port, e.g. 0.0.0.0:8081."
        ),
    ] = None,
    local_cache_url: Annotated[
        str | None,
        typer.Option(help="The base URL the site's chargers reach that server at."),
    ] = None,
    allow_location: Annotated[
        list[str] | None,
        typer.Option(
            help="Allow downloads and log uploads only from this host name (*.example.com "
            "for its subdomains) or network (CIDR); repeat for more.  Allowing 127.0.0.0/8 "
            "is a lab setting.",
        ),
    ] = None,
    allow_private_locations: Annotated[
        bool,
        typer.Option(help="Allow private-network (RFC 1918, ULA) download and upload URLs."),
    ] = False,
    https_only_locations: Annotated[
        bool, typer.Option(help="Refuse http:// download and upload URLs.")
    ] = False,
    lab_allow_unendorsed_roots: Annotated[
        bool,
        typer.Option(
            "--lab-allow-unendorsed-manufacturer-roots",
            help="LAB ONLY: accept ManufacturerRootCertificates that no installed root "
            "endorses (any CSMS could then replace the firmware trust anchor).",
        ),
    ] = False,
    ocpp: Annotated[
        str,
        typer.Option(
            "--ocpp",
            help="The OCPP version to speak: 2.0.1, or 1.6 (OCPP 1.6J with the Security "
            "Whitepaper unless --legacy-firmware-update).",
        ),
    ] = "2.0.1",
    legacy_firmware_update: Annotated[
        bool,
        typer.Option(
            help="With --ocpp 1.6: a station without the Security Whitepaper (plain "
            "UpdateFirmware); the image's signature is still checked before it is installed.",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option()] = "info",
) -> None:
    """Run the charger: connect, boot, and install firmware updates as the CSMS asks."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry signed URLs
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    agent = Agent(
        AgentConfig(
            state_dir=state_dir,
            csms_url=csms,
            connectors=connectors,
            reconnect_delay=reconnect_delay,
            reboot_delay=reboot_delay,
            repository_url=repository,
            update_check_interval=update_check_interval,
            download_rate_limit=download_rate_limit,
            local_cache_listen=local_cache_listen,
            local_cache_url=local_cache_url,
            location_policy=location_policy(
                allow_location or [],
                allow_private=allow_private_locations,
                https_only=https_only_locations,
            ),
            allow_unendorsed_manufacturer_roots=lab_allow_unendorsed_roots,
            ocpp_version=ocpp,
            legacy_firmware_update=legacy_firmware_update,
        )
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        await agent.run()

    asyncio.run(main())  # a charger whose software fails secure boot stays in quarantine


@app.command("status")
def status(state_dir: StateDirOpt) -> None:
    """Show the charger's slots, boot control, rollback and time floors and last install."""
    st = StateDir(state_dir)
    ident = st.identity()
    bc = st.boot_control()
    console.print(
        f"station {ident.station_id} ({ident.model}), active slot {bc.active}"
        f"{' (trial)' if bc.trial else ''}, rollback floor {st.rollback_floor()}"
    )
    for slot in ("a", "b"):
        info = st.slot_info(slot)
        console.print(
            f"  slot {slot}: "
            + (
                f"{info.version} (security {info.security_version}, sha256 {info.sha256[:12]}"
                + "".join(f"; {c.component} {c.sha256[:12]}" for c in info.components)
                + ")"
                if info
                else "empty"
            )
        )
    if st.tuf_bootstrap_root() is not None:
        floor = st.time_floor()
        console.print(
            "TUF repository checks: on"
            + (f", customer {ident.customer}" if ident.customer else "")
            + (f", time floor {floor:%Y-%m-%dT%H:%M:%SZ}" if floor else "")
        )
    notice = st.owner_notice()
    if notice:
        console.print(f"[bold red]{notice}[/]")
    inst = st.install_state()
    if inst:
        console.print(f"last install: request {inst.request_id}, {inst.version}, {inst.phase}")
