"""Factory provisioning of a charger's state directory, and its factory reset.

The factory image comes from a release bundle verified against the same Manufacturer Root CA
the charger will trust (every image of a multi-image release: the primary and its other
components); it goes into slot ``a``, which becomes the committed active slot, and
the rollback floor starts at its security version.  With ``tuf_root`` (the image repository's
root.json) the charger also checks every update against the TUF repository.  Secrets go to the
sealed credential store (:mod:`chargeward.agent.credentials`), never to a plain file.

    provision(Path("charger-1"), identity=Identity("CP-1", "AC22", "ACME", "CP-1"),
              password=password, roots_pem=roots, factory_bundle=Path("factory.cwb"),
              tuf_root=Path("root.json").read_bytes())

A production line verifies the bundle once and installs many chargers
(:func:`verified_factory_image`, :func:`install`); ``chargeward factory provision`` does that.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509

from chargeward.agent.credentials import Credentials, CredentialStore
from chargeward.agent.state import (
    BootControl,
    ComponentInfo,
    Identity,
    SlotInfo,
    StateDir,
    check_tuf_root,
)
from chargeward.agent.storage import atomic_copy, atomic_write, fsync_dir
from chargeward.crypto import certificate_pem, key_matches_certificate, load_certificates
from chargeward.crypto.pki import certificate_common_name
from chargeward.crypto.sealing import DevicePublicKey, generate_device_key_pair
from chargeward.crypto.station_passwords import check_password_policy
from chargeward.errors import Conflict, IncompatibleImage, UntrustedCertificate
from chargeward.release.bundle import verify_bundle

# Given the device's new public key, the factory CA returns its certificate.
Certify = Callable[[DevicePublicKey], x509.Certificate]


@dataclass(frozen=True)
class TrustAnchors:
    """What a charger trusts from the factory on."""

    manufacturer_roots_pem: bytes  # ManufacturerRootCertificate(s): firmware signing
    tuf_root: bytes | None = None  # the image repository's root.json
    csms_roots_pem: bytes | None = None  # CSMSRootCertificate(s): the server's TLS chain

    def check(self) -> None:
        """Refuse anything unusable before it becomes a trust anchor."""
        load_certificates(self.manufacturer_roots_pem)
        if self.tuf_root is not None:
            check_tuf_root(self.tuf_root)
        if self.csms_roots_pem is not None:
            load_certificates(self.csms_roots_pem)


@dataclass(frozen=True)
class FactoryImage:
    """A verified factory image on disk (valid inside :func:`verified_factory_image`)."""

    file: Path
    info: SlotInfo
    hardware_models: tuple[str, ...]
    component_files: tuple[tuple[str, Path], ...] = ()  # a multi-image release's other images


@contextmanager
def verified_factory_image(bundle: Path, roots_pem: bytes) -> Iterator[FactoryImage]:
    """Verify ``bundle`` against ``roots_pem`` once; yields its image for :func:`install`."""
    roots = load_certificates(roots_pem)
    with tempfile.TemporaryDirectory(prefix="provision-") as tmp:
        verified = verify_bundle(bundle, roots, workdir=Path(tmp) / "x")
        image = verified.primary
        others = [i for i in verified.images if i is not image]
        yield FactoryImage(
            file=image.file,
            info=SlotInfo(
                sha256=image.sha256,
                length=image.length,
                signature=image.signature,
                signing_certificate=verified.signing_certificate_pem,
                component=image.component,
                version=image.header.version,
                security_version=image.header.security_version,
                components=tuple(
                    ComponentInfo(i.component, i.sha256, i.length, i.signature) for i in others
                ),
            ),
            hardware_models=tuple(image.header.hardware_models),
            component_files=tuple((i.component, i.file) for i in others),
        )


def provision(
    state_dir: Path,
    *,
    identity: Identity,
    password: str,
    roots_pem: bytes,
    factory_bundle: Path,
    tuf_root: bytes | None = None,
    csms_roots_pem: bytes | None = None,
) -> SlotInfo:
    """Provision one charger with a given BasicAuthPassword (``chargeward agent init``).

    Its device-unique key is random (there is no product secret to derive it from).
    """
    anchors = TrustAnchors(roots_pem, tuf_root, csms_roots_pem)
    with verified_factory_image(factory_bundle, roots_pem) as image:
        return install(
            state_dir,
            identity=identity,
            credentials=Credentials(basic_auth_password=password),
            anchors=anchors,
            image=image,
        )


def install(
    state_dir: Path,
    *,
    identity: Identity,
    credentials: Credentials,
    anchors: TrustAnchors,
    image: FactoryImage,
    device_key: bytes | None = None,
    certify: Certify | None = None,
) -> SlotInfo:
    """Write a charger's state: fused key, sealed credentials, anchors, factory image.

    ``device_key`` is the device-unique key to fuse (default: random).  With ``certify`` the
    charger makes its own P-256 key pair, has the public key certified and seals the private
    key with its other credentials: the private key never exists outside the state directory
    except in this process's memory.
    """
    state = StateDir(state_dir)
    if (state_dir / "identity.json").exists():
        raise Conflict(f"{state_dir} is already provisioned")
    check_password_policy(credentials.basic_auth_password)
    anchors.check()
    if identity.model not in image.hardware_models:
        raise IncompatibleImage(
            f"factory image is for {', '.join(image.hardware_models)}, not {identity.model}"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    if certify is not None:
        pair = generate_device_key_pair()
        cert = certify(pair.public_key)
        if not key_matches_certificate(pair.public_key, cert):
            raise UntrustedCertificate("the device certificate does not certify the device key")
        if certificate_common_name(cert) != identity.serial_number:
            raise UntrustedCertificate("the device certificate's CN is not the serial number")
        credentials = replace(credentials, device_key_pem=pair.private_pem)
        atomic_write(state.device_certificate_path, certificate_pem(cert).encode())
    store = CredentialStore(state_dir, identity.serial_number)
    store.fuse(device_key)
    store.provision(credentials)
    state.set_trust_anchors(anchors.manufacturer_roots_pem)
    if anchors.tuf_root is not None:
        state.set_tuf_bootstrap_root(anchors.tuf_root)
    if anchors.csms_roots_pem is not None:
        atomic_write(state.csms_roots_path, anchors.csms_roots_pem)
    atomic_copy(image.file, state.slot_image("a"))
    for component, file in image.component_files:
        atomic_copy(file, state.component_image("a", component))
    state.set_slot_info("a", image.info)
    state.raise_rollback_floor(image.info.security_version)
    state.set_boot_control(BootControl(active="a"))
    state.set_identity(identity)  # last: its presence marks a complete provisioning
    return image.info


# What a factory reset erases besides the current credentials: what the operator and the
# charger's use produced (device model variables set by the CSMS, statuses, downloads).
# Everything that protects the charger stays: the fused key, identity and customer lock, trust
# anchors, rollback and time floors, TUF metadata, CRL, firmware slots and boot control (a
# reset must never re-open a rollback), pending security events and the tamper notice.
RESET_FILES = ("settings.json", "status.json", "update_check.json")
RESET_DIRS = ("downloads",)


def factory_reset(state_dir: Path) -> Identity:
    """Restore the charger's factory credentials (unique to it) and erase operator data.

    Raises :class:`~chargeward.errors.CredentialStoreError` when the factory copy does not
    open; nothing is erased then.
    """
    state = StateDir(state_dir)
    identity = state.identity()
    state.credential_store().restore_factory()
    for name in RESET_FILES:
        (state_dir / name).unlink(missing_ok=True)
    for name in RESET_DIRS:
        shutil.rmtree(state_dir / name, ignore_errors=True)
    fsync_dir(state_dir)
    return identity
