"""How releases appear in the TUF image repository: target paths and signed custom fields.

Every firmware image of a release is listed once per hardware model it supports::

    firmware/<model>/<version>/<component>.cwfw

so a per-model delegation (``firmware/<model>/*/*``) can be given to a model team, and a charger
finds the target for an image from its own model and the image's signed header.  The signed
``custom`` object of each target carries what the charger must match before installing:

    >>> firmware_target_path("ac22", "1.4.0", "main")
    'firmware/ac22/1.4.0/main.cwfw'
    >>> TargetCustom(("ac22",), "1.4.0", 3, "main", "security").to_dict()["security_version"]
    3

Each target also carries the image's OCPP firmware signature (``signature``, base64), so an
image a charger receives only through TUF (a multi-image release's non-primary components)
passes both trust layers.

A release may also list binary deltas that rebuild one of its images from an image the fleet
runs, beside the image::

    >>> delta_target_path("ac22", "1.4.0", "main", "1.3.2")
    'firmware/ac22/1.4.0/main.from-1.3.2.cwdl'

Their custom object (:class:`DeltaCustom`) names both ends by digest.  A charger trusts a
delta for nothing but transport: what it installs is the rebuilt image, checked against the
image's own target and OCPP signature.

The certificate revocation list for firmware-signing certificates is the target
``revocation/firmware-signing.crl`` (DER X.509 CRL, issued by the Manufacturer Root CA).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from chargeward.errors import BundleError
from chargeward.model.firmware import (
    check_component,
    check_length,
    check_models,
    check_security_version,
    check_sha256,
    check_signature,
    check_version,
)

FIRMWARE_PREFIX = "firmware/"
REVOCATION_TARGET = "revocation/firmware-signing.crl"
RELEASE_CLASSES = ("security", "feature")
_PATH_SAFE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_path_safe(kind: str, value: str) -> str:
    """Models and customers appear in URL paths: letters, digits and ``. _ -`` only."""
    if not _PATH_SAFE_RE.fullmatch(value):
        raise BundleError(
            f"{kind} {value!r} cannot be published: use letters, digits and . _ - only"
        )
    return value


def firmware_target_path(model: str, version: str, component: str) -> str:
    """The TUF target path of ``component`` of release ``version`` for hardware ``model``."""
    return (
        f"{FIRMWARE_PREFIX}{check_path_safe('hardware model', model)}/"
        f"{check_version(version)}/{check_component(component)}.cwfw"
    )


DELTA_SUFFIX = ".cwdl"

# Customer-locked releases (ADR 0026): listed in a delegated targets role of their own,
# served only to the customer's stations and permitted operators.  The role name and path
# prefix are an opaque digest of the customer id, so public metadata names no customer.
TENANT_PREFIX = "tenants/"
TENANT_ROLE_PREFIX = "tenant-"


def tenant_id(customer: str) -> str:
    """The opaque id of ``customer`` in role names and target paths (32 hex digits)."""
    digest = hashlib.sha256(
        b"chargeward-tenant/1\0" + check_path_safe("customer", customer).encode()
    )
    return digest.hexdigest()[:32]


def tenant_role(customer: str) -> str:
    """The delegated targets role holding ``customer``'s releases: ``tenant-<id>``."""
    return f"{TENANT_ROLE_PREFIX}{tenant_id(customer)}"


def tenant_path(customer: str | None, path: str) -> str:
    """Where target ``path`` of a release locked to ``customer`` is listed (unchanged for a
    release for every customer): ``tenants/<id>/firmware/...``."""
    return path if customer is None else f"{TENANT_PREFIX}{tenant_id(customer)}/{path}"


def tenant_delegation_pattern(customer_or_id: str, *, is_id: bool = False) -> str:
    """The path pattern the tenant role is trusted for (python-tuf matches per segment)."""
    tid = customer_or_id if is_id else tenant_id(customer_or_id)
    return f"{TENANT_PREFIX}{tid}/{FIRMWARE_PREFIX}*/*/*"


def tenant_of_path(path: str) -> str | None:
    """The opaque tenant id a target path is listed under, or None for a public path."""
    if not path.startswith(TENANT_PREFIX):
        return None
    tid, _, rest = path[len(TENANT_PREFIX) :].partition("/")
    return tid if _TENANT_ID_RE.fullmatch(tid) and rest else None


_TENANT_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def delta_target_path(model: str, version: str, component: str, from_version: str) -> str:
    """The TUF target path of the delta rebuilding ``component`` of ``version`` from the
    same component of release ``from_version`` (same directory as the image it rebuilds)."""
    image = firmware_target_path(model, version, component)
    return f"{image.removesuffix('.cwfw')}.from-{check_version(from_version)}{DELTA_SUFFIX}"


def model_delegation_pattern(model: str) -> str:
    """The path pattern a per-model delegated role is trusted for.

    python-tuf matches patterns segment by segment (``*`` never crosses ``/``), so the pattern
    has one ``*`` for the version and one for the file name.
    """
    return f"{FIRMWARE_PREFIX}{check_path_safe('hardware model', model)}/*/*"


