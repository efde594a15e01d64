"""Factory provisioning of a charger's state directory.

The factory image comes from a release bundle verified against the same Manufacturer Root CA
the charger will trust; it goes into slot ``a``, which becomes the committed active slot, and
the rollback floor starts at its security version.  With ``tuf_root`` (the image repository's
root.json) the charger also checks every update against the TUF repository.

    >>> provision(Path("charger-1"), identity=Identity("CP-1", "AC22", "ACME", "CP-1"),
    ...           password=password, roots_pem=roots, factory_bundle=Path("factory.cwb"),
    ...           tuf_root=Path("root.json").read_bytes())        # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from chargeward.agent.state import BootControl, Identity, SlotInfo, StateDir, check_tuf_root
from chargeward.agent.storage import atomic_copy
from chargeward.crypto import load_certificates
from chargeward.errors import Conflict, IncompatibleImage
from chargeward.release.bundle import verify_bundle
from chargeward.server.passwords import check_password_policy


def provision(
    state_dir: Path,
    *,
    identity: Identity,
    password: str,
    roots_pem: bytes,
    factory_bundle: Path,
    tuf_root: bytes | None = None,
) -> SlotInfo:
    state = StateDir(state_dir)
    if (state_dir / "identity.json").exists():
        raise Conflict(f"{state_dir} is already provisioned")
    check_password_policy(password)
    if tuf_root is not None:
        check_tuf_root(tuf_root)
    roots = load_certificates(roots_pem)
    with tempfile.TemporaryDirectory(prefix="provision-") as tmp:
        verified = verify_bundle(factory_bundle, roots, workdir=Path(tmp) / "x")
        image = verified.images[0]
        if identity.model not in image.header.hardware_models:
            raise IncompatibleImage(
                f"factory image is for {', '.join(image.header.hardware_models)}"
                f", not {identity.model}"
            )
        state_dir.mkdir(parents=True, exist_ok=True)
        state.set_trust_anchors(roots_pem)
        state.set_password(password)
        if tuf_root is not None:
            state.set_tuf_bootstrap_root(tuf_root)
        atomic_copy(image.file, state.slot_image("a"))
    info = SlotInfo(
        sha256=image.sha256,
        length=image.length,
        signature=image.signature,
        signing_certificate=verified.signing_certificate_pem,
        component=image.component,
        version=image.header.version,
        security_version=image.header.security_version,
    )
    state.set_slot_info("a", info)
    state.raise_rollback_floor(info.security_version)
    state.set_boot_control(BootControl(active="a"))
    state.set_identity(identity)  # last: its presence marks a complete provisioning
    return info
