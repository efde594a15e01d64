"""CLI groups for the fleet registry, through the running server's REST API::

    $ chargeward site add lon-1 --name "London depot" --timezone Europe/London \\
          --window "mon-fri 01:00-05:00" --window "sat,sun 22:00-06:00"
    $ chargeward model add AC22 --vendor ACME --feature-years 3 --security-years 5
    $ chargeward station set CP-1 --site lon-1 --tag pilot --manufactured 2024-03-01
    $ chargeward fleet support --within 180
    $ chargeward alerts list
    $ chargeward alerts ack 12 --note "checked on site"
    $ chargeward events list --critical --station CP-1
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from chargeward.cli.apiclient import ApiClient
from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, ServerUrl, console
from chargeward.cli.station import UpstreamPolicyOpt, UpstreamUrlOpt, upstream_fields
from chargeward.errors import SupplyChainError
from chargeward.fileio import read_capped
from chargeward.limits import DEFAULT_FORMAT_LIMITS
from chargeward.model.fleet import DAYS
from chargeward.supply.advisories import parse_advisory

site_app = typer.Typer(no_args_is_help=True)
model_app = typer.Typer(no_args_is_help=True)
fleet_app = typer.Typer(no_args_is_help=True)
alerts_app = typer.Typer(no_args_is_help=True)
events_app = typer.Typer(no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
WindowOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--window",
        help="Weekly maintenance window in site-local time, e.g. 'mon-fri 01:00-05:00' "
        "(repeatable; may cross midnight).",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the fleet groups to the ``chargeward`` command."""
    app.add_typer(site_app, name="site", help="Sites: time zone and maintenance windows.")
    app.add_typer(model_app, name="model", help="Charger models and their support periods.")
    app.add_typer(fleet_app, name="fleet", help="Fleet-wide views: support periods.")
    app.add_typer(alerts_app, name="alerts", help="Firmware-drift and security alerts.")
    app.add_typer(events_app, name="events", help="Security events reported by stations.")


def parse_window(text: str) -> dict[str, object]:
    """``"mon-fri 01:00-05:00"`` or ``"sat,sun 22:00-04:00"`` as the API's window object."""
    try:
        days_part, times = text.split()
        start, end = times.split("-")
    except ValueError as e:
        raise typer.BadParameter(
            f"--window {text!r}: expected DAYS START-END, e.g. 'mon-fri 01:00-05:00'"
        ) from e
    days: list[str] = []
    for item in days_part.lower().split(","):
        first, _, last = item.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise typer.BadParameter(f"--window {text!r}: days are {', '.join(DAYS)}")
        i, j = DAYS.index(first), DAYS.index(last or first)
        days += [DAYS[(i + k) % 7] for k in range((j - i) % 7 + 1)]
    return {"days": days, "start": start, "end": end}


def _windows(windows: list[dict[str, Any]]) -> str:
    return "; ".join(f"{','.join(w['days'])} {w['start']}-{w['end']}" for w in windows) or "-"


def _api(data_dir: Any, server: str | None) -> ApiClient:
    return ApiClient(data_dir, server)


def _print_rows(
    rows: list[dict[str, Any]], json_out: bool, empty: str, table: Callable[[], Table]
) -> None:
    """The rows as JSON with ``--json``, ``empty`` when there are none, else ``table()``."""
    if json_out:
        console.print_json(data=rows)
    elif not rows:
        console.print(empty)
    else:
        console.print(table())


# -- sites ----------------------------------------------------------------------------------


def _site_table(rows: list[dict[str, Any]]) -> Table:
    t = Table("site", "name", "customer", "time zone", "maintenance windows", "stations")
    for r in rows:
        t.add_row(
            r["id"],
            r["name"],
            r["customer"] or "-",
            r["timezone"],
            _windows(r["maintenance_windows"]),
            str(r["stations"]),
        )
    return t


