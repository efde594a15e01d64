"""TUF keys and signers backed by Chargeward key URIs (encrypted files or PKCS#11 tokens).

Every TUF role key is an ECDSA P-256 key used through :class:`chargeward.crypto.Signer`, so
the same URI works for X.509, OCPP signatures and TUF metadata:

    >>> signer = load_signer("pkcs11:token=release;object=alice", pin)   # doctest: +SKIP
    >>> key = tuf_key(signer.public_key(), owner="alice")                  # doctest: +SKIP
    >>> metadata.sign(TufSigner(signer, key), append=True)                 # doctest: +SKIP

A key may name its **owner** (a person).  The owner is part of the root metadata, so it is
signed by the root key holders; approvals are counted per owner, not per key.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from securesystemslib.signer import Key, Signature, SSlibKey
from securesystemslib.signer import Signer as SslibSigner

from chargeward.crypto import Signer

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

OWNER_FIELD = "x-chargeward-owner"
SCHEME = "ecdsa-sha2-nistp256"


def tuf_key(public_key: ec.EllipticCurvePublicKey, owner: str | None = None) -> SSlibKey:
    """The TUF key for ``public_key``; its keyid does not depend on ``owner``."""
    key = SSlibKey.from_crypto(public_key, scheme=SCHEME)
    if owner:
        key.unrecognized_fields[OWNER_FIELD] = owner
    return key


def key_owner(key: Key) -> str:
    """The person holding ``key`` (its keyid when the root names nobody)."""
    owner = key.unrecognized_fields.get(OWNER_FIELD)
    return owner if isinstance(owner, str) and owner else key.keyid


class TufSigner(SslibSigner):
    """A securesystemslib signer that signs through a Chargeward :class:`Signer`."""

    def __init__(self, signer: Signer, key: SSlibKey | None = None) -> None:
        self._signer = signer
        self._key = key or tuf_key(signer.public_key())

    @property
    def public_key(self) -> Key:
        return self._key

    def sign(self, payload: bytes) -> Signature:
        der = self._signer.sign_digest(hashlib.sha256(payload).digest())
        return Signature(self._key.keyid, der.hex())

    @classmethod
    def from_priv_key_uri(cls, *args: Any, **kwargs: Any) -> SslibSigner:
        raise NotImplementedError("use chargeward.crypto.load_signer and TufSigner(signer)")
