"""CLI group: charging stations.

Certificate management goes through the running server (OCPP M03-M05)::

    $ chargeward station install-root CP-1 --cert endorsed-root.pem   # pki link-root
    $ chargeward station certificates CP-1
    $ chargeward station delete-root CP-1 --cert old-root.pem
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509
from rich.table import Table
from rich.text import Text

from chargeward.cli.apiclient import ApiClient
from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, ServerUrl, actor, console
from chargeward.crypto.pki import (
    certificate_common_name,
    certificate_hash_data,
    certificate_pem,
    load_certificate,
    load_certificate_file,
    load_certificates_file,
)
from chargeward.crypto.tls import check_client_leaf
from chargeward.errors import ChargewardError, ConfigError, UntrustedCertificate
from chargeward.server.common.schemas import StationDetail, StationSummary
from chargeward.server.fleet import station_registry
from chargeward.server.stations import station_reports
from chargeward.server.stations.station_certificates import register_certificate
from chargeward.server.stations.station_security import set_profile
from chargeward.server.store.db import Database

app = typer.Typer(no_args_is_help=True)


@app.command("add")
def add(
    station_id: str,
    model: Annotated[
        str | None, typer.Option(help="Hardware model (as in BootNotification).")
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    security_profile: Annotated[
        int, typer.Option(min=1, max=3, help="OCPP security profile (1 lab, 2 TLS, 3 mTLS).")
    ] = 2,
    certificate: Annotated[
        Path | None,
        typer.Option(help="Its station certificate (PEM), the only one it may log in with."),
    ] = None,
) -> None:
    """Register a station and print its generated BasicAuthPassword (shown only once)."""
    cert = station_certificate_file(certificate, station_id) if certificate else None

    async def go() -> str:
        db = await Database.open(data_dir=data_dir)
        try:
            async with db.session() as s:
                now = dt.datetime.now(dt.UTC)
                password = await station_registry.register_station(
                    s, station_id, model=model, actor=actor(), now=now
                )
                await s.flush()
                if cert is not None:
                    await register_certificate(s, station_id, cert, actor=actor(), now=now)
                if security_profile != 2:
                    await set_profile(s, station_id, security_profile, actor=actor(), now=now)
                return password
        finally:
            await db.close()

    try:
        password = asyncio.run(go())
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    console.print(f"registered [bold]{station_id}[/]")
    console.print(f"BasicAuthPassword: [bold]{password}[/]  (shown once; stored hashed)")


def station_certificate_file(path: Path, station_id: str) -> x509.Certificate:
    """A station certificate file for ``station_id``: a client leaf with its CN (whether the
    charger CA issued it, the listener checks at every login)."""
    try:
        cert = load_certificate(path.read_bytes())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    check_client_leaf(cert)
    if certificate_common_name(cert) != station_id:
        raise UntrustedCertificate(f"{path}: certificate CN is not {station_id}")
    return cert


def _firmware(r: StationSummary) -> str:
    shown = r.firmware_version or "-"
    want = r.expected_firmware.get("main")
    return f"{shown} (expected {want})" if want and want != r.firmware_version else shown


def _table(rows: list[StationSummary]) -> Table:
    t = Table(
        "station", "model", "site", "tags", "firmware", "connected", "last seen", "last boot",
        "alerts",
    )  # fmt: skip
    for r in rows:
        t.add_row(
            r.id,
            r.model or "-",
            r.site_id or "-",
            ",".join(r.tags) or "-",
            _firmware(r),
            "yes" if r.connected else "no",
            r.last_seen.isoformat(timespec="seconds") if r.last_seen else "-",
            r.last_boot_reason or "-",
            str(r.open_alerts) if r.open_alerts else "-",
        )
    return t


@app.command("list")
def list_(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    site: Annotated[str | None, typer.Option(help="Only stations at this site.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this hardware model.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only stations with this tag.")] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer's stations.")] = None,
    firmware: Annotated[
        str | None, typer.Option(help="Only stations reporting this version.")
    ] = None,
    connected: Annotated[
        bool | None, typer.Option("--connected/--disconnected", help="By connection state.")
    ] = None,
) -> None:
    """List stations with their reported firmware, optionally filtered."""
    from chargeward.server.fleet.fleet import StationFilter

    filters = StationFilter(model, site, customer, tag, connected, firmware)

    async def go() -> list[StationSummary]:
        db = await Database.open(data_dir=data_dir)
        try:
            async with db.session() as s:
                return await station_reports.list_stations(s, filters)
        finally:
            await db.close()

    rows = asyncio.run(go())
    if not rows:
        console.print("no stations match")
        return
    console.print(_table(rows))


UPSTREAM_PASSWORD_ENV = "CHARGEWARD_UPSTREAM_PASSWORD"  # noqa: S105 (a variable's name)
INHERIT = "default"  # a proxy setting cleared: the site's, else the server's
UpstreamUrlOpt = Annotated[
    str | None,
    typer.Option(
        help="Proxy mode: the upstream CSMS for it, ws[s]://.../{stationId}, or 'default' "
        "(the site's, else the server's --upstream).",
    ),
]
UpstreamPolicyOpt = Annotated[
    str | None,
    typer.Option(
        help="Proxy mode: the upstream's firmware commands: relay, refuse, approved-only, or "
        "'default'.",
    ),
]


def upstream_fields(url: str | None, policy: str | None) -> dict[str, str | None]:
    """PATCH fields of the proxy settings given (``default`` clears one)."""
    body: dict[str, str | None] = {}
    if url is not None:
        body["upstream_url"] = None if url == INHERIT else url
    if policy is not None:
        body["upstream_firmware_policy"] = None if policy == INHERIT else policy
    return body


@app.command("set-upstream-credentials")
def set_upstream_credentials(
    station_id: str,
    username: Annotated[
        str | None, typer.Option(help="User on the upstream leg (default: the station id).")
    ] = None,
    forget: Annotated[bool, typer.Option("--forget", help="Remove them.")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Proxy mode (--upstream-credentials stored): the station's upstream password, from
    $CHARGEWARD_UPSTREAM_PASSWORD or a prompt; stored sealed, never shown again."""
    password: str | None = None
    if not forget:
        password = os.environ.get(UPSTREAM_PASSWORD_ENV)
        if not password:
            if not sys.stdin.isatty():
                raise ConfigError(f"no password: set {UPSTREAM_PASSWORD_ENV}")
            password = typer.prompt("Upstream password", hide_input=True)
    body = {"username": username or station_id, "password": password}
    ApiClient(data_dir, server).request(
        "PUT", f"/api/v1/stations/{station_id}/upstream-credentials", json=body
    )
    console.print(f"{station_id}: upstream credentials {'removed' if forget else 'stored'}")


