"""The bootloader step: pick the slot to run, verify it (secure boot), handle trial boots.

A trial slot gets ``attempts_left`` boots to become healthy; the count is decremented *before*
each try, so a crash loop ends on the previous slot.  This module only reads and writes the
state directory; it never talks to the network.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from chargeward.agent.state import BootControl, InstallState, StateDir, other
from chargeward.agent.verify import secure_boot_check
from chargeward.errors import BundleError, ChargewardError
from chargeward.model.firmware import ImageHeader

LOG = logging.getLogger("chargeward.agent.boot")


class NoBootableSlot(ChargewardError):
    """No slot passes the secure-boot check: the software was altered (tamper)."""


@dataclass(frozen=True)
class Booted:
    slot: str
    header: ImageHeader
    fell_back: bool = False
    fallback_reason: str = ""


def _check(state: StateDir, slot: str) -> ImageHeader:
    info = state.slot_info(slot)
    if info is None:
        raise BundleError(f"slot {slot} holds no installed image")
    header = secure_boot_check(
        state.slot_image(slot), info.signature, info.signing_certificate, state.trust_anchors()
    )
    if header.version != info.version or header.security_version != info.security_version:
        raise BundleError(f"slot {slot} metadata does not match its image")
    return header


def _fall_back(state: StateDir, bc: BootControl, reason: str) -> Booted:
    target = bc.previous or other(bc.active)
    LOG.warning("trial slot %s failed (%s); falling back to slot %s", bc.active, reason, target)
    header = _check(state, target)  # raises if the fallback is bad too
    state.set_boot_control(
        BootControl(active=target, trial=False, attempts_left=0, previous=bc.active)
    )
    inst = state.install_state()
    if (
        inst is not None
        and inst.phase in ("written", "rebooting")
        and inst.target_slot == bc.active
    ):
        state.set_install_state(replace(inst, phase="rolled_back", detail=reason))
    return Booted(target, header, fell_back=True, fallback_reason=reason)


def boot(state: StateDir) -> Booted:
    """Run the bootloader step once; raises :class:`NoBootableSlot` when nothing verifies."""
    bc = state.boot_control()
    if bc.trial:
        if bc.attempts_left <= 0:
            try:
                return _fall_back(state, bc, "trial boot attempts exhausted")
            except ChargewardError as e:
                raise NoBootableSlot(f"no slot verifies: {e}") from e
        bc = replace(bc, attempts_left=bc.attempts_left - 1)
        state.set_boot_control(bc)
    try:
        return Booted(bc.active, _check(state, bc.active))
    except (ChargewardError, OSError) as e:
        if bc.trial:
            try:
                return _fall_back(state, bc, f"secure boot check failed: {e}")
            except (ChargewardError, OSError) as e2:
                raise NoBootableSlot(f"no slot verifies: {e2}") from e2
        raise NoBootableSlot(f"active slot {bc.active} fails secure boot: {e}") from e


def commit(state: StateDir, booted: Booted) -> InstallState | None:
    """Mark the running trial slot good and raise the rollback floor (rauc's mark-good)."""
    bc = state.boot_control()
    if bc.trial and bc.active == booted.slot:
        state.set_boot_control(
            BootControl(active=booted.slot, trial=False, attempts_left=0, previous=bc.previous)
        )
    state.raise_rollback_floor(booted.header.security_version)
    inst = state.install_state()
    if (
        inst is not None
        and inst.phase in ("written", "rebooting")
        and inst.target_slot == booted.slot
    ):
        done = replace(inst, phase="ok")
        state.set_install_state(done)
        return done
    return None
