"""Passphrase-protected private key files: scrypt and AES-256-GCM around PKCS#8 (ADR 0023).

A key file is one PEM block::

    -----BEGIN CHARGEWARD ENCRYPTED PRIVATE KEY-----
    base64( "CWK1" | header length (2 bytes, big-endian) | header | ciphertext and GCM tag )
    -----END CHARGEWARD ENCRYPTED PRIVATE KEY-----

The header is canonical JSON (sorted keys, no spaces)::

    {"aead":"aes-256-gcm","kdf":"scrypt","n":131072,"nonce":"<b64, 12 bytes>","p":1,"r":8,
     "salt":"<b64, 16 bytes>","version":1}

The AES-256-GCM key is scrypt(passphrase, salt, n, r, p) (RFC 7914); the plaintext is the
unencrypted PKCS#8 DER of the key; the associated data is everything before the ciphertext
(magic, length and header), so changing a parameter fails exactly like a wrong passphrase.
The parameters are read from the file, so files written later can cost more; a file whose
parameters ask for more than ``FormatLimits.keyfile_scrypt_memory`` (a hostile file must not
make the process allocate 100 GiB) or less than :data:`MIN_MEMORY` is refused before scrypt runs.

Files written before this format (``ENCRYPTED PRIVATE KEY``: PKCS#8 PBES2 with PBKDF2, 2,048
iterations) are still read; :func:`read_key_file` says so, and ``chargeward keys rewrap``
converts them.

    blob = wrap(private_key, b"correct horse battery")
    key, legacy = unwrap(blob, b"correct horse battery")
    describe(blob).kdf, describe(blob).n
    # -> ('scrypt', 131072)
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from dataclasses import dataclass
from typing import Any, TypeAlias

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from chargeward.errors import KeyAccessError
from chargeward.limits import DEFAULT_FORMAT_LIMITS

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

LABEL = "CHARGEWARD ENCRYPTED PRIVATE KEY"
LEGACY_LABEL = "ENCRYPTED PRIVATE KEY"  # PKCS#8 EncryptedPrivateKeyInfo (RFC 5958)
MAGIC = b"CWK1"
VERSION = 1
SALT_SIZE = 16
NONCE_SIZE = 12  # 96-bit GCM nonce, random per file
KEY_SIZE = 32  # AES-256
# scrypt needs 128 * n * r bytes.  16 MiB is scrypt's "interactive" setting (n=2**14, r=8:
# Percival 2009); 1 GiB is far above any setting a signing host needs.
MIN_MEMORY = 16 * 1024 * 1024
# The PBES2 scrypt OID (1.3.6.1.4.1.11591.4.11), DER: a legacy file using it is refused, since
# its parameters cannot be checked before cryptography runs them.
_SCRYPT_OID_DER = bytes.fromhex("06092b06010401da47040b")
_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_PEM = re.compile(
    rb"\A\s*-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]+?)-----END \1-----\s*\Z"
)


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost parameters (RFC 7914 section 2)."""

    n: int = 2**17
    r: int = 8
    p: int = 1

    @property
    def memory(self) -> int:
        """Bytes scrypt allocates for one derivation."""
        return 128 * self.n * self.r

    def problem(self) -> str | None:
        """Why these parameters are not acceptable, or None."""
        if self.n < 2 or self.n & (self.n - 1):
            return f"scrypt n={self.n} is not a power of two"
        limits = DEFAULT_FORMAT_LIMITS
        max_r, max_p = limits.keyfile_scrypt_r, limits.keyfile_scrypt_p
        if not 1 <= self.r <= max_r or not 1 <= self.p <= max_p:
            return f"scrypt r={self.r}, p={self.p} outside r 1-{max_r}, p 1-{max_p}"
        if self.memory > limits.keyfile_scrypt_memory:
            return (
                f"scrypt n={self.n}, r={self.r} needs {self.memory >> 20} MiB, "
                f"more than the {limits.keyfile_scrypt_memory >> 20} MiB allowed"
            )
        if self.memory < MIN_MEMORY:
            return (
                f"scrypt n={self.n}, r={self.r} uses {self.memory >> 20} MiB, "
                f"less than the minimum of {MIN_MEMORY >> 20} MiB"
            )
        return None


