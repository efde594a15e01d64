"""Helpers shared by the CLI command groups: console, data directory, passphrases."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console

from chargeward.crypto.backends import backend_for
from chargeward.crypto.keys import PASSPHRASE_ENV, PassphraseSource, Signer, load_signer
from chargeward.crypto.pkcs11 import PIN_ENV
from chargeward.errors import KeyAccessError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

DATA_DIR_ENV = "CHARGEWARD_DATA_DIR"

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        help="Directory holding the server's database, blobs and configuration.",
        file_okay=False,
    ),
]
DEFAULT_DATA_DIR = Path("chargeward-data")
ServerUrl = Annotated[str | None, typer.Option(help="Server URL (default: from data dir).")]


def cli_passphrase(*, confirm: bool = False, what: str = "key") -> PassphraseSource:
    """Passphrase from $CHARGEWARD_KEY_PASSPHRASE, else a prompt on a terminal."""

    def read() -> bytes:
        value = os.environ.get(PASSPHRASE_ENV)
        if value:
            return value.encode()
        if not sys.stdin.isatty():
            raise KeyAccessError(f"no passphrase for the {what}: set {PASSPHRASE_ENV}")
        entered: str = typer.prompt(
            f"Passphrase for the {what}", hide_input=True, confirmation_prompt=confirm
        )
        return entered.encode()

    return read


def token_pin() -> PassphraseSource:
    """The user PIN of a token: asked on a terminal (``$CHARGEWARD_PKCS11_PIN`` wins).

    Never falls back to the file-key passphrase: a wrong PIN counts towards locking the token.
    """

    def read() -> bytes:
        if not sys.stdin.isatty():
            raise KeyAccessError(f"no PIN for the PKCS#11 token: set {PIN_ENV}")
        entered: str = typer.prompt("User PIN of the PKCS#11 token", hide_input=True)
        return entered.encode()

    return read


def key_secret(uri: str, *, what: str = "key", new: bool = False) -> PassphraseSource:
    """The secret that opens the key at ``uri``: a token PIN or a key-file passphrase."""
    if backend_for(uri).opened_with == "pin":
        return token_pin()
    return cli_passphrase(confirm=new, what=what)


def open_signer(uri: str, what: str = "key") -> Signer:
    """Open the private key at ``uri`` for signing, asking for its PIN or passphrase."""
    return load_signer(uri, key_secret(uri, what=what))


ACTOR_ENV = "CHARGEWARD_ACTOR"


def actor() -> str:
    """Who is acting, for the audit log: $CHARGEWARD_ACTOR or the login name."""
    import getpass

    return os.environ.get(ACTOR_ENV) or getpass.getuser()


def in_session(
    data_dir: Path, work: Callable[[AsyncSession], Awaitable[T]], *, settled: bool = False
) -> T:
    """Run ``work`` in one database transaction of the server data directory ``data_dir``;
    ``settled``: after the station reports' queued audit entries are in the log (PostgreSQL;
    :mod:`chargeward.audit.sequencer`)."""
    import asyncio

    from chargeward.audit.sequencer import settle
    from chargeward.server.store.db import Database

    async def go() -> T:
        db = await Database.open(data_dir=data_dir)
        try:
            if settled:
                await settle(db.session)
            async with db.session() as s:
                return await work(s)
        finally:
            await db.close()

    return asyncio.run(go())


def record_audit(data_dir: Path, action: str, target: str, details: dict[str, object]) -> None:
    """Append a privileged CLI action (key, PKI, release) to the audit log in ``data_dir``."""
    import datetime as dt

    from chargeward import audit

    in_session(
        data_dir,
        lambda s: audit.record(
            s,
            actor=actor(),
            action=action,
            target=target,
            details=details,
            now=dt.datetime.now(dt.UTC),
        ),
    )
