"""Secrets sealed to one device: HKDF-SHA256 key derivation and AES-256-GCM.

A charger's secrets are encrypted with a 256-bit *device-unique key*.  At the factory that key
is derived from the product secret (which never leaves the factory) and the serial number, so
the factory can re-derive it for one charger and no charger's key reveals another's::

    >>> product_secret = secrets.token_bytes(MIN_PRODUCT_SECRET)  # the factory's
    >>> key = derive_device_key(product_secret, "CP-000001")
    >>> blob = seal(key, b"secret", aad=b"credentials|CP-000001|current")
    >>> unseal(key, blob, aad=b"credentials|CP-000001|current")
    b'secret'
    >>> derive_device_key(product_secret, "CP-000002") == key
    False

The associated data (``aad``) is authenticated, not encrypted: a blob opened with other
associated data (another serial, another purpose) fails exactly like a wrong key or a flipped
bit, with :class:`~chargeward.errors.IntegrityError`.

Device key pairs (P-256) for the device certificate are made here too
(:func:`generate_device_key_pair`): the private key is returned as unencrypted PKCS#8 PEM
only so that the caller can seal it at once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chargeward.errors import ConfigError, IntegrityError

KEY_SIZE = 32  # AES-256
NONCE_SIZE = 12  # 96-bit GCM nonce, random per seal (a key seals few messages in its life)
MIN_PRODUCT_SECRET = 32  # bytes: at least as strong as the keys derived from it
MAGIC = b"CWS1"  # format marker and version of a sealed blob
_HKDF_SALT = b"chargeward/device-unique-key/v1"

DevicePublicKey: TypeAlias = ec.EllipticCurvePublicKey


def derive_device_key(product_secret: bytes, serial_number: str) -> bytes:
    """The device-unique key of ``serial_number``: HKDF-SHA256(product secret, serial)."""
    if len(product_secret) < MIN_PRODUCT_SECRET:
        raise ConfigError(f"the product secret must be at least {MIN_PRODUCT_SECRET} bytes")
    if not serial_number:
        raise ConfigError("a serial number is required to derive a device key")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=_HKDF_SALT,
        info=b"serial\x00" + serial_number.encode(),
    )
    return hkdf.derive(product_secret)


def random_device_key() -> bytes:
    """A device-unique key from the CSPRNG (for chargers set up without a product secret)."""
    return secrets.token_bytes(KEY_SIZE)


def _aead(key: bytes) -> AESGCM:
    if len(key) != KEY_SIZE:
        raise ConfigError(f"a device key is {KEY_SIZE} bytes, not {len(key)}")
    return AESGCM(key)


def seal(key: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` under ``key``, bound to ``aad``."""
    nonce = secrets.token_bytes(NONCE_SIZE)
    return MAGIC + nonce + _aead(key).encrypt(nonce, plaintext, MAGIC + aad)


def unseal(key: bytes, blob: bytes, *, aad: bytes) -> bytes:
    """Open a blob made by :func:`seal`; :class:`IntegrityError` for any failure.

    Wrong key, other associated data, truncation or any changed byte look the same (as
    Fernet's ``InvalidToken``): the caller adds what it was opening.
    """
    aead = _aead(key)
    if len(blob) < len(MAGIC) + NONCE_SIZE + 16 or not blob.startswith(MAGIC):
        raise IntegrityError("sealed data is malformed")
    nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_SIZE]
    try:
        return aead.decrypt(nonce, blob[len(MAGIC) + NONCE_SIZE :], MAGIC + aad)
    except InvalidTag as e:
        raise IntegrityError("sealed data failed authentication") from e


@dataclass(frozen=True)
class DeviceKeyPair:
    """A fresh P-256 key pair; ``private_pem`` is unencrypted PKCS#8 (seal it at once)."""

    public_key: ec.EllipticCurvePublicKey
    private_pem: str = field(repr=False)

    def private_der(self) -> bytes:
        """The private key as DER PKCS#8 (tests look for it where it must not be)."""
        key = serialization.load_pem_private_key(self.private_pem.encode(), password=None)
        return key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def generate_device_key_pair() -> DeviceKeyPair:
    """A new ECDSA P-256 key pair for a device certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return DeviceKeyPair(key.public_key(), pem)


def device_public_key(private_pem: str) -> ec.EllipticCurvePublicKey:
    """The public half of a device private key (to match it against its certificate)."""
    try:
        key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    except (ValueError, TypeError) as e:
        raise IntegrityError("the stored device key is not a PEM private key") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IntegrityError("the stored device key is not an EC key")
    return key.public_key()
