"""Firmware metadata as it travels inside images, manifests and OCPP messages."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from chargeward.errors import BundleError

# OCPP 2.0.1 ChargingStationType: firmwareVersion <= 50, model <= 20 characters.
MAX_VERSION_CHARS = 50
MAX_MODEL_CHARS = 20
MAX_SECURITY_VERSION = 2**31 - 1
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$")
_COMPONENT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# OCPP 2.0.1 UpdateFirmware: signature is at most 800 characters (base64).
MAX_SIGNATURE_CHARS = 800
# The component whose image a release sends over OCPP when it has one (see primary_component).
MAIN_COMPONENT = "main"


def primary_component(components: Iterable[str]) -> str:
    """The component whose image OCPP ``UpdateFirmware`` carries for a release.

    OCPP 2.0.1 sends one location and one signature, so a release with several images names
    one of them *primary*: ``main`` when the release has it, else the first component in
    sorted order.  The other images reach the reference agent through the TUF repository.

        >>> primary_component(["modem", "main"]), primary_component(["ui", "app"])
        ('main', 'app')
    """
    names = sorted(set(components))
    if not names:
        raise BundleError("a release holds at least one image")
    return MAIN_COMPONENT if MAIN_COMPONENT in names else names[0]


def check_version(version: object) -> str:
    if not isinstance(version, str) or not version or len(version) > MAX_VERSION_CHARS:
        raise BundleError(f"version must be a string of 1-{MAX_VERSION_CHARS} characters")
    if not _VERSION_RE.fullmatch(version):
        raise BundleError(f"version {version!r} may hold only letters, digits and . + _ -")
    return version


def check_security_version(value: object) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 <= value <= MAX_SECURITY_VERSION
    ):
        raise BundleError(f"security version must be an integer from 0 to {MAX_SECURITY_VERSION}")
    return value


def check_models(models: object) -> tuple[str, ...]:
    if not isinstance(models, list | tuple) or not models:
        raise BundleError("at least one hardware model is required")
    out: list[str] = []
    for m in models:
        if not isinstance(m, str) or not m.strip() or len(m) > MAX_MODEL_CHARS:
            raise BundleError(f"hardware model {m!r} must be 1-{MAX_MODEL_CHARS} characters")
        out.append(m)
    if len(set(out)) != len(out):
        raise BundleError("hardware models are listed twice")
    return tuple(sorted(out))


def check_component(name: object) -> str:
    if not isinstance(name, str) or not _COMPONENT_RE.fullmatch(name):
        raise BundleError(
            f"component name must be 1-32 lowercase letters, digits, '_' or '-', got {name!r}"
        )
    return name


def check_sha256(value: object) -> str:
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise BundleError("sha256 must be 64 lowercase hex digits")
    return value


def check_signature(value: object) -> str:
    """An OCPP firmware signature: base64 text of 1-800 characters."""
    if not isinstance(value, str) or not value or len(value) > MAX_SIGNATURE_CHARS:
        raise BundleError(f"signature must be base64 text of 1-{MAX_SIGNATURE_CHARS} characters")
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BundleError("signature is not valid base64") from e
    return value


def check_length(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BundleError("length must be a non-negative integer")
    return value


@dataclass(frozen=True)
class ImageHeader:
    """What a firmware image says about itself (covered by the image signature)."""

    component: str
    version: str
    security_version: int
    hardware_models: tuple[str, ...]
    payload_sha256: str
    payload_length: int
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        check_component(self.component)
        check_version(self.version)
        check_security_version(self.security_version)
        object.__setattr__(self, "hardware_models", check_models(self.hardware_models))
        check_sha256(self.payload_sha256)
        check_length(self.payload_length)

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "version": self.version,
            "security_version": self.security_version,
            "hardware_models": list(self.hardware_models),
            "payload_sha256": self.payload_sha256,
            "payload_length": self.payload_length,
        }

    @classmethod
    def from_dict(cls, data: object) -> ImageHeader:
        if not isinstance(data, dict):
            raise BundleError("image header must be a JSON object")
        try:
            return cls(
                component=data["component"],
                version=data["version"],
                security_version=data["security_version"],
                hardware_models=data["hardware_models"],
                payload_sha256=data["payload_sha256"],
                payload_length=data["payload_length"],
            )
        except KeyError as e:
            raise BundleError(f"image header lacks field {e.args[0]!r}") from e
        except TypeError as e:
            raise BundleError(f"image header is malformed: {e}") from e
