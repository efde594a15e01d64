"""``chargeward keys``: create and inspect private keys addressed by URI.

File keys are ECDSA P-256 in passphrase-encrypted PKCS#8 files (mode 0600); the passphrase
comes from ``$CHARGEWARD_KEY_PASSPHRASE`` or, on a terminal, a prompt.  Token keys are
generated inside a PKCS#11 token and cannot leave it; the user PIN comes from
``$CHARGEWARD_PKCS11_PIN`` or, on a terminal, a prompt (a file passphrase is never offered
to a token as a PIN).

    $ chargeward keys generate file:keys/signing.pem
    $ chargeward keys show file:keys/signing.pem
    $ export CHARGEWARD_PKCS11_PIN=...
    $ chargeward keys generate "pkcs11:token=release-hsm;object=firmware-signing"
    $ chargeward keys show "pkcs11:token=release-hsm;object=firmware-signing"
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, console, key_secret, record_audit
from chargeward.crypto.keys import (
    PassphraseSource,
    Signer,
    generate_key,
    load_signer,
    public_key_fingerprint,
    public_key_pem,
)
from chargeward.crypto.pkcs11 import KeyProtection, Pkcs11Signer

app = typer.Typer(no_args_is_help=True)

KeyUri = Annotated[
    str,
    typer.Argument(
        metavar="URI",
        help="Key URI: file:PATH, a plain path, or pkcs11:token=LABEL;object=LABEL.",
    ),
]


def _secret(uri: str, *, new: bool) -> PassphraseSource:
    return key_secret(uri, what="new key" if new else "key", new=new)


def _protection_line(protection: KeyProtection) -> str:
    flags = ", ".join(f"{name}={value}" for name, value in protection.as_dict().items())
    if protection.non_extractable:
        return f"Private key: non-extractable, generated in the token ({flags})"
    return f"Private key: WARNING, can leave the token ({flags})"


def _protection(signer: Signer) -> KeyProtection | None:
    return signer.protection() if isinstance(signer, Pkcs11Signer) else None


def _print_key(signer: Signer, protection: KeyProtection | None) -> None:
    console.print(
        Text(f"Public key SHA-256: {public_key_fingerprint(signer.public_key())}"),
        soft_wrap=True,
    )
    if protection is not None:
        style = "green" if protection.non_extractable else "bold red"
        console.print(Text(_protection_line(protection), style=style), soft_wrap=True)


@app.command("generate")
def generate(uri: KeyUri, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Create a new ECDSA P-256 key at URI (an existing key is never replaced)."""
    signer = generate_key(uri, _secret(uri, new=True))
    protection = _protection(signer)
    details: dict[str, object] = {"public_key_sha256": public_key_fingerprint(signer.public_key())}
    if protection is not None:
        details["protection"] = protection.as_dict()
    record_audit(data_dir, "key.generate", signer.uri, details)
    console.print(Text(f"Created key {signer.uri}"), soft_wrap=True)
    _print_key(signer, protection)


@app.command("show")
def show(uri: KeyUri) -> None:
    """Print the public key of URI (PEM), its SHA-256 fingerprint and its protection.

    For a token key this says whether the private key can ever leave the token.
    """
    signer = load_signer(uri, _secret(uri, new=False))
    console.print(Text(f"Key {signer.uri}"), soft_wrap=True)
    _print_key(signer, _protection(signer))
    console.print(Text(public_key_pem(signer.public_key()).rstrip("\n")), soft_wrap=True)
