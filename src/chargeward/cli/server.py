"""CLI group: the management server."""

from __future__ import annotations

import asyncio
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from chargeward import logging_setup
from chargeward.audit.log import DEFAULT_ORIGIN
from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, console
from chargeward.cli.supply import FailOn
from chargeward.errors import ConfigError
from chargeward.server.http.http_security import HttpSecurity, is_loopback
from chargeward.server.proxy import CredentialMode, FirmwarePolicy, ProxyConfig, client_ssl_context
from chargeward.server.runtime import ServerConfig, add_manufacturer_root, run_server
from chargeward.server.stations.tls import OcppSecurity
from chargeward.server.store.db import DEFAULT_TIMEOUTS, DatabaseTimeouts
from chargeward.supply.report_check import GatePolicy
from chargeward.supply.severity import Severity

app = typer.Typer(no_args_is_help=False, invoke_without_command=True)


class AuthorizeAnswer(StrEnum):
    """What the CSMS answers every Authorize (ADR 0035): Chargeward manages no id tokens."""

    accept = "accept"  # idTokenInfo.status Accepted: the charger's own policy decides
    reject = "reject"  # Invalid: no session starts through this CSMS
    unknown = "unknown"  # Unknown: the charger falls back to its local list or offline rules


AUTHORIZE_STATUS = {
    AuthorizeAnswer.accept: "Accepted",
    AuthorizeAnswer.reject: "Invalid",
    AuthorizeAnswer.unknown: "Unknown",
}


