"""``chargeward token``: API tokens.

On the server host (the database in ``--data-dir``), a token acting as NAME with a role:

    $ chargeward token create alice --role approver --data-dir srv
    token for alice (shown once): cwt_...

A logged-in user (``chargeward login``) mints a token for scripts, limited to scopes within
their own permissions; it acts as the user:

    $ chargeward token create ci-upload --scope releases:read --scope releases:upload \
          --expires-in 30d

A token's name (or its user) is the person: the audit log records it, and the person who
uploaded a release cannot approve it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from chargeward.cli import users
from chargeward.cli.apiclient import ApiClient
from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, ServerUrl, actor, console, in_session
from chargeward.server.auth import tokens

app = typer.Typer(no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The person (or system) the token belongs to.")],
    role: Annotated[
        str, typer.Option(help="Role of a server-host token: admin, release-manager, ...")
    ] = "admin",
    scope: Annotated[
        list[str] | None,
        typer.Option(help="Mint a scoped token over the API as the logged-in user (repeat)."),
    ] = None,
    expires_in: Annotated[str, typer.Option(help="Scoped token lifetime: 12h, 30d...")] = "30d",
    data_dir: DataDir = DEFAULT_DATA_DIR,
    server: ServerUrl = None,
) -> None:
    """Create an API token named NAME; the token is printed once and stored only hashed."""
    if scope:
        users.create_scoped_token(name, scope, expires_in, data_dir, server)
        return
    token = in_session(
        data_dir,
        lambda s: tokens.create_token(
            s, name, actor=actor(), now=dt.datetime.now(dt.UTC), role=role
        ),
    )
    console.print(Text(f"token for {name} (role {role}, shown once): {token}"), soft_wrap=True)


@app.command("list")
def list_(data_dir: DataDir = DEFAULT_DATA_DIR, server: ServerUrl = None) -> None:
    """Your API tokens (every token with users:manage)."""
    table = Table("id", "name", "acts as", "scopes", "expires", "state")
    for t in ApiClient(data_dir, server).request("GET", "/api/v1/tokens"):
        table.add_row(
            str(t["id"]),
            t["name"],
            t["owner"] or f"{t['name']} ({t['role']})",
            ", ".join(t["scopes"]) if t["scopes"] else "(role)",
            (t["expires_at"] or "never")[:19],
            "revoked" if t["revoked_at"] else "active",
        )
    console.print(table)


@app.command("revoke")
def revoke(token_id: int, data_dir: DataDir = DEFAULT_DATA_DIR, server: ServerUrl = None) -> None:
    """Revoke an API token by its id (see ``token list``)."""
    t = ApiClient(data_dir, server).request("DELETE", f"/api/v1/tokens/{token_id}")
    console.print(f"token {t['name']} revoked")
