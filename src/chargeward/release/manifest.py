"""The release manifest (``manifest.json``): what a bundle claims to contain.

The manifest is canonical JSON (sorted keys, no whitespace, UTF-8), so one release has exactly
one encoding and its SHA-256 is a stable *release id*.  It is not signed itself: every claim
that matters is checked against the signed images by :func:`chargeward.release.verify_bundle`.

    manifest = Manifest.from_json(raw)
    manifest.version, manifest.security_version, manifest.images[0].path
    # -> ('1.2.0', 3, 'images/main.cwfw')
    manifest.to_json() == raw
    # -> True
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from chargeward import strictjson
from chargeward.errors import BundleError, InvalidValue
from chargeward.limits import DEFAULT_FORMAT_LIMITS, FormatLimits
from chargeward.model.firmware import (
    check_component,
    check_length,
    check_models,
    check_security_version,
    check_sha256,
    check_signature,
    check_version,
    primary_component,
)
from chargeward.model.targets import check_customer, check_release_class
from chargeward.release.image import canonical_json

SCHEMA = "chargeward.bundle/1"
MANIFEST_NAME = "manifest.json"
CERTIFICATE_NAME = "signing-certificate.pem"
IMAGES_DIR = "images"
IMAGE_SUFFIX = ".cwfw"
CREATED_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_CREATED_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")

# Supply-chain documents a bundle may carry beside its images, each listed in the manifest with
# its digest (so the release id covers them): the CycloneDX SBOM, the vulnerability gate's
# report and the OpenVEX statements of accepted risks.
SBOM_NAME = "sbom.cdx.json"
SCAN_REPORT_NAME = "vulnerability-report.json"
VEX_NAME = "vex.openvex.json"
ATTESTATION_NAMES = (SBOM_NAME, SCAN_REPORT_NAME, VEX_NAME)
# The release's signed build provenance names the bundle's own digest, so it travels beside the
# bundle (and the server keeps it under this name), never inside.
PROVENANCE_NAME = "provenance.dsse.json"

_TOP_KEYS = frozenset({"schema", "release", "images", "signing_certificate"})
_TOP_OPTIONAL = frozenset({"attestations"})
_RELEASE_KEYS = frozenset({"version", "security_version", "hardware_models", "created", "notes"})
# Optional, written only when not the default (so older manifests keep their encoding).
_RELEASE_OPTIONAL = frozenset({"release_class", "customer"})
_IMAGE_KEYS = frozenset({"component", "path", "sha256", "length", "signature"})
_ATTESTATION_KEYS = frozenset({"name", "sha256", "length"})


def image_path(component: str) -> str:
    """The bundle member holding ``component``'s image: ``images/<component>.cwfw``."""
    return f"{IMAGES_DIR}/{check_component(component)}{IMAGE_SUFFIX}"


def format_created(moment: dt.datetime) -> str:
    """``moment`` as the manifest's ``created`` string (UTC, whole seconds)."""
    if moment.tzinfo is None:
        raise InvalidValue("created time must be timezone-aware")
    return moment.astimezone(dt.UTC).strftime(CREATED_FORMAT)


def parse_created(value: object) -> dt.datetime:
    """Parse a ``created`` string such as ``2026-11-21T10:00:00Z``."""
    if not isinstance(value, str) or not _CREATED_RE.fullmatch(value):
        raise BundleError(f"created must look like 2026-11-21T10:00:00Z, got {value!r}")
    try:
        return dt.datetime.strptime(value, CREATED_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError as e:
        raise BundleError(f"created {value!r} is not a valid UTC time") from e


def check_notes(value: object) -> str:
    most = DEFAULT_FORMAT_LIMITS.release_notes_chars
    if not isinstance(value, str) or len(value) > most:
        raise BundleError(f"notes must be a string of at most {most} characters")
    return value


@dataclass(frozen=True)
class ManifestImage:
    """One firmware image of a release, as the manifest describes it."""

    component: str
    path: str
    sha256: str
    length: int
    signature: str

    def __post_init__(self) -> None:
        check_component(self.component)
        if self.path != image_path(self.component):
            raise BundleError(
                f"image path for component {self.component!r} must be "
                f"{image_path(self.component)!r}, got {self.path!r}"
            )
        check_sha256(self.sha256)
        check_length(self.length)
        check_signature(self.signature)

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "path": self.path,
            "sha256": self.sha256,
            "length": self.length,
            "signature": self.signature,
        }


