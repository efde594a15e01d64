"""The operators' web dashboard at ``/``: server-rendered pages over the REST API.

Every page reads and every form writes through the REST API, called in-process
(``httpx.ASGITransport`` into this same application) with the login session's bearer token:
the dashboard has no data access of its own, so what a role may see and do in the browser is
exactly what the API allows it, checked in one place (:mod:`chargeward.server.http.authz`; ADR
0014).  Login is the API's (password + TOTP, lockout, audit), called with the browser's
address.

- Sessions, CSRF tokens and rendering: :mod:`chargeward.server.http.web_page`; the campaign
  pages: :mod:`chargeward.server.http.web_campaigns`; the audit pages:
  :mod:`chargeward.server.http.web_audit`.
- Live parts of a page (campaign progress) are HTML fragments the page's small script fetches
  every two seconds; without script the page still shows the figures as of its load.

Pages: ``/`` fleet overview, ``/campaigns`` (list, create form with a live preview of the
stations the selector matches), ``/campaigns/{id}`` (stages, counts, outcomes over time,
actions, roll back, per-station status timeline), ``/releases`` and ``/releases/{id}``
(components, findings, approvals; approve with an approval file and a TOTP code, publish),
``/security`` (alerts and security events), ``/audit`` (the audit log, each entry with a
"verify" page: its leaf hash, the signed checkpoint and the inclusion proof).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from markupsafe import escape

from chargeward.errors import BundleError
from chargeward.server.auth import accounts, sessions
from chargeward.server.common.inputs import same_secret
from chargeward.server.http import web_audit, web_campaigns
from chargeward.server.http.authz import client_address
from chargeward.server.http.web_page import (
    ENROLMENT_PAGE,
    HERE,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    BadForm,
    NeedEnrolment,
    NeedLogin,
    Page,
    Posted,
    Refused,
    SignedIn,
    breakdown,
    csrf_refused,
    csrf_token,
    refused_page,
    seg,
    to_login,
)
from chargeward.trust.approval import parse_approval_file

STATIC = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}

router = APIRouter(include_in_schema=False)


def install(app: FastAPI) -> None:
    """Mount the dashboard on ``app``: its routes and the handlers of its exceptions."""

    def fragment(request: Request) -> bool:
        return bool(getattr(request.state, "fragment", False))

    async def need_login(request: Request, _: Exception) -> Response:
        return HTMLResponse("", status_code=401) if fragment(request) else to_login(request)

    async def refused(request: Request, e: Exception) -> Response:
        assert isinstance(e, Refused)
        if fragment(request):
            return HTMLResponse(f"<p role='alert'>{escape(e.message)}</p>", status_code=e.status)
        return refused_page(request.state.page, e)

    async def bad_form(request: Request, _: Exception) -> Response:
        return csrf_refused(request.state.page)

    async def need_enrolment(request: Request, _: Exception) -> Response:
        if fragment(request):
            return HTMLResponse("", status_code=403)
        return RedirectResponse(ENROLMENT_PAGE, status_code=303)

    app.add_exception_handler(NeedLogin, need_login)
    app.add_exception_handler(NeedEnrolment, need_enrolment)
    app.add_exception_handler(Refused, refused)
    app.add_exception_handler(BadForm, bad_form)
    app.include_router(router)
    app.include_router(web_campaigns.router)
    app.include_router(web_audit.router)


def _safe_next(target: str | None) -> str:
    """Only a local path: never another site (``//host`` or ``/\\host``)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


# -- login -----------------------------------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request, next: str = "/") -> Response:
    nonce = secrets.token_urlsafe(24)
    page = Page(request)
    async with page:
        page.token = ""
        resp = page.render("login.html", login_csrf=csrf_token(nonce), next=_safe_next(next))
    _set_cookie(request, resp, LOGIN_COOKIE, nonce, max_age=1800)
    return resp


@router.post("/login")
async def login(request: Request) -> Response:
    data = {k: str(v) for k, v in (await request.form()).items()}
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    page = Page(request)
    async with page:
        page.token = ""
        target = _safe_next(data.get("next"))
        if not nonce or not same_secret(data.get("csrf", ""), csrf_token(nonce)):
            return csrf_refused(page)
        state = request.app.state.chargeward
        async with state.db.session() as s:
            outcome = await sessions.login(
                s,
                data.get("username", "")[:64],
                data.get("password", "")[:1024],
                data.get("totp", "")[:10] or None,
                address=client_address(request),
                now=state.clock(),
            )
        if isinstance(outcome, accounts.Refusal):
            return page.render(
                "login.html",
                status=outcome.status,
                login_csrf=csrf_token(nonce),
                next=target,
                error=str(outcome),
                username=data.get("username", ""),
            )
    if outcome.totp_enrolment_required:  # a privileged account without TOTP enrols first
        target = ENROLMENT_PAGE
    done = RedirectResponse(target, status_code=303)
    _set_cookie(request, done, SESSION_COOKIE, outcome.token)
    done.delete_cookie(LOGIN_COOKIE, path="/")
    return done


@router.get(ENROLMENT_PAGE)
async def totp_enrolment(page: SignedIn) -> Response:
    """A new secret for the account without TOTP, shown once, and the form for a code."""
    enrolment = await page.call("POST", "/api/v1/auth/totp/enrolment")
    return page.render("totp_enrolment.html", enrolment=enrolment)


@router.post(ENROLMENT_PAGE)
async def confirm_totp_enrolment(page: SignedIn, data: Posted) -> Response:
    """Enrol with a code of the secret shown; the session ends, the next login needs a code."""
    code = data.get("code", "").strip()[:10]
    try:
        await page.call("POST", "/api/v1/auth/totp/enrolment/confirm", json={"code": code})
    except Refused as e:
        enrolment = await page.call("POST", "/api/v1/auth/totp/enrolment")
        return page.render(
            "totp_enrolment.html", status=e.status, enrolment=enrolment, error=e.message
        )
    resp = RedirectResponse("/login?next=/", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    async with Page(request) as page:
        if await page.form() is None:
            return csrf_refused(page)
        with contextlib.suppress(Refused):  # already ended: the cookie goes either way
            await page.call("POST", "/api/v1/auth/logout")
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


def _set_cookie(
    request: Request, resp: Response, name: str, value: str, max_age: int | None = None
) -> None:
    resp.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


# -- pages -----------------------------------------------------------------------------------------


@router.get("/")
async def overview(page: SignedIn) -> Response:
    stations = await page.get("/api/v1/stations")
    alerts = await page.get("/api/v1/alerts", state="active")
    support = await page.get("/api/v1/fleet/support", within_days=180)
    campaigns = await page.get("/api/v1/campaigns")
    releases = await page.get("/api/v1/releases") if page.can("releases:read") else []
    published = [r for r in releases if r["state"] == "published"]
    newest = max(published, key=lambda r: r["security_version"], default=None)
    behind = [
        s
        for s in stations
        if newest
        and s["model"] in newest["hardware_models"]
        and s["firmware_version"] != newest["version"]
    ]
    return page.render(
        "overview.html",
        total=len(stations),
        connected=sum(s["connected"] for s in stations),
        charts={
            "firmware version": ("version", breakdown(stations, "firmware_version")),
            "model": ("model", breakdown(stations, "model")),
            "site": ("site", breakdown(stations, "site_id")),
        },
        drift=[a for a in alerts if a["kind"] == "firmware_drift"],
        alerts=alerts,
        support=[
            r for r in support if {r["security_state"], r["feature_state"]} & {"ending", "ended"}
        ],
        support_unknown=sum(
            r["security_state"] == "unknown" and r["feature_state"] == "unknown" for r in support
        ),
        newest=newest,
        behind=len(behind),
        running=[c for c in campaigns if c["status"] in ("running", "awaiting_approval")],
    )


# -- releases ----------------------------------------------------------------------------------


@router.get("/releases")
async def release_list(page: SignedIn) -> Response:
    releases = await page.get("/api/v1/releases")
    releases.sort(key=lambda r: -r["security_version"])
    return page.render("releases.html", releases=releases)


async def _release_page(
    page: Page, release_id: str, status: int = 200, error: str = "", notice: str = ""
) -> Response:
    release = await page.get(f"/api/v1/releases/{seg(release_id)}")
    history = await page.get(f"/api/v1/releases/{seg(release_id)}/approvals")
    proposal = None
    if release["state"] != "published" and history and history[-1]["state"] == "open":
        proposal = await page.get(f"/api/v1/proposals/{seg(history[-1]['proposal'])}")
    return page.render(
        "release.html",
        status=status,
        error=error,
        notice=notice,
        r=release,
        history=history,
        proposal=proposal,
        docs=await _documents(page, release["id"], release),
    )


@router.get("/releases/{release_id}")
async def release_page(page: SignedIn, release_id: str) -> Response:
    return await _release_page(page, release_id)


@router.post("/releases/{release_id}/approve")
async def approve_release(page: SignedIn, data: Posted, release_id: str) -> Response:
    """An approver's signature (an approval file made with ``chargeward release approve
    --output`` on the approver's own machine: the key never reaches the server), confirmed
    with a fresh TOTP code of the person logged in."""
    code = data.get("totp", "").strip()
    try:
        approval = parse_approval_file(data.get("approval", "").strip())
        if not code:
            raise BundleError("enter the current code of your authenticator app to confirm")
    except BundleError as e:
        return await _release_page(page, release_id, status=400, error=str(e))
    release = await page.get(f"/api/v1/releases/{seg(release_id)}")
    if approval.release_id not in (None, release["id"]):
        return await _release_page(
            page,
            release_id,
            status=400,
            error=f"this approval file is for release {approval.release_id[:12]}, "
            f"not {release['id'][:12]}",
        )
    body = {
        "keyid": approval.keyid,
        "signature": approval.signature,
        "roles": dict(approval.roles),
        "totp": code,
    }
    try:
        done = await page.call(
            "POST", f"/api/v1/proposals/{seg(approval.proposal)}/approvals", json=body
        )
    except Refused as e:
        return await _release_page(page, release_id, status=e.status, error=e.message)
    return await _release_page(page, release_id, notice=f"Approval recorded: {done['summary']}")


@router.post("/releases/{release_id}/publish")
async def publish_release(page: SignedIn, data: Posted, release_id: str) -> Response:
    try:
        done = await page.call("POST", f"/api/v1/releases/{seg(release_id)}/publish")
    except Refused as e:
        return await _release_page(page, release_id, status=e.status, error=e.message)
    return await _release_page(
        page, release_id, notice=f"Published as targets version {done['targets_version']}."
    )


async def _documents(page: Page, release_id: str, release: Mapping[str, Any]) -> dict[str, Any]:
    """The release's supply-chain documents the page summarizes (absent ones are skipped)."""
    out: dict[str, Any] = {}
    for name in release.get("documents", {}):
        try:
            out[name] = await page.get(f"/api/v1/releases/{seg(release_id)}/documents/{seg(name)}")
        except Refused:
            continue
    return out


# -- security and audit ------------------------------------------------------------------------


@router.get("/security")
async def security(page: SignedIn) -> Response:
    alerts = await page.get("/api/v1/alerts")
    events = (  # the raw events are the audit trail's: audit:read, as in the API
        await page.get("/api/v1/security-events", limit=200) if page.can("audit:read") else None
    )
    return page.render("security.html", alerts=alerts, events=events)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        return Response("not found", status_code=404)
    return FileResponse(HERE / "static" / name, media_type=STATIC[name])
