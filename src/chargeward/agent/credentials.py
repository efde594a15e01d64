"""The charger's secrets, sealed with its device-unique key.

::

    otp/device-unique-key           256-bit device-unique key (mode 0400, written once)
    secure/credentials.enc          current credentials (AES-256-GCM)
    secure/factory/credentials.enc  factory credentials: what a factory reset restores

``otp/`` simulates one-time-programmable fuses or a secure element: it is written once at
provisioning, lives outside the flash file system the firmware manages, and neither a factory
reset nor a firmware update touches it.  At the factory the key is HKDF-SHA256 of the product
secret and the serial number (:func:`chargeward.crypto.sealing.derive_device_key`); the
product secret itself never reaches a charger.

Each file is bound (AEAD associated data) to the serial number and to its purpose, so a file
copied from another charger, or the factory copy put in place of the current one, is refused
like a wrong key or a changed byte, with :class:`~chargeward.errors.CredentialStoreError`::

    store = CredentialStore(Path("charger-1"), "CP-000001")
    store.load().basic_auth_password
    # -> 'q7Hx...'
    store.restore_factory()  # factory reset
"""

from __future__ import annotations

import hmac
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

from chargeward.agent.storage import atomic_write
from chargeward.crypto.sealing import KEY_SIZE, random_device_key, seal, unseal
from chargeward.errors import ConfigError, Conflict, CredentialStoreError, IntegrityError
from chargeward.limits import DEFAULT_AGENT_LIMITS

Purpose = Literal["current", "factory"]
CURRENT: Purpose = "current"
FACTORY: Purpose = "factory"


@dataclass(frozen=True)
class Credentials:
    """A charger's secrets.  ``repr`` never shows them.

    ``basic_auth_password`` is OCPP ``SecurityCtrlr.BasicAuthPassword``; the others are set
    by factory provisioning (``chargeward agent init`` only sets the OCPP password).
    """

    basic_auth_password: str
    web_ui_password: str | None = None
    puk: str | None = None
    ap_password: str | None = None
    device_key_pem: str | None = None
    # The key of an outstanding certificate signing request (OCPP A02), until it is certified.
    pending_device_key_pem: str | None = None

    def __repr__(self) -> str:
        present = [f.name for f in fields(self) if getattr(self, f.name) is not None]
        return f"Credentials(<redacted: {', '.join(present)}>)"

    def values(self) -> list[str]:
        """Every secret held (for checks that none of them leaks)."""
        return [v for f in fields(self) if isinstance(v := getattr(self, f.name), str)]


class CredentialStore:
    """The sealed credentials of the charger whose state directory is ``root``.

    ``key`` replaces the fused device-unique key (the factory re-deriving it from the
    product secret); by default the key is read from ``otp/device-unique-key``.
    """

    def __init__(self, root: Path, serial_number: str, *, key: bytes | None = None) -> None:
        self.root = root
        self.serial_number = serial_number
        self._key = key

    @property
    def key_path(self) -> Path:
        return self.root / "otp" / "device-unique-key"

    def path(self, purpose: Purpose) -> Path:
        secure = self.root / "secure"
        return (
            secure / "credentials.enc"
            if purpose == CURRENT
            else secure / "factory" / "credentials.enc"
        )

    # -- the device-unique key
    def fuse(self, key: bytes | None = None) -> None:
        """Write the device-unique key once (``None``: a random one, unless one is fused).

        Fusing the same key again is a no-op (a provisioning run resumed after a crash);
        a different key is refused, as blown fuses cannot change.
        """
        if self.key_path.exists():
            if key is not None and not hmac.compare_digest(self._read_key(), key):
                raise Conflict(f"{self.key_path}: a different device-unique key is fused")
            return
        key = key if key is not None else random_device_key()
        if len(key) != KEY_SIZE:
            raise ConfigError(f"a device-unique key is {KEY_SIZE} bytes")
        self.key_path.with_name(f".{self.key_path.name}.tmp").unlink(missing_ok=True)
        atomic_write(self.key_path, key, 0o400)

    def _read_key(self) -> bytes:
        try:
            key = self.key_path.read_bytes()
        except FileNotFoundError as e:
            raise ConfigError(f"{self.root} has no device-unique key (not provisioned)") from e
        if len(key) != KEY_SIZE:
            raise CredentialStoreError(f"{self.key_path} is damaged")
        return key

    def _aad(self, purpose: Purpose) -> bytes:
        return (
            b"chargeward-credentials/v1\x00"
            + self.serial_number.encode()
            + b"\x00"
            + purpose.encode()
        )

    # -- sealed credentials
    def save(self, credentials: Credentials, purpose: Purpose = CURRENT) -> None:
        key = self._key if self._key is not None else self._read_key()
        plaintext = json.dumps(asdict(credentials), sort_keys=True).encode()
        atomic_write(self.path(purpose), seal(key, plaintext, aad=self._aad(purpose)), 0o600)

    def provision(self, credentials: Credentials) -> None:
        """Store ``credentials`` as both the factory copy and the current credentials."""
        self.save(credentials, FACTORY)
        self.save(credentials, CURRENT)

    def load(self, purpose: Purpose = CURRENT) -> Credentials:
        path = self.path(purpose)
        try:
            with path.open("rb") as fh:
                blob = fh.read(DEFAULT_AGENT_LIMITS.sealed_credentials_bytes + 1)
        except FileNotFoundError as e:
            raise ConfigError(f"no {purpose} credentials provisioned in {self.root}") from e
        key = self._key if self._key is not None else self._read_key()
        try:
            if len(blob) > DEFAULT_AGENT_LIMITS.sealed_credentials_bytes:
                raise IntegrityError("oversized")
            data = json.loads(unseal(key, blob, aad=self._aad(purpose)))
            return Credentials(**data)
        except (IntegrityError, ValueError, TypeError) as e:
            raise CredentialStoreError(
                f"cannot open the {purpose} credentials of {self.serial_number} ({path}): "
                "wrong device key, changed file, or a file from another charger"
            ) from e

    def restore_factory(self) -> None:
        """Factory reset of the secrets: the factory copy becomes current again."""
        self.save(self.load(FACTORY), CURRENT)