@app.callback()
def server(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    ocpp_port: Annotated[int, typer.Option(help="OCPP websocket port (0: any free).")] = 9000,
    http_port: Annotated[int, typer.Option(help="REST API and download port (0: any).")] = 8080,
    public_url: Annotated[
        str | None,
        typer.Option(
            help="Base URL stations use for downloads and log uploads (default: the listener's "
            "own, https://HOST:HTTP_PORT with TLS). https:// is required when the HTTP listener "
            "serves TLS or the URL is beyond loopback."
        ),
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
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            help="CSMS TLS certificate chain (PEM, leaf first): OCPP over wss://.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    tls_key: Annotated[
        str | None, typer.Option(help="Its key: file:PATH (encrypted PKCS#8).")
    ] = None,
    http_tls_cert: Annotated[
        Path | None,
        typer.Option(
            help="TLS certificate chain of the REST API, dashboard and downloads (PEM, leaf "
            "first; default: --tls-cert).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    http_tls_key: Annotated[
        str | None, typer.Option(help="Its key: file:PATH (default: --tls-key).")
    ] = None,
    allow_insecure_http: Annotated[
        bool,
        typer.Option(
            "--allow-insecure-http",
            help="Serve the HTTP listener without TLS beyond loopback (isolated lab networks "
            "only).",
        ),
    ] = False,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            help="A reverse proxy (IP or CIDR, repeatable) whose X-Forwarded-For and "
            "X-Forwarded-Proto are believed (default: nobody's).",
        ),
    ] = None,
    tls_reload_interval: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds between checks of the TLS certificate and key files; a changed pair "
            "is loaded without a restart (also on SIGHUP). 0: SIGHUP only.",
        ),
    ] = 60.0,
    charger_ca: Annotated[
        Path | None,
        typer.Option(
            help="Charger CA certificate(s): station certificates (profile 3).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    charger_ca_key: Annotated[
        str | None,
        typer.Option(help="Charger CA key URI (file: or pkcs11:): sign station renewals (A02)."),
    ] = None,
    allow_insecure_profile_1: Annotated[
        bool,
        typer.Option(
            "--allow-insecure-profile-1",
            help="Serve OCPP without TLS to profile-1 stations (isolated lab networks only).",
        ),
    ] = False,
    certificate_days: Annotated[int, typer.Option(min=1, max=3650)] = 365,
    renew_within_days: Annotated[int, typer.Option(min=1, max=3650)] = 30,
    campaign_tick: Annotated[
        float, typer.Option(min=0.2, max=3600, help="Seconds between campaign scheduler runs.")
    ] = 5.0,
    campaign_approval_threshold: Annotated[
        int,
        typer.Option(
            min=0, help="Campaigns targeting more stations need a second person to start."
        ),
    ] = 100,
    gate_fail_on: Annotated[
        FailOn,
        typer.Option(
            help="The laxest fail-on level an uploaded scan report may use (its findings at "
            "this level and above block unless accepted)."
        ),
    ] = FailOn.high,
    gate_min_approvers: Annotated[
        int, typer.Option(min=1, help="Approvers each accepted risk in a scan report names.")
    ] = 1,
    audit_origin: Annotated[
        str, typer.Option(help="Names the audit log in its signed checkpoints.")
    ] = DEFAULT_ORIGIN,
    checkpoint_interval: Annotated[
        float,
        typer.Option(min=0.2, max=86400, help="Seconds between audit checkpoints (if it grew)."),
    ] = 60.0,
    checkpoint_key: Annotated[
        str | None,
        typer.Option(
            help="Ed25519 key URI signing audit checkpoints (file: or pkcs11:; PIN from "
            "$CHARGEWARD_PKCS11_PIN). Default: <data-dir>/audit/checkpoint.key, made at "
            "first start."
        ),
    ] = None,
    db_idle_transaction_timeout: Annotated[
        float,
        typer.Option(
            min=0,
            help="PostgreSQL: seconds a transaction may sit idle before the database ends it "
            "(a paused or cut-off node's locks are freed). 0: no bound.",
        ),
    ] = DEFAULT_TIMEOUTS.idle_in_transaction,
    db_lock_timeout: Annotated[
        float,
        typer.Option(
            min=0,
            help="PostgreSQL: seconds a statement waits for a lock before its write is retried "
            "(then answers 503). 0: no bound.",
        ),
    ] = DEFAULT_TIMEOUTS.lock,
    db_statement_timeout: Annotated[
        float,
        typer.Option(
            min=0, help="PostgreSQL: seconds a statement may run (then 503). 0: no bound."
        ),
    ] = DEFAULT_TIMEOUTS.statement,
    leader_lease: Annotated[
        float,
        typer.Option(
            min=0.5,
            max=600,
            help="PostgreSQL cluster: seconds the leader leads without renewing its lease; a "
            "hung leader is replaced after this, and fenced (ADR 0034).",
        ),
    ] = 10.0,
    authorize: Annotated[
        AuthorizeAnswer,
        typer.Option(
            help="What every Authorize from a station is answered: accept (Accepted), reject "
            "(Invalid) or unknown (Unknown). Chargeward manages no id tokens; run it beside "
            "a CSMS that does if sessions need authorization (ADR 0035).",
        ),
    ] = AuthorizeAnswer.accept,
    upstream: Annotated[
        str | None,
        typer.Option(
            help="Proxy mode: relay each station to this CSMS, e.g. "
            "wss://csms.example/ocpp/{stationId} (ADR 0040; docs/deployment.md).",
        ),
    ] = None,
    upstream_ca: Annotated[
        Path | None,
        typer.Option(
            help="CA certificates (PEM) the wss:// upstream is checked against.", exists=True
        ),
    ] = None,
    upstream_credentials: Annotated[
        CredentialMode,
        typer.Option(
            help="Basic auth on the upstream leg: the station's own (pass-through), the one "
            "stored for it (stored: PUT /api/v1/stations/{id}/upstream-credentials) or none."
        ),
    ] = CredentialMode.pass_through,
    upstream_firmware_policy: Annotated[
        FirmwarePolicy,
        typer.Option(
            help="The upstream's UpdateFirmware/SignedUpdateFirmware/PublishFirmware: relay, "
            "refuse (answered Rejected, audited) or approved-only (only images of approved "
            "releases).",
        ),
    ] = FirmwarePolicy.approved_only,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    log_format: Annotated[
        str | None,
        typer.Option(
            help="text (default) or json: one JSON object per line.",
            envvar="CHARGEWARD_LOG_FORMAT",
        ),
    ] = None,
) -> None:
    """Run the CSMS: OCPP 2.0.1 at wss://HOST:OCPP_PORT/ocpp/{stationId}, REST at /api/v1."""
    logging_setup.configure(log_level, log_format)
    for root in manufacturer_root or []:
        fingerprints = add_manufacturer_root(data_dir, root.read_bytes())
        console.print(f"trusting {len(fingerprints)} Manufacturer Root CA certificate(s)")
    if allow_insecure_profile_1 and tls_cert is None:
        console.print(
            "[bold yellow]WARNING:[/] OCPP without TLS (security profile 1) exposes "
            "station passwords; use it only on an isolated lab network"
        )

    if allow_insecure_http and http_tls_cert is None and tls_cert is None and not is_loopback(host):
        console.print(
            "[bold yellow]WARNING:[/] the REST API and dashboard without TLS beyond loopback "
            "expose passwords, tokens and session cookies; use it only on an isolated lab network"
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
                    campaign_tick=campaign_tick,
                    campaign_approval_threshold=campaign_approval_threshold,
                    gate_policy=GatePolicy(
                        fail_on=Severity.parse(gate_fail_on.value),
                        min_approvers=gate_min_approvers,
                    ),
                    audit_origin=audit_origin,
                    checkpoint_interval=checkpoint_interval,
                    checkpoint_key=checkpoint_key,
                    security=OcppSecurity(
                        tls_certificate=tls_cert,
                        tls_key=tls_key,
                        charger_ca=charger_ca,
                        charger_ca_key=charger_ca_key,
                        allow_profile_1=allow_insecure_profile_1,
                        certificate_days=certificate_days,
                        renew_within_days=renew_within_days,
                    ),
                    http=HttpSecurity(
                        tls_certificate=http_tls_cert,
                        tls_key=http_tls_key,
                        allow_insecure_http=allow_insecure_http,
                        trusted_proxies=tuple(trusted_proxy or ()),
                        reload_interval=tls_reload_interval,
                    ),
                    database=DatabaseTimeouts(
                        idle_in_transaction=db_idle_transaction_timeout,
                        lock=db_lock_timeout,
                        statement=db_statement_timeout,
                    ),
                    leader_lease=leader_lease,
                    authorize=AUTHORIZE_STATUS[authorize],
                    upstream=_proxy_config(
                        upstream, upstream_ca, upstream_credentials, upstream_firmware_policy
                    ),
                ),
                ready,
            )
        )
    except KeyboardInterrupt:
        console.print("server stopped")
    except OSError as e:
        raise ConfigError(str(e)) from e


def _proxy_config(
    url: str | None, ca: Path | None, credentials: CredentialMode, policy: FirmwarePolicy
) -> ProxyConfig | None:
    if url is None:
        return None
    return ProxyConfig(
        url_template=url,
        firmware_policy=policy,
        credential_mode=credentials,
        ssl_context=client_ssl_context(ca) if url.startswith("wss://") else None,
    )