@app.command("set")
def set_(
    station_id: str,
    site: Annotated[str | None, typer.Option(help="Site id (see 'chargeward site list').")] = None,
    no_site: Annotated[bool, typer.Option("--no-site", help="Remove it from its site.")] = False,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Tag (repeatable; replaces all tags).")
    ] = None,
    no_tags: Annotated[bool, typer.Option("--no-tags", help="Remove every tag.")] = False,
    hw_revision: Annotated[str | None, typer.Option(help="Hardware revision.")] = None,
    manufactured: Annotated[
        dt.datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Date of manufacture (support periods)."),
    ] = None,
    expected: Annotated[
        list[str] | None,
        typer.Option(help="Expected firmware COMPONENT=VERSION, e.g. main=1.2.0 (repeatable)."),
    ] = None,
    upstream_url: UpstreamUrlOpt = None,
    upstream_firmware_policy: UpstreamPolicyOpt = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Change a station's registry record (audited)."""
    body: dict[str, Any] = {}
    if site is not None or no_site:
        body["site_id"] = None if no_site else site
    if tag is not None or no_tags:
        body["tags"] = [] if no_tags else tag
    if hw_revision is not None:
        body["hardware_revision"] = hw_revision
    if manufactured is not None:
        body["manufactured_on"] = manufactured.date().isoformat()
    if expected:
        pairs = [e.partition("=") for e in expected]
        if any(not c or not sep or not v for c, sep, v in pairs):
            raise typer.BadParameter("--expected takes COMPONENT=VERSION, e.g. main=1.2.0")
        body["expected_firmware"] = {c: v for c, _, v in pairs}
    body.update(upstream_fields(upstream_url, upstream_firmware_policy))
    if not body:
        raise typer.BadParameter("nothing to change: give --site, --tag, --manufactured, ...")
    r = ApiClient(data_dir, server).request("PATCH", f"/api/v1/stations/{station_id}", json=body)
    console.print(_table([StationSummary.model_validate(r)]))


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
                return await station_reports.station_detail(s, station_id)
        finally:
            await db.close()

    d = asyncio.run(go())
    if json_out:
        console.print_json(d.model_dump_json())
        return
    console.print(_table([d]))
    console.print(f"connectors: {d.connector_status or '-'}")
    registry = {
        "serial": d.serial_number,
        "hardware revision": d.hardware_revision,
        "customer": d.customer,
        "manufactured": d.manufactured_on and d.manufactured_on.isoformat(),
        "reported firmware": ", ".join(f"{c}={v}" for c, v in d.reported_firmware.items()),
        "expected firmware": ", ".join(f"{c}={v}" for c, v in d.expected_firmware.items()),
        "security profile": d.security_profile,
        "certificate expires": d.certificate_expires_at and d.certificate_expires_at.isoformat(),
    }
    for name, value in registry.items():
        console.print(Text(f"{name}: {value or '-'}"), soft_wrap=True)
    if d.support is not None:
        s = d.support
        console.print(
            Text(
                f"support: feature {s.feature_state} ({s.feature_support_end or 'unknown'}), "
                f"security {s.security_state} ({s.security_support_end or 'unknown'})"
            )
        )
    for a in d.alerts:
        console.print(Text(f"alert {a.id} [{a.severity}, {a.state}]: {a.message}"), soft_wrap=True)
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
    server: ServerUrl = None,
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