# OWASP Password Storage Cheat Sheet: scrypt n=2**17, r=8, p=1 (128 MiB).
DEFAULT_PARAMS = ScryptParams()
MINIMUM_PARAMS = ScryptParams(n=2**14)
# What new files get; a module attribute so that tests may write cheaper (still >= minimum).
write_params = DEFAULT_PARAMS
# CHARGEWARD_KEY_SCRYPT_LOG2N sets n = 2**value for files written by this process and the ones
# it starts (14 to 23: 16 MiB to 1 GiB); a reader takes the cost from the file itself.
COST_ENV = "CHARGEWARD_KEY_SCRYPT_LOG2N"


def params_for_writing() -> ScryptParams:
    """The cost new key files get: :data:`COST_ENV` if set, else :data:`write_params`."""
    raw = os.environ.get(COST_ENV, "").strip()
    if not raw:
        return write_params
    if not raw.isdigit():
        raise KeyAccessError(f"{COST_ENV}={raw!r}: expected a whole number such as 17")
    return ScryptParams(n=2 ** min(int(raw), 64))


@dataclass(frozen=True)
class KeyFileInfo:
    """What a key file says about its protection (without the passphrase)."""

    format: str  # "chargeward-v1" or "pkcs8-pbes2" (legacy)
    kdf: str  # "scrypt", or "pbkdf2" for legacy files
    params: ScryptParams | None  # None for legacy files
    salt: bytes = b""
    nonce: bytes = b""


@dataclass(frozen=True)
class _Parsed:
    info: KeyFileInfo
    aad: bytes
    ciphertext: bytes


def _derive(passphrase: bytes, salt: bytes, params: ScryptParams) -> bytes:
    kdf = Scrypt(salt=salt, length=KEY_SIZE, n=params.n, r=params.r, p=params.p)
    return kdf.derive(passphrase)


