"""Authorization of every API route, in one place: the bearer token, then ``ROUTE_PERMISSIONS``.

:func:`authorize` is a dependency of the whole application (``FastAPI(dependencies=...)``), so
it runs for every route, including routes of included routers, before the route's handler.
It finds the matched route template (``request.scope["route"].path``) and method in
``ROUTE_PERMISSIONS``:

- ``PUBLIC``: no token (health, the OpenAPI document, login, and the endpoints stations use,
  which carry their own credentials: TUF files, signed download URLs, one-time log uploads);
- ``AUTHENTICATED``: any valid token (who am I, log out, one's own API tokens);
- a permission from :mod:`chargeward.server.auth.roles`: the caller must hold it;
- a route missing from the table is refused: 403 ``route has no permission assigned``.

The caller's :class:`~chargeward.server.auth.roles.Principal` is then available to handlers
(:func:`current_principal`; the ``Operator`` dependency of :mod:`chargeward.server.http.api` gives
its name for the audit log).  Routes that are not FastAPI ``APIRoute`` objects do not run
dependencies, so they must be public; the tests check both rules for every route.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Depends, Request

from chargeward import audit
from chargeward.server.auth import tenancy
from chargeward.server.auth.accounts import Refusal, enrolment_required, unauthenticated
from chargeward.server.auth.roles import Principal
from chargeward.server.auth.sessions import authenticate
from chargeward.server.auth.tenancy import PRINCIPAL_KEY
from chargeward.server.http.web_routes import WEB_ROUTES
from chargeward.server.state import ServerState

PUBLIC: Final = "public"
AUTHENTICATED: Final = "authenticated"

# (method, path template) -> PUBLIC, AUTHENTICATED or a permission.  HEAD is checked as GET.
ROUTE_PERMISSIONS: dict[tuple[str, str], str] = {
    # public: no token, or credentials of their own
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/api/openapi.json"): PUBLIC,
    ("GET", "/tuf/metadata/{name}"): PUBLIC,
    ("GET", "/tuf/targets/{path:path}"): PUBLIC,
    ("GET", "/firmware/sha256/{sha256}"): PUBLIC,  # signed, expiring URL
    ("POST", "/api/v1/log-uploads/{token}"): PUBLIC,  # one-time upload token
    ("PUT", "/api/v1/log-uploads/{token}"): PUBLIC,
    ("POST", "/api/v1/auth/login"): PUBLIC,
    # the dashboard: its pages check the session cookie themselves and act through the routes
    # below with it, so the API's permissions apply unchanged (chargeward.server.http.web)
    **{route: PUBLIC for route in WEB_ROUTES},
    # accounts and tokens
    ("POST", "/api/v1/auth/logout"): AUTHENTICATED,
    ("GET", "/api/v1/auth/me"): AUTHENTICATED,
    ("POST", "/api/v1/auth/totp/enrolment"): AUTHENTICATED,  # one's own, without TOTP only
    ("POST", "/api/v1/auth/totp/enrolment/confirm"): AUTHENTICATED,
    ("GET", "/api/v1/roles"): AUTHENTICATED,
    ("POST", "/api/v1/tokens"): AUTHENTICATED,  # scopes limited to the caller's own
    ("GET", "/api/v1/tokens"): AUTHENTICATED,  # one's own; all with users:manage
    ("DELETE", "/api/v1/tokens/{token_id}"): AUTHENTICATED,
    ("GET", "/api/v1/users"): "users:manage",
    ("POST", "/api/v1/users"): "users:manage",
    ("GET", "/api/v1/users/{username}"): "users:manage",
    ("PUT", "/api/v1/users/{username}/role"): "users:manage",
    ("PUT", "/api/v1/users/{username}/password"): "users:manage",
    ("POST", "/api/v1/users/{username}/totp/reset"): "users:manage",
    ("POST", "/api/v1/users/{username}/disable"): "users:manage",
    ("POST", "/api/v1/users/{username}/enable"): "users:manage",
    # stations
    ("GET", "/api/v1/stations"): "stations:read",
    ("GET", "/api/v1/stations/{station_id}"): "stations:read",
    ("GET", "/api/v1/stations/{station_id}/reports"): "stations:read",
    ("POST", "/api/v1/stations/{station_id}/reports/device-model"): "stations:command",
    ("POST", "/api/v1/stations/import"): "stations:write",
    ("POST", "/api/v1/stations/{station_id}/firmware-updates"): "stations:command",
    ("GET", "/api/v1/firmware-updates/{transaction_id}"): "stations:read",
    ("GET", "/api/v1/stations/{station_id}/certificates"): "stations:read",
    ("POST", "/api/v1/stations/{station_id}/certificates"): "stations:command",
    ("DELETE", "/api/v1/stations/{station_id}/certificates"): "stations:command",
    ("POST", "/api/v1/stations/{station_id}/logs"): "stations:command",
    ("GET", "/api/v1/stations/{station_id}/logs"): "logs:read",
    ("GET", "/api/v1/stations/{station_id}/logs/{request_id}"): "logs:read",
    ("GET", "/api/v1/stations/{station_id}/security"): "stations:read",
    ("PUT", "/api/v1/stations/{station_id}/security-profile"): "stations:write",
    ("POST", "/api/v1/stations/{station_id}/password-rotation"): "stations:command",
    ("POST", "/api/v1/stations/{station_id}/certificate-renewal"): "stations:command",
    ("PUT", "/api/v1/stations/{station_id}/certificate"): "stations:write",
    ("POST", "/api/v1/stations/{station_id}/certificate-revocations"): "stations:write",
    ("GET", "/api/v1/charger-ca/crl"): "stations:read",
    # releases and the TUF repository
    ("POST", "/api/v1/releases"): "releases:upload",
    ("GET", "/api/v1/releases"): "releases:read",
    ("GET", "/api/v1/releases/{release_id}"): "releases:read",
    ("GET", "/api/v1/releases/{release_id}/proposal"): "releases:read",
    ("GET", "/api/v1/releases/{release_id}/approvals"): "releases:read",
    ("GET", "/api/v1/releases/{release_id}/files"): "releases:read",
    ("POST", "/api/v1/releases/{release_id}/approvals"): "releases:approve",
    ("POST", "/api/v1/releases/{release_id}/publish"): "releases:publish",
    ("GET", "/api/v1/proposals/{ref}"): "releases:read",
    ("POST", "/api/v1/proposals/{ref}/approvals"): "releases:approve",
    ("POST", "/api/v1/proposals/{ref}/publish"): "releases:publish",
    ("GET", "/api/v1/repository"): "releases:read",
    ("GET", "/api/v1/releases/{release_id}/documents"): "releases:read",
    ("GET", "/api/v1/releases/{release_id}/documents/{name}"): "releases:read",
    ("PUT", "/api/v1/releases/{release_id}/provenance"): "releases:upload",
    ("PUT", "/api/v1/releases/{release_id}/reported-versions"): "releases:upload",
    ("POST", "/api/v1/exposure"): "stations:read",
    ("POST", "/api/v1/repository/revocations"): "releases:publish",
    # vendors' own signed firmware (api_vendor.py, ADR 0041): roots are trust decisions
    ("POST", "/api/v1/vendor-roots"): "releases:publish",
    ("GET", "/api/v1/vendor-roots"): "releases:read",
    ("DELETE", "/api/v1/vendor-roots/{model}/{fingerprint}"): "releases:publish",
    ("POST", "/api/v1/vendor-releases"): "releases:upload",
    # campaigns
    ("POST", "/api/v1/campaigns"): "campaigns:write",
    ("GET", "/api/v1/campaigns"): "campaigns:read",
    ("GET", "/api/v1/campaigns/{ref}"): "campaigns:read",
    ("GET", "/api/v1/campaigns/{ref}/stations"): "campaigns:read",
    ("GET", "/api/v1/campaigns/{ref}/downloads"): "campaigns:read",
    ("GET", "/api/v1/campaigns/{ref}/stations/{station_id}"): "campaigns:read",
    ("GET", "/api/v1/campaign-releases"): "campaigns:read",
    ("POST", "/api/v1/campaigns/{ref}/approve"): "campaigns:approve",
    ("POST", "/api/v1/campaigns/{ref}/pause"): "campaigns:write",
    ("POST", "/api/v1/campaigns/{ref}/resume"): "campaigns:write",
    ("POST", "/api/v1/campaigns/{ref}/abort"): "campaigns:write",
    ("POST", "/api/v1/campaigns/{ref}/retry"): "campaigns:write",
    ("POST", "/api/v1/campaigns/{ref}/rollback"): "campaigns:write",
    # audit
    ("GET", "/api/v1/audit"): "audit:read",
    ("GET", "/api/v1/audit/tree"): "audit:read",
    ("GET", "/api/v1/audit/checkpoints"): "audit:read",
    ("GET", "/api/v1/audit/checkpoints/latest"): "audit:read",
    ("POST", "/api/v1/audit/checkpoints"): "audit:sign",
    ("GET", "/api/v1/audit/vkey"): "audit:read",
    ("GET", "/api/v1/audit/proofs/inclusion"): "audit:read",
    ("GET", "/api/v1/audit/proofs/consistency"): "audit:read",
    # metrics: Prometheus scrapes with a bearer token (chargeward.server.common.metrics)
    ("GET", "/metrics"): "metrics:read",
    # fleet registry (api_fleet.py): sites, models, station records, support, alerts, events
    ("GET", "/api/v1/sites"): "stations:read",
    ("POST", "/api/v1/sites"): "stations:write",
    ("GET", "/api/v1/sites/{site_id}"): "stations:read",
    ("PATCH", "/api/v1/sites/{site_id}"): "stations:write",
    ("DELETE", "/api/v1/sites/{site_id}"): "stations:write",
    ("GET", "/api/v1/models"): "stations:read",
    ("POST", "/api/v1/models"): "stations:write",
    ("GET", "/api/v1/models/{model_id}"): "stations:read",
    ("PATCH", "/api/v1/models/{model_id}"): "stations:write",
    ("DELETE", "/api/v1/models/{model_id}"): "stations:write",
    ("PATCH", "/api/v1/stations/{station_id}"): "stations:write",
    ("PUT", "/api/v1/stations/{station_id}/upstream-credentials"): "stations:write",
    ("GET", "/api/v1/fleet/support"): "stations:read",
    ("GET", "/api/v1/alerts"): "stations:read",
    ("POST", "/api/v1/alerts/{alert_id}/acknowledge"): "stations:write",
    ("GET", "/api/v1/security-events"): "audit:read",
    # integration API (api_integration.py, ADR 0042): an external CSMS delivers the updates
    ("PUT", "/api/v1/integration/stations/{station_id}/delivery"): "stations:write",
    ("GET", "/api/v1/integration/pending"): "integration:report",
    ("GET", "/api/v1/integration/stations/{station_id}/update"): "integration:report",
    ("POST", "/api/v1/integration/stations/{station_id}/events"): "integration:report",
}


def required_permission(method: str, path: str) -> str | None:
    return ROUTE_PERMISSIONS.get(("GET" if method == "HEAD" else method, path))


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def authorize(request: Request) -> None:
    """The app-wide check: resolve the bearer token, then the route's permission."""
    audit.acting_host_token(None)  # this request's own caller, not a previous one's
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    needed = required_permission(request.method, path) if path else None
    if needed is None or path is None:
        raise Refusal(403, "forbidden", "route has no permission assigned")
    if needed == PUBLIC:
        return
    header = request.headers.get("authorization", "")
    scheme, _, bearer = header.partition(" ")
    if scheme.lower() != "bearer" or not bearer.strip():
        raise unauthenticated("bearer token required")
    state: ServerState = request.app.state.chargeward
    async with state.db.session() as s:
        principal = await authenticate(s, bearer.strip(), now=state.clock())
        if principal.host:
            audit.acting_host_token(principal.name)
        if needed != AUTHENTICATED and principal.totp_enrolment_required:
            raise enrolment_required()
        if needed != AUTHENTICATED and not principal.can(needed):
            who = f"role {principal.role}" if principal.kind != "token" else "this token"
            raise Refusal(403, "forbidden", f"{who} lacks the permission {needed}")
        if needed != AUTHENTICATED:
            method = "GET" if request.method == "HEAD" else request.method
            await tenancy.check(s, principal, method, path, request.path_params)
    request.scope[PRINCIPAL_KEY] = principal


def current_principal(request: Request) -> Principal:
    principal = request.scope.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):  # a public route asked for a caller
        raise unauthenticated("bearer token required")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
