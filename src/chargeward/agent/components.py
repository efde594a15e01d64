"""Multi-image releases on the charger: the trust decisions for the other components.

OCPP 2.0.1 ``UpdateFirmware`` carries one image, the release's *primary*
(:func:`chargeward.model.firmware.primary_component`).  Once the primary passed both layers
(:mod:`chargeward.agent.verify`), its TUF target names every component of the release
(custom ``components``).  Each other component must then pass both layers too:

1. :func:`check_listing`: the repository lists it for this charger, in the same release
   (version, security version, components) and with an OCPP signature;
2. :func:`verify_component`: the file (downloaded through TUF, or rebuilt from the active
   slot) has the listed length and SHA-256, the signature verifies with the certificate that
   signed the primary, and its signed header names this component and release.

:func:`accept_release` joins the primary and its components into the one thing the installer
writes as a slot group.  Nothing here talks to the network or writes to flash.

    for name in other_components(primary):
        listing = check_listing(view.target(path_of(name)), component=name,
            primary=primary, model="AC22", customer=None, rollback_floor=1)
        part = fetch(listing)  # through TUF, or rebuilt from the active slot
        parts.append(verify_component(part, listing, primary, model="AC22",
                                      rollback_floor=1))
    release = accept_release(primary, parts)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from tuf.api.metadata import TargetFile

from chargeward.agent.verify import VerifiedImage, check_target, verify_image
from chargeward.crypto import load_certificate
from chargeward.errors import IntegrityError, MisuseError, RepositoryRefused
from chargeward.model.targets import firmware_target_path

_TOKEN = object()


@dataclass(frozen=True)
class ComponentListing:
    """What the repository lists for one more component of the release being installed."""

    component: str
    target_path: str
    sha256: str
    length: int
    signature: str


@dataclass(frozen=True)
class VerifiedComponent:
    """A non-primary image that passed both layers; only :func:`verify_component` makes one."""

    component: str
    path: Path
    sha256: str
    length: int
    signature: str
    _token: object

    def __post_init__(self) -> None:
        if self._token is not _TOKEN:
            raise MisuseError("VerifiedComponent is only made by verify_component()")


@dataclass(frozen=True)
class VerifiedRelease:
    """A whole release, verified: what the installer writes into a slot as one group."""

    primary: VerifiedImage
    components: tuple[VerifiedComponent, ...]
    _token: object

    def __post_init__(self) -> None:
        if self._token is not _TOKEN:
            raise MisuseError("VerifiedRelease is only made by accept_release()")

    @property
    def paths(self) -> list[Path]:
        """Every file of the release (to remove once written or refused)."""
        return [self.primary.path, *(c.path for c in self.components)]


def other_components(primary: VerifiedImage) -> tuple[str, ...]:
    """The release's components besides the primary, as its verified TUF target lists them.

    A charger without a TUF root (layer 1 only) and a target from before multi-image
    releases give none: the release is the primary image alone.
    """
    approval = primary.repository
    if approval is None or approval.custom.components is None:
        return ()
    return tuple(c for c in approval.custom.components if c != primary.header.component)


def check_listing(
    info: TargetFile | None,
    *,
    component: str,
    primary: VerifiedImage,
    model: str,
    customer: str | None,
    rollback_floor: int,
) -> ComponentListing:
    """Layer 2 for one more component: listed for this charger, in the same release.

    The primary's checks (:func:`~chargeward.agent.verify.check_target`: model, customer,
    version, security version, rollback floor) apply to the listing, and it must name the same
    components as the primary's and carry a signature.  Raises RepositoryRefused
    (``not-listed``, ``wrong-model``, ``wrong-customer``, ``repository``) or RollbackRefused.
    """
    assert primary.repository is not None, "only a release TUF approved has components"
    listed = info.hashes.get("sha256") if info is not None else None
    if info is None or listed is None:
        path = firmware_target_path(model, primary.header.version, component)
        raise RepositoryRefused("not-listed", f"the repository does not list {path} with a hash")
    approval = check_target(
        info,
        sha256=listed,
        length=info.length,
        header=replace(primary.header, component=component),
        model=model,
        customer=customer,
        rollback_floor=rollback_floor,
    )
    custom, path = approval.custom, approval.target_path
    if custom.components != primary.repository.custom.components:
        raise RepositoryRefused(
            "repository",
            f"{path}: lists the release's components as {custom.components}, "
            f"the primary's target as {primary.repository.custom.components}",
        )
    if custom.signature is None:
        raise RepositoryRefused("repository", f"{path}: the repository lists no signature")
    return ComponentListing(component, path, listed, info.length, custom.signature)


def verify_component(
    path: Path,
    listing: ComponentListing,
    primary: VerifiedImage,
    *,
    model: str,
    rollback_floor: int,
) -> VerifiedComponent:
    """Layer 1 for one more component, on the file that holds it.

    The OCPP signature listed in TUF must verify with the certificate that signed the
    primary; the signed header must name this component and the primary's version and
    security version; the file must be the listed one.  Raises BadSignature, IntegrityError,
    IncompatibleImage, RollbackRefused or RepositoryRefused (``length``/``hash``).
    """
    signed = verify_image(
        path,
        load_certificate(primary.signing_certificate),
        listing.signature,
        model=model,
        rollback_floor=rollback_floor,
    )
    if (signed.length, signed.sha256) != (listing.length, listing.sha256):
        raise RepositoryRefused(
            "hash", f"{listing.target_path}: the file is not the one the repository lists"
        )
    want = (listing.component, primary.header.version, primary.header.security_version)
    got = (signed.header.component, signed.header.version, signed.header.security_version)
    if got != want:
        raise IntegrityError(
            f"{listing.target_path}: the signed image header says component/version/security "
            f"version {got}, the release is {want}"
        )
    return VerifiedComponent(
        listing.component, path, signed.sha256, signed.length, listing.signature, _TOKEN
    )


def accept_release(
    primary: VerifiedImage, components: Iterable[VerifiedComponent]
) -> VerifiedRelease:
    """The whole release: the primary and exactly the other components its target lists."""
    got = tuple(sorted(components, key=lambda c: c.component))
    names = tuple(c.component for c in got)
    if names != tuple(sorted(other_components(primary))):
        raise RepositoryRefused(
            "repository", f"release components {names} differ from {other_components(primary)}"
        )
    return VerifiedRelease(primary, got, _TOKEN)
