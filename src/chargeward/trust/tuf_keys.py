"""TUF keys and signers backed by Chargeward key URIs (encrypted files or PKCS#11 tokens).

Every TUF role key is an ECDSA P-256 key used through :class:`chargeward.crypto.Signer`, so
the same URI works for X.509, OCPP signatures and TUF metadata:

    signer = load_signer("pkcs11:token=release;object=alice", pin)
    key = tuf_key(signer.public_key(), owner="alice")
    metadata.sign(TufSigner(signer, key), append=True)

A key may name its **owner** (a person).  The owner is part of the root metadata, so it is
signed by the root key holders.  Keys must equal people: python-tuf on a charger counts keys,
so :func:`check_people` refuses a root or targets role in which one person holds two keys (or
one public key appears under two keyids), and every targets key must name its owner (the server
binds it to that operator account: :mod:`chargeward.server.rollout.approver_keys`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from securesystemslib.signer import Key, Signature, SSlibKey
from securesystemslib.signer import Signer as SslibSigner
from tuf.api.metadata import Root, Targets

from chargeward.crypto import Signer
from chargeward.crypto.keys import canonical_public_key
from chargeward.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

OWNER_FIELD = "x-chargeward-owner"
PERSON_ROLES = (Root.type, Targets.type)  # held by people: one key per person
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


def named_owner(key: Key) -> str | None:
    """The owner the root names for ``key``, or None."""
    owner = key.unrecognized_fields.get(OWNER_FIELD)
    return owner.strip() if isinstance(owner, str) and owner.strip() else None


def _person(owner: str) -> str:
    return " ".join(owner.split()).casefold()  # "Alice", "alice " and "ALICE" are one person


def _public_material(role: str, key: Key) -> bytes:
    """The public key of ``key`` as canonical DER SubjectPublicKeyInfo: one key in two PEM
    encodings (an EC point compressed or not, SEC 1 2.3.3) gets two keyids but is one key."""
    public = key.keyval.get("public")
    if not isinstance(public, str):
        raise ConfigError(f"{role} key {key.keyid[:12]} holds no PEM public key")
    try:
        return canonical_public_key(public)
    except ValueError as e:
        raise ConfigError(f"{role} key {key.keyid[:12]} holds no PEM public key") from e


def check_people(role: str, keys: Iterable[Key], *, named: bool) -> None:
    """Refuse ``role`` keys that do not equal people (:class:`~chargeward.errors.ConfigError`).

    One person (owner, compared without case) may hold one key of a role, and one public key
    may appear once whatever its keyid: python-tuf counts keyids, so either would let one
    person count twice towards the threshold.  With ``named`` every key must name its owner.
    """
    owners: dict[str, str] = {}
    material: dict[bytes, str] = {}
    for key in keys:
        owner = named_owner(key)
        if owner is None and named:
            raise ConfigError(
                f"{role} key {key.keyid[:12]} names no owner: give it as OWNER=KEY-URI "
                "(the owner is the operator account that approves with it)"
            )
        person = _person(owner) if owner is not None else key.keyid
        if person in owners:
            raise ConfigError(
                f"{owner} would hold two {role} keys ({owners[person][:12]} and "
                f"{key.keyid[:12]}): keys must equal people, or chargers count one person twice"
            )
        public = _public_material(role, key)
        if public in material:
            raise ConfigError(
                f"{role} keys {material[public][:12]} and {key.keyid[:12]} are the same public "
                "key: keys must equal people, or chargers count one person twice"
            )
        owners[person] = key.keyid
        material[public] = key.keyid


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


def check_root_people(root: Root) -> None:
    """Refuse a root whose root or targets role does not hold one key per person."""
    for role in PERSON_ROLES:
        keyids = root.roles[role].keyids
        if len(set(keyids)) != len(keyids):
            raise ConfigError(f"a {role} key is listed twice")
        check_people(role, [root.keys[k] for k in keyids], named=role == Targets.type)
