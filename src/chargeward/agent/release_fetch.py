"""Fetching the other components of a multi-image release, inside one repository refresh.

The decisions are :mod:`chargeward.agent.components`'; this module does the I/O around them.
For each component the primary's TUF target names besides itself:

1. look the component up in the refreshed repository and check the listing;
2. if the running slot holds that component, rebuild the new image from it (the payload with
   the new release's header, :func:`chargeward.release.image.rewrap_image`): when the digest
   equals the listed one the component is *pinned* (unchanged) and is not downloaded;
3. otherwise download it through the TUF client (python-tuf checks length and hashes);
4. verify the file like the primary (signature, header).

The files go to ``downloads/<key>.<component>.part``; the caller removes them.  Calls block:
the agent runs this in a thread.

    release = fetch_release(view, primary, state=state, model="AC22", customer=None,
                            key=job.download_key, max_bytes=1 << 29)
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from chargeward.agent.components import (
    ComponentListing,
    VerifiedRelease,
    accept_release,
    check_listing,
    other_components,
    verify_component,
)
from chargeward.agent.state import StateDir
from chargeward.agent.tuf_client import RepositoryView
from chargeward.agent.verify import VerifiedImage
from chargeward.errors import ChargewardError
from chargeward.model.targets import firmware_target_path
from chargeward.release.image import rewrap_image

LOG = logging.getLogger("chargeward.agent.release")


def component_part(state: StateDir, key: str, component: str) -> Path:
    """Where a component of the update with download ``key`` waits to be installed."""
    return state.downloads / f"{key}.{component}.part"


def fetch_release(
    view: RepositoryView,
    primary: VerifiedImage,
    *,
    state: StateDir,
    model: str,
    customer: str | None,
    key: str,
    max_bytes: int,
) -> VerifiedRelease:
    """The whole release of ``primary``, every other component fetched and verified.

    Raises what the checks raise (RepositoryRefused, BadSignature, IntegrityError, ...) or
    TransportError when the repository cannot be reached.
    """
    floor = state.rollback_floor()
    verified = []
    for name in other_components(primary):
        info = view.target(firmware_target_path(model, primary.header.version, name))
        listing = check_listing(
            info,
            component=name,
            primary=primary,
            model=model,
            customer=customer,
            rollback_floor=floor,
        )
        part = component_part(state, key, name)
        if not _carried_over(state, primary, listing, part):
            assert info is not None  # check_listing refuses an unlisted component
            view.download_to(info, part, max_bytes)
        verified.append(verify_component(part, listing, primary, model=model, rollback_floor=floor))
    return accept_release(primary, verified)


def _carried_over(
    state: StateDir, primary: VerifiedImage, listing: ComponentListing, part: Path
) -> bool:
    """Rebuild ``listing``'s image from the running slot; True when it is the listed file."""
    slot = state.boot_control().active
    running = state.slot_info(slot)
    if running is None or running.component_sha256(listing.component) is None:
        return False
    source = state.image_of(slot, running, listing.component)
    try:
        digest = rewrap_image(source, part, replace(primary.header, component=listing.component))
    except (OSError, ValueError, ChargewardError) as e:  # unreadable: download instead
        LOG.warning("%s: not carried over from slot %s: %s", listing.component, slot, e)
        part.unlink(missing_ok=True)
        return False
    if (digest.sha256, digest.length) == (listing.sha256, listing.length):
        LOG.info("%s: unchanged (pinned), carried over from slot %s", listing.component, slot)
        return True
    part.unlink(missing_ok=True)
    return False