def import_registration(
    registration: Path, data_dir: Path, server: str | None, token: str | None = None
) -> None:
    """Send a factory registration file to the server (POST /api/v1/stations/import)."""
    from chargeward.factory.provisioning import read_registration

    body = {"stations": read_registration(registration)}
    r = ApiClient(data_dir, server, token).request("POST", "/api/v1/stations/import", json=body)
    console.print(f"imported {r['imported']} stations from {registration}")


@app.command("import")
def import_(
    registration: Annotated[
        Path, typer.Argument(help="registration.json from 'chargeward factory provision'.")
    ],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Register stations provisioned at the factory (password hashes and public data only)."""
    import_registration(registration, data_dir, server)


CertFile = Annotated[
    Path, typer.Option("--cert", help="Manufacturer Root CA certificate (PEM).", dir_okay=False)
]
CERTIFICATES = "/api/v1/stations/{}/certificates"


def _answered(station_id: str, what: str, r: dict[str, Any]) -> None:
    """Print the station's answer; anything but Accepted is an error (exit code 1)."""
    reason = f" ({r['reason_code']}: {r.get('additional_info') or ''})" if r["reason_code"] else ""
    if r["station_response"] != "Accepted":
        raise ChargewardError(
            f"station {station_id} answered {r['station_response']} to {what}{reason}; "
            f"transaction {r['transaction_id']}"
        )
    console.print(
        Text(f"station {station_id} accepted {what}; transaction {r['transaction_id']}"),
        soft_wrap=True,
    )


@app.command("install-root")
def install_root(
    station_id: str,
    cert: CertFile,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Install a ManufacturerRootCertificate on a connected station (InstallCertificate).

    The server must trust the root already (chargeward server --manufacturer-root).  --cert is
    the bundle ``chargeward pki link-root`` writes: the new root, then the link certificate
    by which a root the station holds endorses it (docs/adr/0018).
    """
    bundle = load_certificates_file(cert)
    certificate = bundle[0]
    body = {
        "certificate_type": "ManufacturerRootCertificate",
        "certificate_pem": "".join(certificate_pem(c) for c in bundle),
    }
    r = ApiClient(data_dir, server).request("POST", CERTIFICATES.format(station_id), json=body)
    _answered(station_id, f"InstallCertificate of {certificate.subject.rfc4514_string()}", r)


@app.command("certificates")
def certificates(
    station_id: str,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the certificates a connected station holds (GetInstalledCertificateIds)."""
    r = ApiClient(data_dir, server).request("GET", CERTIFICATES.format(station_id))
    if json_out:
        console.print_json(data=r)
        return
    for c in r["certificates"]:  # one line each: serials stay whole and greppable
        line = (
            f"{c['certificate_type']}  serial {c['serial_number']}  "
            f"issuer name {c['issuer_name_hash'][:16]}  issuer key {c['issuer_key_hash'][:16]}"
            f"  ({c['hash_algorithm']})"
        )
        console.print(Text(line), soft_wrap=True)
    if r["station_response"] != "Accepted":
        console.print(f"station {station_id} answered {r['station_response']}: none installed")


@app.command("delete-root")
def delete_root(
    station_id: str,
    cert: CertFile,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Delete a ManufacturerRootCertificate from a connected station (DeleteCertificate)."""
    certificate = load_certificate_file(cert)
    hash_data = certificate_hash_data(certificate)
    r = ApiClient(data_dir, server).request(
        "DELETE", CERTIFICATES.format(station_id), params=vars(hash_data)
    )
    _answered(station_id, f"DeleteCertificate of {certificate.subject.rfc4514_string()}", r)


LOGS = "/api/v1/stations/{}/logs"
LOG_TYPES = ("SecurityLog", "DiagnosticsLog")
LOG_FAILED = frozenset(
    {"BadMessage", "NotSupportedOperation", "PermissionDenied", "UploadFailure", "AcceptedCanceled"}
)


@app.command("get-log")
def get_log(
    station_id: str,
    log_type: Annotated[
        str, typer.Option("--type", help="SecurityLog or DiagnosticsLog.")
    ] = "SecurityLog",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write the log to this new file (default: stdout).", dir_okay=False
        ),
    ] = None,
    oldest: Annotated[
        str | None, typer.Option(help="Only entries from this time on (ISO 8601 with offset).")
    ] = None,
    latest: Annotated[
        str | None, typer.Option(help="Only entries up to this time (ISO 8601 with offset).")
    ] = None,
    timeout: Annotated[float, typer.Option(min=1.0, help="Seconds to wait for the upload.")] = 120,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Fetch a connected station's security or diagnostics log (OCPP GetLog)."""
    import sys
    import time

    import httpx

    from chargeward.cli.common import err_console
    from chargeward.errors import TransportError
    from chargeward.fileio import write_new_file

    if log_type not in LOG_TYPES:
        raise typer.BadParameter(f"--type must be one of {', '.join(LOG_TYPES)}")
    if out is not None and out.exists():
        raise typer.BadParameter(f"{out} exists; refusing to overwrite it")
    api = ApiClient(data_dir, server)
    path = LOGS.format(station_id)
    body = {"log_type": log_type, "oldest": oldest, "latest": latest}
    r = api.request("POST", path, json={k: v for k, v in body.items() if v is not None})
    if r["station_response"] not in ("Accepted", "AcceptedCanceled"):
        raise ChargewardError(
            f"station {station_id} answered {r['station_response']} to GetLog {log_type}; "
            f"transaction {r['transaction_id']}"
        )
    rid = r["request_id"]
    deadline = time.monotonic() + timeout
    last = None
    with err_console.status(f"waiting for {station_id} to upload {r['filename']}") as spinner:
        while True:
            view = next((v for v in api.request("GET", path) if v["request_id"] == rid), None)
            if view is not None and view["sha256"]:
                break
            last = view["last_status"] if view else None
            if last in LOG_FAILED:
                raise ChargewardError(f"station {station_id} reported {last} for log {rid}")
            if time.monotonic() > deadline:
                raise TransportError(
                    f"station {station_id} uploaded no log within {timeout:g} s "
                    f"(last status: {last or 'none'}); request {rid}"
                )
            spinner.update(f"{station_id}: {last or 'waiting for the upload'} ({r['filename']})")
            time.sleep(0.5)
    try:
        got = api.client.get(f"{path}/{rid}")
    except httpx.HTTPError as e:
        raise TransportError(f"cannot reach the server at {api.base}: {e}") from e
    if got.status_code >= 400:
        raise ChargewardError(f"server refused ({got.status_code}): {got.text[:300]}")
    if out is None:
        sys.stdout.buffer.write(got.content)
        sys.stdout.flush()
        return
    write_new_file(out, got.content)
    err_console.print(
        Text(f"wrote {out}: {log_type} of {station_id}, {len(got.content)} bytes (request {rid})"),
        soft_wrap=True,
    )