@site_app.command("add")
def site_add(
    site_id: str,
    name: Annotated[str, typer.Option(help="Display name.")],
    timezone: Annotated[str, typer.Option(help="IANA time zone, e.g. Europe/London.")],
    window: WindowOpt = None,
    customer: Annotated[str | None, typer.Option(help="Customer owning the site.")] = None,
    bandwidth_note: Annotated[str | None, typer.Option(help="e.g. 'LTE, 2 GB/month'.")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Add a site."""
    body = {
        "id": site_id,
        "name": name,
        "timezone": timezone,
        "customer": customer,
        "bandwidth_note": bandwidth_note,
        "maintenance_windows": [parse_window(w) for w in window or []],
    }
    r = _api(data_dir, server).request("POST", "/api/v1/sites", json=body)
    console.print(Text(f"added site {r['id']} ({r['timezone']})"), soft_wrap=True)


@site_app.command("list")
def site_list(data_dir: DataDir = DEFAULT_DATA_DIR, server: ServerUrl = None) -> None:
    """List sites."""
    console.print(_site_table(_api(data_dir, server).request("GET", "/api/v1/sites")))


@site_app.command("show")
def site_show(
    site_id: str,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
    json_out: Json = False,
) -> None:
    """Show a site."""
    r = _api(data_dir, server).request("GET", f"/api/v1/sites/{site_id}")
    if json_out:
        console.print_json(data=r)
        return
    console.print(_site_table([r]))
    if r["bandwidth_note"]:
        console.print(Text(f"bandwidth: {r['bandwidth_note']}"))
    if r.get("download_windows"):
        console.print(Text(f"downloads only: {_windows(r['download_windows'])}"))
    if r.get("bandwidth_limit"):
        console.print(Text(f"download cap: {r['bandwidth_limit']:,} bytes/s for the site"))


@site_app.command("set-link-budget")
def site_set_link_budget(
    site_id: str,
    window: Annotated[
        list[str] | None,
        typer.Option(
            "--download-window",
            help="When the site's chargers may download, local time, e.g. 'mon-fri 22:00-06:00' "
            "(repeatable).",
        ),
    ] = None,
    bandwidth_limit: Annotated[
        int | None,
        typer.Option(min=1024, help="Bytes per second for all the site's downloads together."),
    ] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="Downloads at any time, at any rate.")
    ] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Set when and how fast a site's chargers download firmware."""
    if clear:
        body: dict[str, object] = {"download_windows": [], "bandwidth_limit": None}
    elif window or bandwidth_limit is not None:
        body = {}
        if window:
            body["download_windows"] = [parse_window(w) for w in window]
        if bandwidth_limit is not None:
            body["bandwidth_limit"] = bandwidth_limit
    else:
        raise typer.BadParameter("give --download-window, --bandwidth-limit or --clear")
    r = _api(data_dir, server).request("PATCH", f"/api/v1/sites/{site_id}", json=body)
    windows = _windows(r["download_windows"]) if r["download_windows"] else "any time"
    cap = f"{r['bandwidth_limit']:,} bytes/s" if r["bandwidth_limit"] else "no cap"
    console.print(Text(f"site {r['id']}: downloads {windows}, {cap} ({r['timezone']})"))


@site_app.command("set-upstream")
def site_set_upstream(
    site_id: str,
    url: UpstreamUrlOpt = None,
    firmware_policy: UpstreamPolicyOpt = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Proxy mode: the upstream CSMS and firmware policy of the site's stations (a station's
    own setting wins; 'default' for the server's)."""
    body = upstream_fields(url, firmware_policy)
    if not body:
        raise typer.BadParameter("give --url or --firmware-policy")
    _api(data_dir, server).request("PATCH", f"/api/v1/sites/{site_id}", json=body)
    console.print(Text(f"site {site_id}: {', '.join(f'{k}={v}' for k, v in body.items())}"))


@site_app.command("set-windows")
def site_set_windows(
    site_id: str,
    window: WindowOpt = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove every window.")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Replace a site's maintenance windows."""
    if not window and not clear:
        raise typer.BadParameter("give at least one --window, or --clear")
    body = {"maintenance_windows": [parse_window(w) for w in window or []]}
    r = _api(data_dir, server).request("PATCH", f"/api/v1/sites/{site_id}", json=body)
    console.print(Text(f"site {r['id']}: {_windows(r['maintenance_windows'])} ({r['timezone']})"))


# -- models ---------------------------------------------------------------------------------

FeatureYears = Annotated[
    int | None, typer.Option("--feature-years", min=0, max=50, help="Feature updates, years.")
]
SecurityYears = Annotated[
    int | None, typer.Option("--security-years", min=0, max=50, help="Security updates, years.")
]
FeatureEnd = Annotated[
    dt.datetime | None,
    typer.Option("--feature-end", formats=["%Y-%m-%d"], help="Explicit last day (wins)."),
]
SecurityEnd = Annotated[
    dt.datetime | None,
    typer.Option("--security-end", formats=["%Y-%m-%d"], help="Explicit last day (wins)."),
]


def _support_body(
    feature_years: int | None,
    security_years: int | None,
    feature_end: dt.datetime | None,
    security_end: dt.datetime | None,
) -> dict[str, object]:
    body: dict[str, object] = {}
    if feature_years is not None:
        body["feature_support_years"] = feature_years
    if security_years is not None:
        body["security_support_years"] = security_years
    if feature_end is not None:
        body["feature_support_end"] = feature_end.date().isoformat()
    if security_end is not None:
        body["security_support_end"] = security_end.date().isoformat()
    return body


def _model_table(rows: list[dict[str, Any]]) -> Table:
    t = Table("model", "vendor", "feature support", "security support")
    for r in rows:
        t.add_row(
            r["id"],
            r["vendor"] or "-",
            r["feature_support_end"] or f"{r['feature_support_years']} years from manufacture",
            r["security_support_end"] or f"{r['security_support_years']} years from manufacture",
        )
    return t


@model_app.command("add")
def model_add(
    model_id: str,
    vendor: Annotated[str | None, typer.Option(help="Vendor name.")] = None,
    feature_years: FeatureYears = None,
    security_years: SecurityYears = None,
    feature_end: FeatureEnd = None,
    security_end: SecurityEnd = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Add a charger model (support defaults: 3 years feature, 5 years security)."""
    body: dict[str, object] = {"id": model_id, "vendor": vendor}
    body |= _support_body(feature_years, security_years, feature_end, security_end)
    r = _api(data_dir, server).request("POST", "/api/v1/models", json=body)
    console.print(_model_table([r]))


@model_app.command("list")
def model_list(data_dir: DataDir = DEFAULT_DATA_DIR, server: ServerUrl = None) -> None:
    """List charger models and their support periods."""
    console.print(_model_table(_api(data_dir, server).request("GET", "/api/v1/models")))


@model_app.command("set-support")
def model_set_support(
    model_id: str,
    feature_years: FeatureYears = None,
    security_years: SecurityYears = None,
    feature_end: FeatureEnd = None,
    security_end: SecurityEnd = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Change a model's support periods."""
    body = _support_body(feature_years, security_years, feature_end, security_end)
    if not body:
        raise typer.BadParameter("nothing to change: give --feature-years, --security-years, ...")
    r = _api(data_dir, server).request("PATCH", f"/api/v1/models/{model_id}", json=body)
    console.print(_model_table([r]))


# -- fleet support --------------------------------------------------------------------------


def _support_cell(state: str, end: str | None, left: int | None) -> str:
    if state == "unknown" or end is None or left is None:
        return "unknown (no manufacture date)"
    when = f"{-left} days ago" if left < 0 else "today" if left == 0 else f"in {left} days"
    return f"{state}: {end} ({when})" if state != "supported" else f"until {end}"


@fleet_app.command("support")
def fleet_support(
    within: Annotated[
        int, typer.Option("--within", min=0, max=36500, help="Days ahead to warn about.")
    ] = 180,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
    json_out: Json = False,
) -> None:
    """Stations whose feature or security support has ended or ends within --within days."""
    rows = _api(data_dir, server).request(
        "GET", "/api/v1/fleet/support", params={"within_days": within}
    )

    def table() -> Table:
        t = Table("station", "model", "site", "manufactured", "feature updates", "security updates")
        for r in rows:
            t.add_row(
                r["station_id"],
                r["model"] or "-",
                r["site_id"] or "-",
                r["manufactured_on"] or "-",
                _support_cell(r["feature_state"], r["feature_support_end"], r["feature_days_left"]),
                _support_cell(
                    r["security_state"], r["security_support_end"], r["security_days_left"]
                ),
            )
        return t

    _print_rows(
        rows, json_out, f"every station is supported for at least {within} more days", table
    )


# -- alerts and security events --------------------------------------------------------------


@alerts_app.command("list")
def alerts_list(
    state: Annotated[
        str, typer.Option(help="active (open or acknowledged), open, acknowledged or resolved.")
    ] = "active",
    station: Annotated[str | None, typer.Option(help="Only this station.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
    json_out: Json = False,
) -> None:
    """List alerts, newest first."""
    params: dict[str, object] = {"state": state, "limit": limit}
    if station:
        params["station_id"] = station
    rows = _api(data_dir, server).request("GET", "/api/v1/alerts", params=params)

    def table() -> Table:
        t = Table("id", "severity", "station", "kind", "state", "count", "last seen", "message")
        for r in rows:
            t.add_row(
                str(r["id"]),
                r["severity"],
                r["station_id"],
                r["kind"],
                r["state"],
                str(r["count"]),
                r["last_seen_at"][:19],
                r["message"],
            )
        return t

    _print_rows(rows, json_out, f"no {state} alerts", table)


@alerts_app.command("ack")
def alerts_ack(
    alert_id: int,
    note: Annotated[str | None, typer.Option(help="Why, for the audit log.")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Acknowledge an open alert."""
    r = _api(data_dir, server).request(
        "POST", f"/api/v1/alerts/{alert_id}/acknowledge", json={"note": note}
    )
    console.print(Text(f"alert {r['id']} acknowledged by {r['acknowledged_by']}"))


@events_app.command("list")
def events_list(
    type: Annotated[
        str | None, typer.Option("--type", help="e.g. TamperDetectionActivated.")
    ] = None,
    station: Annotated[str | None, typer.Option(help="Only this station.")] = None,
    critical: Annotated[bool, typer.Option("--critical", help="Only events that alert.")] = False,
    since: Annotated[
        str | None, typer.Option(help="From this time (ISO 8601 with offset).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Up to this time (ISO 8601 with offset).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
    json_out: Json = False,
) -> None:
    """Search the security events stations reported, newest first."""
    params = {
        "type": type,
        "station_id": station,
        "critical": critical,
        "since": since,
        "until": until,
        "limit": limit,
    }
    rows = _api(data_dir, server).request(
        "GET", "/api/v1/security-events", params={k: v for k, v in params.items() if v is not None}
    )

    def table() -> Table:
        t = Table("time", "station", "event", "critical", "details")
        for r in rows:
            t.add_row(
                r["timestamp"][:19],
                r["station_id"],
                r["type"],
                "yes" if r["critical"] else "",
                r["tech_info"] or "",
            )
        return t

    _print_rows(rows, json_out, "no security events match", table)


def _exposed(package: dict[str, Any]) -> str:
    accepted = package.get("accepted")
    return f"{package['purl']} ({accepted})" if accepted else str(package["purl"])


@fleet_app.command("exposure")
def fleet_exposure(
    advisory: Annotated[
        Path,
        typer.Argument(
            metavar="ADVISORY",
            help="One OSV advisory (JSON), e.g. from an OSV export or a vendor PSIRT.",
            dir_okay=False,
        ),
    ],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
    json_out: Json = False,
) -> None:
    """Stations running a package ADVISORY affects, from the SBOMs of the releases they run.

    Exits 3 if any station is affected or possibly affected (a range that could not be
    evaluated), 0 if none is; stations whose release has no SBOM here are listed as unknown,
    and those whose release's VEX or accepted risks cover the packages as accepted, with the
    statement.
    """
    raw = read_capped(advisory, DEFAULT_FORMAT_LIMITS.advisory_bytes, error=SupplyChainError)
    parsed = parse_advisory(raw, str(advisory))  # a malformed file is refused here, offline
    report = _api(data_dir, server).request(
        "POST", "/api/v1/exposure", content=raw, headers={"Content-Type": "application/json"}
    )
    if json_out:
        console.print_json(data=report)
    else:
        t = Table("station", "status", "model", "site", "version", "packages", title=parsed.id)
        accepted = report.get("accepted", [])
        styles = {"affected": "bold red", "indeterminate": "yellow", "accepted": "green"}
        for r in [*report["affected"], *report["indeterminate"], *accepted]:
            t.add_row(
                r["station_id"],
                Text(r["status"], styles.get(r["status"], "")),
                r["model"] or "-",
                r["site_id"] or "-",
                r["firmware_version"] or "-",
                Text("\n".join(sorted({_exposed(p) for p in r["packages"]}))),
            )
        console.print(t)
        console.print(
            Text(
                f"{len(report['affected'])} affected, {len(report['indeterminate'])} possibly "
                f"affected, {len(accepted)} covered by VEX or an accepted risk, "
                f"{len(report['unknown'])} unknown (no SBOM for their release), "
                f"of {report['stations_checked']} stations"
            ),
            soft_wrap=True,
        )
    if report["affected"] or report["indeterminate"]:
        raise typer.Exit(3)