def check_release_class(value: object) -> str:
    if value not in RELEASE_CLASSES:
        raise BundleError(f"release class must be one of {', '.join(RELEASE_CLASSES)}")
    assert isinstance(value, str)
    return value


def check_customer(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BundleError("customer must be a string")
    return check_path_safe("customer", value)


@dataclass(frozen=True)
class TargetCustom:
    """The signed ``custom`` fields of a firmware target."""

    models: tuple[str, ...]
    version: str
    security_version: int
    component: str
    release_class: str = "feature"
    customer: str | None = None
    sbom_sha256: str | None = None
    # The image's OCPP firmware signature (base64), so that an image that travels only
    # through TUF is still checked against the firmware-signing certificate.  Targets
    # published before multi-image releases have none.
    signature: str | None = None
    # Every component of the release (sorted), so a charger knows which images belong to it
    # and notices one the repository does not list.  None: a target from before multi-image
    # releases (the release is this one image).
    components: tuple[str, ...] | None = None
    # SHA-256 of the release's vulnerability scan report, so the approvers' threshold
    # signature covers the report (and every accepted risk in it).  None: no report.
    scan_report_sha256: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", check_models(self.models))
        check_version(self.version)
        check_security_version(self.security_version)
        check_component(self.component)
        check_release_class(self.release_class)
        check_customer(self.customer)
        if self.sbom_sha256 is not None:
            check_sha256(self.sbom_sha256)
        if self.signature is not None:
            check_signature(self.signature)
        if self.scan_report_sha256 is not None:
            check_sha256(self.scan_report_sha256)
        if self.components is not None:
            if not isinstance(self.components, list | tuple) or not self.components:
                raise BundleError("components must be a non-empty list")
            names = tuple(sorted(check_component(c) for c in self.components))
            if len(set(names)) != len(names) or self.component not in names:
                raise BundleError(
                    f"components {names} must be distinct and hold {self.component!r}"
                )
            object.__setattr__(self, "components", names)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "models": list(self.models),
            "version": self.version,
            "security_version": self.security_version,
            "component": self.component,
            "release_class": self.release_class,
            "customer": self.customer,
            "sbom_sha256": self.sbom_sha256,
        }
        # Written only when present: older targets keep their encoding.
        if self.signature is not None:
            out["signature"] = self.signature
        if self.components is not None:
            out["components"] = list(self.components)
        if self.scan_report_sha256 is not None:
            out["scan_report_sha256"] = self.scan_report_sha256
        return out

    @classmethod
    def from_dict(cls, data: object) -> TargetCustom:
        """Parse a target's custom object; raises BundleError when it is malformed."""
        if not isinstance(data, dict):
            raise BundleError("target custom fields must be an object")
        try:
            return cls(
                models=tuple(data["models"]),
                version=data["version"],
                security_version=data["security_version"],
                component=data["component"],
                release_class=data.get("release_class", "feature"),
                customer=data.get("customer"),
                sbom_sha256=data.get("sbom_sha256"),
                signature=data.get("signature"),
                components=data.get("components"),
                scan_report_sha256=data.get("scan_report_sha256"),
            )
        except KeyError as e:
            raise BundleError(f"target custom fields lack {e.args[0]!r}") from e
        except TypeError as e:
            raise BundleError(f"target custom fields are malformed: {e}") from e


@dataclass(frozen=True)
class DeltaCustom:
    """The signed ``custom`` fields of a delta target: ``{"delta": {...}}``.

    ``version``/``component`` name the image the delta rebuilds (its target is
    :func:`firmware_target_path`), ``to_*`` that image's digest, ``from_*`` the image it
    applies to.  A firmware target's custom fields never hold ``delta``, so neither is taken
    for the other.
    """

    component: str
    version: str
    from_version: str
    from_sha256: str
    from_length: int
    to_sha256: str
    to_length: int

    def __post_init__(self) -> None:
        check_component(self.component)
        check_version(self.version)
        check_version(self.from_version)
        check_sha256(self.from_sha256)
        check_sha256(self.to_sha256)
        check_length(self.from_length)
        check_length(self.to_length)
        if self.from_sha256 == self.to_sha256:
            raise BundleError("a delta must change the image")

    def to_dict(self) -> dict[str, Any]:
        return {
            "delta": {
                "component": self.component,
                "version": self.version,
                "from": {
                    "version": self.from_version,
                    "sha256": self.from_sha256,
                    "length": self.from_length,
                },
                "to": {"sha256": self.to_sha256, "length": self.to_length},
            }
        }

    @classmethod
    def from_dict(cls, data: object) -> DeltaCustom:
        """Parse a delta target's custom object; raises BundleError when it is malformed."""
        try:
            delta = data["delta"]  # type: ignore[index]
            return cls(
                component=delta["component"],
                version=delta["version"],
                from_version=delta["from"]["version"],
                from_sha256=delta["from"]["sha256"],
                from_length=delta["from"]["length"],
                to_sha256=delta["to"]["sha256"],
                to_length=delta["to"]["length"],
            )
        except (KeyError, TypeError) as e:
            raise BundleError(f"delta target custom fields are malformed: {e!r}") from e
