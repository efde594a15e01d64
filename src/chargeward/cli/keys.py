"""``chargeward keys``: create and inspect private keys addressed by URI.

Keys are ECDSA P-256 in passphrase-encrypted PKCS#8 files (mode 0600).  The passphrase comes
from ``$CHARGEWARD_KEY_PASSPHRASE`` or, on a terminal, a prompt.

    $ chargeward keys generate file:keys/signing.pem
    $ chargeward keys show file:keys/signing.pem
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, cli_passphrase, console, record_audit
from chargeward.crypto.keys import (
    generate_key,
    load_signer,
    public_key_fingerprint,
    public_key_pem,
)

app = typer.Typer(no_args_is_help=True)

KeyUri = Annotated[
    str,
    typer.Argument(metavar="URI", help="Key URI: file:PATH or a plain path."),
]


@app.command("generate")
def generate(uri: KeyUri, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Create a new encrypted ECDSA P-256 key at URI (an existing key is never replaced)."""
    signer = generate_key(uri, cli_passphrase(confirm=True, what="new key"))
    record_audit(
        data_dir,
        "key.generate",
        signer.uri,
        {"public_key_sha256": public_key_fingerprint(signer.public_key())},
    )
    console.print(Text(f"Created key {signer.uri}"), soft_wrap=True)
    console.print(
        Text(f"Public key SHA-256: {public_key_fingerprint(signer.public_key())}"),
        soft_wrap=True,
    )


@app.command("show")
def show(uri: KeyUri) -> None:
    """Print the public key of URI (PEM) and its SHA-256 fingerprint."""
    signer = load_signer(uri, cli_passphrase(what="key"))
    key = signer.public_key()
    console.print(Text(f"Key {signer.uri}"), soft_wrap=True)
    console.print(Text(f"Public key SHA-256: {public_key_fingerprint(key)}"), soft_wrap=True)
    console.print(Text(public_key_pem(key).rstrip("\n")), soft_wrap=True)
