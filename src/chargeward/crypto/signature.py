"""The OCPP 2.0.1 firmware signature: ECDSA P-256 over SHA-256 of the whole file, DER, base64.

This is what ``UpdateFirmware.firmware.signature`` carries and what OCPP 2.0.1 stations verify
(the interoperable choice; see ``docs/adr/0002-firmware-signature.md``).  The digest is computed
while streaming, so an image of any size is hashed in constant memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from chargeward.crypto.keys import Signer
from chargeward.errors import BadSignature

CHUNK = 1 << 20
# OCPP 2.0.1 UpdateFirmware: signature is at most 800 characters (base64).
MAX_SIGNATURE_CHARS = 800


@dataclass(frozen=True)
class Digest:
    """SHA-256 and length of a blob."""

    sha256: str
    length: int

    @property
    def raw(self) -> bytes:
        return bytes.fromhex(self.sha256)


def sha256_file(path: Path) -> Digest:
    """Stream ``path`` through SHA-256."""
    h = hashlib.sha256()
    length = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            length += len(chunk)
    return Digest(h.hexdigest(), length)


def md5_file(path: Path) -> str:
    """MD5 of ``path`` (hex): the checksum OCPP PublishFirmware carries, a transfer check
    only; what a charger installs is checked by SHA-256 and signature."""
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest(), len(data))


def sign_firmware_digest(signer: Signer, digest: Digest) -> str:
    """Sign a firmware digest; returns the base64 DER signature for OCPP."""
    return base64.b64encode(signer.sign_digest(digest.raw)).decode("ascii")


def decode_signature(signature: str) -> bytes:
    """An OCPP firmware signature (base64, at most ``MAX_SIGNATURE_CHARS``) as bytes."""
    if len(signature) > MAX_SIGNATURE_CHARS:
        raise BadSignature("signature longer than OCPP allows")
    try:
        return base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadSignature("signature is not valid base64") from e


def verify_firmware_signature(
    certificate: x509.Certificate, digest: Digest, signature: str
) -> None:
    """Raise :class:`BadSignature` unless ``signature`` is the certificate key's over ``digest``."""
    der = decode_signature(signature)
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise BadSignature("signing certificate does not hold an EC key")
    try:
        key.verify(der, digest.raw, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature as e:
        raise BadSignature("firmware signature does not verify") from e
