"""``chargeward user``, ``login``, ``logout`` and scoped tokens: operator accounts over the API.

    $ chargeward user add alice --role approver          # with the admin token, at first
    $ chargeward user add olga --role operator --customer fleet-a   # fleet-a's stations only
    password for alice: ...
    TOTP for alice (shown once): otpauth://totp/Chargeward:alice?secret=...
    $ chargeward login alice --totp 492039               # session in <data-dir>/session.token
    $ chargeward token create ci-upload --scope releases:read --scope releases:upload \\
          --expires-in 30d                               # as alice: her scopes at most
    $ chargeward user list
    $ chargeward user set-role alice release-manager
    $ chargeward user reset-totp alice                   # a lost authenticator
    $ chargeward user disable alice
    $ chargeward user totp-enrol                          # as the logged-in user without TOTP

A role change, a password change, a TOTP reset and ``disable`` end the user's sessions and API
tokens.  A privileged user without TOTP (promoted, or reset) logs in with the password alone
to a session that may only enrol: ``chargeward user totp-enrol`` shows the secret, asks for a
code of it, and ends the session; then ``chargeward login`` with a code (ADR 0028).

Passwords come from a hidden prompt or ``$CHARGEWARD_PASSWORD``; they are never echoed.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from chargeward.cli.apiclient import SESSION_FILE, ApiClient
from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, ServerUrl, console
from chargeward.errors import ConfigError

PASSWORD_ENV = "CHARGEWARD_PASSWORD"  # noqa: S105 (a variable name)
app = typer.Typer(no_args_is_help=True)
ROLE_HELP = "admin, release-manager, approver, operator or auditor"


def _password(prompt: str, *, confirm: bool) -> str:
    value = os.environ.get(PASSWORD_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise ConfigError(f"no password: set {PASSWORD_ENV} or run on a terminal")
    entered: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return entered


def _show_enrolment(r: dict[str, Any]) -> None:
    console.print(f"{r['username']}: role {r['role']}")
    if r.get("totp_uri"):
        console.print(
            Text(f"TOTP for {r['username']} (shown once): {r['totp_uri']}"), soft_wrap=True
        )
        console.print(Text(f"TOTP secret: {r['totp_secret']}"), soft_wrap=True)
    if r.get("totp_enrolment_required"):
        console.print(f"{r['username']} enrols TOTP at the next login (chargeward user totp-enrol)")


@app.command("add")
def add(
    username: str,
    role: Annotated[str, typer.Option(help=ROLE_HELP)],
    customer: Annotated[
        str | None,
        typer.Option(
            help="A customer account (operator or auditor): that customer's stations only."
        ),
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Create an account; privileged roles get a TOTP secret, printed once."""
    password = _password(f"password for {username}", confirm=True)
    body: dict[str, Any] = {"username": username, "password": password, "role": role}
    if customer is not None:
        body["customer"] = customer
    _show_enrolment(ApiClient(data_dir, server).request("POST", "/api/v1/users", json=body))


@app.command("list")
def list_(data_dir: DataDir = DEFAULT_DATA_DIR, server: ServerUrl = None) -> None:
    """Every account, its role and state."""
    table = Table("user", "role", "customer", "TOTP", "state", "changed")
    for u in ApiClient(data_dir, server).request("GET", "/api/v1/users"):
        table.add_row(
            u["username"],
            u["role"],
            u.get("customer") or "all",
            "yes" if u["totp_enrolled"] else "no",
            "disabled" if u["disabled"] else "active",
            u["updated_at"][:19],
        )
    console.print(table)


