"""The operators' web dashboard at ``/``: server-rendered pages over the REST API.

Every page reads and every form writes through the REST API, called in-process
(``httpx.ASGITransport`` into this same application) with the login session's bearer token:
the dashboard has no data access of its own, so what a role may see and do in the browser is
exactly what the API allows it, checked in one place (:mod:`chargeward.server.authz`; ADR
0014).  Login is the API's (password + TOTP, lockout, audit), called with the browser's
address.

- The session token lives in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` over
  HTTPS); a request without a valid session is redirected to ``/login``.
- Every form carries a CSRF token: an HMAC of the session token (of a login nonce cookie on the
  login form), checked before anything else; a POST without it is refused with 403 and changes
  nothing.
- Live parts of a page (campaign progress) are HTML fragments the page's small script fetches
  every two seconds; without script the page still shows the figures as of its load.

Pages: ``/`` fleet overview, ``/campaigns`` (list, create form with a live preview of the
stations the selector matches), ``/campaigns/{id}`` (stages, counts, actions, per-station
status timeline), ``/releases`` and ``/releases/{id}`` (components, findings, approvals),
``/security`` (alerts and security events).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from chargeward.server import accounts
from chargeward.server.authz import client_address

HERE = Path(__file__).resolve().parent / "web_assets"
SESSION_COOKIE = "cw_session"
LOGIN_COOKIE = "cw_login"
STATIC = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
RUN_STATES = (
    "succeeded", "pending", "waiting", "dispatched", "downloading", "installing",
    "rebooting", "soaking", "failed", "rolled_back", "skipped", "cancelled",
)  # fmt: skip

router = APIRouter(include_in_schema=False)
templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


class Refused(Exception):
    """The API refused a call the page made: its status and message, shown to the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def csrf_token(secret: str) -> str:
    """The form token for a session (or login nonce): only its holder can compute it."""
    return hmac.new(secret.encode(), b"chargeward dashboard form", hashlib.sha256).hexdigest()


