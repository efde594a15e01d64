"""Writing a verified release into the inactive slot, in rauc's order.

1. save the install state ``pending`` (before anything is written),
2. invalidate the target slot (its slot.json goes first, so a half-written image is never
   taken for a bootable one),
3. copy every image of the release: the primary, then each other component (temp file,
   fsync, rename),
4. write the slot's metadata (every component's digest and signature), then the install
   state ``written``,
5. switch boot control to the new slot as a *trial* with ``attempts`` boots.

A power loss between any two steps leaves the running slot untouched and bootable; the next
start finds ``pending``/``written`` and reports the truth (see ``UpdatePipeline.commit`` in
:mod:`chargeward.agent.update`).
Only a :class:`~chargeward.agent.components.VerifiedRelease` (or a lone
:class:`~chargeward.agent.verify.VerifiedImage`) can be installed.
"""

from __future__ import annotations

from dataclasses import replace

from chargeward.agent.components import VerifiedRelease, accept_release
from chargeward.agent.state import ComponentInfo, InstallState, SlotInfo, StateDir, other
from chargeward.agent.storage import atomic_copy, remove
from chargeward.agent.verify import VerifiedImage


def write_slot(
    state: StateDir, release: VerifiedRelease | VerifiedImage, request_id: int, attempts: int
) -> str:
    """Install ``release`` into the inactive slot as a trial; returns the slot written."""
    if isinstance(release, VerifiedImage):
        release = accept_release(release, ())
    image = release.primary
    bc = state.boot_control()
    target = other(bc.active)
    h = image.header
    state.set_install_state(
        InstallState(request_id, "pending", target, h.version, h.security_version)
    )
    state.set_slot_info(target, None)
    old_group = state.slot_dir(target) / "components"
    for stale in sorted(old_group.glob("*")) if old_group.is_dir() else ():
        remove(stale)  # the slot's old group: nothing of it survives into the new one
    atomic_copy(image.path, state.slot_image(target))
    for c in release.components:
        atomic_copy(c.path, state.component_image(target, c.component))
    state.set_slot_info(
        target,
        SlotInfo(
            sha256=image.sha256,
            length=image.length,
            signature=image.signature,
            signing_certificate=image.signing_certificate,
            component=h.component,
            version=h.version,
            security_version=h.security_version,
            components=tuple(
                ComponentInfo(c.component, c.sha256, c.length, c.signature)
                for c in release.components
            ),
        ),
    )
    state.set_install_state(
        InstallState(request_id, "written", target, h.version, h.security_version)
    )
    state.set_boot_control(
        replace(bc, active=target, trial=True, attempts_left=attempts, previous=bc.active)
    )
    return target


def mark_rebooting(state: StateDir) -> None:
    """The install is complete; the next start boots the trial slot."""
    inst = state.install_state()
    if inst is not None and inst.phase == "written":
        state.set_install_state(replace(inst, phase="rebooting"))