@app.command("set-role")
def set_role(
    username: str,
    role: Annotated[str, typer.Argument(help=ROLE_HELP)],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Change an account's role: its sessions and tokens end; it logs in again."""
    r = ApiClient(data_dir, server).request(
        "PUT", f"/api/v1/users/{username}/role", json={"role": role}
    )
    _show_enrolment(r)


@app.command("reset-totp")
def reset_totp(
    username: str, data_dir: DataDir = DEFAULT_DATA_DIR, server: ServerUrl = None
) -> None:
    """Forget an account's TOTP: its sessions and tokens end; it enrols again at login."""
    ApiClient(data_dir, server).request("POST", f"/api/v1/users/{username}/totp/reset")
    console.print(f"{username}: TOTP reset, sessions and tokens ended; enrols at the next login")


@app.command("totp-enrol")
def totp_enrol(
    code: Annotated[
        str | None, typer.Option(help="A code of the new secret (prompted on a terminal).")
    ] = None,
    secret_file: Annotated[
        Path | None,
        typer.Option(help="Write the secret here (mode 0600) instead of showing it."),
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Enrol TOTP for the logged-in account (one without TOTP): shows the secret once, asks
    for a code of it; the session then ends and ``chargeward login`` needs a code."""
    from chargeward.server.runtime import write_private

    client = ApiClient(data_dir, server)
    r = client.request("POST", "/api/v1/auth/totp/enrolment")
    if secret_file is not None:
        write_private(secret_file, r["totp_secret"].encode())
        console.print(f"TOTP secret for {r['username']} in {secret_file}")
    else:
        console.print(
            Text(f"TOTP for {r['username']} (shown once): {r['totp_uri']}"), soft_wrap=True
        )
    if code is None:
        if not sys.stdin.isatty():
            raise ConfigError("no code: pass --code or run on a terminal")
        code = typer.prompt("a code of the new secret")
    client.request("POST", "/api/v1/auth/totp/enrolment/confirm", json={"code": code})
    path = data_dir / SESSION_FILE
    path.unlink(missing_ok=True)
    console.print("TOTP enrolled; log in again with a code (chargeward login --totp ...)")


@app.command("disable")
def disable(username: str, data_dir: DataDir = DEFAULT_DATA_DIR, server: ServerUrl = None) -> None:
    """Disable an account: its sessions and tokens stop working at once."""
    ApiClient(data_dir, server).request("POST", f"/api/v1/users/{username}/disable")
    console.print(f"{username}: disabled")


@app.command("enable")
def enable(username: str, data_dir: DataDir = DEFAULT_DATA_DIR, server: ServerUrl = None) -> None:
    """Enable a disabled account again."""
    ApiClient(data_dir, server).request("POST", f"/api/v1/users/{username}/enable")
    console.print(f"{username}: enabled")


def login(
    username: str,
    totp: Annotated[
        str | None, typer.Option(help="The current code of the authenticator app.")
    ] = None,
    print_token: Annotated[
        bool, typer.Option("--print", help="Print the session token instead of storing it.")
    ] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Log in; the session token is stored in <data-dir>/session.token (mode 0600)."""
    from chargeward.server.runtime import write_private

    password = _password(f"password for {username}", confirm=False)
    if totp is None and sys.stdin.isatty():
        totp = typer.prompt("TOTP code (empty if none)", default="", show_default=False) or None
    body = {"username": username, "password": password, "totp": totp}
    r = ApiClient(data_dir, server, anonymous=True).request("POST", "/api/v1/auth/login", json=body)
    if print_token:
        console.print(r["token"], soft_wrap=True)
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    write_private(data_dir / SESSION_FILE, r["token"].encode())
    console.print(
        f"logged in as {r['username']} ({r['role']}) until {r['expires_at'][:19]} UTC; "
        f"session in {data_dir / SESSION_FILE}"
    )
    if r.get("totp_enrolment_required"):
        console.print(
            "this role needs TOTP: the session may only enrol it (chargeward user totp-enrol)"
        )


def logout(data_dir: DataDir = DEFAULT_DATA_DIR, server: ServerUrl = None) -> None:
    """End the stored login session."""
    path = data_dir / SESSION_FILE
    if not path.exists():
        raise ConfigError(f"no login session in {path}")
    token = path.read_text().strip()
    ApiClient(data_dir, server, token).request("POST", "/api/v1/auth/logout")
    path.unlink()
    console.print("logged out")


_DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_duration(text: str) -> int:
    """``90s``, ``30m``, ``12h``, ``30d`` -> seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise typer.BadParameter("use a number and s, m, h or d, e.g. 30d")
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def create_scoped_token(
    name: str, scopes: list[str], expires_in: str, data_dir: Any, server: str | None
) -> None:
    body = {"name": name, "scopes": scopes, "expires_in": parse_duration(expires_in)}
    r = ApiClient(data_dir, server).request("POST", "/api/v1/tokens", json=body)
    console.print(
        Text(f"token {name} ({', '.join(r['scopes'])}, until {r['expires_at'][:19]} UTC)")
    )
    console.print(Text(f"token for {name} (shown once): {r['token']}"), soft_wrap=True)


def register(root: typer.Typer) -> None:
    """Add ``user``, ``login`` and ``logout`` to the ``chargeward`` command."""
    root.add_typer(app, name="user", help="Operator accounts and roles (needs users:manage).")
    root.command("login")(login)
    root.command("logout")(logout)
