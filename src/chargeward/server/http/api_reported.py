"""REST API: change how a release's stations report its version (ADR 0037).

    PUT /api/v1/releases/{id}/reported-versions?reported_version=MODEL=STRING
        &reported_version_pattern=MODEL=REGEX     replace the declaration (none: only the
                                                  release's own version counts); audited

The declaration is release metadata the server keeps, not part of the signed manifest, so it
can be corrected after upload by whoever may upload releases.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from chargeward.server.common.schemas import ReleaseView
from chargeward.server.http.api import Operator, Reported
from chargeward.server.rollout import release_catalog
from chargeward.server.state import ServerState

router = APIRouter(tags=["releases"])


@router.put("/api/v1/releases/{release_id}/reported-versions", response_model=ReleaseView)
async def put_reported_versions(
    release_id: str, request: Request, who: Operator, reported: Reported
) -> ReleaseView:
    state: ServerState = request.app.state.chargeward
    return await state.db.write(
        lambda s: release_catalog.set_reported_versions(
            s, release_id, reported, actor=who, now=state.clock()
        )
    )
