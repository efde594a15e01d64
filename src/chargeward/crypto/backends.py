"""Key backends by URI scheme: the one table every caller goes through.

A key URI names where a private key lives; its scheme picks the backend that generates,
opens, normalises and describes the key:

* ``file:PATH`` (or a bare path): a passphrase-protected key file (:mod:`.keyfile`), opened
  with the key passphrase; :attr:`KeyBackend.key_file` is that file.
* ``pkcs11:token=...;object=...``: a key generated inside a PKCS#11 token (:mod:`.pkcs11`),
  opened with the token's user PIN; it is no file, and :attr:`KeyBackend.protection` reports
  whether it can ever leave the token.

Both backends hold ECDSA P-256 signing keys (:class:`~chargeward.crypto.keys.Signer`) and
Ed25519 checkpoint keys (:class:`~chargeward.crypto.ed25519.MessageSigner`).  A new backend is
one more :class:`KeyBackend` row in :data:`BACKENDS`; nothing else branches on the scheme.
The public entry points stay :func:`chargeward.crypto.keys.load_signer`,
:func:`~chargeward.crypto.keys.generate_key`, :func:`~chargeward.crypto.keys.normalise_uri`,
:func:`~chargeward.crypto.ed25519.load_ed25519_signer` and
:func:`~chargeward.crypto.ed25519.generate_ed25519_key`, which look the backend up here.

    >>> backend_for("pkcs11:token=audit;object=checkpoints").opened_with
    'pin'
    >>> backend_for("keys/release.pem").scheme
    'file'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from chargeward.crypto import pkcs11
from chargeward.crypto.ed25519 import Ed25519Signer, MessageSigner
from chargeward.crypto.keys import (
    FileSigner,
    PassphraseSource,
    Signer,
    _file_path,
    normalise_file_uri,
    read_key_file,
    write_new_key_file,
)
from chargeward.errors import KeyAccessError


@dataclass(frozen=True)
class KeyBackend:
    """What one URI scheme does with a key.  Every function takes the key URI first."""

    scheme: str  # without the colon, lower case
    name: str  # in messages: "a {name} key is not a file"
    opened_with: Literal["passphrase", "pin"]  # what the passphrase source supplies
    normalise: Callable[[str], str]
    generate_p256: Callable[[str, PassphraseSource], Signer]
    load_p256: Callable[[str, PassphraseSource], Signer]
    generate_ed25519: Callable[[str, PassphraseSource], MessageSigner]
    load_ed25519: Callable[[str, PassphraseSource], MessageSigner]
    key_file: Callable[[str], Path | None]  # the file holding the key, if it is one
    protection: Callable[[Signer | MessageSigner], pkcs11.KeyProtection | None]


def _wrong_key(uri: str, what: str) -> KeyAccessError:
    return KeyAccessError(f"{_file_path(uri)} does not hold an {what} key")


def _generate_file_p256(uri: str, passphrase: PassphraseSource) -> Signer:
    key = ec.generate_private_key(ec.SECP256R1())
    write_new_key_file(uri, passphrase, key)
    return FileSigner(normalise_file_uri(uri), key)


def _load_file_p256(uri: str, passphrase: PassphraseSource) -> Signer:
    key = read_key_file(uri, passphrase)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise _wrong_key(uri, "ECDSA P-256")
    return FileSigner(normalise_file_uri(uri), key)


def _generate_file_ed25519(uri: str, passphrase: PassphraseSource) -> MessageSigner:
    key = ed25519.Ed25519PrivateKey.generate()
    write_new_key_file(uri, passphrase, key)
    return Ed25519Signer(normalise_file_uri(uri), key)


def _load_file_ed25519(uri: str, passphrase: PassphraseSource) -> MessageSigner:
    key = read_key_file(uri, passphrase)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise _wrong_key(uri, "Ed25519")
    return Ed25519Signer(normalise_file_uri(uri), key)


def _no_protection(_signer: Signer | MessageSigner) -> None:
    return None


def _token_protection(signer: Signer | MessageSigner) -> pkcs11.KeyProtection | None:
    if isinstance(signer, pkcs11.Pkcs11Signer | pkcs11.Pkcs11Ed25519Signer):
        return signer.protection()
    return None


FILE = KeyBackend(
    scheme="file",
    name="file",
    opened_with="passphrase",
    normalise=normalise_file_uri,
    generate_p256=_generate_file_p256,
    load_p256=_load_file_p256,
    generate_ed25519=_generate_file_ed25519,
    load_ed25519=_load_file_ed25519,
    key_file=_file_path,
    protection=_no_protection,
)
PKCS11 = KeyBackend(
    scheme="pkcs11",
    name="PKCS#11",
    opened_with="pin",
    normalise=pkcs11.normalise_pkcs11_uri,
    generate_p256=pkcs11.generate_pkcs11_key,
    load_p256=pkcs11.load_pkcs11_signer,
    generate_ed25519=pkcs11.generate_pkcs11_ed25519_key,
    load_ed25519=pkcs11.load_pkcs11_ed25519_signer,
    key_file=lambda _uri: None,
    protection=_token_protection,
)
BACKENDS: dict[str, KeyBackend] = {b.scheme: b for b in (FILE, PKCS11)}


def backend_for(uri: str) -> KeyBackend:
    """The backend of ``uri`` by its scheme (case-insensitive, RFC 3986 section 3.1); a bare
    path is a key file.  :class:`KeyAccessError` for a scheme no backend handles."""
    head = uri.split("/", 1)[0]
    if ":" not in head:
        return FILE
    scheme = head.split(":", 1)[0]
    backend = BACKENDS.get(scheme.lower())
    if backend is None:
        raise KeyAccessError(f"unsupported key URI scheme {scheme!r} in {uri!r}")
    return backend