@dataclass(frozen=True)
class ManifestAttestation:
    """A supply-chain document in the bundle (SBOM, scan report, VEX) and its digest."""

    name: str
    sha256: str
    length: int

    def __post_init__(self) -> None:
        if self.name not in ATTESTATION_NAMES:
            raise BundleError(
                f"attestation {self.name!r} is not one of {', '.join(ATTESTATION_NAMES)}"
            )
        check_sha256(self.sha256)
        most = DEFAULT_FORMAT_LIMITS.attestation_bytes
        if not isinstance(self.length, int) or not 0 < self.length <= most:
            raise BundleError(f"attestation {self.name!r}: length must be 1-{most} bytes")

    @classmethod
    def of(cls, name: str, data: bytes) -> ManifestAttestation:
        return cls(name, hashlib.sha256(data).hexdigest(), len(data))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "length": self.length}


@dataclass(frozen=True)
class Manifest:
    """A release manifest; construct with :meth:`from_json` or by :func:`build_bundle`.

    Field values are validated on construction (raising :class:`BundleError`), and
    ``hardware_models`` is kept sorted so that equal releases encode identically.
    """

    version: str
    security_version: int
    hardware_models: tuple[str, ...]
    created: str
    notes: str
    images: tuple[ManifestImage, ...]
    signing_certificate_path: str = CERTIFICATE_NAME
    release_class: str = "feature"
    customer: str | None = None
    attestations: tuple[ManifestAttestation, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "attestations", tuple(sorted(self.attestations, key=lambda a: a.name))
        )
        names = [a.name for a in self.attestations]
        if len(set(names)) != len(names):
            raise BundleError("an attestation is listed twice in the manifest")
        check_release_class(self.release_class)
        check_customer(self.customer)
        check_version(self.version)
        check_security_version(self.security_version)
        object.__setattr__(self, "hardware_models", check_models(self.hardware_models))
        parse_created(self.created)
        check_notes(self.notes)
        object.__setattr__(self, "images", tuple(self.images))
        if not 1 <= len(self.images) <= DEFAULT_FORMAT_LIMITS.release_images:
            raise BundleError(f"a release holds 1-{DEFAULT_FORMAT_LIMITS.release_images} images")
        if not all(isinstance(image, ManifestImage) for image in self.images):
            raise BundleError("manifest images must be ManifestImage entries")
        components = [image.component for image in self.images]
        if len(set(components)) != len(components):
            raise BundleError("a component is listed twice in the manifest")
        if self.signing_certificate_path != CERTIFICATE_NAME:
            raise BundleError(
                f"signing_certificate must be {CERTIFICATE_NAME!r}, "
                f"got {self.signing_certificate_path!r}"
            )

    @property
    def created_at(self) -> dt.datetime:
        return parse_created(self.created)

    @property
    def release_id(self) -> str:
        """SHA-256 (hex) of the canonical ``manifest.json``: the release's identity."""
        return hashlib.sha256(self.to_json()).hexdigest()

    def image(self, component: str) -> ManifestImage:
        """The image for ``component``; :class:`BundleError` if the release has none."""
        for image in self.images:
            if image.component == component:
                return image
        raise BundleError(f"release {self.version} has no {component!r} image")

    @property
    def primary(self) -> ManifestImage:
        """The image OCPP ``UpdateFirmware`` carries (see :func:`primary_component`)."""
        return self.image(primary_component(image.component for image in self.images))

    def attestation(self, name: str) -> ManifestAttestation | None:
        """The listed attestation called ``name`` (e.g. :data:`SBOM_NAME`), if any."""
        return next((a for a in self.attestations if a.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        release: dict[str, Any] = {
            "version": self.version,
            "security_version": self.security_version,
            "hardware_models": list(self.hardware_models),
            "created": self.created,
            "notes": self.notes,
        }
        if self.release_class != "feature":
            release["release_class"] = self.release_class
        if self.customer is not None:
            release["customer"] = self.customer
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "release": release,
            "images": [image.to_dict() for image in self.images],
            "signing_certificate": self.signing_certificate_path,
        }
        if self.attestations:  # written only when present: older manifests keep their encoding
            out["attestations"] = [a.to_dict() for a in self.attestations]
        return out

    def to_json(self) -> bytes:
        """The canonical encoding, byte for byte what ``manifest.json`` holds."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes, *, limits: FormatLimits = DEFAULT_FORMAT_LIMITS) -> Manifest:
        """Parse and strictly validate ``manifest.json``.

        Refuses (with :class:`BundleError`) anything over ``limits.manifest_bytes`` (1 MiB),
        invalid UTF-8 or JSON, duplicate or unknown keys, missing keys, wrong types or values,
        and any encoding other than the canonical one.
        """
        if len(raw) > limits.manifest_bytes:
            raise BundleError(f"manifest is {len(raw)} bytes; the limit is {limits.manifest_bytes}")
        data = _load_json(raw)
        top = _object(data, _TOP_KEYS, "manifest", _TOP_OPTIONAL)
        if top["schema"] != SCHEMA:
            raise BundleError(f"unsupported manifest schema {top['schema']!r}; expected {SCHEMA!r}")
        release = _object(top["release"], _RELEASE_KEYS, "manifest 'release'", _RELEASE_OPTIONAL)
        images_raw = top["images"]
        if not isinstance(images_raw, list):
            raise BundleError("manifest 'images' must be a list")
        images: list[ManifestImage] = []
        for index, item in enumerate(images_raw):
            fields = _object(item, _IMAGE_KEYS, f"manifest images[{index}]")
            images.append(
                ManifestImage(
                    component=fields["component"],
                    path=fields["path"],
                    sha256=fields["sha256"],
                    length=fields["length"],
                    signature=fields["signature"],
                )
            )
        attestations_raw = top.get("attestations", [])
        if not isinstance(attestations_raw, list) or len(attestations_raw) > len(ATTESTATION_NAMES):
            raise BundleError("manifest 'attestations' must be a short list")
        attestations = [
            ManifestAttestation(**_object(item, _ATTESTATION_KEYS, f"manifest attestations[{i}]"))
            for i, item in enumerate(attestations_raw)
        ]
        if not isinstance(release["hardware_models"], list):
            raise BundleError("manifest 'hardware_models' must be a list")
        manifest = cls(
            version=release["version"],
            security_version=release["security_version"],
            hardware_models=tuple(release["hardware_models"]),
            created=release["created"],
            notes=release["notes"],
            images=tuple(images),
            signing_certificate_path=top["signing_certificate"],
            release_class=release.get("release_class", "feature"),
            customer=release.get("customer"),
            attestations=tuple(attestations),
        )
        if manifest.to_json() != raw:
            raise BundleError(
                "manifest is not canonical JSON (sorted keys, no whitespace, "
                "hardware models sorted)"
            )
        return manifest


def _load_json(raw: bytes) -> Any:
    try:
        return strictjson.loads(raw)
    except ValueError as e:
        raise BundleError(f"manifest {e}") from e


def _object(
    value: object, keys: frozenset[str], where: str, optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(f"{where} must be a JSON object")
    missing = sorted(keys - value.keys())
    if missing:
        raise BundleError(f"{where} lacks {', '.join(map(repr, missing))}")
    unknown = sorted(value.keys() - keys - optional)
    if unknown:
        raise BundleError(f"{where} has unknown keys {', '.join(map(repr, unknown))}")
    return value
