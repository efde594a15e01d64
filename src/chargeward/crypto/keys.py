"""Private keys addressed by URI, used through one ``Signer`` protocol.

Supported schemes:

* ``file:PATH`` (or a bare path): a passphrase-protected file holding an ECDSA P-256 key
  (scrypt and AES-256-GCM around PKCS#8, :mod:`chargeward.crypto.keyfile`; files of the old
  PBKDF2 PKCS#8 format are read with a warning and converted by :func:`rewrap_key_file`).
  The passphrase comes from a callable, by default ``$CHARGEWARD_KEY_PASSPHRASE``; the CLI
  falls back to a prompt.  File keys are for development and small deployments; CA and root
  keys in production belong in an HSM (``pkcs11:``, docs/key-ceremony.md).
* ``pkcs11:token=LABEL;object=LABEL[?module-path=/path/module.so]`` (RFC 7512): an ECDSA
  P-256 key generated inside a PKCS#11 token that never leaves it
  (:mod:`chargeward.crypto.pkcs11`).  The callable supplies the user PIN unless
  ``$CHARGEWARD_PKCS11_PIN`` is set; the module is ``$CHARGEWARD_PKCS11_MODULE`` or SoftHSM2.

    from chargeward.crypto.keys import generate_key, public_key_fingerprint
    secret = lambda: b"correct horse battery"
    signer = generate_key("file:/tmp/doc-key.pem", secret)
    der_signature = signer.sign_digest(hashlib.sha256(b"data").digest())
    public_key_fingerprint(signer.public_key())
    # -> '3b1f...'
    hsm = load_signer("pkcs11:token=factory;object=signing", secret)
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chargeward.crypto import keyfile
from chargeward.errors import ConfigError, InvalidValue, KeyAccessError
from chargeward.fileio import replace_file
from chargeward.limits import DEFAULT_FORMAT_LIMITS

LOG = logging.getLogger("chargeward.crypto.keys")
PASSPHRASE_ENV = "CHARGEWARD_KEY_PASSPHRASE"  # noqa: S105 (a variable name)
NEW_PASSPHRASE_ENV = "CHARGEWARD_NEW_KEY_PASSPHRASE"  # noqa: S105 (a variable name)
MIN_PASSPHRASE_LENGTH = 12

PassphraseSource = Callable[[], bytes]


class Signer(Protocol):
    """Something that holds an ECDSA P-256 private key and signs SHA-256 digests."""

    @property
    def uri(self) -> str: ...

    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    def sign_digest(self, digest: bytes) -> bytes:
        """Return a DER ECDSA signature over a precomputed SHA-256 digest."""
        ...


def passphrase_from_env(name: str = PASSPHRASE_ENV) -> PassphraseSource:
    """A passphrase source reading the environment variable ``name`` when called."""

    def read() -> bytes:
        value = os.environ.get(name)
        if not value:
            raise KeyAccessError(f"no key passphrase: set {name} or run interactively")
        return value.encode()

    return read


@dataclass(frozen=True)
class FileSigner:
    """An ECDSA P-256 key loaded from an encrypted PKCS#8 file."""

    uri: str
    _key: ec.EllipticCurvePrivateKey = field(repr=False)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign_digest(self, digest: bytes) -> bytes:
        if len(digest) != hashlib.sha256().digest_size:
            raise InvalidValue("sign_digest expects a SHA-256 digest")
        return self._key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def _file_path(uri: str) -> Path:
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if uri.startswith("file:"):
        return Path(uri[len("file:") :])
    if ":" in uri.split("/", 1)[0]:
        scheme = uri.split(":", 1)[0]
        raise KeyAccessError(f"unsupported key URI scheme {scheme!r} in {uri!r}")
    return Path(uri)


def normalise_uri(uri: str) -> str:
    """Return the canonical form of a key URI (``file:`` with an absolute path).

    ``pkcs11:`` URIs are parsed and re-spelt canonically (attribute order, percent-encoding).
    """
    from chargeward.crypto.backends import backend_for  # the table imports this module

    return backend_for(uri).normalise(uri)


def normalise_file_uri(uri: str) -> str:
    """The canonical ``file:`` URI (an absolute path) of a key file URI or bare path."""
    return f"file:{_file_path(uri).resolve()}"


def generate_key(uri: str, passphrase: PassphraseSource) -> Signer:
    """Create a new ECDSA P-256 key at ``uri``; never overwrites an existing key.

    For ``pkcs11:`` URIs ``passphrase`` supplies the token's user PIN (see module docstring).
    """
    from chargeward.crypto.backends import backend_for  # the table imports this module

    return backend_for(uri).generate_p256(uri, passphrase)