class Page:
    """One browser request: its session, an API client acting as that session, rendering."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.token = request.cookies.get(SESSION_COOKIE, "")
        self.me: dict[str, Any] = {}
        address = client_address(request)
        self.api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=request.app, client=(address, 0)),
            base_url="http://dashboard.internal",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )

    async def __aenter__(self) -> Page:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.api.aclose()

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        r = await self.api.request(method, path, **kw)
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:300] or f"HTTP {r.status_code}"
            raise Refused(r.status_code, message)
        return r.json() if r.content else None

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params=params)

    async def signed_in(self) -> bool:
        if not self.token:
            return False
        try:
            self.me = await self.get("/api/v1/auth/me")
        except Refused as e:
            if e.status == 401:
                return False
            raise
        return True

    def can(self, permission: str) -> bool:
        return permission in self.me.get("permissions", ())

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = templates.get_template(name).render(
            me=self.me,
            can=self.can,
            csrf=csrf_token(self.token) if self.token else "",
            path=self.request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    async def form(self) -> dict[str, str] | None:
        """The posted form, or None when its CSRF token does not belong to this session."""
        data = {k: str(v) for k, v in (await self.request.form()).items()}
        given = data.pop("csrf", "")
        if not self.token or not hmac.compare_digest(given, csrf_token(self.token)):
            return None
        return data


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def to_login(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


def refused_page(page: Page, e: Refused) -> HTMLResponse:
    return page.render("error.html", status=e.status, message=e.message)


def csrf_refused(page: Page) -> HTMLResponse:
    return page.render(
        "error.html",
        status=403,
        message="This form has expired or did not come from this dashboard (CSRF token "
        "missing or wrong). Nothing was changed; reload the page and try again.",
    )


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
        if not nonce or not hmac.compare_digest(data.get("csrf", ""), csrf_token(nonce)):
            return csrf_refused(page)
        state = request.app.state.chargeward
        async with state.db.session() as s:
            outcome = await accounts.login(
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
    done = RedirectResponse(target, status_code=303)
    _set_cookie(request, done, SESSION_COOKIE, outcome.token)
    done.delete_cookie(LOGIN_COOKIE, path="/")
    return done


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


def breakdown(stations: list[Mapping[str, Any]], key: str) -> list[tuple[str, int]]:
    counts = Counter(str(s.get(key) or "unknown") for s in stations)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


@router.get("/")
async def overview(request: Request) -> Response:
    async with Page(request) as page:
        if not await page.signed_in():
            return to_login(request)
        try:
            stations = await page.get("/api/v1/stations")
            alerts = await page.get("/api/v1/alerts", state="active")
            support = await page.get("/api/v1/fleet/support", within_days=180)
            campaigns = await page.get("/api/v1/campaigns")
        except Refused as e:
            return refused_page(page, e)
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
                r
                for r in support
                if {r["security_state"], r["feature_state"]} & {"ending", "ended"}
            ],
            support_unknown=sum(
                r["security_state"] == "unknown" and r["feature_state"] == "unknown"
                for r in support
            ),
            newest=newest,
            behind=len(behind),
            running=[c for c in campaigns if c["status"] in ("running", "awaiting_approval")],
        )


@router.get("/campaigns")
async def campaign_list(request: Request) -> Response:
    async with Page(request) as page:
        if not await page.signed_in():
            return to_login(request)
        return await _campaigns_page(page)


async def _campaigns_page(
    page: Page, status: int = 200, error: str | None = None, form: Mapping[str, str] | None = None
) -> HTMLResponse:
    try:
        campaigns = await page.get("/api/v1/campaigns")
        releases = await page.get("/api/v1/releases")
        stations = await page.get("/api/v1/stations")
    except Refused as e:
        return refused_page(page, e)
    return page.render(
        "campaigns.html",
        status=status,
        campaigns=sorted(campaigns, key=lambda c: -c["id"]),
        releases=sorted(releases, key=lambda r: -r["security_version"]),
        models=sorted({s["model"] for s in stations if s["model"]}),
        sites=sorted({s["site_id"] for s in stations if s["site_id"]}),
        error=error,
        form=form or {},
    )


def campaign_document(data: Mapping[str, str]) -> dict[str, Any]:
    """The API's campaign document from the create form; the API validates every field."""
    target: dict[str, Any] = {}
    if data.get("model"):
        target["models"] = [data["model"]]
    if data.get("site"):
        target["sites"] = [data["site"]]
    doc: dict[str, Any] = {
        "name": data.get("name", "").strip(),
        "release": data.get("release", ""),
        "target": target,
        "stages": {
            "canary": _number_or_percent(data.get("canary", "1")),
            "then": [s.strip() for s in data.get("stages", "100%").split(",") if s.strip()],
        },
    }
    for name in ("soak", "jitter"):
        if data.get(name, "").strip():
            doc[name] = data[name].strip()
    return doc


def _number_or_percent(text: str) -> int | str:
    text = text.strip()
    return int(text) if text.isdigit() else text


@router.post("/campaigns")
async def create_campaign(request: Request) -> Response:
    async with Page(request) as page:
        if not await page.signed_in():
            return to_login(request)
        data = await page.form()
        if data is None:
            return csrf_refused(page)
        try:
            made = await page.call("POST", "/api/v1/campaigns", json=campaign_document(data))
        except Refused as e:
            return await _campaigns_page(page, status=e.status, error=e.message, form=data)
        return RedirectResponse(f"/campaigns/{made['id']}", status_code=303)


@router.get("/campaigns/preview")
async def campaign_preview(request: Request, model: str = "", site: str = "") -> Response:
    """How many stations the create form's selector matches (a fragment)."""
    async with Page(request) as page:
        if not await page.signed_in():
            return HTMLResponse("", status_code=401)
        params = {k: v for k, v in (("model", model), ("site", site)) if v}
        try:
            matched = await page.get("/api/v1/stations", **params)
        except Refused as e:
            return HTMLResponse(f"<span>{e.message}</span>", status_code=e.status)
        return page.render("preview.html", matched=len(matched), model=model, site=site)


async def _campaign_context(page: Page, ref: int) -> dict[str, Any]:
    campaign = await page.get(f"/api/v1/campaigns/{ref}")
    runs = await page.get(f"/api/v1/campaigns/{ref}/stations")
    return {"c": campaign, "runs": runs, "run_states": RUN_STATES}


