"""Ed25519 keys for signed notes (C2SP signed-note, tree-head checkpoints of the audit log).

Keys are addressed like the firmware keys of :mod:`chargeward.crypto.keys`: ``file:PATH``
(or a bare path) names a passphrase-protected key file (:mod:`chargeward.crypto.keyfile`),
the passphrase coming from a callable;
``pkcs11:token=...;object=...`` names a key inside a PKCS#11 token
(:class:`chargeward.crypto.pkcs11.Pkcs11Ed25519Signer`), the PIN coming from
``$CHARGEWARD_PKCS11_PIN`` or the same callable.  Ed25519 signs the message itself
(RFC 8032 PureEdDSA), not a digest.

    secret = lambda: b"correct horse battery"
    signer = generate_ed25519_key("file:/tmp/log-key.pem", secret)
    signature = signer.sign(b"note text\\n")
    verify_ed25519(signer.public_key_raw(), b"note text\\n", signature)
    # -> True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from chargeward.crypto.keys import PassphraseSource

PUBLIC_KEY_SIZE = 32  # RFC 8032 section 5.1.5
SIGNATURE_SIZE = 64  # RFC 8032 section 5.1.6


@runtime_checkable
class MessageSigner(Protocol):
    """Something that holds an Ed25519 private key and signs whole messages."""

    @property
    def uri(self) -> str: ...

    def public_key_raw(self) -> bytes:
        """The 32-byte RFC 8032 encoding of the public key."""
        ...

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        ...


@dataclass(frozen=True)
class Ed25519Signer:
    """An Ed25519 private key held in memory (loaded from an encrypted file)."""

    uri: str
    _key: ed25519.Ed25519PrivateKey = field(repr=False)

    def public_key_raw(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def generate_ed25519_key(uri: str, passphrase: PassphraseSource) -> MessageSigner:
    """Create a new Ed25519 key at ``uri`` (a key file, or inside a PKCS#11 token);
    never overwrites a key."""
    from chargeward.crypto.backends import backend_for  # the table imports this module

    return backend_for(uri).generate_ed25519(uri, passphrase)


def load_ed25519_signer(uri: str, passphrase: PassphraseSource) -> MessageSigner:
    """Open the Ed25519 key at ``uri`` for signing; plaintext key files are refused."""
    from chargeward.crypto.backends import backend_for  # the table imports this module

    return backend_for(uri).load_ed25519(uri, passphrase)


def verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` (RFC 8032 5.1.7).

    A public key or signature of the wrong length, or a key that is not a valid point,
    is simply a failed verification.
    """
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