def write_new_key_file(
    uri: str, passphrase: PassphraseSource, key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey
) -> None:
    """Store ``key`` at the ``file:`` ``uri`` as a Chargeward key file (scrypt and AES-256-GCM,
    :mod:`chargeward.crypto.keyfile`; mode 0600, fsynced); never replaces an existing file,
    and refuses a passphrase that is too short."""
    path = _file_path(uri)
    pem = keyfile.wrap(key, _new_secret(passphrase))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as e:
        raise KeyAccessError(f"refusing to overwrite existing key file {path}") from e
    except OSError as e:
        raise KeyAccessError(f"cannot create key file {path}: {e.strerror}") from e
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())


def _new_secret(passphrase: PassphraseSource) -> bytes:
    secret = passphrase()
    if len(secret) < MIN_PASSPHRASE_LENGTH:
        raise ConfigError(f"key passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters")
    return secret


def rewrap_command(path: Path) -> str:
    """The command that converts the key file at ``path`` to the current format."""
    return f"chargeward keys rewrap file:{path}"


def read_key_file(uri: str, passphrase: PassphraseSource) -> keyfile.PrivateKey:
    """The private key in the key file at the ``file:`` ``uri`` (either format).

    A file of the old PBKDF2 format is read with a warning naming :func:`rewrap_command`.
    """
    path = _file_path(uri)
    data = _read(path)
    try:
        key, legacy = keyfile.unwrap(data, passphrase())
    except KeyAccessError as e:
        raise KeyAccessError(f"cannot open key file {path}: {e}") from e
    if legacy:
        LOG.warning(
            "key file %s is protected by PBKDF2 with few iterations; re-wrap it with scrypt: %s",
            path,
            rewrap_command(path),
        )
    return key


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(DEFAULT_FORMAT_LIMITS.keyfile_bytes + 1)
    except OSError as e:
        raise KeyAccessError(f"cannot read key file {path}: {e.strerror}") from e


@dataclass(frozen=True)
class Rewrapped:
    """What ``rewrap_key_file`` did: the format before, the KDF parameters now."""

    path: Path
    was: keyfile.KeyFileInfo
    now: keyfile.KeyFileInfo


def rewrap_key_file(
    uri: str, old: PassphraseSource, new: PassphraseSource | None = None
) -> Rewrapped:
    """Re-encrypt the key file at ``uri`` in the current format (with the ``new`` passphrase,
    or the old one when ``new`` is None).

    Atomic: the new file is written beside the old one (mode 0600), fsynced, and renamed over
    it with ``os.replace``; a crash leaves the old or the new file, both opening the same key.
    """
    from chargeward.crypto.backends import backend_for  # the table imports this module

    backend = backend_for(uri)
    path = backend.key_file(uri)
    if path is None:
        raise KeyAccessError(f"a {backend.name} key is not a file: nothing to re-wrap")
    data = _read(path)
    secret = old()
    try:
        was = keyfile.describe(data)
        key, _ = keyfile.unwrap(data, secret)
    except KeyAccessError as e:
        raise KeyAccessError(f"cannot open key file {path}: {e}") from e
    new_secret = secret if new is None else _new_secret(new)
    pem = keyfile.wrap(key, new_secret)
    if keyfile.unwrap(pem, new_secret)[0].private_bytes(*_DER_PKCS8) != key.private_bytes(
        *_DER_PKCS8
    ):  # pragma: no cover - a broken writer
        raise KeyAccessError(f"re-wrapping {path} did not round-trip; the old file is kept")
    try:  # a temporary file beside it (0600), fsynced, os.replace, directory fsynced
        replace_file(path, pem, mode=0o600)
    except ConfigError as e:
        raise KeyAccessError(f"cannot re-wrap {path}: {e}") from e
    return Rewrapped(path, was, keyfile.describe(pem))


_DER_PKCS8 = (
    serialization.Encoding.DER,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
)


def load_signer(uri: str, passphrase: PassphraseSource) -> Signer:
    """Open the private key at ``uri`` for signing (``passphrase`` is the PIN for ``pkcs11:``)."""
    from chargeward.crypto.backends import backend_for  # the table imports this module

    return backend_for(uri).load_p256(uri, passphrase)


def ssl_key_file(uri: str, passphrase: PassphraseSource) -> tuple[bytes, bytes]:
    """The key file at ``uri`` as Python's ``ssl`` can load it: (PKCS#8 PEM, password).

    ``ssl`` reads only PKCS#8 with PBKDF2 from a file; the PEM is encrypted under a fresh
    random 256-bit password that lives only in this process (no guessing attack applies).
    """
    key = read_key_file(uri, passphrase)
    password = secrets.token_hex(32).encode()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    return pem, password


def public_key_pem(key: ec.EllipticCurvePublicKey) -> str:
    """The public key as a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo) block."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def canonical_public_key(pem: str) -> bytes:
    """The DER SubjectPublicKeyInfo of the PEM public key ``pem``, in one encoding whatever
    ``pem`` used (an EC point uncompressed, SEC 1 2.3.3), so one key compares equal to
    itself.  :class:`ValueError` when ``pem`` is not a PEM public key."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise InvalidValue("not a PEM public key") from e
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex (as ``openssl pkey -pubout -outform DER``)."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()