@router.get("/campaigns/{ref}")
async def campaign_page(request: Request, ref: int) -> Response:
    async with Page(request) as page:
        if not await page.signed_in():
            return to_login(request)
        try:
            return page.render("campaign.html", **await _campaign_context(page, ref))
        except Refused as e:
            return refused_page(page, e)


@router.get("/campaigns/{ref}/live")
async def campaign_live(request: Request, ref: int) -> Response:
    async with Page(request) as page:
        if not await page.signed_in():
            return HTMLResponse("", status_code=401)
        try:
            return page.render("campaign_live.html", **await _campaign_context(page, ref))
        except Refused as e:
            return HTMLResponse(f"<p role='alert'>{e.message}</p>", status_code=e.status)


@router.get("/campaigns/{ref}/stations/{station_id}")
async def station_run(request: Request, ref: int, station_id: str) -> Response:
    async with Page(request) as page:
        if not await page.signed_in():
            return to_login(request)
        try:
            campaign = await page.get(f"/api/v1/campaigns/{ref}")
            run = await page.get(f"/api/v1/campaigns/{ref}/stations/{station_id}")
            detail = await page.get(f"/api/v1/stations/{station_id}")
        except Refused as e:
            return refused_page(page, e)
        return page.render("station_run.html", c=campaign, run=run, station=detail)


CAMPAIGN_ACTIONS = ("approve", "pause", "resume", "abort", "retry")


@router.post("/campaigns/{ref}/{action}")
async def campaign_action(request: Request, ref: int, action: str) -> Response:
    async with Page(request) as page:
        if not await page.signed_in():
            return to_login(request)
        data = await page.form()
        if data is None:
            return csrf_refused(page)
        if action not in CAMPAIGN_ACTIONS:
            return page.render("error.html", status=404, message=f"no action {action!r}")
        try:
            await page.call("POST", f"/api/v1/campaigns/{ref}/{action}")
        except Refused as e:
            try:
                context = await _campaign_context(page, ref)
            except Refused:
                return refused_page(page, e)
            return page.render("campaign.html", status=e.status, error=e.message, **context)
        return RedirectResponse(f"/campaigns/{ref}", status_code=303)


@router.get("/releases")
async def release_list(request: Request) -> Response:
    async with Page(request) as page:
        if not await page.signed_in():
            return to_login(request)
        try:
            releases = await page.get("/api/v1/releases")
        except Refused as e:
            return refused_page(page, e)
        releases.sort(key=lambda r: -r["security_version"])
        return page.render("releases.html", releases=releases)


@router.get("/releases/{release_id}")
async def release_page(request: Request, release_id: str) -> Response:
    async with Page(request) as page:
        if not await page.signed_in():
            return to_login(request)
        try:
            release = await page.get(f"/api/v1/releases/{release_id}")
            approvals = await page.get(f"/api/v1/releases/{release_id}/approvals")
            documents = await _documents(page, release_id, release)
        except Refused as e:
            return refused_page(page, e)
        return page.render("release.html", r=release, approvals=approvals, docs=documents)


async def _documents(page: Page, release_id: str, release: Mapping[str, Any]) -> dict[str, Any]:
    """The release's supply-chain documents the page summarizes (absent ones are skipped)."""
    out: dict[str, Any] = {}
    for name in release.get("documents", {}):
        try:
            out[name] = await page.get(f"/api/v1/releases/{release_id}/documents/{name}")
        except Refused:
            continue
    return out


@router.get("/security")
async def security(request: Request) -> Response:
    async with Page(request) as page:
        if not await page.signed_in():
            return to_login(request)
        try:
            alerts = await page.get("/api/v1/alerts")
            events = (  # the raw events are the audit trail's: audit:read, as in the API
                await page.get("/api/v1/security-events", limit=200)
                if page.can("audit:read")
                else None
            )
        except Refused as e:
            return refused_page(page, e)
        return page.render("security.html", alerts=alerts, events=events)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        return Response("not found", status_code=404)
    return FileResponse(HERE / "static" / name, media_type=STATIC[name])
