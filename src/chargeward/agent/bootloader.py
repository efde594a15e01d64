"""The bootloader step: pick the slot to run, verify it (secure boot), handle trial boots.

UK SCP Regulations Schedule 1 para 3(4)(a): at every start the software is verified against
the manufacturer trust anchors before it runs.  A slot is bootable only when its image, its
signature and certificate chain verify, its signing certificate is not revoked by a CRL the
charger holds, and its security version is not below the rollback floor (a signed but older
image is a downgrade, not a way back).

- A trial slot gets ``attempts_left`` boots to become healthy; the count is decremented
  *before* each try, so a crash loop ends on the previous slot.
- A slot that fails verification was altered (tamper).  With the other slot bootable the
  charger falls back to it and queues a ``TamperDetectionActivated`` event for the CSMS;
  with no bootable slot :class:`NoBootableSlot` sends the agent into quarantine.  A slot
  whose signing certificate a held CRL revokes (e.g. keyCompromise) is refused the same way,
  whether its image was written around the update checks or installed before the revocation
  (docs/adr/0018).
- A slot holding a multi-image release is a group: every component image must verify (same
  certificate, same version) for the slot to boot; health check, commit and fallback act on
  the slot as a whole.
- The rollback floor rises only in :func:`commit` (rauc's mark-good).

This module only reads and writes the state directory; it never talks to the network.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from chargeward.agent.certificates import boot_revocations
from chargeward.agent.state import BootControl, InstallState, StateDir, other
from chargeward.agent.verify import secure_boot_check
from chargeward.errors import BundleError, ChargewardError, RollbackRefused
from chargeward.model.firmware import ImageHeader

LOG = logging.getLogger("chargeward.agent.boot")
TAMPER_EVENT = "TamperDetectionActivated"


class NoBootableSlot(ChargewardError):
    """No slot passes the secure-boot check: the software was altered (tamper)."""


@dataclass(frozen=True)
class Booted:
    slot: str
    header: ImageHeader
    trial: bool = False  # a trial boot: the slot is not committed yet
    fell_back: bool = False
    fallback_reason: str = ""


def check_slot(state: StateDir, slot: str) -> ImageHeader:
    """Secure boot of one slot; raises a ChargewardError (or OSError) naming what failed."""
    info = state.slot_info(slot)
    if info is None:
        raise BundleError(f"slot {slot} holds no installed image")
    anchors = state.trust_anchors()
    revoked = boot_revocations(state, anchors)  # the CRLs the charger holds
    header = secure_boot_check(
        state.slot_image(slot),
        info.signature,
        info.signing_certificate,
        anchors,
        revoked_serials=revoked,
    )
    if header.version != info.version or header.security_version != info.security_version:
        raise BundleError(f"slot {slot} metadata does not match its image")
    for c in info.components:  # a slot group: every image of the release, or none of them
        part = secure_boot_check(
            state.component_image(slot, c.component),
            c.signature,
            info.signing_certificate,
            anchors,
            revoked_serials=revoked,
        )
        if (part.component, part.version, part.security_version) != (
            c.component,
            header.version,
            header.security_version,
        ):
            raise BundleError(f"slot {slot} component {c.component} does not match its image")
    floor = state.rollback_floor()
    if header.security_version < floor:
        raise RollbackRefused(
            f"slot {slot} holds security version {header.security_version}, "
            f"below the rollback floor {floor}"
        )
    return header


def _why(slot: str, e: Exception) -> str:
    return f"slot {slot}: {e}"


def _fall_back(state: StateDir, bc: BootControl, reason: str, tamper: bool = False) -> Booted:
    target = bc.previous or other(bc.active)
    LOG.warning("slot %s not booted (%s); falling back to slot %s", bc.active, reason, target)
    try:
        header = check_slot(state, target)
    except (ChargewardError, OSError) as e:
        raise NoBootableSlot(f"no slot verifies: {reason}; {_why(target, e)}") from e
    if tamper:  # queued first: a power loss after the switch must not lose the report
        state.add_pending_event(TAMPER_EVENT, f"{reason}; running slot {target}")
    inst = state.install_state()
    if (
        inst is not None
        and inst.phase in ("written", "rebooting")
        and inst.target_slot == bc.active
    ):
        state.set_install_state(replace(inst, phase="rolled_back", detail=reason))
    state.set_boot_control(
        BootControl(active=target, trial=False, attempts_left=0, previous=bc.active)
    )
    return Booted(target, header, fell_back=True, fallback_reason=reason)


def boot(state: StateDir) -> Booted:
    """Run the bootloader step once; raises :class:`NoBootableSlot` when nothing verifies."""
    bc = state.boot_control()
    if bc.trial:
        if bc.attempts_left <= 0:
            return _fall_back(state, bc, "trial boot attempts exhausted")
        bc = replace(bc, attempts_left=bc.attempts_left - 1)
        state.set_boot_control(bc)
    try:
        return Booted(bc.active, check_slot(state, bc.active), trial=bc.trial)
    except (ChargewardError, OSError) as e:
        if not bc.trial and state.slot_info(other(bc.active)) is None:
            raise NoBootableSlot(f"active slot {bc.active} fails secure boot: {e}") from e
        # The slot verified when it was installed: it was altered since (tamper).
        return _fall_back(state, bc, f"secure boot check failed: {_why(bc.active, e)}", tamper=True)


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
