"""``chargeward keys``: create and inspect private keys addressed by URI.

Keys are ECDSA P-256 (firmware, TUF and certificate signing) or, with ``--algorithm ed25519``,
Ed25519 (the audit log's checkpoints).  File keys are passphrase-protected files (scrypt and
AES-256-GCM around PKCS#8, mode 0600, :mod:`chargeward.crypto.keyfile`); the passphrase
comes from ``$CHARGEWARD_KEY_PASSPHRASE`` or, on a terminal, a prompt.  ``rewrap`` converts
a file of the old PBKDF2 format (or changes the passphrase; the new one comes from
``$CHARGEWARD_NEW_KEY_PASSPHRASE`` or a prompt, or ``--keep-passphrase`` keeps it).  Token keys are
generated inside a PKCS#11 token and cannot leave it; the user PIN comes from
``$CHARGEWARD_PKCS11_PIN`` or, on a terminal, a prompt (a file passphrase is never offered
to a token as a PIN).

    $ chargeward keys generate file:keys/signing.pem
    $ chargeward keys show file:keys/signing.pem
    $ chargeward keys rewrap --keep-passphrase file:keys/old-signing.pem
    $ export CHARGEWARD_PKCS11_PIN=...
    $ chargeward keys generate "pkcs11:token=release-hsm;object=firmware-signing"
    $ chargeward keys show "pkcs11:token=release-hsm;object=firmware-signing"
    $ chargeward keys generate --algorithm ed25519 "pkcs11:token=audit-hsm;object=checkpoints"
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from enum import StrEnum
from typing import Annotated

import typer
from rich.text import Text

from chargeward.cli.common import DEFAULT_DATA_DIR, DataDir, console, key_secret, record_audit
from chargeward.crypto.backends import backend_for
from chargeward.crypto.ed25519 import (
    MessageSigner,
    generate_ed25519_key,
    load_ed25519_signer,
)
from chargeward.crypto.keyfile import KeyFileInfo, describe
from chargeward.crypto.keys import (
    NEW_PASSPHRASE_ENV,
    PassphraseSource,
    Signer,
    generate_key,
    load_signer,
    public_key_fingerprint,
    public_key_pem,
    rewrap_key_file,
)
from chargeward.crypto.pkcs11 import KeyProtection
from chargeward.errors import KeyAccessError

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


class Algorithm(StrEnum):
    p256 = "p256"
    ed25519 = "ed25519"


AlgorithmOption = Annotated[
    Algorithm,
    typer.Option(help="p256: ECDSA P-256 (signing keys); ed25519: audit checkpoint keys."),
]


def _protection(signer: Signer | MessageSigner) -> KeyProtection | None:
    return backend_for(signer.uri).protection(signer)


def _fingerprint(signer: Signer | MessageSigner) -> str:
    if isinstance(signer, MessageSigner):
        return hashlib.sha256(signer.public_key_raw()).hexdigest()
    return public_key_fingerprint(signer.public_key())


def _print_key(signer: Signer | MessageSigner, protection: KeyProtection | None) -> None:
    console.print(Text(f"Public key SHA-256: {_fingerprint(signer)}"), soft_wrap=True)
    if protection is not None:
        style = "green" if protection.non_extractable else "bold red"
        console.print(Text(_protection_line(protection), style=style), soft_wrap=True)


@app.command("generate")
def generate(
    uri: KeyUri, data_dir: DataDir = DEFAULT_DATA_DIR, algorithm: AlgorithmOption = Algorithm.p256
) -> None:
    """Create a new key at URI (an existing key is never replaced)."""
    secret = _secret(uri, new=True)
    signer: Signer | MessageSigner = (
        generate_ed25519_key(uri, secret)
        if algorithm is Algorithm.ed25519
        else generate_key(uri, secret)
    )
    protection = _protection(signer)
    details: dict[str, object] = {
        "algorithm": algorithm.value,
        "public_key_sha256": _fingerprint(signer),
    }
    if protection is not None:
        details["protection"] = protection.as_dict()
    record_audit(data_dir, "key.generate", signer.uri, details)
    console.print(Text(f"Created key {signer.uri}"), soft_wrap=True)
    _print_key(signer, protection)


@app.command("show")
def show(uri: KeyUri, algorithm: AlgorithmOption = Algorithm.p256) -> None:
    """Print the public key of URI (PEM; Ed25519: base64 of the raw 32 bytes), its SHA-256
    fingerprint and its protection.

    For a token key this says whether the private key can ever leave the token.
    """
    secret = _secret(uri, new=False)
    if algorithm is Algorithm.ed25519:
        ed = load_ed25519_signer(uri, secret)
        console.print(Text(f"Key {ed.uri} (Ed25519)"), soft_wrap=True)
        _print_key(ed, _protection(ed))
        console.print(Text(base64.b64encode(ed.public_key_raw()).decode()), soft_wrap=True)
        return
    signer = load_signer(uri, secret)
    console.print(Text(f"Key {signer.uri}"), soft_wrap=True)
    _print_key(signer, _protection(signer))
    key_file = backend_for(signer.uri).key_file(signer.uri)
    if key_file is not None:
        info = describe(key_file.read_bytes())
        console.print(Text(f"Protection: {_protection_of(info)}"), soft_wrap=True)
    console.print(Text(public_key_pem(signer.public_key()).rstrip("\n")), soft_wrap=True)


def _protection_of(info: KeyFileInfo) -> str:
    if info.params is None:
        return f"{info.format}, {info.kdf}"
    p = info.params
    return f"{info.format}, {info.kdf} n={p.n} r={p.r} p={p.p} ({p.memory >> 20} MiB)"


def _new_passphrase() -> bytes:
    value = os.environ.get(NEW_PASSPHRASE_ENV)
    if value:
        return value.encode()
    if not sys.stdin.isatty():
        raise KeyAccessError(
            f"no new passphrase: set {NEW_PASSPHRASE_ENV} or pass --keep-passphrase"
        )
    entered: str = typer.prompt(
        "New passphrase for the key", hide_input=True, confirmation_prompt=True
    )
    return entered.encode()


@app.command("rewrap")
def rewrap(
    uri: KeyUri,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    keep_passphrase: Annotated[
        bool, typer.Option(help="Keep the current passphrase (only the protection changes).")
    ] = False,
) -> None:
    """Re-encrypt a key file in the current format (scrypt, AES-256-GCM): converts a file of
    the old PBKDF2 format, or changes the passphrase.  The file is replaced atomically."""
    done = rewrap_key_file(
        uri, _secret(uri, new=False), None if keep_passphrase else _new_passphrase
    )
    record_audit(
        data_dir,
        "key.rewrap",
        f"file:{done.path.resolve()}",
        {"was": _protection_of(done.was), "now": _protection_of(done.now)},
    )
    console.print(Text(f"Re-wrapped {done.path}"), soft_wrap=True)
    console.print(Text(f"  was: {_protection_of(done.was)}"), soft_wrap=True)
    console.print(Text(f"  now: {_protection_of(done.now)}"), soft_wrap=True)