def _header(params: ScryptParams, salt: bytes, nonce: bytes) -> bytes:
    fields = {
        "aead": "aes-256-gcm",
        "kdf": "scrypt",
        "n": params.n,
        "nonce": base64.b64encode(nonce).decode(),
        "p": params.p,
        "r": params.r,
        "salt": base64.b64encode(salt).decode(),
        "version": VERSION,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def _armour(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    armoured = [f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]
    return "\n".join(armoured).encode()


def wrap(key: PrivateKey, passphrase: bytes, params: ScryptParams | None = None) -> bytes:
    """``key`` as a Chargeward key file (PEM bytes) protected by ``passphrase``."""
    params = params or params_for_writing()
    problem = params.problem()
    if problem is not None:
        raise KeyAccessError(f"refusing to write a key file: {problem}")
    salt, nonce = secrets.token_bytes(SALT_SIZE), secrets.token_bytes(NONCE_SIZE)
    header = _header(params, salt, nonce)
    aad = MAGIC + len(header).to_bytes(2, "big") + header
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ciphertext = AESGCM(_derive(passphrase, salt, params)).encrypt(nonce, der, aad)
    return _armour(LABEL, aad + ciphertext)


def _pem_block(data: bytes) -> tuple[str, bytes]:
    if len(data) > DEFAULT_FORMAT_LIMITS.keyfile_bytes:
        raise KeyAccessError(
            f"larger than {DEFAULT_FORMAT_LIMITS.keyfile_bytes} bytes: not a key file"
        )
    first = _BEGIN.search(data)
    if (
        first is not None
        and first.group(1).endswith(b"PRIVATE KEY")
        and b"ENCRYPTED" not in first.group(1)
    ):
        raise KeyAccessError("a plaintext private key: plaintext keys are refused")
    m = _PEM.match(data)
    if m is None:
        raise KeyAccessError("not a PEM key file (one BEGIN/END block expected)")
    try:
        der = base64.b64decode(re.sub(rb"\s+", b"", m.group(2)), validate=True)
    except binascii.Error as e:
        raise KeyAccessError("the key file's base64 is damaged") from e
    return m.group(1).decode(), der


def _int(fields: dict[str, Any], name: str) -> int:
    value = fields.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise KeyAccessError(f"key file header: {name} is not an integer")
    return value


def _b64(fields: dict[str, Any], name: str, size: int) -> bytes:
    value = fields.get(name)
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except binascii.Error:
        raw = b""
    if len(raw) != size:
        raise KeyAccessError(f"key file header: {name} is not {size} bytes of base64")
    return raw


def _parse(der: bytes) -> _Parsed:
    if len(der) < len(MAGIC) + 2 or not der.startswith(MAGIC):
        raise KeyAccessError("not a Chargeward key file (unknown version)")
    size = int.from_bytes(der[len(MAGIC) : len(MAGIC) + 2], "big")
    start = len(MAGIC) + 2
    if size > DEFAULT_FORMAT_LIMITS.keyfile_header_bytes or len(der) < start + size + 16:
        raise KeyAccessError("the key file is truncated or its header is oversized")
    raw = der[start : start + size]
    try:
        fields = json.loads(raw)
    except ValueError as e:
        raise KeyAccessError("key file header is not JSON") from e
    expected = {"aead", "kdf", "n", "nonce", "p", "r", "salt", "version"}
    if not isinstance(fields, dict) or set(fields) != expected:
        raise KeyAccessError(f"key file header must have exactly the fields {sorted(expected)}")
    if fields["version"] != VERSION or fields["kdf"] != "scrypt":
        raise KeyAccessError(
            f"unsupported key file version {fields['version']!r} / KDF {fields['kdf']!r}"
        )
    if fields["aead"] != "aes-256-gcm":
        raise KeyAccessError(f"unsupported key file cipher {fields['aead']!r}")
    params = ScryptParams(_int(fields, "n"), _int(fields, "r"), _int(fields, "p"))
    problem = params.problem()
    if problem is not None:  # checked before scrypt allocates anything
        raise KeyAccessError(f"key file refused: {problem}")
    info = KeyFileInfo(
        "chargeward-v1",
        "scrypt",
        params,
        _b64(fields, "salt", SALT_SIZE),
        _b64(fields, "nonce", NONCE_SIZE),
    )
    return _Parsed(info, der[: start + size], der[start + size :])


def describe(data: bytes) -> KeyFileInfo:
    """The protection of the key file ``data`` (KeyAccessError if it is no key file)."""
    label, der = _pem_block(data)
    if label == LEGACY_LABEL:
        return KeyFileInfo("pkcs8-pbes2", "pbkdf2", None)
    if label != LABEL:
        raise KeyAccessError(f"a {label!r} PEM block is not an encrypted key file")
    return _parse(der).info


def unwrap(data: bytes, passphrase: bytes) -> tuple[PrivateKey, bool]:
    """The private key in the key file ``data`` and whether the file is of the old PBKDF2
    format.  KeyAccessError for a wrong passphrase, a damaged or changed file, parameters
    out of bounds or a plaintext key."""
    label, der = _pem_block(data)
    if label == LEGACY_LABEL:
        if _SCRYPT_OID_DER in der:
            raise KeyAccessError("PKCS#8 files using scrypt are not read; use a Chargeward file")
        try:
            key = serialization.load_der_private_key(der, password=passphrase)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise KeyAccessError("wrong passphrase or damaged file") from e
        legacy = True
    elif label == LABEL:
        parsed = _parse(der)
        info = parsed.info
        assert info.params is not None
        try:
            plain = AESGCM(_derive(passphrase, info.salt, info.params)).decrypt(
                info.nonce, parsed.ciphertext, parsed.aad
            )
        except InvalidTag as e:
            raise KeyAccessError("wrong passphrase or damaged file") from e
        try:
            key = serialization.load_der_private_key(plain, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise KeyAccessError("the key file holds no readable PKCS#8 key") from e
        legacy = False
    else:
        raise KeyAccessError(f"a {label!r} PEM block is not an encrypted key file")
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyAccessError("the key file holds neither an EC nor an Ed25519 key")
    return key, legacy
