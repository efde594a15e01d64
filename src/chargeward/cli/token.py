"""``chargeward token``: API tokens for operators and approvers (run on the server host).

    $ chargeward token create alice --data-dir srv
    token for alice (shown once): cw_...

A token's name is the person: the audit log records it, and the person who uploaded a release
cannot approve it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.text import Text

from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, actor, console, in_session
from chargeward.server import services

app = typer.Typer(no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The person (or system) the token belongs to.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Create an API token named NAME; the token is printed once and stored only hashed."""
    token = in_session(
        data_dir,
        lambda s: services.create_token(s, name, actor=actor(), now=dt.datetime.now(dt.UTC)),
    )
    console.print(Text(f"token for {name} (shown once): {token}"), soft_wrap=True)
